/*
 * test_reclaim.c -- the reclaim policy: ageing by the pool's clock, the
 * low- and high-water marks, the per-get budget, DP_NOWAIT never freeing,
 * explicit reclaim, prime and its reserve, and the reclaim thread.
 *
 * Ageing is driven by the mock clock (dp_mock_clock_advance), and passes
 * by dp_reclaim_sync() or dp_reclaim_step(): nothing here sleeps.  Pools
 * are created with DP_POOL_NOTHREAD; a test that wants the thread starts
 * it after its setup, with a very long interval, so every pass it makes is
 * one the test asked for (or one that cannot change the outcome).
 *
 * Objects a thread puts sit in its per-thread cache until flushed, so the
 * tests flush (dp_thread_cache_flush) before they look at pages; tests of
 * what one get does to the pages use DP_POOL_NOCACHE pools, since a cached
 * get takes its objects in batches and may not touch the pages at all.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testutil.h"

#define AGE 1000000000ull  /* reclaim_age_ns of every pool here (mock time) */
#define OBJSIZE 64
#define LONG_INTERVAL (3600ull * 1000000000ull)

/* ---------------------------------------------------------------- helpers */

static dp_reclaim_info_t info(void)
{
    dp_reclaim_info_t i;
    memset(&i, 0, sizeof i);
    dp_reclaim_info(&i);
    return i;
}

struct policy {
    size_t lowat, hiwat, max_pages;
    unsigned budget;
    unsigned flags; /* DP_POOL_* besides DP_POOL_NOTHREAD */
};

static dp_pool_t *policy_pool(dp_mock_t *m, struct policy pol)
{
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = dp_mock_provider(m);
    a.clock = dp_mock_clock;
    a.clock_arg = m;
    a.flags = DP_POOL_NOTHREAD | pol.flags;
    a.pagesize = 4096;
    a.reclaim_age_ns = AGE;
    a.lowat = pol.lowat;
    a.hiwat = pol.hiwat;
    a.max_pages = pol.max_pages;
    a.reclaim_budget = pol.budget;
    dp_pool_t *pool = dp_pool_create("reclaim", OBJSIZE, &a);
    cr_assert_not_null(pool, "dp_pool_create: %s", strerror(errno));
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.lowat, pol.lowat);
    cr_assert_eq(s.hiwat, pol.hiwat);
    return pool;
}

static size_t opp_of(dp_pool_t *pool)
{
    return tu_stats(pool).objs_per_page;
}

/* On a pool with no pages yet: fill `npages` pages and put every object
 * back, so the pages become empty now by the pool's clock (stats collects
 * them). */
static void make_empty_pages(dp_pool_t *pool, size_t npages)
{
    size_t opp = opp_of(pool), n = npages * opp;
    cr_assert_eq(tu_stats(pool).pages, 0);
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
    cr_assert_eq(tu_stats(pool).pages_empty, 0);
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    dp_thread_cache_flush();
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.pages_empty, npages, "expected %zu empty pages, have %" PRIu64,
                 npages, s.pages_empty);
    cr_assert_eq(s.pages, npages);
}

static void finish(dp_pool_t *pool, dp_mock_t *m)
{
    cr_assert_eq(dp_pool_check(pool), 0, "invariants broken before destroy");
    cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    dp_reclaim_stop(); /* a thread left running slows exit under TSan */
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, c.frees,
                 "pages leaked: %" PRIu64 " allocated, %" PRIu64 " freed",
                 c.allocs, c.frees);
    dp_mock_destroy(m);
}

static int my_tid(void)
{
    return (int)syscall(SYS_gettid);
}

/*
 * Who runs the reclaim passes: the background thread (dp_reclaim_sync) or
 * the caller (dp_reclaim_step, with the thread stopped).  The same
 * scenarios run under both.
 */
struct driver {
    bool thread;
};
static const struct driver by_thread = {true}, by_step = {false};

static void drv_start(const struct driver *d)
{
    if (d->thread) {
        dp_reclaim_set_interval(LONG_INTERVAL);
        cr_assert_eq(dp_reclaim_start(), 0);
        cr_assert(info().running);
    } else {
        dp_reclaim_stop();
        cr_assert_not(info().running);
    }
}

