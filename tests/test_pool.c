/*
 * test_pool.c -- basic pool semantics: get/put, object placement and
 * alignment, DP_ZERO, statistics, the invariant checker, object contents,
 * order of service and the version string.
 *
 * Every pool here uses the mock provider (page traffic is counted) and
 * DP_POOL_NOTHREAD (no reclaim thread moves pages behind the test's back).
 * Objects a thread puts sit in its per-thread cache until flushed, so a
 * test that looks at pages calls dp_thread_cache_flush() first.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

/* Iteration counts are divided by DP_TEST_SCALE (4 under ASan, 10 TSan). */
static void mock_attr(dp_pool_attr_t *a, dp_mock_t *m)
{
    dp_pool_attr_init(a);
    a->provider = dp_mock_provider(m);
    a->clock = dp_mock_clock;
    a->clock_arg = m;
    a->flags = DP_POOL_NOTHREAD;
}

static dp_pool_t *mock_pool(dp_mock_t *m, const char *name, size_t objsize)
{
    dp_pool_attr_t a;
    mock_attr(&a, m);
    a.pagesize = 4096; /* small pages: more page traffic per object */
    dp_pool_t *pool = dp_pool_create(name, objsize, &a);
    cr_assert_not_null(pool, "dp_pool_create(%s, %zu) failed: %s", name,
                       objsize, strerror(errno));
    return pool;
}

/* Destroy the pool and prove that every page went back to the mock. */
static void finish(dp_pool_t *pool, dp_mock_t *m)
{
    cr_assert_eq(dp_pool_check(pool), 0, "invariants broken before destroy");
    cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, c.frees,
                 "pages leaked: %" PRIu64 " allocated, %" PRIu64 " freed",
                 c.allocs, c.frees);
    cr_assert_eq(c.pages_out, 0);
    dp_mock_destroy(m);
}

static uintptr_t page_of(const void *p, size_t pagesize)
{
    return (uintptr_t)p & ~(uintptr_t)(pagesize - 1);
}

static void fill(void *obj, size_t n, uint64_t tag)
{
    unsigned char *b = obj;
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(tag * 131 + i * 7 + 1);
}

static int holds(const void *obj, size_t n, uint64_t tag)
{
    const unsigned char *b = obj;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(tag * 131 + i * 7 + 1))
            return 0;
    return 1;
}

/* What a page really holds, measured rather than read from the pool's own
 * statistics: a one-page pool without caches hands out objects until it
 * has none left.  Also the smallest distance between two of them (the
 * slot) and whether they all lie in one page. */
struct geometry {
    size_t objs, slot;
};

static struct geometry measure(size_t objsize, size_t pagesize)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a;
    mock_attr(&a, m);
    a.pagesize = pagesize;
    a.max_pages = 1;
    a.lowat = 0;
    a.flags |= DP_POOL_NOCACHE;
    dp_pool_t *pool = dp_pool_create("measure", objsize, &a);
    cr_assert_not_null(pool, "dp_pool_create: %s", strerror(errno));
    size_t cap = pagesize / objsize + 1, n = 0;
    void **objs = calloc(cap + 1, sizeof *objs);
    while (n <= cap && (objs[n] = dp_pool_get(pool, DP_NOWAIT)) != NULL)
        n++;
    cr_assert_leq(n, pagesize / objsize, "more objects than fit in a page");
    qsort(objs, n, sizeof *objs, tu_cmp_ptr);
    struct geometry g = {n, SIZE_MAX};
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(page_of(objs[i], pagesize), page_of(objs[0], pagesize));
        if (i && (size_t)((char *)objs[i] - (char *)objs[i - 1]) < g.slot)
            g.slot = (size_t)((char *)objs[i] - (char *)objs[i - 1]);
    }
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    dp_mock_destroy(m);
    return g;
}

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

/* ------------------------------------------------------------------ tests */

TestSuite(pool, .init = tu_watchdog_init);

Test(pool, get_returns_an_object_and_put_takes_it_back)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, "basic", 64);

    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    memset(o, 0x5a, 64);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.gets, 1);
    cr_assert_eq(s.puts, 0);
    cr_assert_eq(s.objs_inuse, 1);
    cr_assert_eq(s.pages, 1);

    dp_pool_put(pool, o);
    s = tu_stats(pool);
    cr_assert_eq(s.puts, 1);
    cr_assert_eq(s.objs_inuse, 0);

    /* The page is kept (queued empty), so a second get needs no provider. */
    void *o2 = dp_pool_get(pool, DP_NOWAIT);
    cr_assert_not_null(o2);
    cr_assert_eq(tu_counters(m).allocs, 1);
    dp_pool_put(pool, o2);
    finish(pool, m);
}

