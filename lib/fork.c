/*
 * fork.c -- the fork layer, the top of the core: every atfork handler of
 * the library, core and malloc, called from here in one order.
 * docs/design.md, "Fork"; the lock order they follow: §8.
 *
 * A library constructor registers the handlers, so they come before any
 * handler the program registers from main() on: the program's prepare
 * handlers run before ours and its parent and child handlers after ours,
 * and all of them may allocate.  The order, for the core and the layer
 * above (the drop-in malloc, through dp_fork_set_layer):
 *
 *   prepare
 *     1. claim every other thread's cache (owners inside a get/put are
 *        waited for with no lock held, so nothing they do inside can
 *        deadlock with us)                        dp_tcache_atfork_claim
 *     2. the layer's outer lock                   malloc: its init lock
 *     3. dp_rt.ctl, 4. dp_rt.lock                 dp_reclaim_atfork_prepare
 *     5. the registry lock, 6. every pool->lock in registry order
 *                                                 dp_pool_atfork_prepare
 *     7. the cache lock                           dp_tcache_atfork_prepare
 *     8. the layer's leaf lock                    malloc: its list lock
 *   parent: release 8 to 2, then the claims (1).
 *   child, with every lock held: flush and drop the claimed caches (the
 *     objects go back to their pages, the layer's lists to the layer);
 *     forget the pools' in-flight provider calls; the layer's fix-ups;
 *     release 8 to 2.  If the reclaim thread ran, its start is due: the
 *     child's first blocking get that misses its cache makes it, with
 *     no lock held (reclaim.c), so a child that execs or exits first
 *     never creates a thread.
 */
#include "fork.h"
#include "cache.h"
#include "pool.h"
#include "reclaim.h"

/* Set once by the layer above, from its constructor. */
static DP_FORK_DATA _Atomic(const struct dp_fork_layer *) dp_fork_layer;

void dp_fork_set_layer(const struct dp_fork_layer *l)
{
    atomic_store(&dp_fork_layer, l);
}

static void atfork_prepare(void)
{
    const struct dp_fork_layer *l = atomic_load(&dp_fork_layer);
    dp_tcache_atfork_claim();
    if (l)
        l->lock_outer();
    dp_reclaim_atfork_prepare();
    dp_pool_atfork_prepare();
    dp_tcache_atfork_prepare();
    if (l)
        l->lock_leaf();
}

static void atfork_parent(void)
{
    const struct dp_fork_layer *l = atomic_load(&dp_fork_layer);
    if (l)
        l->unlock_leaf();
    dp_tcache_atfork_parent(); /* releases the cache lock and the claims */
    dp_pool_atfork_parent();
    dp_reclaim_atfork_parent();
    if (l)
        l->unlock_outer();
}

static void atfork_child(void)
{
    const struct dp_fork_layer *l = atomic_load(&dp_fork_layer);
    dp_tcache_atfork_child();
    dp_pool_atfork_child();
    if (l) {
        l->child();
        l->unlock_leaf();
    }
    dp_tcache_atfork_child_unlock();
    dp_pool_atfork_child_unlock();
    dp_reclaim_atfork_child();
    if (l)
        l->unlock_outer();
}

#ifdef DP_TEST_HOOKS
/* Test builds only (lib/testhooks.c): every lock of the library and of
 * the layer above, in the fork order (the prepare handler). */
void dp_test_core_lock(void);
void dp_test_core_unlock(void);
void dp_test_core_lock(void) { atfork_prepare(); }
void dp_test_core_unlock(void) { atfork_parent(); }
#endif

void dp_fork_install(void)
{
    static _Atomic bool installed;
    if (!atomic_exchange(&installed, true))
        pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

__attribute__((constructor)) static void dp_fork_ctor(void)
{
    dp_fork_install();
}
