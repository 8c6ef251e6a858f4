/*
 * pool.c -- the pool layer, above the pages and the thread caches: get
 * and put, waiting, the pending queue of pages that puts changed, the
 * choice of which empty pages are due to go back, prime and reclaim.
 * docs/design.md §4 (the put path), §5 (the get path), §6 (waiting).
 */
#include "pool.h"
#include "cache.h"
#include "debug.h"
#include "lifo.h"
#include "page.h"
#include "probes.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A DP_WAITOK get whose provider call failed retries after this long even
 * if nobody wakes it (as NetBSD's pool_get sleeps with a timeout when the
 * back-end fails): the provider's memory may come back from elsewhere. */
#define DP_PROVIDER_RETRY_NS 10000000ull /* 10 ms */

/* Nanoseconds in a second, and the largest tv_sec whose deadline still
 * fits a 64-bit nanosecond count (the year 2554). */
#define DP_NS 1000000000ull
#define DP_TV_SEC_MAX ((UINT64_MAX - (DP_NS - 1)) / DP_NS)

/* ---- page lists (pool lock) ------------------------------------------ */

static struct dp_list *list_of(struct dp_pool *p, uint8_t which)
{
    switch (which) {
    case DP_L_PARTIAL: return &p->partial;
    case DP_L_FULL: return &p->full;
    case DP_L_EMPTY: return &p->empty;
    default: return NULL;
    }
}

static void move_to_locked(struct dp_pool *p, struct dp_page *pg, uint8_t to)
{
    struct dp_list *from = list_of(p, pg->list);
    if (from)
        DP_LIST_REMOVE(from, pg, next, prev);
    pg->list = to;
    DP_LIST_PUSH_HEAD(list_of(p, to), pg, next, prev);
}

/* Empty pages never aged out: lowat, or the primed reserve plus what
 * primes under way are gathering (dp_pool_prime). */
static size_t keep_pages_locked(const struct dp_pool *p)
{
    size_t r = p->reserve_pages + p->priming_pages;
    return p->lowat > r ? p->lowat : r;
}

/* ---- the pending queue ----------------------------------------------- */

/*
 * Take every page a put has queued and file it by its current count.  The
 * count is read by the same RMW that clears QUEUED, so a put that changes
 * the page afterwards sees QUEUED clear and queues it again: no
 * transition is lost.  qnext must be read before QUEUED is cleared (a
 * putter may re-queue the page and overwrite it right after).
 * aged (the reclaim pass after a depot trim, dp_pool_reclaim_pass): the
 * pages found empty were unused for age_ns already; they are stamped so
 * and filed at the oldest end of the empty list, due at once.
 */
static void drain_pending_locked(struct dp_pool *p, uint64_t now, bool aged)
{
    struct dp_page *pg = DP_LIFO_TAKE(&p->pending, memory_order_seq_cst);
    while (pg) {
        struct dp_page *next =
            atomic_load_explicit(&pg->qnext, memory_order_relaxed);
        uint32_t s = (uint32_t)atomic_fetch_and_explicit(
            &pg->state, ~(uint64_t)DP_PG_QUEUED, memory_order_acq_rel);
        uint32_t c = s & DP_PG_COUNT;
        if (c == 0) {
            if (pg->list != DP_L_EMPTY) {
                if (!now)
                    now = dp_pool_now(p);
                pg->empty_since = !aged             ? now
                                  : now > p->age_ns ? now - p->age_ns
                                                    : 0;
                move_to_locked(p, pg, DP_L_EMPTY);
                if (aged) { /* the oldest end, as its stamp says */
                    DP_LIST_REMOVE(&p->empty, pg, next, prev);
                    DP_LIST_PUSH_TAIL(&p->empty, pg, next, prev);
                }
            }
        } else if (c < pg->cap && pg->list == DP_L_FULL) {
            move_to_locked(p, pg, DP_L_PARTIAL);
        }
        pg = next;
    }
    if (p->empty.n > (p->hiwat > keep_pages_locked(p) ? p->hiwat
                                                      : keep_pages_locked(p)))
        dp_reclaim_ring();
}