Test(pool, objects_are_distinct_and_lie_inside_pages_from_the_provider)
{
    dp_mock_t *m = dp_mock_create(0);
    const size_t objsize = 72;
    dp_pool_t *pool = mock_pool(m, "distinct", objsize);
    const size_t ps = 4096;
    struct geometry g = measure(objsize, ps);
    cr_assert_eq(g.slot, round_up(objsize, 16), "slot of a 72-byte object");
    /* At most a page minus the slot-aligned header; at least what is
     * left after a header of 4 cache lines. */
    cr_assert_geq(g.objs, (ps - 256) / g.slot);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.pagesize, ps);
    cr_assert_eq(s.objs_per_page, g.objs);
    cr_assert_eq(s.slotsize, g.slot);
    size_t opp = g.objs;
    size_t n = 3 * opp + opp / 2 + 1;

    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++) {
        objs[i] = dp_pool_get(pool, DP_WAITOK);
        cr_assert_not_null(objs[i]);
    }

    size_t nlog = dp_mock_log_length(m);
    dp_mock_log_entry_t *log = calloc(nlog ? nlog : 1, sizeof *log);
    cr_assert_eq(dp_mock_log(m, 0, log, nlog), nlog);

    void **sorted = malloc(n * sizeof *sorted);
    memcpy(sorted, objs, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, tu_cmp_ptr);
    size_t distinct_pages = 0;
    for (size_t i = 0; i < n; i++) {
        uintptr_t p = (uintptr_t)sorted[i], base = page_of(sorted[i], ps);
        if (i > 0)
            cr_assert_geq(p - (uintptr_t)sorted[i - 1], objsize,
                          "objects %p and %p overlap", sorted[i - 1],
                          sorted[i]);
        cr_assert_leq(p + objsize, base + ps,
                      "object %p crosses the end of its page", sorted[i]);
        int found = 0;
        for (size_t k = 0; k < nlog && !found; k++)
            found = log[k].op == DP_MOCK_ALLOC && log[k].ok &&
                    (uintptr_t)log[k].page == base && log[k].size == ps;
        cr_assert(found, "object %p is not in a page the provider gave", sorted[i]);
        if (i == 0 || page_of(sorted[i - 1], ps) != base)
            distinct_pages++;
    }
    s = tu_stats(pool);
    cr_assert_eq(distinct_pages, 4, "3.5 pages of objects fill 4 pages");
    cr_assert_eq(tu_counters(m).allocs, 4);
    cr_assert_eq(s.pages, 4);

    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(sorted);
    free(log);
    free(objs);
    finish(pool, m);
}

Test(pool, alignment_is_honoured_for_every_power_of_two_from_8_to_4096)
{
    dp_mock_t *m = dp_mock_create(0);
    for (size_t align = 8; align <= 4096; align *= 2) {
        dp_pool_attr_t a;
        mock_attr(&a, m);
        a.align = align;
        dp_pool_t *pool = dp_pool_create("aligned", 24, &a);
        cr_assert_not_null(pool, "align %zu rejected", align);
        size_t opp = tu_stats(pool).objs_per_page;
        size_t n = 2 * opp + 1;
        void **objs = calloc(n, sizeof *objs);
        for (size_t i = 0; i < n; i++) {
            objs[i] = dp_pool_get(pool, DP_WAITOK);
            cr_assert_not_null(objs[i]);
            cr_assert_eq((uintptr_t)objs[i] % align, 0,
                         "object %p not aligned to %zu", objs[i], align);
        }
        for (size_t i = 0; i < n; i++)
            dp_pool_put(pool, objs[i]);
        free(objs);
        cr_assert_eq(dp_pool_check(pool), 0);
        cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                     strerror(errno));
        dp_mock_counters_t c = tu_counters(m);
        cr_assert_eq(c.allocs, c.frees, "align %zu leaked pages", align);
    }
    dp_mock_destroy(m);
}

/* Above the system page: the pool's page grows to hold the aligned
 * header and slots (pagesize 0), and an explicit page too small for one
 * aligned slot after the header is refused. */
