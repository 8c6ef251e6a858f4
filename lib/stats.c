/*
 * stats.c -- statistics and the invariant checker.  Both take the pool
 * lock and first drain the pending queue, so what they report is what
 * the pool knows after every completed put.  docs/design.md,
 * "Statistics".
 */
#include "dp_internal.h"

#include <stdio.h>
#include <string.h>

#define DP_STR2(x) #x
#define DP_STR(x) DP_STR2(x)

const char *dp_version(void)
{
    return DP_STR(DP_VERSION_MAJOR) "." DP_STR(DP_VERSION_MINOR) "." DP_STR(
        DP_VERSION_PATCH);
}

static uint64_t count_of(const struct dp_page *pg)
{
    return atomic_load_explicit(&((struct dp_page *)pg)->state,
                                memory_order_acquire) &
           DP_PG_COUNT;
}

int dp_pool_stats(dp_pool_t *p, dp_pool_stats_t *out)
{
    if (!p || !out) {
        errno = EINVAL;
        return -1;
    }
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&p->lock);
    uint64_t now = dp_pool_now(p);
    dp_drain_pending_locked(p, now);
    memcpy(out->name, p->name, sizeof(out->name));
    out->objsize = p->objsize;
    out->slotsize = p->slotsize;
    out->pagesize = p->pagesize;
    out->objs_per_page = p->cap;
    uint64_t inuse = 0;
    for (struct dp_page *pg = p->partial.head; pg; pg = pg->next)
        inuse += count_of(pg);
    for (struct dp_page *pg = p->full.head; pg; pg = pg->next)
        inuse += count_of(pg);
    size_t live = p->partial.n + p->full.n + p->empty.n;
    uint64_t cached, cgets;
    dp_tcache_sum(p, &cached, &cgets);
    inuse = inuse > cached ? inuse - cached : 0;
    out->objs_inuse = inuse;
    out->objs_cached = cached;
    out->objs_free = (uint64_t)live * p->cap > inuse
                         ? (uint64_t)live * p->cap - inuse
                         : 0;
    out->pages = p->npages - p->inflight;
    out->pages_empty = p->empty.n;
    out->pages_pending = p->inflight + p->freeing;
    if (p->empty.tail)
        out->empty_oldest_age_ns = now - p->empty.tail->empty_since;
    out->pages_alloc = p->st_pages_alloc;
    out->pages_freed = p->st_pages_freed;
    out->provider_alloc_failures = p->st_alloc_fail;
    out->gets = p->st_gets + cgets;
    out->puts = out->gets - inuse;
    out->gets_waited = p->st_gets_waited;
    out->gets_failed = p->st_gets_failed;
    out->waiting = atomic_load(&p->waiters);
    out->put_provider_calls = atomic_load(&p->put_provider_calls);
    out->reserve_objs = p->reserve_objs;
    out->max_pages = p->max_pages == SIZE_MAX ? 0 : p->max_pages;
    out->lowat = p->lowat;
    out->hiwat = p->hiwat;
    out->reclaim_age_ns = p->age_ns;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "deferpool: dp_pool_check('%s'): ", p->name);     \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            bad++;                                                            \
        }                                                                     \
    } while (0)

/* Walk a free chain, checking each link lands on a slot of this page. */
static uint64_t walk_free(struct dp_pool *p, struct dp_page *pg, void *o,
                          int *badp)
{
    int bad = 0;
    uint64_t n = 0;
    while (o && bad == 0) {
        size_t off = (size_t)((char *)o - pg->slots);
        CHECK((char *)o >= pg->slots && off % p->slotsize == 0 &&
                  off / p->slotsize < pg->bump,
              "page %p: free object %p is not a handed-out slot", (void *)pg,
              o);
        if (bad)
            break;
        CHECK(++n <= pg->cap, "page %p: free list longer than the page",
              (void *)pg);
        o = *dp_link(p, o);
    }
    *badp += bad;
    return n;
}