void dp_drain_pending_locked(struct dp_pool *p, uint64_t now)
{
    drain_pending_locked(p, now, false);
}

/* ---- taking objects (pool lock) -------------------------------------- */

/* Up to `want` objects into objs[]: partial pages first, then empty pages
 * (newest first), then pages that puts have queued since.  Returns how
 * many; 0 when the pool has no free object. */
static uint32_t alloc_locked(struct dp_pool *p, uint32_t want, void **objs,
                             struct dp_chain *ch)
{
    bool drained = false;
    uint32_t got = 0; /* in objs[]; the chain holds ch->n more */
    for (;;) {
        struct dp_page *pg = p->partial.head;
        if (pg) {
            uint32_t left = want - got - (ch ? ch->n : 0);
            got += dp_page_take_locked(p, pg, left, objs + got, ch);
            if (got + (ch ? ch->n : 0) >= want)
                return got;
            move_to_locked(p, pg, DP_L_FULL);
            continue;
        }
        if ((pg = p->empty.head) != NULL) {
            /* No object is out and the page is off the pending queue, so
             * no putter can touch it: forget its free lists and carve it
             * afresh from the start.  This reads no object memory, where
             * walking the old free lists would miss the cache once per
             * object. */
            pg->lfree = NULL;
            atomic_store_explicit(
                &pg->state,
                atomic_load_explicit(&pg->state, memory_order_relaxed) &
                    DP_PG_LOW,
                memory_order_relaxed);
            pg->bump = 0;
            move_to_locked(p, pg, DP_L_PARTIAL);
            continue;
        }
        if (got || (ch && ch->n) || drained ||
            !atomic_load_explicit(&p->pending, memory_order_relaxed))
            return got;
        dp_drain_pending_locked(p, 0);
        drained = true;
    }
}

/*
 * Obtain one more page: reserve it against the hard limit (npages,
 * inflight), drop the pool lock for the provider call and the ctors,
 * retake it, and account the outcome.  Pool lock held on entry and exit;
 * the caller has checked npages < max_pages.  The page comes back on no
 * list; NULL when the provider failed or the ctor did (*why says which).
 */
struct dp_page *dp_pool_grow_locked(struct dp_pool *p, int flags,
                                    enum dp_pg_why *whyp)
{
    p->npages++;
    p->inflight++;
    pthread_mutex_unlock(p->lock);
    enum dp_pg_why why;
    struct dp_page *pg = dp_page_create(p, flags, &why);
    *whyp = why;
    pthread_mutex_lock(p->lock);
    p->inflight--;
    switch (why) {
    case DP_PG_OK:
        p->st_pages_alloc++;
        break;
    case DP_PG_CTOR_DEAD: /* still held: parked until returned */
        pg->next = p->dead;
        p->dead = pg;
        pg = NULL;
        p->st_pages_alloc++;
        break;
    case DP_PG_NOMEM:
        p->npages--;
        p->st_alloc_fail++;
        break;
    case DP_PG_CTOR_FREED:
        p->npages--;
        p->st_pages_alloc++;
        p->st_pages_freed++;
        break;
    }
    return pg;
}

/* File a new page as empty and ready (refill, prime); pool lock held. */
void dp_pool_add_empty_locked(struct dp_pool *p, struct dp_page *pg)
{
    pg->empty_since = dp_pool_now(p);
    move_to_locked(p, pg, DP_L_EMPTY);
    dp_wake_getters(p);
}

/* ---- returning pages -------------------------------------------------- */

