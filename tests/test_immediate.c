/*
 * test_immediate.c -- the benchmarks' comparison mode, DP_IPOOL_IMMEDIATE:
 * a naive pool whose emptying put returns the page inside the put.  Not
 * public: like the benchmarks, this program is built with a private copy
 * of the library and reaches the mode through dp_pool_create_ex().
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dp_internal.h"
#include "testutil.h"

static dp_pool_t *mkpool(dp_mock_t *m, unsigned iflags)
{
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = dp_mock_provider(m);
    a.flags = DP_POOL_NOTHREAD;
    a.pagesize = 4096;
    a.lowat = 0;
    dp_pool_t *p = dp_pool_create_ex("immediate", 64, &a, iflags);
    cr_assert_not_null(p, "dp_pool_create_ex: %s", strerror(errno));
    return p;
}

static void finish(dp_pool_t *p, dp_mock_t *m)
{
    cr_assert_eq(dp_pool_check(p), 0);
    cr_assert_eq(dp_pool_destroy(p), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, c.frees);
    dp_mock_destroy(m);
}

Test(immediate, the_public_flag_bit_it_used_to_have_is_refused)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = dp_mock_provider(m);
    a.flags = DP_POOL_NOTHREAD | 0x8;
    errno = 0;
    cr_assert_null(dp_pool_create("immediate", 64, &a));
    cr_assert_eq(errno, EINVAL);
    dp_mock_destroy(m);
}

/* The comparison mode the benchmarks use: proves put_provider_calls is
 * measured (it can be non-zero), and that the default pool's 0 means
 * something. */
Test(immediate, returns_the_page_inside_the_put_and_it_is_counted)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, DP_IPOOL_IMMEDIATE);
    void *o = dp_pool_get(p, DP_WAITOK);
    cr_assert_not_null(o);
    cr_assert_eq(tu_counters(m).frees, 0);
    dp_pool_put(p, o);
    cr_assert_eq(tu_counters(m).frees, 1, "the put returned the page itself");
    dp_pool_stats_t s = tu_stats(p);
    cr_assert_eq(s.put_provider_calls, 1);
    cr_assert_eq(s.pages, 0);
    cr_assert_eq(s.objs_cached, 0, "immediate mode is uncached");

    /* The same sequence on a default pool: the page waits, no call. */
    dp_pool_t *q = mkpool(m, 0);
    o = dp_pool_get(q, DP_WAITOK);
    dp_pool_put(q, o);
    dp_thread_cache_flush();
    cr_assert_eq(tu_counters(m).frees, 1, "a default put never frees a page");
    cr_assert_eq(tu_stats(q).put_provider_calls, 0);
    cr_assert_eq(tu_stats(q).pages_empty, 1);
    cr_assert_eq(dp_pool_destroy(q), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    finish(p, m);
}

Test(immediate, releases_a_page_already_queued_by_an_earlier_put)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, DP_IPOOL_IMMEDIATE);
    size_t cap = tu_stats(p).objs_per_page;
    void **o = calloc(cap, sizeof *o);
    for (size_t i = 0; i < cap; i++)
        cr_assert_not_null(o[i] = dp_pool_get(p, DP_WAITOK));
    /* The first put takes the full page below cap and queues it; no get
     * drains the queue before the last put empties the page. */
    for (size_t i = 0; i < cap; i++)
        dp_pool_put(p, o[i]);
    free(o);
    cr_assert_eq(tu_counters(m).frees, 1, "the emptying put returned the page");
    cr_assert_eq(tu_stats(p).put_provider_calls, 1);
    finish(p, m);
}