/* One pass that begins now; returns the pages it returned. */
static size_t drv_pass(const struct driver *d)
{
    dp_reclaim_info_t before = info();
    size_t r = 0;
    if (d->thread)
        cr_assert_eq(dp_reclaim_sync(), 0, "dp_reclaim_sync: %s",
                     strerror(errno));
    else
        r = dp_reclaim_step();
    dp_reclaim_info_t after = info();
    size_t delta = (size_t)(after.pages_returned - before.pages_returned);
    if (!d->thread) {
        cr_assert_eq(r, delta, "dp_reclaim_step returned %zu, info says %zu",
                     r, delta);
        cr_assert_eq(after.passes, before.passes, "a thread pass ran");
    } else {
        cr_assert_gt(after.passes, before.passes);
    }
    return delta;
}

/* Frees logged from index `from` on ran in the caller's thread (step) or
 * in another one (thread). */
static void assert_free_thread(const struct driver *d, dp_mock_t *m,
                               size_t from)
{
    size_t n = dp_mock_log_length(m) - from, nfree = 0;
    dp_mock_log_entry_t *e = calloc(n ? n : 1, sizeof *e);
    cr_assert_eq(dp_mock_log(m, from, e, n), n);
    for (size_t i = 0; i < n; i++) {
        if (e[i].op != DP_MOCK_FREE)
            continue;
        nfree++;
        if (d->thread)
            cr_assert_neq(e[i].tid, my_tid(), "the thread's pass freed in the caller");
        else
            cr_assert_eq(e[i].tid, my_tid(), "dp_reclaim_step freed elsewhere");
    }
    cr_assert_gt(nfree, 0);
    free(e);
}

/* ------------------------------------------------ scenarios for both drivers */

static void scenario_age_and_lowat(const struct driver *d)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 2, .hiwat = 16});
    make_empty_pages(pool, 6);
    drv_start(d);

    cr_assert_eq(drv_pass(d), 0);
    dp_mock_clock_advance(m, AGE - 1);
    cr_assert_eq(drv_pass(d), 0, "pages returned before reclaim_age_ns");
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.pages_empty, 6);
    cr_assert_eq(tu_counters(m).free_calls, 0);

    dp_mock_clock_advance(m, 2);
    size_t log0 = dp_mock_log_length(m);
    cr_assert_eq(drv_pass(d), 4, "aged pages beyond lowat not all returned");
    assert_free_thread(d, m, log0);
    s = tu_stats(pool);
    cr_assert_eq(s.pages_empty, 2, "lowat not kept");
    cr_assert_eq(s.pages, 2);
    cr_assert_eq(s.pages_freed, 4);
    cr_assert_eq(tu_counters(m).frees, 4);

    /* lowat pages are never aged out. */
    dp_mock_clock_advance(m, 10 * AGE);
    cr_assert_eq(drv_pass(d), 0);
    cr_assert_eq(tu_stats(pool).pages_empty, 2);
    cr_assert_eq(tu_counters(m).frees, 4);
    finish(pool, m);
}

TestSuite(reclaim, .init = tu_watchdog_init);

Test(reclaim, thread_returns_empty_pages_only_after_reclaim_age_and_keeps_lowat)
{
    scenario_age_and_lowat(&by_thread);
}

Test(reclaim, step_returns_empty_pages_only_after_reclaim_age_and_keeps_lowat)
{
    scenario_age_and_lowat(&by_step);
}

static void scenario_hiwat(const struct driver *d)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 1, .hiwat = 4});
    make_empty_pages(pool, 9);
    drv_start(d);
    /* No clock movement at all: the excess goes by count alone. */
    drv_pass(d);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.pages_empty, 4, "pages beyond hiwat kept: %" PRIu64,
                 s.pages_empty);
    cr_assert_eq(tu_counters(m).frees, 5);
    cr_assert_eq(drv_pass(d), 0, "young pages within hiwat were returned");
    cr_assert_eq(tu_stats(pool).pages_empty, 4);
    finish(pool, m);
}

Test(reclaim, thread_returns_pages_beyond_hiwat_at_next_pass_without_ageing)
{
    scenario_hiwat(&by_thread);
}