/*
 * Move up to `budget` due empty pages (oldest first) onto *out.  Due:
 * beyond max(hiwat, keep), or, beyond keep, unused for age_ns.
 * ignore_age: everything beyond keep (explicit reclaim).  Dead pages
 * always go.  The pages stay counted in npages (as `freeing`) until
 * dp_release_pages() has given them back.
 */
size_t dp_collect_due_locked(struct dp_pool *p, uint64_t now, size_t budget,
                             bool ignore_age, struct dp_page **out)
{
    size_t n = 0, keep = keep_pages_locked(p);
    size_t urge = p->hiwat > keep ? p->hiwat : keep;
    while (p->dead) {
        struct dp_page *pg = p->dead;
        p->dead = pg->next;
        pg->next = *out;
        *out = pg;
        p->freeing++;
        n++;
    }
    while (n < budget && p->empty.n > keep) {
        struct dp_page *pg = p->empty.tail;
        bool due = ignore_age || p->empty.n > urge ||
                   now - pg->empty_since >= p->age_ns;
        if (!due)
            break;
        DP_LIST_REMOVE(&p->empty, pg, next, prev);
        pg->list = DP_L_NONE;
        pg->next = *out;
        *out = pg;
        p->freeing++;
        n++;
    }
    return n;
}

/* Give a list from dp_collect_due_locked() back.  Called without the pool
 * lock; may block in the provider.  Returns pages returned. */
size_t dp_release_pages(struct dp_pool *p, struct dp_page *list)
{
    size_t n = 0;
    while (list) {
        struct dp_page *next = list->next;
        DP_PROBE(page_free, p, p->name, list, p->pagesize);
        dp_page_destroy(p, list);
        list = next;
        n++;
    }
    if (n) {
        pthread_mutex_lock(p->lock);
        p->npages -= n;
        p->freeing -= n;
        p->st_pages_freed += n;
        pthread_mutex_unlock(p->lock);
        dp_wake_getters(p); /* room under the hard limit */
    }
    return n;
}

/* Allocate pages until lowat empty pages are ready (reclaim thread and
 * dp_reclaim_step only).  Returns pages allocated. */
size_t dp_pool_refill(struct dp_pool *p)
{
    size_t n = 0;
    pthread_mutex_lock(p->lock);
    while (p->empty.n + p->inflight < p->lowat && p->npages < p->max_pages) {
        enum dp_pg_why why;
        struct dp_page *pg = dp_pool_grow_locked(p, DP_WAITOK, &why);
        if (!pg)
            break;
        dp_pool_add_empty_locked(p, pg);
        n++;
    }
    pthread_mutex_unlock(p->lock);
    return n;
}

/* One reclaim pass over one pool: return due pages, keep lowat. */
size_t dp_pool_reclaim_pass(struct dp_pool *p, bool aged)
{
    struct dp_page *due = NULL;
    pthread_mutex_lock(p->lock);
    uint64_t now = dp_pool_now(p);
    drain_pending_locked(p, now, aged);
    dp_collect_due_locked(p, now, SIZE_MAX, false, &due);
    pthread_mutex_unlock(p->lock);
    return dp_release_pages(p, due); /* probed by the caller (reclaim.c) */
}

/* ---- waiting ----------------------------------------------------------- */

/*
 * Sleep until a put or a reclaim may have made room.  Called and returns
 * with the pool lock held.  The lost-wake-up argument (docs/design.md
 * §6): we publish `waiters` with a seq_cst RMW and then re-check
 * the pending queue with a seq_cst exchange; a putter pushes its page on
 * the pending queue with a seq_cst CAS and then loads `waiters` seq_cst.
 * In the single total order of seq_cst operations one of us sees the
 * other.  wake_seq is read before the re-check, so a wake between the
 * re-check and the futex wait makes the wait return at once.
 * Returns 0 to retry, ETIMEDOUT when the deadline has passed.
 */
