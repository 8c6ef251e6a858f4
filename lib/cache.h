/*
 * cache.h -- the thread-cache layer (cache.c), between the pages and the
 * pool: each thread's bins of free objects, their inline get/put fast
 * paths, the drainers' interface, and the extension lists a layer above
 * keeps in each cache.  docs/design.md, "Thread caches".
 */
#ifndef DP_CACHE_H
#define DP_CACHE_H

#include "link.h"
#include "types.h"

/* The calling thread's cache; &dp_tc_none until its first cached get
 * and after its exit.  Owner only (thread-local); drainers reach other
 * threads' caches through dp_tcg's list, never through this. */
extern DP_HIDDEN DP_TLS struct dp_tcache *dp_tc;
/* The stand-in for no cache, so that the fast paths need no NULL test:
 * active stays 1, drain DP_TC_CLAIMED and every bin busy, so every path
 * refuses it.  Only a get of a cached pool writes it (busy = 1, which
 * it already is), before its thread's first miss creates the thread's
 * cache; never on dp_tcg's list; dp_tc_mine() says NULL. */
extern DP_HIDDEN struct dp_tcache dp_tc_none;

/* The calling thread's cache, or NULL if it has none. */
static inline struct dp_tcache *dp_tc_mine(void)
{
    struct dp_tcache *tc = dp_tc;
    return tc == &dp_tc_none ? NULL : tc;
}

/* The test hook at point `where` (deferpool.h, "Testing: hooks"): one
 * load on the slow paths that have a point, a call only when a test set
 * a hook. */
extern DP_HIDDEN _Atomic(dp_test_hook_t) dp_test_hook_fn;
DP_HIDDEN void dp_test_hook_call(dp_test_hook_t fn, int where);
static inline void dp_test_hook(int where)
{
    dp_test_hook_t fn = atomic_load_explicit(&dp_test_hook_fn,
                                             memory_order_acquire);
    if (DP_UNLIKELY(fn != NULL))
        dp_test_hook_call(fn, where);
}

/*
 * The handshake with drainers (docs/design.md, "Thread caches").  Two
 * kinds of flag say "the owner is at work here": each bin's `busy`, set
 * by the fast paths on their one bin, and the cache's `active`, set by
 * the slow paths and the ext-list operations (a slow path also sets the
 * busy flag of the bin it works on).  The owner stores its flag, then
 * loads `drain`.  The drainer stores drain=REQ, runs
 * membarrier(PRIVATE_EXPEDITED) -- a full barrier on every CPU running
 * one of our threads -- and then loads `active` and the busy flags of the
 * bins it will touch.  So either the drainer sees a flag and leaves the
 * cache alone, or the owner sees drain != 0 and keeps off.  The owner
 * needs no fence and no RMW: a compiler barrier is enough.  The owner
 * loads a bin's count only after its test of drain (a count loaded
 * before could be one a drainer has replaced since), and a fast path's
 * last store writes the new count and clears busy together.
 *
 * A put from a signal handler that interrupted a get or put of this
 * thread finds that bin busy, or the cache active, and puts to the page;
 * it may use another bin.  A get is not async-signal-safe, so it needs
 * no such test.
 */

/* A slow path or an ext-list operation enters (b: the bin it works on,
 * or NULL). */
static inline bool dp_tc_enter_bin(struct dp_tcache *tc, struct dp_tbin *b)
{
    /* Already inside: a put from a signal handler that interrupted this
     * thread's own get/put.  Leave the bins alone; use the pages.  Also
     * dp_tc_none: no cache. */
    if (DP_UNLIKELY(atomic_load_explicit(&tc->active, DP_RLX)) ||
        (b && DP_UNLIKELY(atomic_load_explicit(&b->busy, DP_RLX))))
        return false;
    atomic_store_explicit(&tc->active, 1, DP_RLX);
    if (b)
        atomic_store_explicit(&b->busy, 1, DP_RLX);
    atomic_signal_fence(memory_order_seq_cst);
    if (DP_LIKELY(atomic_load_explicit(&tc->drain, memory_order_acquire) ==
                  0))
        return true;
    if (b)
        atomic_store_explicit(&b->busy, 0, memory_order_release);
    atomic_store_explicit(&tc->active, 0, memory_order_release);
    return false;
}

static inline void dp_tc_leave_bin(struct dp_tcache *tc, struct dp_tbin *b)
{
    atomic_signal_fence(memory_order_seq_cst);
    if (b)
        atomic_store_explicit(&b->busy, 0, memory_order_release);
    atomic_store_explicit(&tc->active, 0, memory_order_release);
}

