/*
 * test_badinput.c -- every documented bad input: EINVAL (or EBUSY/ENOMEM)
 * returns that leave no trace, and on DP_POOL_DEBUG pools the aborts for
 * foreign pointers, double puts and destroying a pool with objects out.
 *
 * An abort test expects SIGABRT from the one bad call; if the call returns,
 * the test fails at once (cr_assert_fail), so no later abort (such as the
 * mock's leak check) can stand in for it.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

static void mock_attr(dp_pool_attr_t *a, dp_mock_t *m, unsigned flags)
{
    dp_pool_attr_init(a);
    a->provider = dp_mock_provider(m);
    a->flags = DP_POOL_NOTHREAD | flags;
}

static dp_pool_t *mock_pool(dp_mock_t *m, unsigned flags)
{
    dp_pool_attr_t a;
    mock_attr(&a, m, flags);
    a.pagesize = 4096;
    dp_pool_t *pool = dp_pool_create("bad", 64, &a);
    cr_assert_not_null(pool, "dp_pool_create: %s", strerror(errno));
    return pool;
}

static void finish(dp_pool_t *pool, dp_mock_t *m)
{
    cr_assert_eq(dp_pool_check(pool), 0);
    cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, c.frees);
    dp_mock_destroy(m);
}

/* dp_pool_create must refuse, with EINVAL, without touching the provider. */
static void expect_create_einval(size_t objsize, void (*tweak)(dp_pool_attr_t *))
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a;
    mock_attr(&a, m, 0);
    tweak(&a);
    errno = 0;
    dp_pool_t *pool = dp_pool_create("bad", objsize, &a);
    cr_assert_null(pool, "a pool was created from bad attributes");
    cr_assert_eq(errno, EINVAL, "errno %d (%s)", errno, strerror(errno));
    cr_assert_eq(tu_counters(m).alloc_calls, 0);
    dp_mock_destroy(m);
}

static void expect_get_einval(int flags)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, 0);
    errno = 0;
    cr_assert_null(dp_pool_get(pool, flags), "flags %#x accepted", flags);
    cr_assert_eq(errno, EINVAL, "flags %#x: errno %d", flags, errno);
    errno = 0;
    cr_assert_null(dp_pool_get_timed(pool, flags, NULL), "timed: flags %#x", flags);
    cr_assert_eq(errno, EINVAL);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.gets, 0);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_eq(tu_counters(m).alloc_calls, 0);
    finish(pool, m);
}

/* ----------------------------------------------------------- dp_pool_create */

static void no_tweak(dp_pool_attr_t *a) { (void)a; }
static void page_4k(dp_pool_attr_t *a) { a->pagesize = 4096; }
static void align_24(dp_pool_attr_t *a) { a->align = 24; }
static void page_12k(dp_pool_attr_t *a) { a->pagesize = 12288; }
static void page_2k(dp_pool_attr_t *a) { a->pagesize = 2048; }
static void page_huge(dp_pool_attr_t *a) { a->pagesize = DP_PAGESIZE_MAX * 2; }
static void lowat_gt_hiwat(dp_pool_attr_t *a) { a->lowat = 9; a->hiwat = 8; }
static void lowat_gt_max(dp_pool_attr_t *a) { a->lowat = 4; a->hiwat = 8; a->max_pages = 3; }
static void flags_unknown(dp_pool_attr_t *a) { a->flags |= 0x100; }

Test(badinput, create_rejects_objsize_zero) { expect_create_einval(0, no_tweak); }
Test(badinput, create_rejects_an_object_too_large_for_the_page) { expect_create_einval(8192, page_4k); }
Test(badinput, create_rejects_an_alignment_that_is_not_a_power_of_two) { expect_create_einval(64, align_24); }
Test(badinput, create_rejects_a_pagesize_that_is_not_a_power_of_two) { expect_create_einval(64, page_12k); }
Test(badinput, create_rejects_a_pagesize_below_4096) { expect_create_einval(64, page_2k); }
Test(badinput, create_rejects_a_pagesize_above_the_maximum) { expect_create_einval(64, page_huge); }
Test(badinput, create_rejects_lowat_above_hiwat) { expect_create_einval(64, lowat_gt_hiwat); }
Test(badinput, create_rejects_lowat_above_max_pages) { expect_create_einval(64, lowat_gt_max); }
Test(badinput, create_rejects_unknown_flags) { expect_create_einval(64, flags_unknown); }

/* -------------------------------------------------------------- dp_pool_get */

Test(badinput, get_from_a_null_pool_is_einval)
{
    errno = 0;
    cr_assert_null(dp_pool_get(NULL, DP_WAITOK));
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_null(dp_pool_get(NULL, DP_NOWAIT));
    cr_assert_eq(errno, EINVAL);
}

Test(badinput, get_with_neither_waitok_nor_nowait_is_einval)
{
    expect_get_einval(0);
}

Test(badinput, get_with_only_the_zero_flag_is_einval)
{
    expect_get_einval(DP_ZERO);
}

Test(badinput, get_with_both_waitok_and_nowait_is_einval)
{
    expect_get_einval(DP_WAITOK | DP_NOWAIT);
}