Test(pool, alignment_above_4096_is_honoured_up_to_1_mib)
{
    dp_mock_t *m = dp_mock_create(0);
    for (size_t align = 8192; align <= ((size_t)1 << 20); align *= 2) {
        dp_pool_attr_t a;
        mock_attr(&a, m);
        a.align = align;
        a.lowat = 0;
        dp_pool_t *pool = dp_pool_create("bigalign", 100, &a);
        cr_assert_not_null(pool, "align %zu rejected: %s", align,
                           strerror(errno));
        dp_pool_stats_t s = tu_stats(pool);
        cr_assert_eq(s.slotsize % align, 0, "align %zu: slot %zu", align,
                     s.slotsize);
        size_t n = 2 * s.objs_per_page + 1;
        void **objs = calloc(n, sizeof *objs);
        for (size_t i = 0; i < n; i++) {
            objs[i] = dp_pool_get(pool, i % 2 ? DP_NOWAIT : DP_WAITOK);
            cr_assert_not_null(objs[i], "align %zu: get %zu", align, i);
            cr_assert_eq((uintptr_t)objs[i] % align, 0,
                         "object %p not aligned to %zu", objs[i], align);
            memset(objs[i], 0x3c, 100);
        }
        for (size_t i = 0; i < n; i++)
            dp_pool_put(pool, objs[i]);
        free(objs);
        cr_assert_eq(dp_pool_check(pool), 0);
        cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                     strerror(errno));

        /* A page of the alignment itself has no room after its header. */
        a.pagesize = align;
        errno = 0;
        cr_assert_null(dp_pool_create("bigalign", 100, &a),
                       "align %zu in a page of %zu accepted", align, align);
        cr_assert_eq(errno, EINVAL);
    }
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, c.frees);
    dp_mock_destroy(m);
}

Test(pool, default_alignment_is_8_below_16_bytes_and_16_from_16_bytes)
{
    static const struct {
        size_t objsize, align;
    } cases[] = {{8, 8}, {12, 8}, {16, 16}, {24, 16}, {40, 16}, {100, 16}};
    dp_mock_t *m = dp_mock_create(0);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        dp_pool_t *pool = mock_pool(m, "defalign", cases[c].objsize);
        size_t n = 2 * tu_stats(pool).objs_per_page;
        void **objs = calloc(n, sizeof *objs);
        for (size_t i = 0; i < n; i++) {
            objs[i] = dp_pool_get(pool, DP_WAITOK);
            cr_assert_not_null(objs[i]);
            cr_assert_eq((uintptr_t)objs[i] % cases[c].align, 0,
                         "objsize %zu: %p not %zu-aligned", cases[c].objsize,
                         objs[i], cases[c].align);
        }
        for (size_t i = 0; i < n; i++)
            dp_pool_put(pool, objs[i]);
        free(objs);
        cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                     strerror(errno));
    }
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, c.frees);
    dp_mock_destroy(m);
}

Test(pool, zero_flag_zeroes_an_object_whose_memory_was_dirtied)
{
    static const int modes[] = {DP_WAITOK, DP_NOWAIT};
    for (size_t k = 0; k < 2; k++) {
        dp_mock_t *m = dp_mock_create(0);
        const size_t objsize = 200;
        dp_pool_t *pool = mock_pool(m, "zero", objsize);
        size_t n = 2 * tu_stats(pool).objs_per_page;
        void **objs = calloc(n, sizeof *objs);
        /* Dirty every object of two full pages, then give them back. */
        for (size_t i = 0; i < n; i++) {
            objs[i] = dp_pool_get(pool, DP_WAITOK);
            cr_assert_not_null(objs[i]);
            memset(objs[i], 0xa5, objsize);
        }
        for (size_t i = 0; i < n; i++)
            dp_pool_put(pool, objs[i]);
        dp_thread_cache_flush();
        uint64_t allocs = tu_counters(m).allocs;
        cr_assert_eq(tu_stats(pool).pages_empty, 2);

        /* The same dirty memory comes back, zeroed. */
        for (size_t i = 0; i < n; i++) {
            unsigned char *o = dp_pool_get(pool, modes[k] | DP_ZERO);
            cr_assert_not_null(o);
            for (size_t b = 0; b < objsize; b++)
                cr_assert_eq(o[b], 0, "byte %zu of %p not zeroed (mode %d)",
                             b, (void *)o, modes[k]);
            objs[i] = o;
        }
        cr_assert_eq(tu_counters(m).allocs, allocs, "DP_ZERO gets should reuse the dirty pages");
        for (size_t i = 0; i < n; i++)
            dp_pool_put(pool, objs[i]);
        free(objs);
        finish(pool, m);
    }
}