static inline bool dp_tc_enter(struct dp_tcache *tc)
{
    return dp_tc_enter_bin(tc, NULL);
}

static inline void dp_tc_leave(struct dp_tcache *tc)
{
    dp_tc_leave_bin(tc, NULL);
}

/* A fast path enters bin b: busy = 1, then the test of drain.  The
 * caller has made sure the bin was not busy (a put), or that no get or
 * put of this thread can be under it (a get: not from signal handlers).
 * false: a drainer is at work; nothing changed. */
static inline bool dp_tc_bin_enter(struct dp_tcache *tc, struct dp_tbin *b)
{
    atomic_store_explicit(&b->busy, 1, DP_RLX);
    atomic_signal_fence(memory_order_seq_cst);
    if (DP_LIKELY(atomic_load_explicit(&tc->drain, memory_order_acquire) ==
                  0))
        return true;
    /* Leave the bin as it was: not busy, or the stand-in's, which stays
     * busy. */
    atomic_store_explicit(&b->busy, tc == &dp_tc_none, memory_order_release);
    return false;
}

/* The bin's count, inside dp_tc_bin_enter. */
static inline uint32_t dp_tc_bin_count(struct dp_tbin *b)
{
    return atomic_load_explicit(&b->n, DP_RLX);
}

/* Leave bin b with count n: one 8-byte store of n and busy = 0 (a TSan
 * build: two stores it can see, busy last). */
static inline void dp_tc_bin_publish(struct dp_tbin *b, uint32_t n)
{
    atomic_signal_fence(memory_order_seq_cst);
#if defined(__x86_64__) && !DP_TSAN
    atomic_store_explicit(&b->nb, n, memory_order_release);
#else
    atomic_store_explicit(&b->n, n, DP_RLX);
    atomic_store_explicit(&b->busy, 0, memory_order_release);
#endif
}

/* Leave bin b unchanged. */
static inline void dp_tc_bin_leave(struct dp_tbin *b)
{
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&b->busy, 0, memory_order_release);
}

/* The byte offset of bins[i] in a thread's cache (dp_pool.tcoff), and
 * the bin of pool p in cache tc: one add, where indexing by tcbin would
 * multiply by the bin's size. */
#define DP_TC_BINOFF(i)                                                      \
    ((uint32_t)(offsetof(struct dp_tcache, bins) +                          \
                (size_t)(i) * sizeof(struct dp_tbin)))
static inline struct dp_tbin *dp_tc_bin(struct dp_tcache *tc,
                                        const struct dp_pool *p)
{
    return (struct dp_tbin *)(void *)((char *)tc +
                                      atomic_load_explicit(&p->tcoff,
                                                           DP_RLX));
}

/* Count one on a counter of this thread's cache, inside its bin:
 * the owner is its only writer there, readers load it relaxed.  On
 * x86-64 one add to memory, which no signal handler can split (the
 * handler's own updates, nested, are balanced or refused); a TSan
 * build keeps the atomic load and store it can see. */
static inline void dp_tc_count(_Atomic uint64_t *c)
{
#if defined(__x86_64__) && !DP_TSAN
    __asm__ volatile("addq $1, %0" : "+m"(*(uint64_t *)(void *)c));
#else
    DP_BUMP(c, 1);
#endif
}

/* A get's slow path, first: if this thread's bin holds more than
 * tc_soft objects, shed its oldest ones (to the depot, else the pages)
 * and pop one (cache.c, "Soft limit"); if it is empty, load a magazine
 * from the depot and pop one (cache.c, "The depot").  Object in *o, or
 * false: go to the pages.  May take the pool lock, and map magazines. */
DP_HIDDEN bool dp_tcache_pop_slow(struct dp_pool *p, void **o);

/* The hit path: pop the stack of this thread's bin at byte offset off of
 * its cache (dp_pool.tcoff) into *o; soft: the pool's tc_soft.  false:
 * no object (no cache, an empty bin or one above tc_soft, or a drainer
 * at work on it).  A bool result, not NULL, so that a caller's hit path
 * returns the object untested.  An uncached pool (tc_soft 0) is refused
 * before the flag's store: threads without a cache (all of them, without
 * membarrier) would otherwise write dp_tc_none's line on every get.
 * The caller has the object's ASan annotation to make (dp_an_get_asan).
 * The malloc calls it with note set: the object and the bin's offset go
 * to tc->last and tc->last_off (types.h); for requests of at most 1 KiB
 * with a bin offset and limit from its own table, without reading the
 * pool. */