static int wait_locked(struct dp_pool *p, uint64_t deadline, uint64_t retry)
{
    atomic_fetch_add_explicit(&p->waiters, 1, memory_order_seq_cst);
    /* From here on puts bypass thread caches, so what the caches hold now
     * is all they will hold: take it back, including from owners caught
     * inside a put (docs/design.md, "Thread caches").  Without the pool
     * lock: an owner inside its cache never waits for it. */
    if (p->tcidx >= 0) {
        pthread_mutex_unlock(p->lock);
        dp_tcache_drain_pool(p, true, false);
        pthread_mutex_lock(p->lock);
    }
    uint32_t seq = atomic_load_explicit(&p->wake_seq, memory_order_seq_cst);
    dp_drain_pending_locked(p, 0);
    if (p->partial.head || p->empty.head ||
        (!retry && p->npages < p->max_pages)) {
        atomic_fetch_sub_explicit(&p->waiters, 1, memory_order_relaxed);
        return 0;
    }
    uint64_t now = dp_mono_ns();
    if (deadline && now >= deadline) {
        atomic_fetch_sub_explicit(&p->waiters, 1, memory_order_relaxed);
        return ETIMEDOUT;
    }
    uint64_t until = deadline;
    if (retry && (!until || now + retry < until))
        until = now + retry;
    pthread_mutex_unlock(p->lock);
    dp_reclaim_ring(); /* other pools' empty pages may free the provider */
    DP_PROBE(get_sleep, p, p->name);
    uint64_t slept = DP_PROBES_ON ? dp_mono_ns() : 0;
    dp_futex_wait(&p->wake_seq, seq, until);
    slept = DP_PROBES_ON ? dp_mono_ns() - slept : 0;
    DP_PROBE(get_wake, p, p->name, slept);
    (void)slept;
    pthread_mutex_lock(p->lock);
    atomic_fetch_sub_explicit(&p->waiters, 1, memory_order_relaxed);
    return 0;
}

/* ---- get --------------------------------------------------------------- */

