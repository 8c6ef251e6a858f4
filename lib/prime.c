/*
 * prime.c -- the pool layer's reserve: dp_pool_prime() fills a pool with
 * the pages a number of objects needs, up front, and keeps them from
 * the age policy.  docs/design.md §7 (reclamation, the reserve).
 */
#include "pool.h"
#include "page.h"

#include <errno.h>

/* Pages of this size the machine could ever back: the bound of a prime
 * on a pool without a hard limit. */
static size_t phys_pages_of(size_t pagesize)
{
    size_t b = dp_os_phys_bytes();
    return b == SIZE_MAX ? SIZE_MAX : b / pagesize;
}

/*
 * The request is checked first, without calling the provider: the pages
 * nobjs objects need must fit under max_pages and in the machine's
 * physical memory.  While the prime gathers pages they count towards
 * keep (priming_pages), so that no reclaim returns them under it; the
 * reserve is raised only when it succeeds.  A prime that fails gives back
 * as many empty pages as it obtained (the newest; lowat and the reserve
 * do not keep them) and leaves the reserve as it was.
 */
int dp_pool_prime(dp_pool_t *p, size_t nobjs)
{
    if (!p) {
        errno = EINVAL;
        return -1;
    }
    size_t need = nobjs / p->cap + (nobjs % p->cap != 0);
    if (need > p->max_pages || need > phys_pages_of(p->pagesize)) {
        errno = ENOMEM;
        return -1;
    }
    int err = 0;
    size_t added = 0;
    pthread_mutex_lock(p->lock);
    p->priming_pages += need;
    for (;;) {
        dp_drain_pending_locked(p, 0);
        uint64_t avail = (uint64_t)p->empty.n * p->cap;
        for (struct dp_page *pg = p->partial.head; pg; pg = pg->next) {
            uint32_t c = atomic_load_explicit(&pg->state,
                                              memory_order_relaxed) &
                         DP_PG_COUNT;
            avail += c < pg->cap ? pg->cap - c : 0;
        }
        if (avail >= nobjs)
            break;
        if (dp_in_callback_of(p)) {
            err = EDEADLK;
            break;
        }
        if (p->npages >= p->max_pages) {
            err = ENOMEM;
            break;
        }
        enum dp_pg_why why;
        struct dp_page *pg = dp_pool_grow_locked(p, DP_WAITOK, &why);
        if (!pg) {
            err = ENOMEM;
            break;
        }
        dp_pool_add_empty_locked(p, pg);
        added++;
    }
    p->priming_pages -= need;
    struct dp_page *back = NULL;
    if (!err && nobjs > p->reserve_objs) {
        p->reserve_objs = nobjs;
        p->reserve_pages = need;
    } else if (err) {
        /* As many empty pages as it obtained, the newest, whatever lowat
         * and the reserve would keep: the pool is left as it was. */
        while (added && p->empty.n) {
            struct dp_page *pg = p->empty.head;
            DP_LIST_REMOVE(&p->empty, pg, next, prev);
            pg->list = DP_L_NONE;
            pg->next = back;
            back = pg;
            p->freeing++;
            added--;
        }
    }
    pthread_mutex_unlock(p->lock);
    if (back)
        dp_release_pages(p, back);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}