Test(reclaim, step_returns_pages_beyond_hiwat_without_ageing)
{
    scenario_hiwat(&by_step);
}

static void scenario_refill(const struct driver *d)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 3, .hiwat = 16});
    size_t opp = opp_of(pool);
    dp_reclaim_info_t i0 = info();
    drv_start(d);
    drv_pass(d);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.pages_empty, 3, "fresh pool not filled to lowat");
    cr_assert_eq(tu_counters(m).allocs, 3);
    cr_assert_eq(info().pages_filled - i0.pages_filled, 3);

    /* Gets consume the ready pages without calling the provider. */
    size_t n = 3 * opp;
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_NOWAIT));
    cr_assert_eq(tu_counters(m).alloc_calls, 3);
    cr_assert_eq(tu_stats(pool).pages_empty, 0);

    drv_pass(d);
    s = tu_stats(pool);
    cr_assert_eq(s.pages_empty, 3, "not refilled to lowat after gets");
    cr_assert_eq(s.pages, 6);
    cr_assert_eq(tu_counters(m).allocs, 6);
    cr_assert_eq(info().pages_filled - i0.pages_filled, 6);

    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    dp_thread_cache_flush();
    cr_assert_eq(drv_pass(d), 0);
    cr_assert_eq(tu_stats(pool).pages_empty, 6);
    cr_assert_eq(tu_counters(m).allocs, 6, "refilled past lowat");
    finish(pool, m);
}

Test(reclaim, thread_refills_empty_pages_to_lowat_after_gets_consumed_them)
{
    scenario_refill(&by_thread);
}

Test(reclaim, step_refills_empty_pages_to_lowat_after_gets_consumed_them)
{
    scenario_refill(&by_step);
}

static void scenario_refill_limit(const struct driver *d)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(
        m, (struct policy){.lowat = 2, .hiwat = 16, .max_pages = 3});
    size_t n = 2 * opp_of(pool);
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
    drv_start(d);
    drv_pass(d);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.pages, 3, "refill went past max_pages");
    cr_assert_eq(s.pages_empty, 1);
    cr_assert_eq(tu_counters(m).allocs, 3);
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    finish(pool, m);
}

Test(reclaim, thread_refill_never_exceeds_max_pages)
{
    scenario_refill_limit(&by_thread);
}

Test(reclaim, step_refill_never_exceeds_max_pages)
{
    scenario_refill_limit(&by_step);
}

/* --------------------------------------------------------- get-side policy */

Test(reclaim, waitok_get_hands_back_at_most_budget_aged_pages_per_call)
{
    dp_mock_t *m = dp_mock_create(0);
    const unsigned budget = 2;
    dp_pool_t *pool = policy_pool(
        m, (struct policy){.lowat = 1, .hiwat = 32, .budget = budget,
                           .flags = DP_POOL_NOCACHE});
    make_empty_pages(pool, 10);
    dp_mock_clock_advance(m, AGE + 1);

    /* The first get takes one empty page; 9 stay, 8 of them beyond lowat
     * and all aged: each get hands back min(budget, due left). */
    size_t due = 8, gets = 0;
    void *objs[16];
    while (due > 0) {
        cr_assert_lt(gets, 16, "due pages never drained");
        uint64_t f0 = tu_counters(m).frees;
        objs[gets] = dp_pool_get(pool, DP_WAITOK);
        cr_assert_not_null(objs[gets++]);
        uint64_t freed = tu_counters(m).frees - f0;
        size_t want = due < budget ? due : budget;
        cr_assert_eq(freed, want, "get %zu returned %" PRIu64 " pages, want %zu",
                     gets, freed, want);
        due -= want;
    }
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.pages_empty, 1, "lowat not kept by gets");
    uint64_t f0 = tu_counters(m).frees;
    objs[gets] = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(objs[gets++]);
    cr_assert_eq(tu_counters(m).frees, f0, "a get returned a page that was not due");
    for (size_t i = 0; i < gets; i++)
        dp_pool_put(pool, objs[i]);
    finish(pool, m);
}