static void *pool_get(struct dp_pool *p, int flags, uint64_t deadline)
{
    if (DP_UNLIKELY(!p)) {
        errno = EINVAL;
        return NULL;
    }
    int mode = flags & (DP_WAITOK | DP_NOWAIT);
    if (DP_UNLIKELY((flags & ~(DP_WAITOK | DP_NOWAIT | DP_ZERO)) ||
                    (mode != DP_WAITOK && mode != DP_NOWAIT) ||
                    ((flags & DP_ZERO) && p->ctor))) {
        errno = EINVAL;
        return NULL;
    }
    bool waited = false;
    int err = 0;
    unsigned ctor_fails = 0; /* in a row, this get */
    void *o = NULL;
    /* The cache's hit path leaves a bin above its soft limit, and an
     * empty bin's refill from the depot, to us. */
    if (dp_tcache_pop_slow(p, &o)) {
        dp_an_get_asan(p, o);
        if (flags & DP_ZERO)
            memset(o, 0, p->objsize);
        return o;
    }
    if (mode == DP_WAITOK)
        dp_reclaim_start_due(); /* a fork child's, at its first miss */
    struct dp_page *due = NULL;
    /* With a thread cache, take a batch: one for the caller, the rest
     * for the cache, for one lock round trip.  The thread's first miss
     * creates its cache (docs/design.md §9). */
    uint32_t want = dp_tcache_want(p, mode == DP_NOWAIT);
    uint32_t got = 0;
    void *objs[DP_TC_MAXCAP / 2 + 1];
    struct dp_chain chain = {NULL, 0, want > 1 ? dp_tcache_chain_max(p) : 0};
    struct dp_chain *ch = chain.max > 1 ? &chain : NULL;

    DP_PROBE(get_slow, p, p->name, flags);
    pthread_mutex_lock(p->lock);
    for (;;) {
        if ((got = alloc_locked(p, want, objs, ch)) != 0) {
            o = objs[0];
            break;
        }
        if (chain.n) { /* the caller's object is the chain's first */
            o = chain.head;
            chain.head = dp_link_get_cached(p, o);
            chain.n--;
            objs[0] = o;
            got = 1;
            break;
        }
        /* No free object.  Inside one of this pool's own callbacks a new
         * page would run the same callback again, and a wait would wait
         * for room this thread holds: fail instead. */
        if (DP_UNLIKELY(dp_in_callback_of(p))) {
            err = EDEADLK;
            break;
        }
        uint64_t retry = 0;
        if (p->npages < p->max_pages) {
            enum dp_pg_why why;
            struct dp_page *pg = dp_pool_grow_locked(p, mode, &why);
            if (pg) {
                move_to_locked(p, pg, DP_L_PARTIAL);
                dp_wake_getters(p); /* the rest of the page is for them */
                continue;
            }
            /* A constructor that keeps failing is not a shortage that a
             * put can end: give up after DP_CTOR_TRIES pages in a row. */
            if (why != DP_PG_NOMEM && ++ctor_fails >= DP_CTOR_TRIES) {
                err = ENOMEM;
                break;
            }
            retry = DP_PROVIDER_RETRY_NS;
        }
        if (mode == DP_NOWAIT) {
            err = ENOMEM;
            break;
        }
        waited = true;
        if (wait_locked(p, deadline, retry) == ETIMEDOUT) {
            err = ETIMEDOUT;
            break;
        }
    }
    if (waited)
        p->st_gets_waited++;
    if (o) {
        p->st_gets++;
        if (mode == DP_WAITOK && (p->dead || p->empty.n > keep_pages_locked(p)))
            dp_collect_due_locked(p, dp_pool_now(p), p->budget, false, &due);
    } else {
        p->st_gets_failed++;
    }
    pthread_mutex_unlock(p->lock);

    if (due) {
        size_t n = dp_release_pages(p, due);
        DP_PROBE(pages_release, p, p->name, n, DP_BY_GET);
        (void)n;
    }
    if (!o) {
        errno = err;
        return NULL;
    }
    /* objs[0] is the caller's; the rest and the chain go to the bin. */
    if ((got > 1 || chain.n) &&
        !dp_tcache_fill(p, objs + 1, got - 1, chain.n ? &chain : NULL)) {
        dp_page_put_array(p, objs + 1, got - 1);
        if (chain.n)
            dp_page_put_chain(p, chain.head, chain.n);
    }
    dp_an_get_asan(p, o);
    dp_an_get_vg(p, o);
    /* Debug pools are uncached: got == 1.  Outside the lock: audit
     * calls backtrace(). */
    if (DP_UNLIKELY(p->debug))
        dp_debug_got(p, o);
    if (flags & DP_ZERO)
        memset(o, 0, p->objsize);
    return o;
}

/* The cache fast path for any valid flags; NULL: take the slow path. */
static inline void *cached_get(struct dp_pool *p, int flags)
{
    if (DP_LIKELY(flags == DP_NOWAIT || flags == DP_WAITOK))
        return dp_tcache_get(p);
    int mode = flags & ~DP_ZERO;
    if ((mode == DP_NOWAIT || mode == DP_WAITOK) && !p->ctor) {
        void *o = dp_tcache_get(p);
        if (o)
            memset(o, 0, p->objsize);
        return o;
    }
    return NULL; /* bad flags: the slow path reports them */
}

/* Everything dp_pool_get's fast path does not handle: DP_ZERO, bad
 * arguments, a bin's chain, an empty bin, no cache.  Out of line, so the
 * fast path keeps no stack frame. */
static DP_NOINLINE void *get_slow(struct dp_pool *p, int flags)
{
    if (p && (flags == DP_NOWAIT || flags == DP_WAITOK)) {
        void *c = dp_tcache_pop_chain(p);
        if (c)
            return c;
    }
    if (p && (flags & DP_ZERO)) {
        void *o = cached_get(p, flags);
        if (o)
            return o;
    }
    return pool_get(p, flags, 0); /* reports bad arguments */
}

