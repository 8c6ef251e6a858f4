/*
 * test_malloc_aligned.c -- aligned blocks of the drop-in malloc:
 * alignments above a page (8 KiB to 1 MiB) at every size from 0 up, the
 * size-0 block that must not reach past its own block into a neighbour's
 * page, and freed aligned blocks reused from the heap like any other.
 * Runs with DEFERPOOL_CONF=background_thread:0 (tests/malloc/meson.build),
 * so that only the calls under test move blocks and the statistics they
 * check are exact.
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "malloc_testutil.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static dp_malloc_stats_t st(void)
{
    dp_malloc_stats_t s;
    cr_assert_eq(dp_malloc_stats_get(&s), 0);
    return s;
}

/* The three ways to ask for an aligned block. */
static void *alloc_by(int how, size_t align, size_t n)
{
    void *p = NULL;
    switch (how) {
    case 0:
        cr_assert_eq(posix_memalign(&p, align, n), 0,
                     "posix_memalign(%zu, %zu)", align, n);
        return p;
    case 1:
        return aligned_alloc(align, n);
    default:
        return memalign(align, n);
    }
}

/* ---- size 0 (and 1) above a page ---------------------------------------- */

Test(malloc_aligned, size_zero_above_a_page_points_into_its_own_block)
{
    for (size_t a = 8 * KiB; a <= 1 * MiB; a <<= 1) {
        for (int how = 0; how < 3; how++) {
            for (size_t n = 0; n <= 1; n++) {
                unsigned char *p = alloc_by(how, a, n);
                cr_assert_not_null(p, "align %zu size %zu", a, n);
                cr_assert_eq((uintptr_t)p % a, 0, "align %zu size %zu", a, n);
                /* Its usable bytes are its own: writable, and it frees. */
                size_t u = malloc_usable_size(p);
                cr_assert_geq(u, 1, "align %zu size %zu: usable %zu", a, n, u);
                memset(p, 0xa5, u);
                free(p);
                cr_assert_eq(malloc_usable_size(p), 0, "freed");
            }
        }
    }
}

/* A size-0 block at an alignment above a page, mapped right after a
 * class page was: the kernel tends to put the new mapping just below the
 * last one, so the block's end is often the class page's first frame.
 * Every small block of those pages must still be known as one: its usable
 * size, realloc in place and free (a free that is ignored leaves it in
 * use).  The rounds repeat this for many pages and three alignments. */
Test(malloc_aligned, a_small_block_next_to_a_size_zero_aligned_block_keeps_working)
{
    enum { ROUNDS = 48, MAXSMALL = ROUNDS * 64 };
    const size_t n = 2000; /* the 2048 class: 31 blocks on a 64 KiB page */
    static void *small[MAXSMALL];
    void *zero[ROUNDS];
    size_t k = 0;
    dp_malloc_stats_t s0 = st();
    for (int r = 0; r < ROUNDS; r++) {
        /* Allocate until a class page is mapped... */
        uint64_t pages = st().small_pages;
        do {
            cr_assert_lt(k, MAXSMALL);
            cr_assert_not_null(small[k] = malloc(n));
            mt_fill(small[k], n, k);
            k++;
        } while (st().small_pages == pages);
        /* ...and map a size-0 aligned block at once. */
        zero[r] = aligned_alloc((8 * KiB) << (r % 3), 0);
        cr_assert_not_null(zero[r]);
    }
    for (size_t i = 0; i < k; i++) {
        cr_assert_eq(malloc_usable_size(small[i]), 2048, "block %zu", i);
        cr_assert_eq(realloc(small[i], n + 1), small[i], "block %zu", i);
        cr_assert_eq(mt_check(small[i], n, i), n, "block %zu", i);
    }
    for (int r = 0; r < ROUNDS; r++)
        free(zero[r]);
    /* Freeing the aligned blocks leaves the class pages alone too. */
    for (size_t i = 0; i < k; i++) {
        cr_assert_eq(malloc_usable_size(small[i]), 2048, "block %zu", i);
        free(small[i]);
    }
    dp_malloc_thread_flush();
    dp_malloc_stats_t s1 = st();
    cr_assert_eq(s1.small_objs_inuse, s0.small_objs_inuse,
                 "%llu small blocks were not freed",
                 (unsigned long long)(s1.small_objs_inuse - s0.small_objs_inuse));
}