Test(reclaim, waitok_get_returns_pages_beyond_hiwat_without_ageing)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(
        m, (struct policy){.lowat = 1, .hiwat = 4, .budget = 8,
                           .flags = DP_POOL_NOCACHE});
    make_empty_pages(pool, 8);
    /* The get takes one page: 7 empty, 3 past hiwat. */
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    cr_assert_eq(tu_counters(m).frees, 3);
    cr_assert_eq(tu_stats(pool).pages_empty, 4);
    dp_pool_put(pool, o);
    finish(pool, m);
}

Test(reclaim, waitok_get_returns_nothing_when_no_page_is_due)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(
        m, (struct policy){.lowat = 1, .hiwat = 8, .flags = DP_POOL_NOCACHE});
    make_empty_pages(pool, 6);
    dp_mock_clock_advance(m, AGE - 1);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    cr_assert_eq(tu_counters(m).free_calls, 0);
    cr_assert_eq(tu_stats(pool).pages_empty, 5);
    dp_pool_put(pool, o);
    finish(pool, m);
}

Test(reclaim, nowait_get_never_calls_provider_free_even_with_due_pages)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 1, .hiwat = 4});
    size_t opp = opp_of(pool);
    make_empty_pages(pool, 10);
    dp_mock_clock_advance(m, AGE + 1); /* all due: aged and past hiwat */

    size_t n = 12 * opp; /* the 10 queued pages and 2 new ones */
    void **objs = calloc(n, sizeof *objs);
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < n; i++) {
            objs[i] = dp_pool_get(pool, DP_NOWAIT);
            cr_assert_not_null(objs[i]);
        }
        for (size_t i = 0; i < n; i++)
            dp_pool_put(pool, objs[i]);
        dp_thread_cache_flush();
        cr_assert_eq(tu_stats(pool).pages_empty, 12);
        dp_mock_clock_advance(m, AGE + 1);
    }
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.free_calls, 0, "a DP_NOWAIT get called the provider's free");
    cr_assert_eq(c.allocs, 12);
    free(objs);
    finish(pool, m);
}

/* -------------------------------------------------------- explicit reclaim */

Test(reclaim, pool_reclaim_returns_every_empty_page_beyond_lowat_regardless_of_age)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 2, .hiwat = 16});
    make_empty_pages(pool, 7);
    size_t n = dp_pool_reclaim(pool);
    cr_assert_eq(n, 5);
    cr_assert_eq(tu_counters(m).frees, 5);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.pages_empty, 2);
    cr_assert_eq(s.pages_freed, 5);
    cr_assert_eq(dp_pool_reclaim(pool), 0, "a second reclaim found more");
    finish(pool, m);
}

Test(reclaim, empty_oldest_age_follows_the_pool_clock)
{
    /* NOCACHE: the one get below must take one object from one page. */
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(
        m, (struct policy){.lowat = 1, .hiwat = 16, .flags = DP_POOL_NOCACHE});
    cr_assert_eq(tu_stats(pool).empty_oldest_age_ns, 0, "no empty page yet");
    make_empty_pages(pool, 2);
    cr_assert_eq(tu_stats(pool).empty_oldest_age_ns, 0);
    dp_mock_clock_advance(m, 12345);
    cr_assert_eq(tu_stats(pool).empty_oldest_age_ns, 12345);

    /* A page emptied later does not make the oldest younger. */
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    dp_mock_clock_advance(m, 100);
    dp_pool_put(pool, o);
    dp_thread_cache_flush();
    cr_assert_eq(tu_stats(pool).empty_oldest_age_ns, 12445);

    /* Reclaim keeps lowat = 1 page: the newest, emptied 0 ns ago. */
    cr_assert_eq(dp_pool_reclaim(pool), 1);
    dp_mock_clock_advance(m, 7);
    cr_assert_eq(tu_stats(pool).empty_oldest_age_ns, 7);
    finish(pool, m);
}

/* ----------------------------------------------------------------- prime */

