/*
 * test_malloc_conformance.c -- the malloc family of libdeferpool-malloc,
 * linked with -ldeferpool-malloc: every size-class boundary, alignments,
 * realloc keeping contents across the small/large boundary, usable sizes,
 * errno values, the glibc extras and the statistics API.
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "malloc_testutil.h"

/* A failed realloc/reallocarray leaves the block valid: the tests use it
 * afterwards on purpose. */
#pragma GCC diagnostic ignored "-Wuse-after-free"

/* Hide a size from the compiler's allocation-size warnings. */
static size_t opaque(size_t x)
{
    volatile size_t v = x;
    return v;
}

/* The class sizes: 16..128, then four per doubling up to small_max
 * (8 KiB), and the same steps on to 64 KiB, which are medium blocks (cut
 * from chunks at page granularity) but boundaries worth checking still. */
static size_t class_sizes(size_t *out)
{
    static const size_t tiny[] = {16, 32, 48, 64, 80, 96, 112, 128};
    size_t n = 0;
    for (size_t i = 0; i < 8; i++)
        out[n++] = tiny[i];
    for (size_t base = 128; base < 65536; base *= 2)
        for (size_t k = 1; k <= 4; k++)
            out[n++] = base + k * base / 4;
    return n;
}

static void check_block(void *p, size_t n, size_t align, uintptr_t seed)
{
    cr_assert_not_null(p, "allocation of %zu bytes failed", n);
    cr_assert_eq((uintptr_t)p % align, 0, "%p (size %zu) not aligned to %zu",
                 p, n, align);
    cr_assert_geq(malloc_usable_size(p), n, "usable size %zu < %zu",
                  malloc_usable_size(p), n);
    mt_fill(p, n, seed);
    cr_assert_eq(mt_check(p, n, seed), n);
}

Test(malloc_conformance, every_class_boundary_n_minus_1_n_n_plus_1)
{
    size_t cls[64];
    size_t nc = class_sizes(cls);
    cr_assert_eq(cls[nc - 1], 65536);
    dp_malloc_stats_t st;
    cr_assert_eq(dp_malloc_stats_get(&st), 0);
    cr_assert_eq(cls[31], st.small_max, "the largest class");
    cr_assert_eq(st.small_classes, 32);
    void *keep[64 * 3];
    size_t k = 0;
    for (size_t i = 0; i < nc; i++) {
        for (size_t d = 0; d < 3; d++) {
            size_t n = cls[i] - 1 + d;
            void *p = malloc(n);
            /* glibc's guarantee, alignof(max_align_t), for every n. */
            check_block(p, n, 16, n);
            keep[k++] = p;
        }
    }
    /* All live at once: no two overlap, contents intact. */
    k = 0;
    for (size_t i = 0; i < nc; i++)
        for (size_t d = 0; d < 3; d++, k++)
            cr_assert_eq(mt_check(keep[k], cls[i] - 1 + d, cls[i] - 1 + d),
                         cls[i] - 1 + d, "block %zu overwritten", k);
    for (size_t i = 0; i < k; i++)
        free(keep[i]);
}

/* Every small size, 0 to small_max, by malloc and calloc: the block is
 * 16-byte aligned and its usable size is the smallest class that holds
 * it (docs/malloc.md, "Size classes"), whether the class comes from the table (up to 1 KiB) or
 * from the arithmetic above it. */
Test(malloc_conformance, every_small_size_gets_the_smallest_class_that_holds_it)
{
    size_t cls[64];
    size_t nc = class_sizes(cls);
    size_t c = 0;
    for (size_t n = 0; n <= cls[31]; n++) {
        while (c < nc && cls[c] < n)
            c++;
        void *p = malloc(opaque(n));
        cr_assert_not_null(p);
        cr_assert_eq(malloc_usable_size(p), cls[c],
                     "malloc(%zu): usable %zu, the class is %zu", n,
                     malloc_usable_size(p), cls[c]);
        cr_assert_eq((uintptr_t)p % 16, 0, "malloc(%zu) = %p", n, p);
        void *q = calloc(1, opaque(n));
        cr_assert_not_null(q);
        cr_assert_eq((uintptr_t)q % 16, 0, "calloc(1, %zu) = %p", n, q);
        cr_assert_eq(malloc_usable_size(q), cls[c],
                     "calloc(1, %zu): usable %zu, the class is %zu", n,
                     malloc_usable_size(q), cls[c]);
        free(q);
        free(p);
    }
}

