/*
 * testhooks.c -- test-only entry points, compiled only into private
 * copies of the library built with -DDP_TEST_HOOKS (tests/meson.build),
 * never into the installed libraries.
 *
 * dp_test_lock_all() takes every lock of the library in the lock order
 * (lib/dp_internal.h; the malloc's first when the malloc is linked in),
 * exactly as the fork prepare handlers do; dp_test_unlock_all() releases
 * them.  A test holds them in one thread while other threads put and
 * free, to prove that those paths take no lock.
 */
#include "dp_internal.h"

#ifndef DP_TEST_HOOKS
#error "lib/testhooks.c is built only with -DDP_TEST_HOOKS"
#endif

void dp_test_core_lock(void);
void dp_test_core_unlock(void);
/* Defined when lib/malloc.c is linked in. */
__attribute__((weak)) void dp_test_malloc_lock(void);
__attribute__((weak)) void dp_test_malloc_unlock(void);

void dp_test_lock_all(void);
void dp_test_unlock_all(void);

void dp_test_lock_all(void)
{
    if (dp_test_malloc_lock)
        dp_test_malloc_lock();
    dp_test_core_lock();
}

void dp_test_unlock_all(void)
{
    dp_test_core_unlock();
    if (dp_test_malloc_unlock)
        dp_test_malloc_unlock();
}