Test(badinput, get_with_unknown_flag_bits_is_einval)
{
    expect_get_einval(DP_WAITOK | 0x40);
}

/* -------------------------------------------------------------- dp_pool_put */

Test(badinput, put_to_a_null_pool_sets_einval_and_changes_nothing)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, 0);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    errno = 0;
    dp_pool_put(NULL, o);
    cr_assert_eq(errno, EINVAL);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.objs_inuse, 1, "the object was taken back anyway");
    cr_assert_eq(s.puts, 0);
    dp_pool_put(pool, o);
    finish(pool, m);
}

Test(badinput, debug_put_of_a_malloced_pointer_aborts, .signal = SIGABRT)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, DP_POOL_DEBUG);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    void *foreign = malloc(64);
    cr_assert_not_null(foreign);
    dp_pool_put(pool, foreign);
    cr_assert_fail("put of a malloc'd pointer returned");
}

Test(badinput, debug_put_of_an_object_of_another_pool_aborts, .signal = SIGABRT)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, DP_POOL_DEBUG);
    dp_pool_t *other = mock_pool(m, DP_POOL_DEBUG);
    void *mine = dp_pool_get(pool, DP_WAITOK);
    void *theirs = dp_pool_get(other, DP_WAITOK);
    cr_assert(mine && theirs);
    dp_pool_put(pool, theirs);
    cr_assert_fail("put of another pool's object returned");
}

Test(badinput, debug_put_of_a_pointer_inside_an_object_aborts, .signal = SIGABRT)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, DP_POOL_DEBUG);
    char *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    dp_pool_put(pool, o + 8);
    cr_assert_fail("put of a misaligned pointer returned");
}

Test(badinput, debug_double_put_aborts, .signal = SIGABRT)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, DP_POOL_DEBUG);
    void *a = dp_pool_get(pool, DP_WAITOK);
    void *b = dp_pool_get(pool, DP_WAITOK); /* keeps the page non-empty */
    cr_assert(a && b);
    dp_pool_put(pool, a);
    dp_pool_put(pool, a);
    cr_assert_fail("double put returned");
}

/* ---------------------------------------------------------- dp_pool_destroy */

Test(badinput, destroy_with_objects_out_returns_ebusy_and_leaves_the_pool_usable)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, 0);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    memset(o, 0x33, 64);
    errno = 0;
    cr_assert_eq(dp_pool_destroy(pool), -1);
    cr_assert_eq(errno, EBUSY);
    cr_assert_eq(tu_counters(m).free_calls, 0, "destroy gave pages back anyway");

    /* Intact: stats, check, gets and puts all work, the object is whole. */
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.objs_inuse, 1);
    cr_assert_eq(dp_pool_check(pool), 0);
    void *p = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(p);
    cr_assert_neq(p, o);
    dp_pool_put(pool, p);
    for (size_t i = 0; i < 64; i++)
        cr_assert_eq(((unsigned char *)o)[i], 0x33);
    dp_pool_put(pool, o);
    finish(pool, m); /* and now destroy works */
}

Test(badinput, debug_destroy_with_objects_out_aborts, .signal = SIGABRT)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, DP_POOL_DEBUG);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    dp_pool_destroy(pool);
    cr_assert_fail("destroy with an object out returned");
}

Test(badinput, destroy_of_a_null_pool_returns_einval)
{
    errno = 0;
    cr_assert_eq(dp_pool_destroy(NULL), -1);
    cr_assert_eq(errno, EINVAL);
}

/* -------------------------------------------------- stats, reclaim, prime */

Test(badinput, stats_of_a_null_pool_is_einval)
{
    dp_pool_stats_t s;
    errno = 0;
    cr_assert_eq(dp_pool_stats(NULL, &s), -1);
    cr_assert_eq(errno, EINVAL);
}

Test(badinput, stats_into_a_null_buffer_is_einval)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = mock_pool(m, 0);
    errno = 0;
    cr_assert_eq(dp_pool_stats(pool, NULL), -1);
    cr_assert_eq(errno, EINVAL);
    finish(pool, m);
}

Test(badinput, reclaim_of_a_null_pool_returns_zero_with_einval)
{
    errno = 0;
    cr_assert_eq(dp_pool_reclaim(NULL), 0);
    cr_assert_eq(errno, EINVAL);
}

Test(badinput, prime_of_a_null_pool_is_einval)
{
    errno = 0;
    cr_assert_eq(dp_pool_prime(NULL, 10), -1);
    cr_assert_eq(errno, EINVAL);
}

Test(badinput, prime_beyond_the_hard_limit_is_enomem)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a;
    mock_attr(&a, m, 0);
    a.pagesize = 4096;
    a.max_pages = 2;
    dp_pool_t *pool = dp_pool_create("limited", 64, &a);
    cr_assert_not_null(pool);
    size_t opp = tu_stats(pool).objs_per_page;
    errno = 0;
    cr_assert_eq(dp_pool_prime(pool, 2 * opp + 1), -1);
    cr_assert_eq(errno, ENOMEM);
    cr_assert_leq(tu_stats(pool).pages, 2);
    cr_assert_eq(dp_pool_prime(pool, 2 * opp), 0, "what fits must still prime");
    finish(pool, m);
}
