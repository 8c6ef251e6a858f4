/*
 * pool.c -- the pool layer: create/destroy, get, the lock-free put, the
 * pending queue of pages that puts changed, and the choice of which empty
 * pages are due to go back.  docs/design.md, "Pools", "The put path" and
 * "Waiting".
 */
#include "dp_internal.h"
#include "probes.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* A DP_WAITOK get whose provider call failed retries after this long even
 * if nobody wakes it (as NetBSD's pool_get sleeps with a timeout when the
 * back-end fails): the provider's memory may come back from elsewhere. */
#define DP_PROVIDER_RETRY_NS 10000000ull /* 10 ms */

/* Nanoseconds in a second, and the largest tv_sec whose deadline still
 * fits a 64-bit nanosecond count (the year 2554). */
#define DP_NS 1000000000ull
#define DP_TV_SEC_MAX ((UINT64_MAX - (DP_NS - 1)) / DP_NS)

/* ---- page lists (pool lock) ------------------------------------------ */

static void list_remove(struct dp_list *l, struct dp_page *pg)
{
    if (pg->prev)
        pg->prev->next = pg->next;
    else
        l->head = pg->next;
    if (pg->next)
        pg->next->prev = pg->prev;
    else
        l->tail = pg->prev;
    pg->next = pg->prev = NULL;
    l->n--;
}

static void list_push_head(struct dp_list *l, struct dp_page *pg)
{
    pg->prev = NULL;
    pg->next = l->head;
    if (l->head)
        l->head->prev = pg;
    else
        l->tail = pg;
    l->head = pg;
    l->n++;
}

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
        list_remove(from, pg);
    pg->list = to;
    list_push_head(list_of(p, to), pg);
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
 */
void dp_drain_pending_locked(struct dp_pool *p, uint64_t now)
{
    struct dp_page *pg =
        atomic_exchange_explicit(&p->pending, NULL, memory_order_seq_cst);
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
                pg->empty_since = now;
                move_to_locked(p, pg, DP_L_EMPTY);
            }
        } else if (c < pg->cap && pg->list == DP_L_FULL) {
            move_to_locked(p, pg, DP_L_PARTIAL);
        }
        pg = next;
    }
    if (p->empty.n > (p->hiwat > keep_pages_locked(p) ? p->hiwat
                                                      : keep_pages_locked(p)))
        dp_reclaim_wake();
}

/* ---- taking objects (pool lock) -------------------------------------- */

static void debug_mark_out(struct dp_pool *p, struct dp_page *pg, void *obj)
{
    size_t i = (size_t)((char *)obj - pg->slots) / p->slotsize;
    uint64_t bit = 1ull << (i % 64);
    uint64_t old = atomic_fetch_or_explicit(&pg->outmap[i / 64], bit,
                                            memory_order_relaxed);
    if (old & bit) {
        fprintf(stderr,
                "deferpool: pool '%s': object %p handed out twice "
                "(free list corrupted: use after put?)\n",
                p->name, obj);
        abort();
    }
}

/* Take up to `want` objects from one page into objs[], or, when ch is
 * given and holds no chain yet, the whole put stack as a chain (*ch) if
 * it is no longer than ch->max.  Returns how many went into objs[];
 * with the chain's, fewer than `want` only when every object of the
 * page is out, so the
 * page can go on the full list: any later put then sees the count drop
 * from full and queues the page again.  Order: the lock's free list, the
 * put stack (taken whole with one CAS), then the bump region, which
 * touches no object memory.
 *
 * The count is raised once per batch.  A put pushes its objects and
 * lowers the count in one CAS, so when the page looked exhausted but the
 * count after our add is below cap, puts have landed on the stack since
 * we took it: take them too rather than strand them on a full-listed
 * page. */