Test(reclaim, primed_objects_are_served_by_nowait_gets_while_the_provider_fails)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 1, .hiwat = 16});
    size_t opp = opp_of(pool), n = 3 * opp + opp / 2;
    cr_assert_eq(dp_pool_prime(pool, n), 0, "prime: %s", strerror(errno));
    cr_assert_geq(tu_stats(pool).reserve_objs, n);

    dp_mock_fail_after(m, 0);
    const dp_provider_t *prov = dp_mock_provider(m);
    cr_assert_null(prov->alloc(prov->ctx, 4096, 4096, DP_NOWAIT),
                   "failure injection is not active");

    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_NOWAIT),
                           "primed get %zu of %zu failed", i, n);
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    dp_mock_fail_clear(m);
    finish(pool, m);
}

Test(reclaim, primed_pages_are_not_aged_out)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 1, .hiwat = 16});
    size_t opp = opp_of(pool), n = 4 * opp;
    cr_assert_eq(dp_pool_prime(pool, n), 0);
    uint64_t pages = tu_stats(pool).pages;
    cr_assert_geq(pages, 4);

    dp_mock_clock_advance(m, 100 * AGE);
    cr_assert_eq(dp_reclaim_step(), 0, "a pass aged out primed pages");
    cr_assert_eq(dp_pool_reclaim(pool), 0, "explicit reclaim took the reserve");
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    dp_pool_put(pool, o);
    cr_assert_eq(dp_reclaim_start(), 0);
    cr_assert_eq(dp_reclaim_sync(), 0);
    cr_assert_eq(tu_counters(m).free_calls, 0, "primed pages went back");
    cr_assert_eq(tu_stats(pool).pages, pages);

    dp_mock_fail_after(m, 0);
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_NOWAIT));
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    dp_mock_fail_clear(m);
    finish(pool, m);
}

Test(reclaim, failed_prime_leaves_the_reserve_and_the_pages_as_they_were)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 0, .hiwat = 16});
    size_t opp = opp_of(pool);
    cr_assert_eq(dp_pool_prime(pool, opp), 0, "prime: %s", strerror(errno));
    cr_assert_eq(tu_stats(pool).reserve_objs, opp);
    cr_assert_eq(tu_counters(m).allocs, 1);

    /* The provider fails on the third page this prime asks for. */
    dp_mock_fail_nth(m, 1 + 3);
    errno = 0;
    cr_assert_eq(dp_pool_prime(pool, 10 * opp), -1);
    cr_assert_eq(errno, ENOMEM, "errno %d", errno);
    dp_mock_fail_clear(m);
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, 1 + 2);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.reserve_objs, opp, "a failed prime raised the reserve");
    cr_assert_eq(s.pages, 1, "the failed prime kept %" PRIu64 " page(s)",
                 s.pages - 1);
    cr_assert_eq(c.frees, 2);
    /* The first prime's reserve is still kept. */
    dp_mock_clock_advance(m, 100 * AGE);
    cr_assert_eq(dp_reclaim_step(), 0);
    cr_assert_eq(dp_pool_reclaim(pool), 0);
    finish(pool, m);
}

/* lowat does not keep the pages of a failed prime: the pool had none, and
 * is left with none (found by tests/fuzz/fuzz_pool). */
Test(reclaim, failed_prime_gives_its_pages_back_below_lowat)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 2, .hiwat = 4});
    size_t opp = opp_of(pool);
    /* The provider fails on the second page. */
    dp_mock_fail_nth(m, 2);
    errno = 0;
    cr_assert_eq(dp_pool_prime(pool, 2 * opp), -1);
    cr_assert_eq(errno, ENOMEM, "errno %d", errno);
    dp_mock_fail_clear(m);
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, 1);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.reserve_objs, 0, "a failed prime raised the reserve");
    cr_assert_eq(s.pages, 0, "the failed prime kept %" PRIu64 " page(s)",
                 s.pages);
    cr_assert_eq(c.frees, 1);
    finish(pool, m);
}

struct primer {
    dp_pool_t *pool;
    size_t n;
    int rc, err;
};

static void *prime_thread(void *arg)
{
    struct primer *pr = arg;
    errno = 0;
    pr->rc = dp_pool_prime(pr->pool, pr->n);
    pr->err = errno;
    return NULL;
}

/* While a prime gathers its pages (its provider call held at the mock's
 * gate), a reclaim pass must not return the empty pages it counts on, even
 * with hiwat 0 (every empty page beyond keep urgent). */
