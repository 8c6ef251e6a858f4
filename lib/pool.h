/*
 * pool.h -- the pool layer (pool.c, prime.c, registry.c), above the pages and the
 * thread caches: the pool lock's page lists, the pending queue, the
 * policy that picks due pages, and the registry of live pools that the
 * reclaim, statistics and fork code walk.  docs/design.md §4-§7.
 */
#ifndef DP_POOL_H
#define DP_POOL_H

#include "os.h"
#include "page.h"
#include "types.h"

/* The pool's reclaim clock: the caller's (attr.clock), or the coarse
 * monotonic one. */
static inline uint64_t dp_pool_now(const struct dp_pool *p)
{
    return p->clock ? p->clock(p->clock_arg) : dp_coarse_ns();
}

/* File every page a put queued since the last drain by its count.  Pool
 * lock held; now: the clock, or 0 to read it if needed. */
DP_HIDDEN void dp_drain_pending_locked(struct dp_pool *p, uint64_t now);
/* Move up to `budget` due empty pages (oldest first) onto *out; dead
 * pages always.  Pool lock held. */
DP_HIDDEN size_t dp_collect_due_locked(struct dp_pool *p, uint64_t now,
                                       size_t budget, bool ignore_age,
                                       struct dp_page **out);
/* Give a list from dp_collect_due_locked() back to the provider.  Called
 * without the pool lock; may block in the provider. */
DP_HIDDEN size_t dp_release_pages(struct dp_pool *p, struct dp_page *list);
/* Obtain one more page for p, dropping the pool lock around the provider
 * and the ctors (pool.c).  Pool lock held on entry and exit; the caller
 * has checked npages < max_pages.  NULL: *why says what failed. */
DP_HIDDEN struct dp_page *dp_pool_grow_locked(struct dp_pool *p, int flags,
                                              enum dp_pg_why *why);
/* File a new page as empty and ready, and wake getters; pool lock held. */
DP_HIDDEN void dp_pool_add_empty_locked(struct dp_pool *p, struct dp_page *pg);
/* Allocate pages until lowat empty pages are ready (reclaim thread and
 * dp_reclaim_step only).  Returns pages allocated. */
DP_HIDDEN size_t dp_pool_refill(struct dp_pool *p);
/* One reclaim pass over one pool: return due pages, keep lowat.  aged:
 * the pages puts emptied since the last drain are due at once (the pass
 * right after a depot trim: their objects sat unused for age_ns in the
 * depot's magazines, reclaim.c). */
DP_HIDDEN size_t dp_pool_reclaim_pass(struct dp_pool *p, bool aged);

/* Internal creation flags, for layers built on pools (the malloc). */
#define DP_IPOOL_PAGEMAP 0x1 /* register pages in the page map */
/* Bind the thread caches' bin i, which dp_tcache_bin_reserve gave the
 * caller, not the first free one. */
#define DP_IPOOL_BIN 0x2
#define DP_IPOOL_BIN_SHIFT 16
#define DP_IPOOL_BINIDX(i) (DP_IPOOL_BIN | ((unsigned)(i) << DP_IPOOL_BIN_SHIFT))
/* and DP_IPOOL_IMMEDIATE, DP_IPOOL_SMALLDEPOT (types.h) */
DP_HIDDEN dp_pool_t *dp_pool_create_ex(const char *name, size_t objsize,
                                       const dp_pool_attr_t *attr,
                                       unsigned iflags);

/* ---- the registry (registry.c): every live pool ----------------------- */
/* A new slot of the lock table for a pool's memory (p->lock), or NULL:
 * the table is full (DP_LOCK_CHUNKS) or a chunk cannot be mapped.  The
 * slot stays with that memory for good; pthread_mutex_init is the
 * caller's. */
DP_HIDDEN pthread_mutex_t *dp_lock_new(void);
DP_HIDDEN void dp_registry_add(struct dp_pool *p);
/* Take p off the registry, waiting for a pass that pinned it. */
DP_HIDDEN void dp_registry_remove(struct dp_pool *p);
/* Call fn for every live pool, the registry lock held (so fn may take
 * the pool lock, not the registry's, and may not create a pool).
 * Returns the pools visited. */
DP_HIDDEN size_t dp_registry_each(void (*fn)(struct dp_pool *p, void *arg),
                                  void *arg);
/* > 0 while this thread runs dp_registry_each's callbacks: a layer that
 * creates pools on demand (the malloc's class pools) must not create one
 * then (a debug leak report's qsort allocates). */
extern DP_HIDDEN DP_TLS unsigned dp_registry_depth;
/* Call fn for every live pool not being destroyed, with no lock held:
 * the pool is pinned (reg_refs) meanwhile, so fn may call the provider,
 * and a provider may create or destroy other pools. */
DP_HIDDEN void dp_registry_each_pinned(void (*fn)(struct dp_pool *p,
                                                  void *arg),
                                       void *arg);
/* Wake getters asleep on any pool. */
DP_HIDDEN void dp_wake_all_waiters(void);
/* Fork (fork.c calls these in the order it lists): prepare takes the
 * registry lock and every pool's lock in registry order, and notes the
 * pools a child must fix up; parent releases them; child fixes those
 * pools up (other threads' work in flight is forgotten), locks kept;
 * child_unlock releases them.  After the fork, parent and child read
 * and write the lock table and no pool's own page (registry.c). */
DP_HIDDEN void dp_pool_atfork_prepare(void);
DP_HIDDEN void dp_pool_atfork_parent(void);
DP_HIDDEN void dp_pool_atfork_child(void);
DP_HIDDEN void dp_pool_atfork_child_unlock(void);

/* ---- the reclaim bell ------------------------------------------------ */
/* The futex word the reclaim thread sleeps on (reclaim.c).  It lives in
 * the pool layer so that a pool that wants a pass (empty pages pile up,
 * a getter is about to sleep) rings it without calling up into the
 * reclaim layer.  Atomic; ringing is an add and a non-blocking wake. */
extern DP_HIDDEN _Atomic uint32_t dp_reclaim_bell;
static inline void dp_reclaim_ring(void)
{
    atomic_fetch_add(&dp_reclaim_bell, 1);
    dp_futex_wake_all(&dp_reclaim_bell);
}

/* A fork child's reclaim thread, started late (reclaim.c, "Fork"): the
 * child of a parent that ran the thread sets this to the reclaim layer's
 * start, and the child's first DP_WAITOK get that misses its cache calls
 * it (it clears this first).  A child that execs or exits before that
 * never pays for a thread.  Atomic; NULL when nothing is due. */
extern DP_HIDDEN void (*_Atomic dp_reclaim_due)(void);
static inline void dp_reclaim_start_due(void)
{
    void (*fn)(void) = atomic_load_explicit(&dp_reclaim_due, DP_RLX);
    if (DP_UNLIKELY(fn != NULL))
        fn();
}

#endif /* DP_POOL_H */
