/*
 * cache_impl.h -- the thread-cache layer's own shared state, between its
 * two files: cache.c (a thread's own cache: create, refill, flush, exit)
 * and drain.c (other threads' caches: claims, drains, GC, fork).
 * Nothing outside the layer includes it.  docs/design.md, "Thread caches".
 */
#ifndef DP_CACHE_IMPL_H
#define DP_CACHE_IMPL_H

#include "cache.h"
#include "os.h"

/* Every thread's cache and the bin indices. */
struct dp_tcg {
    pthread_mutex_t lock;  /* the list, seen_sig, bin indices, and every
                              drain (drainers are serialised by it)    */
    struct dp_tcache_list caches; /* lock: every thread's cache        */
    uint64_t used[DP_TC_BINS / 64]; /* bin indices given to pools      */
    pthread_key_t key;     /* destructor flushes a thread's cache;
                              set once by tcg_init (pthread_once)    */
    int state;             /* 0 untried, 1 usable, -1 no membarrier;
                              set once by tcg_init (pthread_once)    */
    bool adopt;            /* caches may be adopted (key low enough,
                              cache.c "Adopted caches"); as state   */
    bool forking;          /* lock: a fork holds the claims ("Fork")  */
    bool fork_walk;        /* lock: the fork handlers after the fork
                              have caches to see to: another thread's,
                              or this one's flags to clear (drain.c) */
    struct dp_tcache *spare; /* lock: caches of exited threads, kept
                                for the next new thread (cache.c,
                                "Spare caches"), linked by next       */
    unsigned nspare;       /* lock: caches on `spare`                 */
    _Atomic(struct dp_tcache *) ready; /* a cache on the list, owned by
                              no thread, for the next thread that puts
                              without one to adopt (cache.c, "Adopted
                              caches"): stored under lock from NULL,
                              taken by an adopter's exchange          */
    _Atomic uint32_t ready_want; /* relaxed: set by a put that found no
                              cache and none ready, cleared by the get
                              slow path or reclaim pass that makes one */
};
extern DP_HIDDEN struct dp_tcg dp_tcg;

/* Each bin's stack lives in an area twice the largest tc_max: a flush
 * takes the bottom of the stack and moves the stack's base up instead of
 * moving the rest down, and only when the base has gone past twice its
 * pool's tc_max does the stack move back to the start of the area
 * (cache.c, bin_drop_oldest). */
#define DP_TC_AREA ((size_t)2 * DP_TC_MAXCAP)
#define DP_TC_SLOTMEM ((size_t)DP_TC_BINS * DP_TC_AREA * sizeof(void *))

/* The start of bin i's slot area. */
static inline void **bin_area(struct dp_tcache *tc, size_t i)
{
    return tc->slotmem + i * DP_TC_AREA;
}

/* A young bin's stack: DP_TC_YOUNG slots of its own, after every bin's
 * area, eight bins' to a page, so that the bins a short-lived thread or
 * process uses share their first page instead of faulting in one or two
 * each (cache.c, "Young bins"). */
#define DP_TC_YOUNG ((size_t)64)
#define DP_TC_YOUNGMEM ((size_t)DP_TC_BINS * DP_TC_YOUNG * sizeof(void *))

static inline void **young_area(struct dp_tcache *tc, size_t i)
{
    return tc->slotmem + DP_TC_BINS * DP_TC_AREA + i * DP_TC_YOUNG;
}

/* Whether bin b's stack is in its young area (started, not grown). */
static inline bool bin_young(struct dp_tcache *tc, const struct dp_tbin *b)
{
    return b->slots >= young_area(tc, 0);
}

/* Where bin b's stack starts over: the bottom of its young area while
 * young, else of its own area. */
static inline void **bin_base(struct dp_tcache *tc, const struct dp_tbin *b)
{
    size_t i = (size_t)(b - tc->bins);
    return bin_young(tc, b) ? young_area(tc, i) : bin_area(tc, i);
}

/* One mapping holds the cache and, from the next page on, every bin's
 * slot area, then the young areas: address space only; a bin's slots
 * cost memory once the bin is used. */
#define DP_TC_HEAD (((sizeof(struct dp_tcache) + 4095) / 4096) * 4096)
#define DP_TC_MAPLEN (DP_TC_HEAD + DP_TC_SLOTMEM + DP_TC_YOUNGMEM)

