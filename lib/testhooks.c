/*
 * testhooks.c -- test-only entry points, compiled only into private
 * copies of the library built with -DDP_TEST_HOOKS (tests/meson.build,
 * tests/malloc/meson.build), never into the installed libraries.
 *
 * dp_test_lock_all() takes every lock of the library, and of the malloc
 * when it is linked in (it joins through dp_fork_set_layer), in the fork
 * prepare handler's order (lib/fork.c); dp_test_unlock_all()
 * releases them.  A test holds them in one thread while other threads
 * put and free, to prove that those paths take no lock.
 * dp_test_depot_magazines() says how many magazines a pool's depot has
 * made (each costs memory that is touched, and kept until destroy);
 * dp_test_depot_stock() makes some, dp_test_depot_mag() says where one
 * lies, dp_test_depot_objects() how many objects its full ones hold.
 * dp_test_tc_ready() says whether a cache waits to be adopted.
 * dp_test_bin_busy() holds the calling thread's bin of a pool busy, as
 * a get or put does while it works on the bin; dp_test_bin_putlim()
 * reads its put limit (cache.c, "Faults").
 */
#include "dp_internal.h"
#include "cache_impl.h"
#include "depot.h"

#ifndef DP_TEST_HOOKS
#error "lib/testhooks.c is built only with -DDP_TEST_HOOKS"
#endif

void dp_test_core_lock(void);
void dp_test_core_unlock(void);
void dp_test_lock_all(void);
void dp_test_unlock_all(void);

void dp_test_lock_all(void) { dp_test_core_lock(); }

void dp_test_unlock_all(void) { dp_test_core_unlock(); }

/* One pool's lock and the cache lock (in the lock order, docs/design.md
 * §8), without the fork's claims: the caches stay usable, so a test can
 * show that their paths (bins, the depot) take neither lock. */
void dp_test_lock_pool(dp_pool_t *p);
void dp_test_unlock_pool(dp_pool_t *p);

void dp_test_lock_pool(dp_pool_t *p)
{
    pthread_mutex_lock(p->lock);
    pthread_mutex_lock(&dp_tcg.lock);
}

void dp_test_unlock_pool(dp_pool_t *p)
{
    pthread_mutex_unlock(&dp_tcg.lock);
    pthread_mutex_unlock(p->lock);
}

void dp_test_bin_busy(dp_pool_t *p, bool busy);

/* Between the two calls a drainer must leave the bin alone (cache.h,
 * "The handshake"); the thread must not get or put on p meanwhile. */
void dp_test_bin_busy(dp_pool_t *p, bool busy)
{
    struct dp_tcache *tc = dp_tc_mine();
    if (tc)
        atomic_store_explicit(&dp_tc_bin(tc, p)->busy, busy,
                              memory_order_release);
}

uint32_t dp_test_bin_putlim(dp_pool_t *p);

/* The calling thread's bin of p: its putlim (0 without a cache). */
uint32_t dp_test_bin_putlim(dp_pool_t *p)
{
    struct dp_tcache *tc = dp_tc_mine();
    return tc ? dp_tc_bin(tc, p)->putlim : 0;
}

uint32_t dp_test_depot_magazines(dp_pool_t *p);
uint32_t dp_test_depot_stock(dp_pool_t *p, uint32_t k);
void *dp_test_depot_mag(dp_pool_t *p, uint32_t i, size_t *len);
uint64_t dp_test_depot_objects(dp_pool_t *p);
int dp_test_tc_ready(void);

/* Whether a cache is ready for a thread that puts without one
 * (cache.c, "Adopted caches"). */
int dp_test_tc_ready(void)
{
    return atomic_load(&dp_tcg.ready) != NULL;
}

/* Objects in p's full magazines. */
uint64_t dp_test_depot_objects(dp_pool_t *p)
{
    return dp_depot_objects(p);
}

/* Make k empty magazines for p's depot, as a get's slow path does for
 * puts that went without; returns the magazines made in all (0: the pool
 * has no depot, and none are made). */
uint32_t dp_test_depot_stock(dp_pool_t *p, uint32_t k)
{
    if (p->mag_cap == 0)
        return 0;
    dp_depot_stock(p, k, false);
    return dp_test_depot_magazines(p);
}

/* Where magazine i lies: *len bytes from the result. */
void *dp_test_depot_mag(dp_pool_t *p, uint32_t i, size_t *len)
{
    return dp_depot_mag(p, i, len);
}

uint32_t dp_test_depot_magazines(dp_pool_t *p)
{
    pthread_mutex_lock(p->lock);
    uint32_t n = p->mags;
    pthread_mutex_unlock(p->lock);
    return n;
}