Test(malloc_conformance, large_sizes_up_to_many_mib)
{
    static const size_t sizes[] = {65537, 100000, 131072, 1 << 20,
                                   (1 << 20) + 1, 5 << 20, 33 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *p = malloc(sizes[i]);
        check_block(p, sizes[i], 16, i);
        free(p);
    }
}

Test(malloc_conformance, malloc_zero_is_unique_and_freeable)
{
    void *a = malloc(0), *b = malloc(0);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_neq(a, b);
    free(a);
    free(b);
    free(NULL);
}

Test(malloc_conformance, calloc_zeroes_reused_memory_small_and_large)
{
    static const size_t sizes[] = {24, 1000, 60000, 200000, 3 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        for (int r = 0; r < 3; r++) {
            unsigned char *p = malloc(n);
            cr_assert_not_null(p);
            memset(p, 0xff, n);
            free(p);
            unsigned char *q = calloc(1, n);
            cr_assert_not_null(q);
            for (size_t j = 0; j < n; j++)
                cr_assert_eq(q[j], 0, "calloc(%zu) byte %zu not zero", n, j);
            free(q);
        }
    }
}

Test(malloc_conformance, calloc_and_reallocarray_overflow_enomem)
{
    errno = 0;
    cr_assert_null(calloc(opaque(SIZE_MAX / 2), 3));
    cr_assert_eq(errno, ENOMEM);
    errno = 0;
    cr_assert_null(calloc(opaque((size_t)1 << 33), (size_t)1 << 33));
    cr_assert_eq(errno, ENOMEM);
    void *p = malloc(10);
    errno = 0;
    void *r = reallocarray(p, opaque(SIZE_MAX / 2), 3);
    cr_assert_null(r);
    cr_assert_eq(errno, ENOMEM);
    void *q = reallocarray(p, 10, 10); /* the original survived */
    cr_assert_not_null(q);
    free(q);
}

Test(malloc_conformance, huge_requests_fail_with_enomem)
{
    static const size_t sizes[] = {SIZE_MAX, SIZE_MAX / 2, (size_t)1 << 62,
                                   (size_t)1 << 50};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        errno = 0;
        cr_assert_null(malloc(opaque(sizes[i])), "malloc(%zu)", sizes[i]);
        cr_assert_eq(errno, ENOMEM);
        void *p = (void *)1;
        cr_assert_eq(posix_memalign(&p, 64, sizes[i]), ENOMEM);
        cr_assert_eq(p, (void *)1, "posix_memalign wrote *out on failure");
    }
    void *p = malloc(100);
    errno = 0;
    cr_assert_null(realloc(p, opaque(SIZE_MAX - 10)));
    cr_assert_eq(errno, ENOMEM);
    free(p); /* still ours after the failed realloc */
}

/* realloc keeps contents through a walk across classes and the
 * small/large boundary, both ways. */
Test(malloc_conformance, realloc_keeps_contents_grow_and_shrink)
{
    static const size_t walk[] = {1, 7, 8, 9, 100, 128, 129, 4000, 65535,
                                  65536, 65537, 200000, 3 << 20, 5 << 20,
                                  1 << 20, 70000, 65536, 5000, 17, 3, 1};
    size_t cur = 0;
    unsigned char *p = NULL;
    for (size_t i = 0; i < sizeof(walk) / sizeof(walk[0]); i++) {
        size_t n = walk[i];
        p = realloc(p, n);
        cr_assert_not_null(p, "realloc to %zu", n);
        size_t keep = cur < n ? cur : n;
        cr_assert_eq(mt_check(p, keep, 42), keep, "realloc %zu -> %zu lost data",
                     cur, n);
        mt_fill(p, n, 42);
        cr_assert_geq(malloc_usable_size(p), n);
        cur = n;
    }
    free(p);
}