DP_HOT_ALIGN void *dp_pool_get(dp_pool_t *p, int flags)
{
    void *o;
    if (DP_LIKELY(p != NULL && (flags == DP_NOWAIT || flags == DP_WAITOK)) &&
        DP_LIKELY(dp_tcache_pop_hit(p, &o, false)))
        return o;
    return get_slow(p, flags);
}

void *dp_pool_get_timed(dp_pool_t *p, int flags,
                        const struct timespec *deadline)
{
    if (DP_LIKELY(p != NULL)) {
        void *o = cached_get(p, flags);
        if (DP_LIKELY(o != NULL))
            return o;
    }
    /* The deadline is ignored for DP_NOWAIT, so it is not checked either;
     * bad flags are reported by pool_get. */
    uint64_t d = 0;
    if (deadline && !(flags & DP_NOWAIT)) {
        if (deadline->tv_sec < 0 || deadline->tv_nsec < 0 ||
            deadline->tv_nsec >= (long)DP_NS) {
            errno = EINVAL;
            return NULL;
        }
        /* Beyond 2554 a deadline does not fit in 64-bit nanoseconds: no
         * bound (0 means "no deadline" internally). */
        if ((uint64_t)deadline->tv_sec <= DP_TV_SEC_MAX) {
            d = (uint64_t)deadline->tv_sec * DP_NS +
                (uint64_t)deadline->tv_nsec;
            if (d == 0)
                d = 1;
        }
    }
    return pool_get(p, flags, d);
}

/* ---- put --------------------------------------------------------------- */

/* Return every empty page beyond keep, regardless of age (explicit
 * reclaim; and, through the page layer's emptied callback,
 * DP_IPOOL_IMMEDIATE puts).  Takes and drops the pool
 * lock; the provider is called without it. */
static size_t release_all_empty(struct dp_pool *p, int by)
{
    struct dp_page *due = NULL;
    pthread_mutex_lock(p->lock);
    dp_drain_pending_locked(p, 0);
    dp_collect_due_locked(p, 0, SIZE_MAX, true, &due);
    pthread_mutex_unlock(p->lock);
    size_t n = dp_release_pages(p, due);
    DP_PROBE(pages_release, p, p->name, n, by);
    (void)by;
    return n;
}

/* The page layer's emptied callback (page.h), registered at load. */
static size_t release_immediate(struct dp_pool *p)
{
    return release_all_empty(p, DP_BY_IMMEDIATE);
}

__attribute__((constructor)) static void pool_register_callbacks(void)
{
    dp_page_set_emptied_cb(release_immediate);
}

/* A put that does not go into a thread cache.  Out of line, so that
 * dp_pool_put's fast path keeps no stack frame. */
static DP_NOINLINE void put_uncached(struct dp_pool *p, void *obj)
{
    if (DP_UNLIKELY(!obj))
        return;
    if (DP_UNLIKELY(!p)) {
        errno = EINVAL;
        return;
    }
    dp_tcache_put_miss(p, obj);
}

DP_HOT_ALIGN void dp_pool_put(dp_pool_t *p, void *obj)
{
    if (DP_AN_ASAN && p && obj)
        dp_an_put_asan(p, obj);
    if (DP_LIKELY(p && obj) && DP_LIKELY(dp_tcache_put(p, obj)))
        return;
    put_uncached(p, obj);
}

/* ---- reclaim and prime --------------------------------------------------- */

size_t dp_pool_reclaim(dp_pool_t *p)
{
    if (!p) {
        errno = EINVAL;
        return 0;
    }
    dp_reclaim_start_due(); /* a fork child's (pool.h) */
    dp_tcache_drain_pool(p, false, false); /* cached objects pin pages */
    return release_all_empty(p, DP_BY_RECLAIM);
}