Test(pool, zero_gets_can_use_every_object_of_the_pool)
{
    /* One page at most: every DP_ZERO get must find a free object until
     * all of the page's objects are out, whether or not they sit in the
     * thread's cache. */
    static const int modes[] = {DP_NOWAIT, DP_WAITOK};
    for (size_t k = 0; k < 2; k++) {
        dp_mock_t *m = dp_mock_create(0);
        dp_pool_attr_t a;
        mock_attr(&a, m);
        a.pagesize = 4096;
        a.max_pages = 1;
        a.lowat = 0;
        dp_pool_t *pool = dp_pool_create("zero1", 128, &a);
        cr_assert_not_null(pool);
        size_t n = tu_stats(pool).objs_per_page;
        void **objs = calloc(n, sizeof *objs);
        for (int round = 0; round < 2; round++) {
            for (size_t i = 0; i < n; i++) {
                errno = 0;
                objs[i] = dp_pool_get(pool, modes[k] | DP_ZERO);
                cr_assert_not_null(objs[i], "round %d: DP_ZERO get %zu of %zu "
                                   "failed (errno %d)", round, i, n, errno);
            }
            for (size_t i = 0; i < n; i++)
                dp_pool_put(pool, objs[i]);
        }
        free(objs);
        finish(pool, m);
    }
}

Test(pool, stats_report_the_pool_geometry_and_configuration)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a;
    mock_attr(&a, m);
    a.max_pages = 100;
    a.lowat = 2;
    a.hiwat = 10;
    a.reclaim_age_ns = 500000000ull;
    const char *longname = "a-pool-name-that-is-longer-than-thirty-one-bytes";
    dp_pool_t *pool = dp_pool_create(longname, 40, &a);
    cr_assert_not_null(pool);
    dp_pool_stats_t s = tu_stats(pool);

    cr_assert_eq(strlen(s.name), 31);
    cr_assert_eq(strncmp(s.name, longname, 31), 0, "name is '%s'", s.name);
    cr_assert_eq(s.objsize, 40);
    cr_assert_geq(s.slotsize, 40);
    cr_assert_geq(s.pagesize, 4096);
    cr_assert_eq(s.pagesize & (s.pagesize - 1), 0, "pagesize %zu", s.pagesize);
    cr_assert_geq(s.objs_per_page, 8);
    cr_assert_leq(s.objs_per_page * s.slotsize, s.pagesize);
    cr_assert_eq(s.max_pages, 100);
    cr_assert_eq(s.lowat, 2);
    cr_assert_eq(s.hiwat, 10);
    cr_assert_eq(s.reclaim_age_ns, 500000000ull);
    cr_assert_eq(s.pages, 0, "pages come lazily");
    cr_assert_eq(tu_counters(m).alloc_calls, 0, "create must not call the provider");
    finish(pool, m);
}

Test(pool, default_pagesize_is_the_smallest_power_of_two_from_64k_holding_eight_objects)
{
    dp_mock_t *m = dp_mock_create(0);
    /* Sizes chosen so a page header cannot change the answer: 10000-byte
     * objects need 128 KiB for 8; 200000-byte ones stop at 1 MiB (5). */
    static const size_t sizes[] = {64, 10000, 200000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        dp_pool_attr_t a;
        mock_attr(&a, m);
        dp_pool_t *pool = dp_pool_create("defpage", sizes[k], &a);
        cr_assert_not_null(pool);
        dp_pool_stats_t s = tu_stats(pool);
        /* Default alignment 16: the slot is the size rounded up to it. */
        size_t slot = round_up(sizes[k], 16);
        cr_assert_eq(s.slotsize, slot);
        size_t expect = (size_t)64 << 10;
        while (expect / slot < 8 && expect < ((size_t)1 << 20))
            expect *= 2;
        cr_assert_eq(s.pagesize, expect, "objsize %zu slot %zu: pagesize %zu",
                     sizes[k], s.slotsize, s.pagesize);
        if (expect < ((size_t)1 << 20))
            cr_assert_geq(s.objs_per_page, 8);
        else
            cr_assert_geq(s.objs_per_page, 1);
        void *o = dp_pool_get(pool, DP_WAITOK);
        cr_assert_not_null(o);
        dp_mock_log_entry_t e;
        cr_assert_eq(dp_mock_log(m, dp_mock_log_length(m) - 1, &e, 1), 1);
        cr_assert_eq(e.size, expect, "the provider was asked for %zu bytes", e.size);
        dp_pool_put(pool, o);
        cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                     strerror(errno));
    }
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, c.frees);
    dp_mock_destroy(m);
}