Test(reclaim, a_prime_under_way_keeps_its_pages_from_a_reclaim_pass,
     .timeout = 60)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(
        m, (struct policy){.lowat = 0, .hiwat = 0, .flags = DP_POOL_NOCACHE});
    size_t opp = opp_of(pool);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    dp_pool_put(pool, o); /* one empty page, urgent by hiwat 0 */
    cr_assert_eq(tu_stats(pool).pages_empty, 1);

    dp_mock_gate_close(m, DP_MOCK_ALLOC);
    struct primer pr = {pool, 3 * opp, 0, 0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, prime_thread, &pr), 0);
    dp_mock_gate_wait(m, DP_MOCK_ALLOC, 1);
    cr_assert_eq(dp_reclaim_step(), 0, "a pass returned a page the prime "
                 "counts on");
    dp_mock_gate_open(m, DP_MOCK_ALLOC);
    pthread_join(t, NULL);
    cr_assert_eq(pr.rc, 0, "prime: errno %d", pr.err);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.pages, 3);
    cr_assert_eq(s.reserve_objs, 3 * opp);
    cr_assert_eq(tu_counters(m).frees, 0);
    cr_assert_eq(dp_reclaim_step(), 0, "the reserve went back");
    finish(pool, m);
}

Test(reclaim, prime_of_size_max_fails_with_enomem_without_calling_the_provider)
{
    static const size_t limits[] = {0, 10};
    for (size_t k = 0; k < 2; k++) {
        /* Capacity: what the old code would have mapped before failing
         * stays bounded. */
        dp_mock_t *m = dp_mock_create(64);
        dp_pool_t *pool = policy_pool(
            m, (struct policy){.lowat = 0, .hiwat = 16, .max_pages = limits[k]});
        errno = 0;
        cr_assert_eq(dp_pool_prime(pool, SIZE_MAX), -1);
        cr_assert_eq(errno, ENOMEM, "max_pages %zu: errno %d", limits[k], errno);
        cr_assert_eq(tu_counters(m).alloc_calls, 0,
                     "max_pages %zu: the provider was called", limits[k]);
        dp_pool_stats_t s = tu_stats(pool);
        cr_assert_eq(s.reserve_objs, 0);
        cr_assert_eq(s.pages, 0);
        /* The pool still primes what it can hold. */
        cr_assert_eq(dp_pool_prime(pool, 2 * opp_of(pool)), 0);
        cr_assert_eq(tu_stats(pool).pages, 2);
        finish(pool, m);
    }
}

/* On a pool without a hard limit, the bound is the machine's memory: a
 * prime that asks for more pages than that fails before any provider
 * call, rather than mapping until the address space or the map count
 * runs out. */
Test(reclaim, prime_beyond_the_physical_memory_fails_without_calling_the_provider)
{
    long phys = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
    cr_assert_gt(phys, 0);
    dp_mock_t *m = dp_mock_create(64);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 0, .hiwat = 16});
    size_t pages = (size_t)phys * (size_t)ps / 4096 + 1;
    errno = 0;
    cr_assert_eq(dp_pool_prime(pool, pages * opp_of(pool)), -1);
    cr_assert_eq(errno, ENOMEM, "errno %d", errno);
    cr_assert_eq(tu_counters(m).alloc_calls, 0, "the provider was called");
    cr_assert_eq(tu_stats(pool).reserve_objs, 0);
    finish(pool, m);
}

/* -------------------------------------------------------- the thread itself */

Test(reclaim, reclaim_sync_waits_for_a_new_pass_so_passes_advance)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = policy_pool(m, (struct policy){.lowat = 1, .hiwat = 16});
    dp_reclaim_set_interval(LONG_INTERVAL);
    cr_assert_eq(dp_reclaim_start(), 0);
    dp_reclaim_info_t i0 = info();
    cr_assert(i0.running);
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(dp_reclaim_sync(), 0);
        dp_reclaim_info_t i1 = info();
        cr_assert_gt(i1.passes, i0.passes, "sync returned without a pass");
        i0 = i1;
    }
    finish(pool, m);
}