static inline bool dp_tcache_pop_at(uint32_t off, uint32_t soft, void **o,
                                    bool note)
{
    struct dp_tcache *tc = dp_tc; /* never NULL: dp_tc_none */
    struct dp_tbin *b = (struct dp_tbin *)(void *)((char *)tc + off);
    if (DP_UNLIKELY(soft == 0) || !dp_tc_bin_enter(tc, b))
        return false;
    uint32_t n = dp_tc_bin_count(b);
    /* 1 <= n <= tc_soft: one unsigned compare, as `n != 0` was.  Above
     * the soft limit, the slow path (dp_tcache_pop_slow) takes over. */
    if (DP_UNLIKELY(n - 1 >= soft)) {
        dp_tc_bin_leave(b);
        return false;
    }
    *o = b->slots[(size_t)n - 1];
    if (note) {
        tc->last = *o;
        tc->last_off = off;
    }
    dp_tc_count(&b->gets);
    dp_tc_bin_publish(b, n - 1);
    return true;
}

/* dp_tcache_pop_at for pool p, with its ASan annotation made. */
static inline bool dp_tcache_pop_hit(struct dp_pool *p, void **o, bool note)
{
    if (!dp_tcache_pop_at(atomic_load_explicit(&p->tcoff, DP_RLX),
                          p->tc_soft, o, note))
        return false;
    dp_an_get_asan(p, *o);
    return true;
}

/* The bin's stack is empty: pop its chain.  NULL: no object (no chain, no
 * cache, an uncached pool, a drainer at work on it).  Out of line, so
 * that the hit paths that miss into it keep no stack frame. */
DP_HIDDEN void *dp_tcache_pop_chain(struct dp_pool *p);

/* Pop this thread's bin (its stack, else its chain): an object or NULL. */
static inline void *dp_tcache_get(struct dp_pool *p)
{
    void *o;
    return dp_tcache_pop_hit(p, &o, false) ? o : dp_tcache_pop_chain(p);
}

/* The bin is empty or full (or the pool is uncached): bind it, flush its
 * oldest objects if full, push obj; or put obj to its page. */
DP_HIDDEN void dp_tcache_put_slow(struct dp_pool *p, void *obj);

/* The fast path could not take obj (no cache, or a drainer or a signal
 * handler's get or put at work on the bin): a thread without a cache
 * adopts the one made ready for it, if there is one, and puts there
 * (cache.c, "Adopted caches"); otherwise obj goes to its page.  What a
 * put may do: no lock, no system call. */
DP_HIDDEN void dp_tcache_put_miss(struct dp_pool *p, void *obj);

/* Fast path: obj into bin b of this thread's cache tc, which is pool
 * p's bin there, or hand it to the bin's slow path.  false: nothing
 * done; the caller puts to the page (no cache, or a drainer is at work
 * on it).  Written so that the callers' fast paths need no stack frame:
 * both slow paths are tail calls. */
static inline bool dp_tcache_put_to(struct dp_tcache *tc, struct dp_tbin *b,
                                    struct dp_pool *p, void *obj)
{
    /* A get or put of this thread under us (a signal handler's put), a
     * slow path at work on the bin, or no cache (dp_tc_none). */
    if (DP_UNLIKELY(atomic_load_explicit(&b->busy, DP_RLX)))
        return false;
    if (!dp_tc_bin_enter(tc, b))
        return false;
    uint32_t n = dp_tc_bin_count(b);
    /* Full, or empty (the bin may not be bound to p yet): the slow path.
     * One unsigned compare covers both.  While a getter waits every bin
     * of p is empty (its drain emptied them, and nothing refills one
     * while it waits), so the put takes the slow path, which puts to
     * the page and wakes it (cache.c, dp_tcache_put_slow). */
    if (DP_UNLIKELY(n - 1 >= b->putlim)) {
        dp_tc_bin_leave(b);
        dp_tcache_put_slow(p, obj);
        return true;
    }
    b->slots[(size_t)n] = obj;
    dp_tc_bin_publish(b, n + 1);
    return true;
}

/* dp_tcache_put_to this thread's bin of pool p. */
static inline bool dp_tcache_put(struct dp_pool *p, void *obj)
{
    struct dp_tcache *tc = dp_tc; /* never NULL: dp_tc_none */
    return dp_tcache_put_to(tc, dp_tc_bin(tc, p), p, obj);
}

/* How many objects a slow-path get should take (1: no cache).  Creates
 * the thread's cache on its first call; nowait (a DP_NOWAIT get): only
 * if the cache lock is free at once. */
DP_HIDDEN uint32_t dp_tcache_want(struct dp_pool *p, bool nowait);
/* The longest chain a bin takes: what the bin's stack holds, or 32 KiB of
 * objects if that is more; 0 for an uncached pool. */