static uint32_t page_take_locked(struct dp_pool *p, struct dp_page *pg,
                                 uint32_t want, void **objs,
                                 struct dp_chain *ch)
{
    uint32_t k = 0, cn = 0; /* taken into objs[], and as a chain */
    for (;;) {
        uint32_t k0 = k, c = 0;
        void *o = pg->lfree;
        if (!o) {
            /* Take the whole put stack, leaving the count as it is. */
            uint64_t s = atomic_load_explicit(&pg->state, memory_order_relaxed);
            while ((s >> DP_PG_TOP_SHIFT) != 0 &&
                   !atomic_compare_exchange_weak_explicit(
                       &pg->state, &s, s & DP_PG_LOW, memory_order_acquire,
                       memory_order_relaxed))
                ;
            o = dp_pg_top(pg, s);
            /* With the lock's list empty, every carved object is either
             * out (the count this CAS read) or on the stack just taken:
             * its length is known, so it can go to the bin unwalked
             * (cache.c, "Chains"). */
            if (o && ch && !ch->head && k < want) {
                uint32_t len = pg->bump - ((uint32_t)s & DP_PG_COUNT);
                if (len <= ch->max) {
                    ch->head = o;
                    ch->n = c = len;
                    cn += len;
                    o = NULL;
                }
            }
        }
        uint32_t have = k + cn;
        while (o && have < want) {
            objs[k++] = o;
            have++;
            o = *dp_link(p, o);
        }
        pg->lfree = o;
        if (have < want && pg->bump < pg->cap) {
            uint32_t n = pg->cap - pg->bump;
            if (n > want - have)
                n = want - have;
            char *s = pg->slots + (size_t)pg->bump * p->slotsize;
            for (uint32_t i = 0; i < n; i++, s += p->slotsize)
                objs[k + i] = s;
            pg->bump += n;
            k += n;
            have += n;
        }
        if (p->debug)
            for (uint32_t i = k0; i < k; i++)
                debug_mark_out(p, pg, objs[i]);
        /* Only lock holders increment; putters decrement.  Relaxed is
         * enough for the objects handed out: one reaches a putter only
         * through the user's own synchronisation, which orders this
         * increment before its put. */
        uint32_t add = k - k0 + c;
        uint32_t s = (uint32_t)atomic_fetch_add_explicit(
            &pg->state, add, memory_order_acquire);
        if (have >= want || (s & DP_PG_COUNT) + add >= pg->cap)
            return k;
    }
}

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
            got += page_take_locked(p, pg, left, objs + got, ch);
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
static struct dp_page *grow_locked(struct dp_pool *p, int flags,
                                   enum dp_pg_why *whyp)
{
    p->npages++;
    p->inflight++;
    pthread_mutex_unlock(&p->lock);
    enum dp_pg_why why;
    struct dp_page *pg = dp_page_create(p, flags, &why);
    *whyp = why;
    pthread_mutex_lock(&p->lock);
    p->inflight--;
    switch (why) {
    case DP_PG_OK:
    case DP_PG_CTOR_DEAD: /* still held, on the dead list */
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
static void add_empty_locked(struct dp_pool *p, struct dp_page *pg)
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
        list_remove(&p->empty, pg);
        pg->list = DP_L_NONE;
        pg->next = *out;
        *out = pg;
        p->freeing++;
        n++;
    }
    return n;
}

void dp_wake_getters(struct dp_pool *p)
{
    if (atomic_load_explicit(&p->waiters, memory_order_seq_cst)) {
        atomic_fetch_add_explicit(&p->wake_seq, 1, memory_order_seq_cst);
        dp_futex_wake_all(&p->wake_seq);
    }
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
        pthread_mutex_lock(&p->lock);
        p->npages -= n;
        p->freeing -= n;
        p->st_pages_freed += n;
        pthread_mutex_unlock(&p->lock);
        dp_wake_getters(p); /* room under the hard limit */
    }
    return n;
}

/* Allocate pages until lowat empty pages are ready (reclaim thread and
 * dp_reclaim_step only).  Returns pages allocated. */
size_t dp_pool_refill(struct dp_pool *p)
{
    size_t n = 0;
    pthread_mutex_lock(&p->lock);
    while (p->empty.n + p->inflight < p->lowat && p->npages < p->max_pages) {
        enum dp_pg_why why;
        struct dp_page *pg = grow_locked(p, DP_WAITOK, &why);
        if (!pg)
            break;
        add_empty_locked(p, pg);
        n++;
    }
    pthread_mutex_unlock(&p->lock);
    return n;
}