static int check_list(struct dp_pool *p, struct dp_list *l, uint8_t which,
                      uint64_t *inuse)
{
    int bad = 0;
    size_t n = 0;
    struct dp_page *prev = NULL;
    for (struct dp_page *pg = l->head; pg; prev = pg, pg = pg->next) {
        n++;
        CHECK(pg->magic == DP_PAGE_MAGIC && pg->pool == p,
              "page %p: bad magic or owner", (void *)pg);
        CHECK(pg->list == which, "page %p: on list %d, marked %d", (void *)pg,
              which, pg->list);
        CHECK(pg->prev == prev, "page %p: broken back link", (void *)pg);
        CHECK(((uintptr_t)pg & ~p->pagemask) == 0, "page %p: misaligned",
              (void *)pg);
        uint64_t sw = atomic_load(&pg->state);
        uint32_t s = (uint32_t)sw;
        uint64_t c = s & DP_PG_COUNT;
        CHECK(!(s & DP_PG_QUEUED), "page %p: still queued after a drain",
              (void *)pg);
        uint64_t nfree = walk_free(p, pg, pg->lfree, &bad) +
                         walk_free(p, pg, dp_pg_top(pg, sw), &bad);
        CHECK(pg->bump <= pg->cap, "page %p: bump past the end", (void *)pg);
        CHECK(c + nfree == pg->bump,
              "page %p: %llu out + %llu free != %u carved", (void *)pg,
              (unsigned long long)c, (unsigned long long)nfree, pg->bump);
        if (which == DP_L_EMPTY)
            CHECK(c == 0, "page %p: on the empty list with %llu out",
                  (void *)pg, (unsigned long long)c);
        if (p->debug) {
            uint64_t bits = 0;
            for (uint32_t i = 0; i < (pg->cap + 63) / 64; i++)
                bits += (uint64_t)__builtin_popcountll(
                    atomic_load(&pg->outmap[i]));
            CHECK(bits == c, "page %p: %llu objects marked out, count %llu",
                  (void *)pg, (unsigned long long)bits,
                  (unsigned long long)c);
        }
        *inuse += c;
        if (n > (size_t)1 << 40)
            break;
    }
    CHECK(n == l->n, "list %d: %zu pages linked, %zu counted", which, n,
          l->n);
    CHECK(l->tail == prev, "list %d: tail does not match", which);
    return bad;
}

int dp_pool_check(dp_pool_t *p)
{
    if (!p) {
        errno = EINVAL;
        return -1;
    }
    int bad = 0;
    uint64_t inuse = 0;
    pthread_mutex_lock(&p->lock);
    dp_drain_pending_locked(p, 0);
    bad += check_list(p, &p->partial, DP_L_PARTIAL, &inuse);
    bad += check_list(p, &p->full, DP_L_FULL, &inuse);
    bad += check_list(p, &p->empty, DP_L_EMPTY, &inuse);
    size_t dead = 0;
    for (struct dp_page *pg = p->dead; pg; pg = pg->next)
        dead++;
    CHECK(p->npages == p->partial.n + p->full.n + p->empty.n + dead +
                           p->inflight + p->freeing,
          "npages %zu does not add up", p->npages);
    CHECK(p->npages - p->inflight == p->st_pages_alloc - p->st_pages_freed,
          "pages held %zu != allocated %llu - freed %llu",
          p->npages - p->inflight, (unsigned long long)p->st_pages_alloc,
          (unsigned long long)p->st_pages_freed);
    CHECK(p->npages <= p->max_pages, "npages %zu above the limit",
          p->npages);
    uint64_t cached, cgets;
    dp_tcache_sum(p, &cached, &cgets);
    CHECK(inuse <= p->st_gets + cgets + cached,
          "%llu objects out but only %llu gets", (unsigned long long)inuse,
          (unsigned long long)(p->st_gets + cgets));
    pthread_mutex_unlock(&p->lock);
    if (bad) {
        errno = EIO;
        return -1;
    }
    return 0;
}
