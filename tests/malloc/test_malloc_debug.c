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

/* ---- overflows and writes after free: the class pools are debug pools */

#include <deferpool.h>
#include <malloc.h>

#include "../testutil.h"

static void overflow_then_free(void *arg)
{
    size_t n = *(const size_t *)arg;
    char *p = malloc(n);
    if (!p)
        _exit(3);
    size_t usable = malloc_usable_size(p);
    fprintf(stderr, "block %p, usable %zu\n", (void *)p, usable);
    p[usable] = 'x'; /* one byte past what the block may hold */
    free(p);
}

Test(malloc_debug, a_one_byte_overflow_of_a_small_block_is_reported_at_free)
{
    size_t sizes[] = {48, 1, 1000};
    for (int i = 0; i < 3; i++) {
        const char *const want[] = {"pool 'malloc-",
                                    "redzone overwritten at offset +",
                                    "(1 byte(s) past the end", NULL};
        char out[8192];
        cr_assert(tu_expect_abort(overflow_then_free, &sizes[i], want, out,
                                  sizeof(out)),
                  "malloc(%zu): no report; the child said:\n%s", sizes[i],
                  out);
        char obj[64], line[128];
        cr_assert_eq(sscanf(out, "block %63[^,]", obj), 1, "%s", out);
        snprintf(line, sizeof(line), "object %s: redzone", obj);
        cr_assert_not_null(strstr(out, line), "no '%s' in:\n%s", line, out);
    }
}

/* The freed block is handed out again by one of the next mallocs of its
 * class (which ones depends on the page's free lists): each checks the
 * pattern free() wrote. */
static void write_after_free(void *arg)
{
    (void)arg;
    char *p = malloc(64);
    if (!p)
        _exit(3);
    free(p);
    p[17] = 0; /* the misuse */
    for (int i = 0; i < 100000; i++)
        if (!malloc(64))
            _exit(4);
    fprintf(stderr, "no report after 100000 mallocs\n");
}

Test(malloc_debug, a_write_after_free_of_a_small_block_is_reported_by_malloc)
{
    const char *const want[] = {"pool 'malloc-64'",
                                "written after put at offset +17", NULL};
    char out[8192];
    cr_assert(tu_expect_abort(write_after_free, NULL, want, out, sizeof(out)),
              "no report; the child said:\n%s", out);
}

Test(malloc_debug, every_usable_byte_is_the_callers_and_realloc_keeps_it)
{
    for (size_t n = 1; n <= 2048; n = n * 3 + 1) {
        unsigned char *p = malloc(n);
        cr_assert_not_null(p);
        size_t usable = malloc_usable_size(p);
        cr_assert_geq(usable, n);
        for (size_t i = 0; i < usable; i++)
            p[i] = (unsigned char)(i * 7 + n);
        unsigned char *q = realloc(p, usable * 2 + 100);
        cr_assert_not_null(q);
        for (size_t i = 0; i < usable; i++)
            cr_assert_eq(q[i], (unsigned char)(i * 7 + n),
                         "malloc(%zu): byte %zu lost by realloc", n, i);
        unsigned char *r = realloc(q, n);
        cr_assert_not_null(r);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(r[i], (unsigned char)(i * 7 + n));
        free(r); /* a redzone written by realloc would abort here */
    }
}