Test(pool, stats_count_gets_puts_and_objects_in_use_exactly)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, "counts", 48);
    size_t opp = measure(48, 4096).objs;
    cr_assert_eq(tu_stats(pool).objs_per_page, opp);
    size_t n = 2 * opp + 3;
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++) {
        objs[i] = dp_pool_get(pool, i % 2 ? DP_NOWAIT : DP_WAITOK);
        cr_assert_not_null(objs[i]);
    }
    size_t nput = opp + 1;
    for (size_t i = 0; i < nput; i++)
        dp_pool_put(pool, objs[i]);

    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.gets, n);
    cr_assert_eq(s.puts, nput);
    cr_assert_eq(s.objs_inuse, n - nput);
    cr_assert_eq(s.puts, s.gets - s.objs_inuse);
    cr_assert_eq(s.pages, 3);
    cr_assert_eq(tu_counters(m).allocs, 3);
    cr_assert_eq(s.objs_free, 3 * opp - (n - nput),
                 "free %" PRIu64 " + inuse %" PRIu64 " != 3 pages * %zu",
                 s.objs_free, s.objs_inuse, opp);
    cr_assert_eq(s.gets_failed, 0);
    cr_assert_eq(s.gets_waited, 0);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.pages_pending, 0);
    cr_assert_eq(s.put_provider_calls, 0);
    cr_assert_eq(s.provider_alloc_failures, 0);

    for (size_t i = nput; i < n; i++)
        dp_pool_put(pool, objs[i]);
    dp_thread_cache_flush();
    s = tu_stats(pool);
    cr_assert_eq(s.puts, n);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_eq(s.pages_empty, 3);
    free(objs);
    finish(pool, m);
}

Test(pool, stats_pages_equal_pages_allocated_minus_pages_freed)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a;
    mock_attr(&a, m);
    a.pagesize = 4096;
    a.lowat = 1;
    dp_pool_t *pool = dp_pool_create("pages", 64, &a);
    cr_assert_not_null(pool);
    dp_pool_stats_t s;
    size_t opp = measure(64, 4096).objs, n = 4 * opp;
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
    cr_assert_eq(tu_counters(m).allocs, 4);
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    size_t freed = dp_pool_reclaim(pool);
    cr_assert_eq(freed, 3, "4 empty pages, lowat 1");
    cr_assert_eq(tu_counters(m).frees, 3);

    for (size_t i = 0; i < 2 * opp; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
    s = tu_stats(pool);
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(s.pages_alloc, c.allocs);
    cr_assert_eq(s.pages_freed, c.frees);
    cr_assert_eq(s.pages_freed, freed);
    cr_assert_eq(s.pages, s.pages_alloc - s.pages_freed);
    cr_assert_eq(s.pages, 2);
    cr_assert_eq(c.pages_out, s.pages);
    for (size_t i = 0; i < 2 * opp; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    finish(pool, m);
}

Test(pool, check_reports_consistency_after_random_get_put_sequences)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, "check", 56);
    size_t opp = tu_stats(pool).objs_per_page;
    size_t cap = 6 * opp, held = 0;
    void **objs = calloc(cap, sizeof *objs);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    unsigned steps = tu_scaled(20000);
    for (unsigned i = 0; i < steps; i++) {
        uint64_t r = tu_rng(&rng);
        if (held < cap && (held == 0 || r % 100 < 52)) {
            objs[held] = dp_pool_get(pool, r & 256 ? DP_NOWAIT : DP_WAITOK);
            cr_assert_not_null(objs[held]);
            held++;
        } else if (r % 1000 == 999) {
            dp_pool_reclaim(pool);
        } else {
            size_t k = (size_t)(r >> 20) % held;
            dp_pool_put(pool, objs[k]);
            objs[k] = objs[--held];
        }
        if (i % 256 == 0)
            cr_assert_eq(dp_pool_check(pool), 0, "inconsistent after step %u", i);
    }
    cr_assert_eq(dp_pool_check(pool), 0);
    cr_assert_eq(tu_stats(pool).objs_inuse, held);
    while (held)
        dp_pool_put(pool, objs[--held]);
    cr_assert_eq(dp_pool_check(pool), 0);
    free(objs);
    finish(pool, m);
}