static inline void tc_unmap(struct dp_tcache *tc)
{
    dp_os_unmap(tc, DP_TC_MAPLEN);
}

/* Bind the pool's fast paths to bin i (DP_TC_BINS: the always empty
 * one). */
static inline void dp_tc_set_bin(struct dp_pool *p, uint32_t i)
{
    atomic_store_explicit(&p->tcbin, i, DP_RLX);
    atomic_store_explicit(&p->tcoff, DP_TC_BINOFF(i), DP_RLX);
}

static inline void bin_set_n(struct dp_tbin *b, uint32_t n)
{
    atomic_store_explicit(&b->n, n, memory_order_relaxed);
}

static inline uint32_t bin_n(struct dp_tbin *b)
{
    return atomic_load_explicit(&b->n, memory_order_relaxed);
}

static inline struct dp_tchain *bin_chain(struct dp_tcache *tc, struct dp_tbin *b)
{
    return &tc->chains[b - tc->bins];
}

/* The bins of tc that may be bound (tc->bound, cache.c "Bound bins"),
 * in index order after bin j: for (int j = -1; (j = dp_tc_bound_next(tc,
 * j)) >= 0;).  Every bin that holds objects, a chain or a spare is
 * among them; a bin's busy flag is not (a put enters a bin before it
 * binds it). */
static inline int dp_tc_bound_next(struct dp_tcache *tc, int j)
{
    for (int w = (j + 1) / 64; w < DP_TC_BINS / 64; w++) {
        uint64_t m = atomic_load_explicit(&tc->bound[w], DP_RLX);
        if (w == (j + 1) / 64)
            m &= ~0ull << ((j + 1) % 64);
        if (m)
            return w * 64 + __builtin_ctzll(m);
    }
    return -1;
}

/* Objects the bin holds: its stack and its chain. */
static inline uint32_t bin_held(struct dp_tcache *tc, struct dp_tbin *b)
{
    return bin_n(b) + atomic_load_explicit(&bin_chain(tc, b)->n, DP_RLX);
}

static inline uint64_t bin_gets(struct dp_tbin *b)
{
    return atomic_load_explicit(&b->gets, DP_RLX);
}

static inline void tc_unlink_locked(struct dp_tcache *tc)
{
    DP_LIST_REMOVE(&dp_tcg.caches, tc, next, prev);
    atomic_store_explicit(&dp_tc_ncaches,
                          atomic_load_explicit(&dp_tc_ncaches, DP_RLX) - 1,
                          DP_RLX);
}

/* Onto dp_tcg's list (lock held). */
static inline void tc_link_locked(struct dp_tcache *tc)
{
    DP_LIST_PUSH_HEAD(&dp_tcg.caches, tc, next, prev);
    atomic_store_explicit(&dp_tc_ncaches,
                          atomic_load_explicit(&dp_tc_ncaches, DP_RLX) + 1,
                          DP_RLX);
}

/* Flush one bin (its owner or a drainer holding the claim).  forget:
 * also fold its get count into the pool and unbind it (thread exit,
 * pool destroy, a fork child). */
DP_HIDDEN void dp_tc_flush_bin(struct dp_tcache *tc, struct dp_tbin *b,
                               bool forget);
/* After a fork, in the child and in the parent: the calling (forking)
 * thread's next puts, if it has a cache, leave unwritten a slot that
 * holds the object already (cache.c, "Faults"). */
DP_HIDDEN void dp_tcache_cow_begin(void);
/* Reclaim pass: detach the spare caches unused since the last pass
 * (cache.c, "Spare caches"), linked by next, for the caller to unmap
 * once it has dropped the lock. */
DP_HIDDEN struct dp_tcache *dp_tc_spares_age_locked(void);
/* Make a cache ready for adoption if none is (cache.c, "Adopted
 * caches"): a spare or a new mapping; may map, takes dp_tcg.lock (only
 * if free at once when nowait). */
DP_HIDDEN void dp_tc_ready_make(bool nowait);
/* Hand back a cache's ext lists (same rules); returns the entries. */
DP_HIDDEN size_t dp_tc_flush_ext(struct dp_tcache *tc, bool forget);

#endif /* DP_CACHE_IMPL_H */
