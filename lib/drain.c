/*
 * drain.c -- the thread-cache layer's drainer side: claiming other
 * threads' caches with the membarrier handshake, and what is done with
 * them (drain one pool's bins, the reclaim GC, statistics sums, the
 * fork handlers' part).  docs/design.md, "Thread caches" and "Fork".
 */
#include "cache_impl.h"
#include "depot.h"

#include <linux/membarrier.h>
#include <string.h>

/* A full barrier on every CPU running one of our threads.  -1: could not
 * (then no cache may be claimed). */
static int heavy_barrier(void)
{
    if (dp_os_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
        return 0;
    /* A forked child may need to register again. */
    if (dp_os_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 &&
        dp_os_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
        return 0;
    return -1;
}

/* What a drain flushes: bin idx >= 0, TC_ALL (every bin and the ext
 * lists) or TC_EXT (the ext lists only). */
#define TC_ALL (-1)
#define TC_EXT (-2)

/*
 * Claim each cache in `want` (n of them, filtered by the caller) that is
 * not inside a get/put, and flush what idx names.  dp_tcg.lock held.
 * Returns how many were busy.  A cache a fork holds claimed (drain
 * already CLAIMED: any other drainer gives its claim back before it
 * drops the lock) counts as busy.
 */
/* Is the owner of tc at work on what idx names, or in a slow path?  An
 * ext-list operation runs inside the active flag, so for TC_EXT that is
 * all there is to see.  After the barrier (cache.h, "The handshake"). */
static bool owner_inside(struct dp_tcache *tc, int idx)
{
    if (atomic_load_explicit(&tc->active, memory_order_acquire))
        return true;
    if (idx == TC_EXT)
        return false;
    if (idx >= 0)
        return atomic_load_explicit(&tc->bins[idx].busy,
                                    memory_order_acquire) != 0;
    uint32_t any = 0;
    for (int j = 0; j < DP_TC_BINS; j++)
        any |= atomic_load_explicit(&tc->bins[j].busy, memory_order_acquire);
    return any != 0;
}

/* The drainer's side of the handshake (docs/design.md §13): ask every
 * cache in want[0..n) (none of them claimed), one membarrier, then claim
 * those whose owner is not at work on what idx names or in a slow path;
 * the others are released and set to NULL in want.  Returns how many
 * were busy, or SIZE_MAX when the barrier failed (then none is
 * claimed).  dp_tcg.lock held. */
static size_t claim_locked(struct dp_tcache **want, size_t n, int idx)
{
    for (size_t i = 0; i < n; i++)
        atomic_store_explicit(&want[i]->drain, DP_TC_REQ, DP_RLX);
    if (heavy_barrier() != 0) {
        for (size_t i = 0; i < n; i++)
            atomic_store_explicit(&want[i]->drain, 0, memory_order_release);
        return SIZE_MAX;
    }
    size_t busy = 0;
    for (size_t i = 0; i < n; i++) {
        if (owner_inside(want[i], idx)) {
            atomic_store_explicit(&want[i]->drain, 0, memory_order_release);
            want[i] = NULL;
            busy++;
        } else {
            atomic_store_explicit(&want[i]->drain, DP_TC_CLAIMED, DP_RLX);
        }
    }
    return busy;
}

static size_t claim_and_flush_locked(struct dp_tcache **want, size_t n,
                                     int idx, bool forget)
{
    size_t busy = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        if (atomic_load_explicit(&want[i]->drain, DP_RLX) == DP_TC_CLAIMED)
            busy++; /* a fork holds it */
        else
            want[k++] = want[i];
    }
    if (k == 0)
        return busy;
    size_t b = claim_locked(want, k, idx);
    if (b == SIZE_MAX)
        return busy + k;
    busy += b;
    for (size_t i = 0; i < k; i++) {
        struct dp_tcache *tc = want[i];
        if (!tc)
            continue;
        if (idx >= 0) {
            dp_tc_flush_bin(tc, &tc->bins[idx], forget);
        } else if (idx == TC_EXT) {
            dp_tc_flush_ext(tc, forget);
        } else {
            for (int j = -1; (j = dp_tc_bound_next(tc, j)) >= 0;)
                dp_tc_flush_bin(tc, &tc->bins[j], forget);
            dp_tc_flush_ext(tc, forget);
        }
        atomic_store_explicit(&tc->drain, 0, memory_order_release);
    }
    return busy;
}

#define DP_TC_BATCH 64

/* Caches to claim and flush, gathered under dp_tcg.lock and handed to
 * claim_and_flush_locked() DP_TC_BATCH at a time (one membarrier each). */
struct tc_batch {
    struct dp_tcache *tc[DP_TC_BATCH];
    size_t n;
    int idx;     /* what to flush: a bin, TC_ALL or TC_EXT */
    bool forget;
    size_t busy; /* caches found inside a get/put, so far */
};

static void batch_flush_locked(struct tc_batch *b)
{
    b->busy += claim_and_flush_locked(b->tc, b->n, b->idx, b->forget);
    b->n = 0;
}

static void batch_add_locked(struct tc_batch *b, struct dp_tcache *tc)
{
    b->tc[b->n++] = tc;
    if (b->n == DP_TC_BATCH)
        batch_flush_locked(b);
}

void dp_tcache_drain_pool(struct dp_pool *p, bool wait, bool release)
{
    if (p->tcidx < 0)
        return;
    int idx = p->tcidx;
    pthread_mutex_lock(&dp_tcg.lock);
    for (;;) {
        struct tc_batch b = {.n = 0, .idx = idx, .forget = release};
        for (struct dp_tcache *tc = dp_tcg.caches.head; tc; tc = tc->next) {
            /* A waiter or destroy must catch puts on their way into an
             * empty bin, and destroy must unbind every bin: they visit
             * every cache.  Others only those holding objects. */
            if (!wait && !release && bin_held(tc, &tc->bins[idx]) == 0)
                continue;
            batch_add_locked(&b, tc);
        }
        batch_flush_locked(&b);
        if (!b.busy || !wait)
            break;
        pthread_mutex_unlock(&dp_tcg.lock);
        dp_os_yield();
        pthread_mutex_lock(&dp_tcg.lock);
    }
    if (release) {
        dp_tcg.used[idx / 64] &= ~(1ull << (idx % 64));
        p->tcidx = -1;
        dp_tc_set_bin(p, DP_TC_BINS);
    }
    pthread_mutex_unlock(&dp_tcg.lock);
    /* The depot too, after the bins: a put caught inside a bin may still
     * shed a magazine. */
    dp_depot_drain(p, true, 0);
    if (release)
        dp_depot_fini(p); /* the bins gave their spares back */
}

/* A signature's 64 bits folded to 32. */
static inline uint64_t sig_fold(uint64_t h) { return (uint32_t)(h ^ (h >> 32)); }

/*
 * The reclaim pass's GC.  A thread's cache whose bins and ext lists did
 * not move since the last pass is flushed whole: the thread is idle.  A
 * cache whose ext lists alone did not move has only those flushed: the
 * thread is at work, but not with them, and what they hold goes back to
 * the layer above (the malloc's heap, where it ages), instead of staying
 * for as long as the thread runs.
 */
void dp_tcache_gc(void)
{
    /* A thread that puts without a cache asked for one to adopt. */
    if (atomic_load_explicit(&dp_tcg.ready_want, DP_RLX))
        dp_tc_ready_make(false);
    pthread_mutex_lock(&dp_tcg.lock);
    struct dp_tcache *old = dp_tc_spares_age_locked();
    struct tc_batch batch = {.n = 0, .idx = TC_ALL, .forget = false};
    struct tc_batch ext = {.n = 0, .idx = TC_EXT, .forget = false};
    for (struct dp_tcache *tc = dp_tcg.caches.head; tc; tc = tc->next) {
        /* A get changes `gets`; a put changes n, and a flush n and net
         * together; so if no bin's (gets, n, net) moved, the thread did
         * nothing with them since the last pass; a list's push changes
         * its n, a pop its pops.  seen_sig keeps the bins' signature in
         * its high half, the lists' in its low half, 32 bits each.  A
         * signature collision only makes a busy cache look idle, which
         * costs a refill, not correctness: the claim handshake still
         * keeps off a cache in use.  Only the bound bins hold objects;
         * which bins are bound is part of the signature too. */
        uint64_t bsig = 0, esig = 0;
        bool any = false, ext_any = false;
        for (int w = 0; w < DP_TC_BINS / 64; w++)
            bsig = bsig * 0x100000001b3ull +
                   atomic_load_explicit(&tc->bound[w], DP_RLX);
        for (int j = -1; (j = dp_tc_bound_next(tc, j)) >= 0;) {
            struct dp_tbin *b = &tc->bins[j];
            uint32_t n = bin_held(tc, b);
            bsig = bsig * 0x100000001b3ull +
                   atomic_load_explicit(&b->gets, DP_RLX);
            bsig = bsig * 0x100000001b3ull + n;
            bsig = bsig * 0x100000001b3ull +
                   (uint64_t)atomic_load_explicit(&b->net, DP_RLX);
            any |= n != 0;
        }
        for (int j = 0; j < DP_TC_EXT; j++) {
            struct dp_tclist *l = &tc->ext[j];
            uint32_t n = atomic_load_explicit(&l->n, DP_RLX);
            esig = esig * 0x100000001b3ull + n;
            esig = esig * 0x100000001b3ull +
                   atomic_load_explicit(&l->pops, DP_RLX);
            ext_any |= n != 0;
        }
        uint64_t sig = sig_fold(bsig) << 32 | sig_fold(esig);
        uint64_t was = tc->seen_sig;
        tc->seen_sig = sig;
        if (sig == was) {
            if (any || ext_any)
                batch_add_locked(&batch, tc);
        } else if ((uint32_t)sig == (uint32_t)was && ext_any) {
            batch_add_locked(&ext, tc);
        }
    }
    batch_flush_locked(&batch);
    batch_flush_locked(&ext);
    pthread_mutex_unlock(&dp_tcg.lock);
    while (old) {
        struct dp_tcache *next = old->next;
        tc_unmap(old);
        old = next;
    }
}

void dp_tcache_sum(struct dp_pool *p, uint64_t *cached, uint64_t *gets)
{
    *gets = atomic_load(&p->tc_gets_folded);
    *cached = dp_depot_objects(p); /* objects in the depot are cached */
    if (p->tcidx < 0)
        return;
    pthread_mutex_lock(&dp_tcg.lock);
    for (struct dp_tcache *tc = dp_tcg.caches.head; tc; tc = tc->next) {
        struct dp_tbin *b = &tc->bins[p->tcidx];
        *cached += bin_held(tc, b);
        *gets += bin_gets(b);
    }
    pthread_mutex_unlock(&dp_tcg.lock);
}

size_t dp_tcache_ext_drain(bool self)
{
    if (self) {
        struct dp_tcache *tc = dp_tc;
        if (!tc || !dp_tc_enter(tc))
            return 0;
        size_t n = dp_tc_flush_ext(tc, false);
        dp_tc_leave(tc);
        return n;
    }
    size_t n = 0;
    pthread_mutex_lock(&dp_tcg.lock);
    struct tc_batch batch = {.n = 0, .idx = TC_ALL, .forget = false};
    for (struct dp_tcache *tc = dp_tcg.caches.head; tc; tc = tc->next) {
        bool any = false;
        for (int j = 0; j < DP_TC_EXT; j++) {
            uint32_t e = atomic_load_explicit(&tc->ext[j].n, DP_RLX);
            any |= e != 0;
            n += e;
        }
        if (any)
            batch_add_locked(&batch, tc);
    }
    batch_flush_locked(&batch);
    pthread_mutex_unlock(&dp_tcg.lock);
    return n;
}

void dp_tcache_ext_sum(uint64_t n[DP_TC_EXT], uint64_t *pops,
                       void (*locked)(void *), void *arg)
{
    memset(n, 0, DP_TC_EXT * sizeof(n[0]));
    *pops = 0;
    pthread_mutex_lock(&dp_tcg.lock);
    for (struct dp_tcache *tc = dp_tcg.caches.head; tc; tc = tc->next)
        for (int j = 0; j < DP_TC_EXT; j++) {
            n[j] += atomic_load_explicit(&tc->ext[j].n, DP_RLX);
            *pops += atomic_load_explicit(&tc->ext[j].pops, DP_RLX);
        }
    if (locked)
        locked(arg);
    pthread_mutex_unlock(&dp_tcg.lock);
}

/* ---- fork ------------------------------------------------------------------ */

/*
 * The fork handlers' part for the caches (docs/design.md, "Fork"; fork.c
 * calls them in order).  Before any lock is taken, claim
 * every other thread's cache with the drainers' handshake, waiting --
 * yielding, no lock held -- for owners inside a get/put to leave: an
 * owner may be halfway through a flush, a chain pop or an ext-list
 * flush, and the child must not see that.  The claims are held until
 * the parent handler (owners meanwhile use the pages) or the child
 * handler, where the claimed caches have no owner and are consistent.
 * A cache that cannot be claimed (no membarrier) is left alone in the
 * child: its objects stay out.
 */
void dp_tcache_atfork_claim(void)
{
    pthread_mutex_lock(&dp_tcg.lock);
    dp_tcg.forking = true;
    for (;;) {
        struct dp_tcache *want[DP_TC_BATCH];
        size_t n = 0, busy = 0;
        bool more = false;
        for (struct dp_tcache *tc = dp_tcg.caches.head; tc; tc = tc->next) {
            if (tc == dp_tc || atomic_load_explicit(&tc->drain, DP_RLX) ==
                                   DP_TC_CLAIMED)
                continue;
            if (n == DP_TC_BATCH) {
                more = true;
                break;
            }
            want[n++] = tc;
        }
        if (n == 0)
            break;
        busy = claim_locked(want, n, -1);
        if (busy == SIZE_MAX)
            break;
        if (!busy && !more)
            break;
        if (busy) {
            pthread_mutex_unlock(&dp_tcg.lock);
            dp_test_hook(DP_TEST_FORK_WAIT);
            dp_os_yield();
            pthread_mutex_lock(&dp_tcg.lock);
        }
    }
    pthread_mutex_unlock(&dp_tcg.lock);
}

/* Notes whether the handlers after the fork have a cache to see to: in
 * a program whose only cache is the forking thread's, they touch no
 * cache's page, each of which would cost the child a fault. */
void dp_tcache_atfork_prepare(void)
{
    pthread_mutex_lock(&dp_tcg.lock);
    bool walk = false;
    for (struct dp_tcache *tc = dp_tcg.caches.head; tc && !walk;
         tc = tc->next)
        walk = tc != dp_tc || atomic_load(&tc->drain) ||
               atomic_load(&tc->active);
    dp_tcg.fork_walk = walk;
}

void dp_tcache_atfork_parent(void)
{
    if (dp_tcg.fork_walk)
        for (struct dp_tcache *tc = dp_tcg.caches.head; tc; tc = tc->next)
            if (atomic_load_explicit(&tc->drain, DP_RLX) == DP_TC_CLAIMED)
                atomic_store_explicit(&tc->drain, 0,
                                      memory_order_release);
    dp_tcache_cow_begin(); /* cache.c, "Faults" */
    dp_tcg.forking = false;
    pthread_mutex_unlock(&dp_tcg.lock);
}

/* In the child only the forking thread exists.  The other threads'
 * caches were claimed outside any get/put: flush them and drop them.
 * Called with every deferpool lock held; leaves dp_tcg.lock held. */
void dp_tcache_atfork_child(void)
{
    struct dp_tcache *tc = dp_tcg.fork_walk ? dp_tcg.caches.head : NULL;
    while (tc) {
        struct dp_tcache *next = tc->next;
        if (tc == dp_tc) {
            /* Written only when set: each write is a copy-on-write
             * fault of the child. */
            if (atomic_load(&tc->drain))
                atomic_store(&tc->drain, 0);
            if (atomic_load(&tc->active))
                atomic_store(&tc->active, 0);
        } else if (atomic_load_explicit(&tc->drain, DP_RLX) ==
                   DP_TC_CLAIMED) {
            tc_unlink_locked(tc);
            for (int j = -1; (j = dp_tc_bound_next(tc, j)) >= 0;)
                dp_tc_flush_bin(tc, &tc->bins[j], true);
            dp_tc_flush_ext(tc, true);
            tc_unmap(tc);
        } else {
            tc_unlink_locked(tc); /* unclaimable: its objects stay out */
        }
        tc = next;
    }
    /* The ready cache, if any, was claimed with the others and is gone
     * (cache.c, "Adopted caches"). */
    atomic_store_explicit(&dp_tcg.ready, NULL, DP_RLX);
    dp_tcache_cow_begin(); /* cache.c, "Faults" */
    dp_tcg.forking = false;
}

void dp_tcache_atfork_child_unlock(void)
{
    pthread_mutex_unlock(&dp_tcg.lock);
}