Test(pool, objects_keep_their_contents_while_other_objects_come_and_go)
{
    dp_mock_t *m = dp_mock_create(0);
    const size_t objsize = 96;
    dp_pool_t *pool = mock_pool(m, "contents", objsize);
    size_t opp = tu_stats(pool).objs_per_page;
    size_t cap = 5 * opp, held = 0;
    void **objs = calloc(cap, sizeof *objs);
    uint64_t *tags = calloc(cap, sizeof *tags);
    uint64_t rng = 12345, tag = 0;
    unsigned steps = tu_scaled(20000);

    for (unsigned i = 0; i < steps; i++) {
        uint64_t r = tu_rng(&rng);
        if (held < cap && (held == 0 || r % 2)) {
            void *o = dp_pool_get(pool, DP_WAITOK);
            cr_assert_not_null(o);
            tags[held] = ++tag;
            fill(o, objsize, tags[held]);
            objs[held++] = o;
        } else {
            size_t k = (size_t)(r >> 24) % held;
            cr_assert(holds(objs[k], objsize, tags[k]),
                      "object %p lost its contents before its put", objs[k]);
            dp_pool_put(pool, objs[k]);
            objs[k] = objs[held - 1];
            tags[k] = tags[--held];
        }
        if (i % 2048 == 0)
            dp_pool_reclaim(pool);
    }
    for (size_t k = 0; k < held; k++) {
        cr_assert(holds(objs[k], objsize, tags[k]), "object %p corrupted", objs[k]);
        dp_pool_put(pool, objs[k]);
    }
    free(tags);
    free(objs);
    finish(pool, m);
}

struct cross_put {
    dp_pool_t *pool;
    void **objs;
    size_t n;
};

static void *put_all(void *arg)
{
    struct cross_put *cp = arg;
    for (size_t i = 0; i < cp->n; i++)
        dp_pool_put(cp->pool, cp->objs[i]);
    return NULL;
}

Test(pool, put_from_a_thread_that_never_used_the_pool_returns_the_objects)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, "cross", 64);
    size_t opp = tu_stats(pool).objs_per_page, n = 3 * opp;
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));

    struct cross_put cp = {pool, objs, n};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, put_all, &cp), 0);
    pthread_join(t, NULL);

    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.puts, n);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_eq(s.pages_empty, 3);
    cr_assert_eq(dp_pool_check(pool), 0);
    /* The objects are reusable by the original thread without new pages. */
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_NOWAIT));
    cr_assert_eq(tu_counters(m).allocs, 3);
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    finish(pool, m);
}

/* The largest page: the top of a page's put stack is kept as a byte offset
 * in the high half of the page's state word (docs/design.md §2); objects
 * near the end of a 16 MiB page have the largest offsets.  Put them back
 * uncached, one by one and in runs, in an order that makes every one of
 * them the top at some point, and get them all again. */
Test(pool, objects_at_the_far_end_of_the_largest_page_go_back_and_come_again)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a;
    mock_attr(&a, m);
    a.pagesize = DP_PAGESIZE_MAX;
    a.flags |= DP_POOL_NOCACHE;
    a.max_pages = 1;
    dp_pool_t *pool = dp_pool_create("bigpage", 4096, &a);
    cr_assert_not_null(pool);
    size_t opp = tu_stats(pool).objs_per_page;
    cr_assert_geq(opp, 4000);
    void **objs = calloc(opp, sizeof *objs);
    uintptr_t page = 0;
    for (size_t i = 0; i < opp; i++) {
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_NOWAIT));
        uintptr_t pg = page_of(objs[i], DP_PAGESIZE_MAX);
        if (i == 0)
            page = pg;
        cr_assert_eq(pg, page, "one page holds them all");
        memset(objs[i], (int)(i & 0xff), 4096);
    }
    cr_assert_eq(tu_counters(m).allocs, 1);
    /* Last object first: the deepest offsets become the stack's top. */
    for (size_t i = opp; i-- > 0;)
        dp_pool_put(pool, objs[i]);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_eq(s.pages_empty, 1);
    cr_assert_eq(dp_pool_check(pool), 0);
    /* The empty page is carved afresh; take half, put them back, and take
     * everything again, now partly from the put stack. */
    for (size_t i = 0; i < opp / 2; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_NOWAIT));
    for (size_t i = 0; i < opp / 2; i++)
        dp_pool_put(pool, objs[i]);
    cr_assert_eq(dp_pool_check(pool), 0);
    for (size_t i = 0; i < opp; i++) {
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_NOWAIT));
        cr_assert_eq(page_of(objs[i], DP_PAGESIZE_MAX), page);
    }
    cr_assert_null(dp_pool_get(pool, DP_NOWAIT), "the one page is full");
    cr_assert_eq(tu_counters(m).allocs, 1, "no second page was needed");
    for (size_t i = 1; i < opp; i++)
        cr_assert_neq(objs[i - 1], objs[i]);
    for (size_t i = 0; i < opp; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    finish(pool, m);
}

struct racer {
    dp_pool_t *pool;
    void **objs;
    size_t n;
    pthread_barrier_t *start;
};

static void *racer_put(void *arg)
{
    struct racer *r = arg;
    pthread_barrier_wait(r->start);
    for (size_t i = 0; i < r->n; i++)
        dp_pool_put(r->pool, r->objs[i]);
    return NULL;
}