/* One reclaim pass over one pool: return due pages, keep lowat. */
size_t dp_pool_reclaim_pass(struct dp_pool *p)
{
    struct dp_page *due = NULL;
    pthread_mutex_lock(&p->lock);
    uint64_t now = dp_pool_now(p);
    dp_drain_pending_locked(p, now);
    dp_collect_due_locked(p, now, SIZE_MAX, false, &due);
    pthread_mutex_unlock(&p->lock);
    return dp_release_pages(p, due); /* probed by the caller (reclaim.c) */
}

/* ---- waiting ----------------------------------------------------------- */

/*
 * Sleep until a put or a reclaim may have made room.  Called and returns
 * with the pool lock held.  The lost-wake-up argument (docs/design.md,
 * "Waiting"): we publish `waiters` with a seq_cst RMW and then re-check
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
        pthread_mutex_unlock(&p->lock);
        dp_tcache_drain_pool(p, true, false);
        pthread_mutex_lock(&p->lock);
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
    pthread_mutex_unlock(&p->lock);
    dp_reclaim_wake(); /* other pools' empty pages may free the provider */
    DP_PROBE(get_sleep, p, p->name);
    uint64_t slept = DP_PROBES_ON ? dp_mono_ns() : 0;
    dp_futex_wait(&p->wake_seq, seq, until);
    slept = DP_PROBES_ON ? dp_mono_ns() - slept : 0;
    DP_PROBE(get_wake, p, p->name, slept);
    (void)slept;
    pthread_mutex_lock(&p->lock);
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
    /* The cache's hit path leaves a bin above its soft limit to us. */
    if (DP_UNLIKELY(dp_tcache_pop_over(p, &o))) {
        if (flags & DP_ZERO)
            memset(o, 0, p->objsize);
        return o;
    }
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
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if ((got = alloc_locked(p, want, objs, ch)) != 0) {
            o = objs[0];
            break;
        }
        if (chain.n) { /* the caller's object is the chain's first */
            o = chain.head;
            chain.head = *dp_link(p, o);
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
            struct dp_page *pg = grow_locked(p, mode, &why);
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
    pthread_mutex_unlock(&p->lock);

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
 * arguments, an empty bin, no cache.  Out of line, so the fast path keeps
 * no stack frame. */
static DP_NOINLINE void *get_slow(struct dp_pool *p, int flags)
{
    if (p && (flags & DP_ZERO)) {
        void *o = cached_get(p, flags);
        if (o)
            return o;
    }
    return pool_get(p, flags, 0); /* reports bad arguments */
}

void *dp_pool_get(dp_pool_t *p, int flags)
{
    void *o;
    if (DP_LIKELY(p != NULL && (flags == DP_NOWAIT || flags == DP_WAITOK)) &&
        DP_LIKELY(dp_tcache_pop(p, &o)))
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

static void debug_check_put(struct dp_pool *p, struct dp_page *pg, void *obj)
{
    if (dp_pagemap_get(obj) != dp_pm_pool(p) || pg->magic != DP_PAGE_MAGIC ||
        pg->pool != p) {
        fprintf(stderr,
                "deferpool: pool '%s': put of foreign pointer %p "
                "(not an object of this pool)\n",
                p->name, obj);
        abort();
    }
    size_t off = (size_t)((char *)obj - pg->slots);
    if ((char *)obj < pg->slots || off % p->slotsize != 0 ||
        off / p->slotsize >= pg->cap) {
        fprintf(stderr,
                "deferpool: pool '%s': put of %p, which is not the start "
                "of an object\n",
                p->name, obj);
        abort();
    }
    size_t i = off / p->slotsize;
    uint64_t bit = 1ull << (i % 64);
    uint64_t old = atomic_fetch_and_explicit(&pg->outmap[i / 64], ~bit,
                                             memory_order_relaxed);
    if (!(old & bit)) {
        fprintf(stderr, "deferpool: pool '%s': double put of %p\n", p->name,
                obj);
        abort();
    }
}

/* Return every empty page beyond keep, regardless of age (explicit
 * reclaim; and DP_IPOOL_IMMEDIATE puts, below).  Takes and drops the pool
 * lock; the provider is called without it. */
static size_t release_all_empty(struct dp_pool *p, int by)
{
    struct dp_page *due = NULL;
    pthread_mutex_lock(&p->lock);
    dp_drain_pending_locked(p, 0);
    dp_collect_due_locked(p, 0, SIZE_MAX, true, &due);
    pthread_mutex_unlock(&p->lock);
    size_t n = dp_release_pages(p, due);
    DP_PROBE(pages_release, p, p->name, n, by);
    (void)by;
    return n;
}

/*
 * Return a run of k objects of one page (first..last linked through their
 * link words).  Lock-free, no system call (but the one documented
 * wake-up), no provider call, no sleep.  Memory ordering
 * (docs/design.md, "The put path"):
 *  1. One release CAS on the page's state word pushes the run on the put
 *     stack (the top is stored as an offset in the high half) and
 *     subtracts k from the count in the low half; the link writes are
 *     visible to the lock holder that takes the stack with an acquire
 *     CAS.  In the same step it sets QUEUED if this put made the page
 *     empty or took it from full (count >= cap) to not full, and nobody
 *     has queued it yet.  Doing all of it in one RMW matters: after the
 *     count reaches 0 a page may be recycled, and only the QUEUED bit we
 *     own keeps it alive until it is drained.
 *  2. Only the putter that set QUEUED touches the page again: it links it
 *     on the pool's pending stack (seq_cst CAS), then loads `waiters`
 *     (seq_cst) and wakes sleeping getters if there are any.
 */
static void page_put_run(struct dp_pool *p, struct dp_page *pg, void *first,
                         void *last, uint32_t k)
{
    uint64_t top = (uint64_t)((char *)first - (char *)pg) << DP_PG_TOP_SHIFT;
    uint64_t s = atomic_load_explicit(&pg->state, memory_order_relaxed), ns;
    bool queue;
    do {
        *dp_link(p, last) = dp_pg_top(pg, s);
        uint32_t lo = (uint32_t)s;
        uint32_t c = lo & DP_PG_COUNT;
        if (DP_UNLIKELY(c < k)) {
            fprintf(stderr,
                    "deferpool: pool '%s': put of %p to a page with fewer "
                    "objects out (double put or foreign pointer)\n",
                    p->name, first);
            abort();
        }
        uint32_t nc = c - k;
        queue = !(lo & DP_PG_QUEUED) &&
                (nc == 0 || (c >= pg->cap && nc < pg->cap));
        ns = top | (lo & DP_PG_QUEUED) | nc | (queue ? DP_PG_QUEUED : 0);
    } while (!atomic_compare_exchange_weak_explicit(
        &pg->state, &s, ns, memory_order_release, memory_order_relaxed));

    if (queue) {
        struct dp_page *h =
            atomic_load_explicit(&p->pending, memory_order_relaxed);
        do {
            atomic_store_explicit(&pg->qnext, h, memory_order_relaxed);
        } while (!atomic_compare_exchange_weak_explicit(
            &p->pending, &h, pg, memory_order_seq_cst,
            memory_order_relaxed));
        /* A nop unless traced: no syscall, no lock. */
        DP_PROBE(put_queue, p, p->name, pg, (ns & DP_PG_COUNT) == 0);
        dp_wake_getters(p);
    }
    /* DP_IPOOL_IMMEDIATE: what a naive pool does when a put empties a page
     * -- take the pool lock and give the page back to the provider right
     * here, inside the put.  It breaks deferpool's promise on purpose, so
     * the benchmarks can show what deferral buys; put_provider_calls counts
     * it.  Whoever queued it, an emptied page is on the pending queue now. */
    if (DP_UNLIKELY(p->flags & DP_IPOOL_IMMEDIATE) && (ns & DP_PG_COUNT) == 0)
        release_all_empty(p, DP_BY_IMMEDIATE);
}

/* Put one object straight to its page (no thread cache), from a put:
 * provider calls made meanwhile count as put_provider_calls. */
void dp_page_put(struct dp_pool *p, void *obj)
{
    struct dp_page *pg = (struct dp_page *)((uintptr_t)obj & p->pagemask);
    if (DP_UNLIKELY(p->debug))
        debug_check_put(p, pg, obj);
    dp_in_put++;
    page_put_run(p, pg, obj, obj, 1);
    dp_in_put--;
}

/* Put objs[0..n) (a flushed cache) to their pages, one CAS per run of
 * objects from the same page, but no more than max_runs runs: returns
 * how many objects went back (all n unless the run limit stopped it,
 * and at least one).  The run is linked through the objects' link words
 * here, the only object memory a flush writes. */
uint32_t dp_page_put_runs(struct dp_pool *p, void *const *objs, uint32_t n,
                          uint32_t max_runs)
{
    uint32_t i = 0, runs = 0;
    while (i < n && runs++ < max_runs) {
        struct dp_page *pg =
            (struct dp_page *)((uintptr_t)objs[i] & p->pagemask);
        uint32_t j = i + 1;
        while (j < n &&
               (struct dp_page *)((uintptr_t)objs[j] & p->pagemask) == pg) {
            *dp_link(p, objs[j - 1]) = objs[j];
            j++;
        }
        page_put_run(p, pg, objs[i], objs[j - 1], j - i);
        i = j;
    }
    return i;
}

void dp_page_put_array(struct dp_pool *p, void *const *objs, uint32_t n)
{
    dp_page_put_runs(p, objs, n, UINT32_MAX);
}

/* A chain is one page's put stack, still linked: one run, once its last
 * object is found. */
void dp_page_put_chain(struct dp_pool *p, void *head, uint32_t n)
{
    if (!n)
        return;
    void *last = head;
    for (uint32_t i = 1; i < n; i++)
        last = *dp_link(p, last);
    page_put_run(p, (struct dp_page *)((uintptr_t)head & p->pagemask), head,
                 last, n);
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
    dp_page_put(p, obj);
}

void dp_pool_put(dp_pool_t *p, void *obj)
{
    if (DP_LIKELY(p && obj) && DP_LIKELY(dp_tcache_put(p, obj)))
        return;
    put_uncached(p, obj);
}

/* ---- create / destroy --------------------------------------------------- */

static bool is_pow2(size_t x) { return x && !(x & (x - 1)); }

/*
 * Pool memory is never unmapped.  The put that returns a pool's last
 * object reads the pool's `waiters` word after the page it emptied is on
 * the pending queue, where destroy can see it; so a destroy that raced
 * it may be done before that read.  Destroyed pools wait here, linked
 * through reg_next, for the next create.  A lock-free stack with push and
 * take-all only (no ABA): a create takes the whole stack, keeps the first
 * and pushes the rest back as one chain.  No lock, so nothing to do at
 * fork.
 */
#define DP_POOL_MAPSIZE ((sizeof(struct dp_pool) + 4095) & ~(size_t)4095)
static struct dp_pool *_Atomic dp_spare_pools;

static void spare_push(struct dp_pool *first, struct dp_pool *last)
{
    struct dp_pool *h = atomic_load_explicit(&dp_spare_pools, DP_RLX);
    do {
        last->reg_next = h;
    } while (!atomic_compare_exchange_weak_explicit(
        &dp_spare_pools, &h, first, memory_order_release, DP_RLX));
}

static struct dp_pool *pool_mem(void)
{
    struct dp_pool *p =
        atomic_exchange_explicit(&dp_spare_pools, NULL, memory_order_acquire);
    if (p) {
        struct dp_pool *rest = p->reg_next, *last = rest;
        if (rest) {
            while (last->reg_next)
                last = last->reg_next;
            spare_push(rest, last);
        }
        memset(p, 0, DP_POOL_MAPSIZE);
        return p;
    }
    p = mmap(NULL, DP_POOL_MAPSIZE, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* A put between its CAS, which took a page's count to 0 and set QUEUED,
 * and its push onto the pending queue: the page is not on the queue yet,
 * but every object of it is home.  Destroy waits for such puts instead of
 * counting their pages as busy. */
static bool put_in_flight_locked(struct dp_pool *p)
{
    struct dp_list *lists[2] = {&p->partial, &p->full};
    for (int i = 0; i < 2; i++)
        for (struct dp_page *pg = lists[i]->head; pg; pg = pg->next) {
            uint64_t st = atomic_load_explicit(&pg->state, DP_RLX);
            if ((st & DP_PG_QUEUED) && (st & DP_PG_COUNT) == 0)
                return true;
        }
    return false;
}

void dp_pool_attr_init(dp_pool_attr_t *a)
{
    if (!a)
        return;
    memset(a, 0, sizeof(*a));
    a->lowat = DP_DEFAULT_LOWAT;
    a->hiwat = DP_DEFAULT_HIWAT;
    a->reclaim_age_ns = 0; /* library default, DEFERPOOL_CONF reclaim_age_ms */
    a->reclaim_budget = DP_DEFAULT_RECLAIM_BUDGET;
}

dp_pool_t *dp_pool_create(const char *name, size_t objsize,
                          const dp_pool_attr_t *attr)
{
    return dp_pool_create_ex(name, objsize, attr, 0);
}

dp_pool_t *dp_pool_create_ex(const char *name, size_t objsize,
                             const dp_pool_attr_t *attr, unsigned iflags)
{
    dp_pool_attr_t def;
    if (!attr) {
        dp_pool_attr_init(&def);
        attr = &def;
    }
    const struct dp_options *opt = dp_options();
    bool debug = (attr->flags & DP_POOL_DEBUG) || opt->debug;
    size_t align = attr->align ? attr->align : (objsize < 16 ? 8 : 16);
    if (objsize == 0 || objsize > DP_PAGESIZE_MAX || !is_pow2(align) ||
        align > DP_PAGESIZE_MAX / 2 ||
        (attr->flags &
         ~(unsigned)(DP_POOL_DEBUG | DP_POOL_NOTHREAD | DP_POOL_NOCACHE)) ||
        (attr->pagesize &&
         (!is_pow2(attr->pagesize) || attr->pagesize < 4096 ||
          attr->pagesize > DP_PAGESIZE_MAX)) ||
        (attr->hiwat && attr->lowat > attr->hiwat) ||
        (attr->max_pages && attr->lowat > attr->max_pages)) {
        errno = EINVAL;
        return NULL;
    }
    if (align < sizeof(void *))
        align = sizeof(void *);
    /* With a ctor the free-list link lives after the object so that it
     * never clobbers constructed state. */
    size_t linkoff = 0, slot = objsize;
    if (attr->ctor) {
        linkoff = (objsize + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
        slot = linkoff + sizeof(void *);
    }
    if (slot < sizeof(void *))
        slot = sizeof(void *);
    slot = (slot + align - 1) & ~(align - 1);

    size_t pagesize = attr->pagesize, hdr;
    uint32_t cap;
    if (pagesize) {
        dp_page_layout(pagesize, slot, align, debug, &hdr, &cap);
    } else {
        /* 64 KiB pages, as mimalloc's small pages: one provider call
         * per many objects; bigger only to hold at least 8 objects. */
        for (pagesize = DP_PAGESIZE_DEFAULT_MIN;; pagesize <<= 1) {
            dp_page_layout(pagesize, slot, align, debug, &hdr, &cap);
            if (cap >= 8 || (pagesize >= ((size_t)1 << 20) && cap >= 1) ||
                pagesize == DP_PAGESIZE_MAX)
                break;
        }
    }
    if (cap == 0) {
        errno = EINVAL;
        return NULL;
    }

    struct dp_pool *p = pool_mem();
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    /* Zeroed: every counter and list starts empty. */
    snprintf(p->name, sizeof(p->name), "%s", name ? name : "");
    p->objsize = objsize;
    p->slotsize = slot;
    p->align = align;
    p->pagesize = pagesize;
    p->linkoff = linkoff;
    p->pagemask = ~(uintptr_t)(pagesize - 1);
    p->hdrsize = hdr;
    p->cap = cap;
    p->ctor = attr->ctor;
    p->dtor = attr->dtor;
    p->cbarg = attr->cbarg;
    p->prov = attr->provider ? *attr->provider : *dp_provider_mmap();
    p->max_pages = attr->max_pages ? attr->max_pages : SIZE_MAX;
    p->clock = attr->clock;
    p->clock_arg = attr->clock_arg;
    p->flags = attr->flags | (iflags & DP_IPOOL_IMMEDIATE);
    p->debug = debug;
    p->pagemap = debug || (iflags & DP_IPOOL_PAGEMAP);
    p->lowat = attr->lowat;
    p->hiwat = attr->hiwat;
    p->budget = attr->reclaim_budget ? attr->reclaim_budget
                                     : DP_DEFAULT_RECLAIM_BUDGET;
    p->age_ns = attr->reclaim_age_ns ? attr->reclaim_age_ns
                                     : opt->reclaim_age_ns;
    pthread_mutex_init(&p->lock, NULL);
    dp_tcache_pool_init(p);
    dp_registry_add(p);
    if (!(attr->flags & DP_POOL_NOTHREAD) && opt->background_thread)
        dp_reclaim_autostart();
    return p;
}

int dp_pool_destroy(dp_pool_t *p)
{
    if (!p) {
        errno = EINVAL;
        return -1;
    }
    dp_registry_remove(p); /* waits for a reclaim pass using it */
    dp_tcache_drain_pool(p, true, true); /* every thread's bin, and its index */
    struct dp_page *all = NULL;
    pthread_mutex_lock(&p->lock);
    dp_drain_pending_locked(p, 0);
    while (put_in_flight_locked(p)) {
        pthread_mutex_unlock(&p->lock);
        sched_yield();
        pthread_mutex_lock(&p->lock);
        dp_drain_pending_locked(p, 0);
    }
    if (p->partial.n || p->full.n || p->inflight || p->freeing) {
        uint64_t out = 0;
        for (struct dp_page *pg = p->partial.head; pg; pg = pg->next)
            out += atomic_load(&pg->state) & DP_PG_COUNT;
        for (struct dp_page *pg = p->full.head; pg; pg = pg->next)
            out += atomic_load(&pg->state) & DP_PG_COUNT;
        pthread_mutex_unlock(&p->lock);
        fprintf(stderr,
                "deferpool: dp_pool_destroy('%s'): %llu object(s) still "
                "out; pool left intact\n",
                p->name, (unsigned long long)out);
        if (p->debug)
            abort();
        dp_tcache_pool_init(p);
        dp_registry_add(p);
        errno = EBUSY;
        return -1;
    }
    size_t lowat = p->lowat, reserve = p->reserve_pages;
    p->lowat = p->reserve_pages = 0;
    dp_collect_due_locked(p, 0, SIZE_MAX, true, &all);
    p->lowat = lowat;
    p->reserve_pages = reserve;
    pthread_mutex_unlock(&p->lock);
    size_t n = dp_release_pages(p, all);
    DP_PROBE(pages_release, p, p->name, n, DP_BY_DESTROY);
    (void)n;
    pthread_mutex_destroy(&p->lock);
    spare_push(p, p);
    return 0;
}

/* ---- reclaim and prime --------------------------------------------------- */

size_t dp_pool_reclaim(dp_pool_t *p)
{
    if (!p) {
        errno = EINVAL;
        return 0;
    }
    dp_tcache_drain_pool(p, false, false); /* cached objects pin pages */
    return release_all_empty(p, DP_BY_RECLAIM);
}

/* Pages of this size the machine could ever back: the bound of a prime
 * on a pool without a hard limit. */
static size_t phys_pages_of(size_t pagesize)
{
    long n = sysconf(_SC_PHYS_PAGES), sz = sysconf(_SC_PAGESIZE);
    if (n <= 0 || sz <= 0)
        return SIZE_MAX;
    if ((size_t)n > SIZE_MAX / (size_t)sz)
        return SIZE_MAX / pagesize;
    return (size_t)n * (size_t)sz / pagesize;
}

/*
 * The request is checked first, without calling the provider: the pages
 * nobjs objects need must fit under max_pages and in the machine's
 * physical memory.  While the prime gathers pages they count towards
 * keep (priming_pages), so that no reclaim returns them under it; the
 * reserve is raised only when it succeeds.  A prime that fails gives back
 * as many empty pages as it obtained and leaves the reserve as it was.
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
    pthread_mutex_lock(&p->lock);
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
        struct dp_page *pg = grow_locked(p, DP_WAITOK, &why);
        if (!pg) {
            err = ENOMEM;
            break;
        }
        add_empty_locked(p, pg);
        added++;
    }
    p->priming_pages -= need;
    struct dp_page *back = NULL;
    if (!err && nobjs > p->reserve_objs) {
        p->reserve_objs = nobjs;
        p->reserve_pages = need;
    } else if (err && added) {
        dp_collect_due_locked(p, 0, added, true, &back);
    }
    pthread_mutex_unlock(&p->lock);
    if (back)
        dp_release_pages(p, back);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}