DP_HIDDEN uint32_t dp_tcache_chain_max(struct dp_pool *p);
/* Install n objects and the chain (may be NULL) in this thread's bin;
 * false: nothing taken. */
DP_HIDDEN bool dp_tcache_fill(struct dp_pool *p, void *const *objs,
                              uint32_t n, const struct dp_chain *ch);
/* Give p a bin of the thread caches, if it is cached: bin `want`, which
 * dp_tcache_bin_reserve returned, or (want < 0) the first free one. */
DP_HIDDEN void dp_tcache_pool_init(struct dp_pool *p, int want);
/* Take a free bin index for a pool created later (the malloc's class
 * pools, made at their first use): -1 if none is free or there are no
 * thread caches.  The index stays taken. */
DP_HIDDEN int dp_tcache_bin_reserve(void);
/* Empty the pool's bins in every thread not inside a get/put right now.
 * wait: visit every cache, even empty ones, and retry those caught
 * inside a get/put until each has been claimed once: afterwards no put
 * that started before the call is still on its way into a cache (waiters,
 * destroy).  release: also unbind the bins and give the index back.
 * May block (membarrier, cache lock, yields while waiting). */
DP_HIDDEN void dp_tcache_drain_pool(struct dp_pool *p, bool wait,
                                    bool release);
/* Reclaim pass: empty the caches of threads idle since the last pass. */
DP_HIDDEN void dp_tcache_gc(void);
/* Objects cached and cache gets, summed over threads (pool lock held). */
DP_HIDDEN void dp_tcache_sum(struct dp_pool *p, uint64_t *cached,
                             uint64_t *gets);

/* How many threads have a cache now (exited threads' spares not
 * counted): the caches on dp_tcg's list, written under its lock
 * (cache_impl.h, tc_link_locked), read relaxed by anyone. */
extern DP_HIDDEN _Atomic uint32_t dp_tc_ncaches;

/* dp_tc_ncaches, for a layer that sizes what each thread may keep. */
static inline uint32_t dp_tcache_count(void)
{
    return atomic_load_explicit(&dp_tc_ncaches, DP_RLX);
}

/* ---- the extension interface ---------------------------------------- */
/*
 * A layer above the pools (the malloc's thread lists) keeps DP_TC_EXT
 * lists of its own in each thread's cache (tc->ext[], tallied in
 * tc->ext_units): the owner inside dp_tc_enter/dp_tc_leave, or a
 * drainer holding the claim.  The cache hands them back through the ops
 * the layer registers once, before it uses a list; the ops must stay
 * valid.
 */
struct dp_tcache_ext_ops {
    /* Empty l: hand every entry back to the layer.  forget: the list's
     * thread is gone; fold its counters.  Runs on the owner, on a
     * drainer holding the claim, or at thread exit / in a fork child
     * with the cache lock held: never makes a syscall. */
    void (*flush)(struct dp_tclist *l, bool forget);
};
DP_HIDDEN void dp_tcache_ext_register(const struct dp_tcache_ext_ops *ops);
/* This thread's cache, created if need be; NULL without caches. */
DP_HIDDEN struct dp_tcache *dp_tcache_self(void);
/* Flush every thread's ext lists (those not inside a get/put), or only
 * this thread's (self).  Returns the entries handed back.  May block
 * (cache lock, membarrier) unless self. */
DP_HIDDEN size_t dp_tcache_ext_drain(bool self);
/* Per list: entries summed over threads (n[]), and pops (cache lock).
 * locked (may be NULL) is called with the cache lock still held, so
 * that the layer reads its own counters in the same snapshot: no drain
 * moves entries off the lists meanwhile.  It may take only locks below
 * dp_tcg.lock (docs/design.md §8). */
DP_HIDDEN void dp_tcache_ext_sum(uint64_t n[DP_TC_EXT], uint64_t *pops,
                                 void (*locked)(void *), void *arg);

/* ---- fork (fork.c calls these in the order it lists) ------------------ */
/* claim: before any lock, claim every other thread's cache (waits for
 * owners, no lock held).  prepare: take the cache lock.  parent: release
 * the claims and the lock.  child: flush and drop the claimed caches,
 * lock kept; child_unlock releases it. */
DP_HIDDEN void dp_tcache_atfork_claim(void);
DP_HIDDEN void dp_tcache_atfork_prepare(void);
DP_HIDDEN void dp_tcache_atfork_parent(void);
DP_HIDDEN void dp_tcache_atfork_child(void);
DP_HIDDEN void dp_tcache_atfork_child_unlock(void);

#endif /* DP_CACHE_H */