/* What destroy promises while other threads are still putting: it
 * refuses (EBUSY, pool intact and usable) while any object is out, and
 * succeeds once every object is back, even if the put that brought the
 * last one home has not returned yet (the pool's memory is never
 * unmapped, so that put's last reads stay harmless). */
Test(pool, destroy_racing_puts_refuses_until_every_object_is_back)
{
    unsigned rounds = (unsigned)tu_scaled(20);
    for (unsigned round = 0; round < rounds; round++) {
        dp_mock_t *m = dp_mock_create(0);
        dp_pool_attr_t a;
        mock_attr(&a, m);
        a.pagesize = 4096;
        a.lowat = 0;
        if (round % 2)
            a.flags |= DP_POOL_NOCACHE;
        dp_pool_t *pool = dp_pool_create("racing", 64, &a);
        cr_assert_not_null(pool);
        size_t n = 4 * measure(64, 4096).objs;
        void **objs = calloc(2 * n, sizeof *objs);
        for (size_t i = 0; i < 2 * n; i++)
            cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 3);
        struct racer r[2] = {{pool, objs, n, &start},
                             {pool, objs + n, n, &start}};
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            cr_assert_eq(pthread_create(&t[i], NULL, racer_put, &r[i]), 0);
        pthread_barrier_wait(&start);
        unsigned refused = 0;
        for (;;) {
            errno = 0;
            int rc = dp_pool_destroy(pool);
            if (rc == 0)
                break;
            cr_assert_eq(errno, EBUSY, "round %u: %s", round, strerror(errno));
            refused++;
            /* Refused: the pool is intact (dp_pool_check wants a
             * quiescent pool; the statistics are read under its lock). */
            dp_pool_stats_t st = tu_stats(pool);
            cr_assert_eq(st.gets, 2 * n, "round %u", round);
            cr_assert_eq(st.pages_freed, 0, "round %u", round);
            sched_yield();
        }
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&start);
        dp_mock_counters_t c = tu_counters(m);
        cr_assert_eq(c.allocs, c.frees, "round %u (%u refusals): %" PRIu64
                     " pages allocated, %" PRIu64 " freed", round, refused,
                     c.allocs, c.frees);
        cr_assert_eq(c.pages_out, 0);
        free(objs);
        dp_mock_destroy(m);
    }
}

Test(pool, put_of_a_null_object_is_a_no_op)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, "putnull", 64);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    dp_pool_put(pool, NULL);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.puts, 0);
    cr_assert_eq(s.objs_inuse, 1);
    cr_assert_eq(dp_pool_check(pool), 0);
    dp_pool_put(pool, o);
    finish(pool, m);
}

Test(pool, nowait_get_asks_the_provider_for_a_page_with_nowait)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, "nowaitalloc", 64);
    void *o = dp_pool_get(pool, DP_NOWAIT);
    cr_assert_not_null(o);
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.alloc_calls, 1);
    cr_assert_eq(c.nowait_allocs, 1);
    dp_mock_log_entry_t e;
    cr_assert_eq(dp_mock_log(m, 0, &e, 1), 1);
    cr_assert_eq(e.op, DP_MOCK_ALLOC);
    cr_assert_eq(e.flags, DP_NOWAIT);
    dp_pool_put(pool, o);
    finish(pool, m);
}

