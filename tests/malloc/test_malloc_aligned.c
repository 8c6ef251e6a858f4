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
    dp_malloc_stats_t s0 = mt_stats();
    for (int r = 0; r < ROUNDS; r++) {
        /* Allocate until a class page is mapped... */
        uint64_t pages = mt_stats().small_pages;
        do {
            cr_assert_lt(k, MAXSMALL);
            cr_assert_not_null(small[k] = malloc(n));
            mt_fill(small[k], n, k);
            k++;
        } while (mt_stats().small_pages == pages);
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
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.small_objs_inuse, s0.small_objs_inuse,
                 "%llu small blocks were not freed",
                 (unsigned long long)(s1.small_objs_inuse - s0.small_objs_inuse));
}

/* ---- alignments above a page ------------------------------------------- */

/* Every size, from 0 up, at every alignment from 8 KiB to 1 MiB: aligned,
 * usable for what was asked, contents kept through realloc both ways,
 * and freed. */
Test(malloc_aligned, above_a_page_alignment_usable_size_realloc_and_free)
{
    static const size_t sizes[] = {0, 1, 100, 4095, 4096, 8193, 100000,
                                   (1 << 20) + 1};
    dp_malloc_stats_t s0 = mt_stats();
    for (size_t a = 8 * KiB; a <= 1 * MiB; a <<= 1) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            for (int how = 0; how < 3; how++) {
                size_t n = sizes[i], seed = a + n + (size_t)how;
                char *p = alloc_by(how, a, n);
                cr_assert_not_null(p, "align %zu size %zu", a, n);
                cr_assert_eq((uintptr_t)p % a, 0, "align %zu size %zu", a, n);
                cr_assert_geq(malloc_usable_size(p), n ? n : 1);
                mt_fill(p, n, seed);
                char *g = realloc(p, 2 * n + 5000);
                cr_assert_not_null(g);
                cr_assert_eq(mt_check(g, n, seed), n, "grown: align %zu size %zu",
                             a, n);
                char *s = realloc(g, n / 2 + 1);
                cr_assert_not_null(s);
                cr_assert_eq(mt_check(s, n / 2, seed), n / 2,
                             "shrunk: align %zu size %zu", a, n);
                if (how == 1)
                    free_aligned_sized(s, a, n / 2 + 1);
                else
                    free(s);
            }
        }
    }
    dp_malloc_stats_t s = mt_stats();
    cr_assert_eq(s.large_inuse, s0.large_inuse);
}

/* A freed aligned block is a free block like any other: it is handed out
 * once (a second free of it aborts: test_malloc_hardening). */
Test(malloc_aligned, a_freed_aligned_block_is_handed_out_once)
{
    for (size_t a = 128; a <= 1 * MiB; a <<= 3) {
        void *p = alloc_by(0, a, 100 * KiB);
        free(p);
        cr_assert_eq(malloc_usable_size(p), 0);
        void *q1 = alloc_by(0, a, 100 * KiB), *q2 = alloc_by(0, a, 100 * KiB);
        cr_assert_neq(q1, q2, "align %zu: one block handed out twice", a);
        free(q1);
        free(q2);
    }
}

/* ---- freed aligned blocks are reused ------------------------------------ */

/* One block live at a time, freed and asked for again, many times: the
 * same block comes back, and no new memory is mapped after the first. */
static void one_live_loop(size_t align, size_t n, size_t iters)
{
    dp_malloc_stats_t s0 = mt_stats();
    char *first = NULL;
    for (size_t i = 0; i < iters; i++) {
        char *p = alloc_by((int)(i % 3), align, n);
        cr_assert_not_null(p);
        cr_assert_eq((uintptr_t)p % align, 0);
        cr_assert_geq(malloc_usable_size(p), n);
        p[0] = 1;
        if (n)
            p[n - 1] = 2;
        if (i == 0)
            first = p;
        dp_malloc_stats_t s = mt_stats();
        cr_assert_eq(p, first, "align %zu size %zu: iteration %zu got a new block",
                     align, n, i);
        cr_assert_leq(s.large_maps, s0.large_maps + 1,
                      "align %zu size %zu: %llu mappings after %zu iterations",
                      align, n,
                      (unsigned long long)(s.large_maps - s0.large_maps), i + 1);
        free(p);
    }
    dp_malloc_stats_t s = mt_stats();
    cr_assert_geq(s.large_reused, s0.large_reused + iters - 1);
    cr_assert_eq(s.large_inuse, s0.large_inuse);
}

Test(malloc_aligned, an_aligned_block_freed_and_asked_for_again_is_reused)
{
    one_live_loop(128, 9000, mt_scaled(20000));
    dp_malloc_trim();
    one_live_loop(4 * KiB, 100 * KiB, mt_scaled(2000));
    static const size_t big[] = {8 * KiB, 64 * KiB, 1 * MiB};
    static const size_t n[] = {0, 5000, 300 * KiB, 3 * MiB};
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < 4; j++) {
            dp_malloc_trim();
            one_live_loop(big[i], n[j], mt_scaled(500));
        }
}

/* Page-aligned blocks of 256 KiB to 8 MiB, one live, one byte written per
 * page: after the first round of sizes, every block comes from the heap
 * (no mapping), so its pages are already there. */
Test(malloc_aligned, page_aligned_large_blocks_come_from_the_heap)
{
    static const size_t sizes[] = {256 * KiB, 512 * KiB, 1 * MiB,
                                   2 * MiB,   4 * MiB,   8 * MiB};
    enum { NS = sizeof(sizes) / sizeof(sizes[0]) };
    dp_malloc_trim();
    size_t rounds = mt_scaled(50);
    dp_malloc_stats_t s1 = mt_stats();
    for (size_t r = 0; r < rounds; r++) {
        if (r == 1)
            s1 = mt_stats();
        for (size_t i = 0; i < NS; i++) {
            void *p;
            cr_assert_eq(posix_memalign(&p, 4 * KiB, sizes[i]), 0);
            cr_assert_eq((uintptr_t)p % (4 * KiB), 0);
            for (size_t k = 0; k < sizes[i]; k += 4 * KiB)
                ((char *)p)[k] = (char)k;
            free(p);
        }
    }
    dp_malloc_stats_t s = mt_stats();
    if (rounds > 1) {
        cr_assert_eq(s.large_maps, s1.large_maps,
                     "%llu mappings after the first round",
                     (unsigned long long)(s.large_maps - s1.large_maps));
        cr_assert_geq(s.large_reused, s1.large_reused + (rounds - 1) * NS);
    }
    /* The heap holds what was freed until a trim gives it back. */
    cr_assert_gt(s.large_bytes_cached + s.large_bytes_queued, 8 * MiB);
    dp_malloc_trim();
    s = mt_stats();
    cr_assert_eq(s.large_cached + s.large_queued, 0);
}