Test(malloc_conformance, realloc_in_place_when_it_fits)
{
    char *p = malloc(100); /* class 112 */
    cr_assert_eq(realloc(p, 110), p, "grow within the class moved");
    cr_assert_eq(realloc(p, 90), p, "small shrink moved");
    char *l = malloc(1 << 20);
    mt_fill(l, 1 << 20, 9);
    cr_assert_eq(realloc(l, 900000), l, "large small-shrink moved");
    char *g = realloc(l, 8 << 20); /* mremap: may move, keeps data */
    cr_assert_not_null(g);
    cr_assert_eq(mt_check(g, 900000, 9), 900000);
    g = realloc(g, 2 << 20);       /* large shrink by more than half */
    cr_assert_not_null(g);
    cr_assert_eq(mt_check(g, 900000, 9), 900000);
    free(g);
    free(p);
}

Test(malloc_conformance, realloc_null_and_zero_as_glibc)
{
    void *p = realloc(NULL, 50);
    cr_assert_not_null(p);
    cr_assert_geq(malloc_usable_size(p), 50);
    cr_assert_null(realloc(p, 0), "realloc(p, 0) frees and returns NULL");
    void *l = malloc(1 << 20);
    cr_assert_null(realloc(l, 0));
}

Test(malloc_conformance, alignment_requests_up_to_and_beyond_64k)
{
    static const size_t sizes[] = {1, 8, 100, 4096, 5000, 65536, 70000,
                                   1 << 20};
    for (size_t a = 8; a <= ((size_t)1 << 21); a <<= 1) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            size_t n = sizes[i];
            void *p = NULL;
            cr_assert_eq(posix_memalign(&p, a, n), 0, "posix_memalign(%zu, %zu)",
                         a, n);
            check_block(p, n, a, a + n);
            void *q = aligned_alloc(a, n);
            check_block(q, n, a, a * 3 + n);
            void *r = memalign(a, n);
            check_block(r, n, a, a * 5 + n);
            /* Aligned blocks realloc and free like any other. */
            r = realloc(r, n * 2 + 1);
            cr_assert_eq(mt_check(r, n, a * 5 + n), n);
            free(p);
            free_aligned_sized(q, a, n);
            free(r);
        }
    }
}

Test(malloc_conformance, alignment_errors)
{
    void *p = (void *)1;
    cr_assert_eq(posix_memalign(&p, 0, 10), EINVAL);
    cr_assert_eq(posix_memalign(&p, 4, 10), EINVAL, "not a multiple of void*");
    cr_assert_eq(posix_memalign(&p, 24, 10), EINVAL, "not a power of two");
    cr_assert_eq(posix_memalign(&p, 3 * 4096, 10), EINVAL);
    cr_assert_eq(p, (void *)1);
    errno = 0;
    cr_assert_null(aligned_alloc(24, 48));
    cr_assert_eq(errno, EINVAL);
    /* memalign rounds a non-power of two up, as glibc does. */
    void *m = memalign(48, 10);
    cr_assert_not_null(m);
    cr_assert_eq((uintptr_t)m % 64, 0);
    free(m);
    errno = 0;
    cr_assert_null(memalign(SIZE_MAX / 2 + 2, 10));
    cr_assert_eq(errno, EINVAL);
}

Test(malloc_conformance, valloc_and_pvalloc_are_page_aligned)
{
    void *v = valloc(100);
    cr_assert_not_null(v);
    cr_assert_eq((uintptr_t)v % 4096, 0);
    void *pv = pvalloc(5000);
    cr_assert_not_null(pv);
    cr_assert_eq((uintptr_t)pv % 4096, 0);
    cr_assert_geq(malloc_usable_size(pv), 8192);
    void *p0 = pvalloc(0);
    cr_assert_not_null(p0);
    cr_assert_geq(malloc_usable_size(p0), 4096);
    free(v);
    free(pv);
    free_sized(p0, 4096);
    cr_assert_eq(malloc_usable_size(NULL), 0);
}