Test(pool, get_serves_partial_pages_then_newest_empty_page_then_a_new_page)
{
    /* Page-level order: without a thread cache, which would take objects
     * from the pages in batches. */
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a;
    mock_attr(&a, m);
    a.pagesize = 4096;
    a.flags |= DP_POOL_NOCACHE;
    dp_pool_t *pool = dp_pool_create("order", 64, &a);
    cr_assert_not_null(pool);
    dp_pool_stats_t s = tu_stats(pool);
    size_t opp = s.objs_per_page, ps = s.pagesize, n = 3 * opp;
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
    cr_assert_eq(tu_counters(m).allocs, 3);

    /* Name the three pages by one object each; the pages are full. */
    uintptr_t pa = page_of(objs[0], ps);
    uintptr_t pb = 0, pc = 0;
    for (size_t i = 0; i < n; i++) {
        uintptr_t p = page_of(objs[i], ps);
        if (p != pa && !pb)
            pb = p;
        else if (p != pa && p != pb && !pc)
            pc = p;
    }
    cr_assert(pb && pc);

    /* Empty A, then (later by the pool's clock) C; leave B with one hole. */
    for (size_t i = 0; i < n; i++)
        if (page_of(objs[i], ps) == pa) {
            dp_pool_put(pool, objs[i]);
            objs[i] = NULL;
        }
    cr_assert_eq(tu_stats(pool).pages_empty, 1);
    dp_mock_clock_advance(m, 1000);
    for (size_t i = 0; i < n; i++)
        if (objs[i] && page_of(objs[i], ps) == pc) {
            dp_pool_put(pool, objs[i]);
            objs[i] = NULL;
        }
    cr_assert_eq(tu_stats(pool).pages_empty, 2);
    for (size_t i = 0; i < n; i++)
        if (objs[i] && page_of(objs[i], ps) == pb) {
            dp_pool_put(pool, objs[i]);
            objs[i] = NULL;
            break;
        }
    (void)tu_stats(pool); /* collect B's change, as C's and A's were */

    void **again = calloc(2 * opp + 2, sizeof *again);
    size_t k = 0;
    again[k] = dp_pool_get(pool, DP_WAITOK);
    cr_assert_eq(page_of(again[k++], ps), pb, "partial page B not served first");
    for (size_t i = 0; i < opp; i++, k++) {
        again[k] = dp_pool_get(pool, DP_WAITOK);
        cr_assert_eq(page_of(again[k], ps), pc, "newest empty page C not next");
    }
    for (size_t i = 0; i < opp; i++, k++) {
        again[k] = dp_pool_get(pool, DP_WAITOK);
        cr_assert_eq(page_of(again[k], ps), pa, "older empty page A not next");
    }
    cr_assert_eq(tu_counters(m).allocs, 3, "a new page was taken too early");
    again[k] = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(again[k++]);
    cr_assert_eq(tu_counters(m).allocs, 4);

    for (size_t i = 0; i < k; i++)
        dp_pool_put(pool, again[i]);
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]); /* NULL entries are no-ops */
    free(again);
    free(objs);
    finish(pool, m);
}

/*
 * A pool's memory (its struct, under 2 KiB) is carved from chunks shared
 * with other pools: creating POOLS_IN_A_ROW pools faults in about half as
 * many pages, not one mapping each (the malloc creates 32 at start-up).
 * Each pool still works on its own.  Sanitizer runtimes fault in shadow
 * memory of their own.
 */
#define POOLS_IN_A_ROW 64
Test(pool, pools_created_in_a_row_share_pages)
{
#if TU_TSAN || defined(__SANITIZE_ADDRESS__)
    cr_skip_test("sanitizer runtimes fault in shadow memory on access");
#endif
    static dp_pool_t *pools[POOLS_IN_A_ROW];
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.flags = DP_POOL_NOTHREAD;
    dp_pool_t *warm = dp_pool_create("warm", 64, &a); /* first-use costs */
    cr_assert_not_null(warm, "dp_pool_create: %s", strerror(errno));
    struct rusage r0, r1;
    getrusage(RUSAGE_THREAD, &r0);
    for (int i = 0; i < POOLS_IN_A_ROW; i++) {
        pools[i] = dp_pool_create("row", 64, &a);
        cr_assert_not_null(pools[i], "dp_pool_create: %s", strerror(errno));
    }
    getrusage(RUSAGE_THREAD, &r1);
    long faults = r1.ru_minflt - r0.ru_minflt;
    cr_assert_lt(faults, POOLS_IN_A_ROW * 3 / 4,
                 "%d creates took %ld page faults", POOLS_IN_A_ROW, faults);
    void *o[POOLS_IN_A_ROW];
    for (int i = 0; i < POOLS_IN_A_ROW; i++) {
        o[i] = dp_pool_get(pools[i], DP_NOWAIT);
        cr_assert_not_null(o[i]);
        memset(o[i], i, 64);
    }
    for (int i = 0; i < POOLS_IN_A_ROW; i++) {
        for (int j = 0; j < 64; j++)
            cr_assert_eq(((unsigned char *)o[i])[j], (unsigned char)i);
        dp_pool_put(pools[i], o[i]);
        dp_pool_stats_t st;
        cr_assert_eq(dp_pool_stats(pools[i], &st), 0);
        cr_assert_eq(st.objs_inuse, 0);
        cr_assert_eq(dp_pool_destroy(pools[i]), 0);
    }
    cr_assert_eq(dp_pool_destroy(warm), 0);
}

Test(pool, version_string_matches_the_header_macros)
{
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", DP_VERSION_MAJOR, DP_VERSION_MINOR,
             DP_VERSION_PATCH);
    cr_assert_not_null(dp_version());
    cr_assert_str_eq(dp_version(), want);
}