Test(reclaim, reclaim_sync_fails_with_esrch_when_the_thread_is_stopped)
{
    dp_reclaim_stop();
    cr_assert_not(info().running);
    errno = 0;
    cr_assert_eq(dp_reclaim_sync(), -1);
    cr_assert_eq(errno, ESRCH);
    cr_assert_eq(dp_reclaim_start(), 0);
    cr_assert(info().running);
    cr_assert_eq(dp_reclaim_sync(), 0);
    dp_reclaim_stop();
    cr_assert_not(info().running);
    errno = 0;
    cr_assert_eq(dp_reclaim_sync(), -1);
    cr_assert_eq(errno, ESRCH);
}

Test(reclaim, a_pool_without_nothread_starts_the_reclaim_thread)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *quiet = policy_pool(m, (struct policy){.lowat = 1, .hiwat = 16});
    cr_assert_not(info().running, "a DP_POOL_NOTHREAD pool started the thread");

    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = dp_mock_provider(m);
    dp_pool_t *pool = dp_pool_create("auto", OBJSIZE, &a);
    cr_assert_not_null(pool);
    cr_assert(info().running, "the first ordinary pool did not start it");
    cr_assert_eq(dp_reclaim_sync(), 0);
    cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    finish(quiet, m);
}

/* The reclaim thread's state as the kernel sees it: true while it is
 * asleep in FUTEX_WAIT_BITSET (its sleep between passes; its mutexes use
 * plain FUTEX_WAIT).  /proc/self/task/TID/syscall names the system call
 * a sleeping thread is in, "running" otherwise. */
static bool asleep_between_passes(int tid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    bool ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    long nr;
    unsigned long uaddr, op;
    return ok && sscanf(buf, "%ld %lx %lx", &nr, &uaddr, &op) == 3 &&
           nr == SYS_futex && (op & 0x7f) == FUTEX_WAIT_BITSET;
}

/* The pool clock is read once per pass by the thread: it names the
 * thread. */
static atomic_int rt_tid;
static uint64_t tid_clock(void *arg)
{
    (void)arg;
    int me = (int)syscall(SYS_gettid);
    if (me != getpid())
        atomic_store(&rt_tid, me);
    return 1000000000ull;
}

/* An interval past the end of the clock must mean "sleep until woken":
 * if the deadline wrapped into the past, the thread would run pass after
 * pass without sleeping.  Each sync may cause a pass or two; anything
 * beyond that happened without a wake. */
Test(reclaim, an_interval_past_the_end_of_the_clock_lets_the_thread_sleep,
     .timeout = 60)
{
    static const uint64_t intervals[] = {UINT64_MAX,
                                         UINT64_MAX / 1000000 * 1000000};
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.flags = DP_POOL_NOTHREAD;
    a.clock = tid_clock;
    dp_pool_t *pool = dp_pool_create("tid", OBJSIZE, &a);
    cr_assert_not_null(pool);
    cr_assert_eq(dp_reclaim_start(), 0);
    for (size_t k = 0; k < 2; k++) {
        dp_reclaim_set_interval(intervals[k]);
        cr_assert_eq(info().interval_ns, intervals[k]);
        cr_assert_eq(dp_reclaim_sync(), 0);
        int tid = atomic_load(&rt_tid);
        cr_assert_gt(tid, 0, "the thread never read the pool clock");
        uint64_t passes = info().passes;
        while (!asleep_between_passes(tid)) {
            uint64_t now = info().passes;
            cr_assert_leq(now, passes + 2,
                          "interval %" PRIu64 ": %" PRIu64 " passes without "
                          "a wake", intervals[k], now - passes);
            sched_yield();
        }
        cr_assert_leq(info().passes, passes + 2);
    }
    dp_reclaim_stop();
    dp_reclaim_set_interval(0);
    cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                 strerror(errno));
}

Test(reclaim, reclaim_interval_is_set_and_reported)
{
    dp_reclaim_set_interval(250000000ull);
    cr_assert_eq(info().interval_ns, 250000000ull);
    dp_reclaim_set_interval(0);
    cr_assert_eq(info().interval_ns, 100000000ull, "default is 100 ms");
}
