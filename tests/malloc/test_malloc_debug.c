/*
 * test_malloc_debug.c -- bad frees in debug mode (DEFERPOOL_CONF=debug:1,
 * tests/malloc/meson.build): each one aborts with a message instead of
 * corrupting the heap, and good frees still work.
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

Test(malloc_debug, good_frees_of_every_kind_still_work)
{
    size_t sizes[] = {1, 64, 1000, 60000, 200000, 3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *p = malloc(sizes[i]);
        cr_assert_not_null(p);
        memset(p, 0x5a, sizes[i]);
        free(p);
    }
}

Test(malloc_debug, free_of_a_pointer_never_handed_out_aborts,
     .signal = SIGABRT)
{
    static char not_ours[64];
    void *warm = malloc(16); /* the allocator is initialised */
    free(warm);
    free(not_ours + 16);
    cr_assert_fail("free() of a foreign pointer returned");
}

Test(malloc_debug, double_free_of_a_small_block_aborts, .signal = SIGABRT)
{
    void *p = malloc(48);
    cr_assert_not_null(p);
    free(p);
    free(p);
    cr_assert_fail("a double free returned");
}

Test(malloc_debug, free_of_an_interior_pointer_aborts, .signal = SIGABRT)
{
    char *p = malloc(256);
    cr_assert_not_null(p);
    free(p + 8);
    cr_assert_fail("free() of an interior pointer returned");
}

Test(malloc_debug, double_free_of_a_large_block_aborts, .signal = SIGABRT)
{
    void *p = malloc(100000); /* a medium block: the page-granular heap */
    cr_assert_not_null(p);
    free(p);
    free(p);
    cr_assert_fail("a double free returned");
}

Test(malloc_debug, free_of_a_pointer_into_a_large_block_aborts,
     .signal = SIGABRT)
{
    char *p = malloc(3 << 20);
    cr_assert_not_null(p);
    free(p + 64);
    cr_assert_fail("free() of an interior pointer returned");
}