Test(malloc_conformance, glibc_extras_behave)
{
    void *big = malloc(4 << 20);
    memset(big, 1, 4 << 20);
    struct mallinfo2 mi = mallinfo2();
    cr_assert_geq(mi.uordblks, (size_t)4 << 20);
    cr_assert_geq(mi.hblkhd, (size_t)4 << 20);
    cr_assert_geq(mi.hblks, 1);
    cr_assert_geq(mi.arena, mi.uordblks);
    free(big);
    /* What it returns: malloc_nothread, where no reclaim pass can give
     * the block back first. */
    malloc_trim(0);
    mi = mallinfo2();
    cr_assert_eq(mi.keepcost, 0);
    cr_assert_eq(mallopt(M_TRIM_THRESHOLD, 1 << 20), 1);
    cr_assert_eq(mallopt(M_MMAP_THRESHOLD, 1 << 20), 1);
    cr_assert_eq(mallopt(M_ARENA_MAX, 2), 1);
    cr_assert_eq(mallopt(12345, 1), 0, "unknown parameter");
}

/* The thread starts once the malloc has mapped 4 MiB (docs/malloc.md,
 * "The reclaim thread"): not for a few blocks, but for a burst of them. */
Test(malloc_conformance, reclaim_thread_starts_lazily_and_trim_returns_pages)
{
    void *p = malloc(300);
    free(p);
    dp_malloc_stats_t s;
    dp_malloc_stats_get(&s);
    cr_assert_eq(s.reclaim_running, 0, "started for one block");
    /* A burst of small objects, freed: trim gives the pages back.  At
     * least 6 MiB of them, whatever the scale. */
    size_t n = mt_scaled(20000);
    if (n < 6 * 1024)
        n = 6 * 1024;
    void **v = malloc(n * sizeof(void *));
    for (size_t i = 0; i < n; i++)
        v[i] = malloc(1000);
    dp_malloc_stats_get(&s);
    cr_assert_eq(s.reclaim_running, 1, "not started after %zu KiB",
                 n * 1000 / 1024);
    cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    dp_malloc_stats_t before;
    dp_malloc_stats_get(&before);
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
    dp_malloc_trim();
    dp_malloc_stats_get(&s);
    cr_assert_gt(s.small_pages_freed, before.small_pages_freed);
    cr_assert_lt(s.small_bytes_mapped, before.small_bytes_mapped);
}

Test(malloc_conformance, stats_print_text_and_json)
{
    /* dp_malloc_reclaim_sync starts the reclaim thread. */
    free(malloc(300));
    cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    dp_malloc_stats_print(f, 1);
    fclose(f);
    cr_assert(strncmp(buf, "{\"allocator\":\"deferpool-malloc\"", 31) == 0,
              "%s", buf);
    cr_assert_not_null(strstr(buf, "\"classes\":["));
    cr_assert_eq(buf[len - 2], '}');
    mt_libc_free(buf);
    f = open_memstream(&buf, &len);
    dp_malloc_stats_print(f, 0);
    fclose(f);
    cr_assert_not_null(strstr(buf, "deferpool-malloc"));
    cr_assert_not_null(strstr(buf, "reclaim thread: running"));
    mt_libc_free(buf);
}

/* DEFERPOOL_CONF sets no reclaim_age_ms here: the malloc keeps its own
 * default age (lib/malloc/malloc_internal.h, MC_DEFAULT_AGE_NS), not the
 * core's, which it can tell by the option's is-set bit. */
Test(malloc_conformance, reclaim_age_is_the_mallocs_own_default_when_unset)
{
    free(malloc(300));
    dp_malloc_stats_t s;
    cr_assert_eq(dp_malloc_stats_get(&s), 0);
    cr_assert_eq(s.reclaim_age_ns, 500000000ull);
}
