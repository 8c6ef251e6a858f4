/*
 * test_faults.c -- the provider failing: DP_NOWAIT gets fail cleanly
 * (NULL + ENOMEM), DP_WAITOK gets wait and succeed once the provider
 * recovers, nothing leaks, the failure counters agree with the mock's, and
 * the pool works normally afterwards.
 *
 * Failures come from the mock's injection rules (fail_after, fail_nth,
 * fail_every, fail_random with fixed seeds) and its capacity.  A getter is
 * known to be asleep when stats.waiting says so (polled with sched_yield),
 * never by sleeping.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define OBJSIZE 128

/* ---------------------------------------------------------------- helpers */

static dp_pool_t *fault_pool(dp_mock_t *m)
{
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = dp_mock_provider(m);
    a.clock = dp_mock_clock;
    a.clock_arg = m;
    a.flags = DP_POOL_NOTHREAD;
    a.pagesize = 4096;
    dp_pool_t *pool = dp_pool_create("faults", OBJSIZE, &a);
    cr_assert_not_null(pool, "dp_pool_create: %s", strerror(errno));
    return pool;
}

/* The pool's view of provider failures is the mock's. */
static void assert_failures_agree(dp_pool_t *pool, dp_mock_t *m)
{
    dp_pool_stats_t s = tu_stats(pool);
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(s.provider_alloc_failures, c.alloc_failures,
                 "pool counted %" PRIu64 " provider failures, mock %" PRIu64,
                 s.provider_alloc_failures, c.alloc_failures);
    cr_assert_eq(s.pages_alloc, c.allocs);
    cr_assert_eq(s.pages_freed, c.frees);
}

/* After the faults: a full cycle of distinct, writable objects over
 * several pages, then the pool is consistent. */
static void assert_pool_works(dp_pool_t *pool)
{
    size_t n = 4 * tu_stats(pool).objs_per_page;
    unsigned char **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++) {
        objs[i] = dp_pool_get(pool, i % 2 ? DP_NOWAIT : DP_WAITOK);
        cr_assert_not_null(objs[i], "get %zu after the faults: %s", i,
                           strerror(errno));
        memset(objs[i], (int)(i & 0xff), OBJSIZE);
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t b = 0; b < OBJSIZE; b++)
            cr_assert_eq(objs[i][b], (unsigned char)(i & 0xff),
                         "object %zu overwritten", i);
        dp_pool_put(pool, objs[i]);
    }
    free(objs);
    cr_assert_eq(tu_stats(pool).objs_inuse, 0);
    cr_assert_eq(dp_pool_check(pool), 0);
}

static void finish(dp_pool_t *pool, dp_mock_t *m)
{
    tu_destroy_checked(pool, m); /* and the mock */
}

struct getter {
    dp_pool_t *pool;
    void *obj;
    int err;
    atomic_int done;
};

static void *getter_main(void *arg)
{
    struct getter *g = arg;
    g->obj = dp_pool_get(g->pool, DP_WAITOK);
    g->err = errno;
    atomic_store(&g->done, 1);
    return NULL;
}

static void wait_for_sleepers(dp_pool_t *pool, uint64_t n)
{
    while (tu_stats(pool).waiting < n)
        sched_yield();
}

/* ------------------------------------------------------------------ tests */

TestSuite(faults, .init = tu_watchdog_init);

Test(faults, nowait_get_fails_with_enomem_while_the_provider_fails)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = fault_pool(m);
    dp_mock_fail_after(m, 0);
    for (int i = 0; i < 3; i++) {
        errno = 0;
        cr_assert_null(dp_pool_get(pool, DP_NOWAIT));
        cr_assert_eq(errno, ENOMEM);
    }
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.gets_failed, 3);
    cr_assert_eq(s.gets, 0);
    cr_assert_eq(s.pages, 0);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_gt(tu_counters(m).alloc_failures, 0);
    assert_failures_agree(pool, m);
    cr_assert_eq(dp_pool_check(pool), 0);

    dp_mock_fail_clear(m);
    assert_pool_works(pool);
    assert_failures_agree(pool, m);
    finish(pool, m);
}

Test(faults, nowait_gets_under_random_provider_failures_fail_cleanly_and_leak_nothing)
{
    for (uint64_t seed = 1; seed <= 3; seed++) {
        dp_mock_t *m = dp_mock_create(0);
        dp_pool_t *pool = fault_pool(m);
        size_t opp = tu_stats(pool).objs_per_page, cap = 6 * opp, held = 0;
        void **objs = calloc(cap, sizeof *objs);
        dp_mock_fail_random(m, 300000, seed); /* 30% of allocs */
        uint64_t rng = seed * 7919, nulls = 0, got = 0;
        int filling = 1; /* waves: fill to cap, drain and reclaim, again */
        unsigned steps = tu_scaled(40000);
        for (unsigned i = 0; i < steps; i++) {
            uint64_t r = tu_rng(&rng);
            if (filling && held == cap)
                filling = 0;
            if (!filling && held == 0) {
                dp_pool_reclaim(pool); /* so the next wave needs pages */
                filling = 1;
            }
            if (held == 0 || (held < cap && r % 100 < (filling ? 80u : 20u))) {
                errno = 0;
                void *o = dp_pool_get(pool, DP_NOWAIT);
                if (!o) {
                    cr_assert_eq(errno, ENOMEM, "seed %" PRIu64 ": errno %d",
                                 seed, errno);
                    nulls++;
                    continue;
                }
                got++;
                objs[held++] = o;
            } else {
                size_t k = (size_t)(r >> 32) % held;
                dp_pool_put(pool, objs[k]);
                objs[k] = objs[--held];
            }
        }
        cr_assert_gt(nulls, 0, "seed %" PRIu64 ": no get ever failed", seed);
        dp_pool_stats_t s = tu_stats(pool);
        cr_assert_eq(s.gets_failed, nulls);
        cr_assert_eq(s.gets, got);
        cr_assert_eq(s.objs_inuse, held);
        assert_failures_agree(pool, m);
        cr_assert_eq(dp_pool_check(pool), 0);
        while (held)
            dp_pool_put(pool, objs[--held]);
        free(objs);

        dp_mock_fail_clear(m);
        assert_pool_works(pool);
        finish(pool, m);
    }
}

Test(faults, waitok_gets_succeed_when_the_provider_fails_every_other_call, .timeout = 120)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = fault_pool(m);
    size_t n = 8 * tu_stats(pool).objs_per_page;
    dp_mock_fail_every(m, 2);
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK),
                           "DP_WAITOK get %zu failed: %s", i, strerror(errno));
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, 8);
    cr_assert_geq(c.alloc_failures, 7, "the injection did not bite");
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.gets_failed, 0);
    cr_assert_eq(s.gets, n);
    assert_failures_agree(pool, m);
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    dp_mock_fail_clear(m);
    assert_pool_works(pool);
    finish(pool, m);
}

Test(faults, waitok_get_succeeds_past_a_single_failed_call, .timeout = 120)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = fault_pool(m);
    size_t n = 3 * tu_stats(pool).objs_per_page;
    dp_mock_fail_nth(m, 2);
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
    cr_assert_eq(tu_counters(m).alloc_failures, 1);
    cr_assert_eq(tu_counters(m).allocs, 3);
    assert_failures_agree(pool, m);
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    assert_pool_works(pool);
    finish(pool, m);
}

Test(faults, waitok_get_sleeps_while_the_provider_fails_and_succeeds_once_it_recovers,
     .timeout = 120)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = fault_pool(m);
    dp_mock_fail_after(m, 0);
    struct getter g = {.pool = pool};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, getter_main, &g), 0);
    wait_for_sleepers(pool, 1);
    cr_assert_eq(atomic_load(&g.done), 0, "the get returned while failing");

    /* Recovery, then a reclaim pass (it refills lowat, making room). */
    dp_mock_fail_clear(m);
    dp_reclaim_step();
    pthread_join(t, NULL);
    cr_assert_not_null(g.obj, "DP_WAITOK get failed: errno %d", g.err);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_geq(s.gets_waited, 1);
    cr_assert_eq(s.gets_failed, 0);
    cr_assert_eq(s.waiting, 0);
    cr_assert_gt(tu_counters(m).alloc_failures, 0);
    assert_failures_agree(pool, m);
    dp_pool_put(pool, g.obj);
    assert_pool_works(pool);
    finish(pool, m);
}

Test(faults, every_sleeping_getter_succeeds_once_the_provider_recovers, .timeout = 120)
{
    enum { N = 4 };
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = fault_pool(m);
    dp_mock_fail_after(m, 0);
    struct getter g[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        g[i] = (struct getter){.pool = pool};
        cr_assert_eq(pthread_create(&t[i], NULL, getter_main, &g[i]), 0);
    }
    wait_for_sleepers(pool, N);
    dp_mock_fail_clear(m);
    dp_reclaim_step();
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        cr_assert_not_null(g[i].obj, "getter %d failed: errno %d", i, g[i].err);
        for (int j = 0; j < i; j++)
            cr_assert_neq(g[i].obj, g[j].obj, "two getters got one object");
    }
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_geq(s.gets_waited, N);
    cr_assert_eq(s.objs_inuse, N);
    assert_failures_agree(pool, m);
    for (int i = 0; i < N; i++)
        dp_pool_put(pool, g[i].obj);
    assert_pool_works(pool);
    finish(pool, m);
}

Test(faults, nowait_gets_fail_at_provider_capacity_and_work_when_it_grows)
{
    dp_mock_t *m = dp_mock_create(2);
    dp_pool_t *pool = fault_pool(m);
    size_t n = 2 * tu_stats(pool).objs_per_page;
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_NOWAIT));
    errno = 0;
    cr_assert_null(dp_pool_get(pool, DP_NOWAIT));
    cr_assert_eq(errno, ENOMEM);
    cr_assert_eq(tu_counters(m).alloc_failures, 1);
    assert_failures_agree(pool, m);

    dp_mock_set_capacity(m, 0);
    void *o = dp_pool_get(pool, DP_NOWAIT);
    cr_assert_not_null(o);
    dp_pool_put(pool, o);
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    assert_pool_works(pool);
    finish(pool, m);
}

Test(faults, prime_fails_with_enomem_when_the_provider_fails)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = fault_pool(m);
    size_t opp = tu_stats(pool).objs_per_page;
    dp_mock_fail_after(m, 1); /* the first page comes, the rest do not */
    errno = 0;
    cr_assert_eq(dp_pool_prime(pool, 3 * opp), -1);
    cr_assert_eq(errno, ENOMEM);
    cr_assert_eq(tu_counters(m).allocs, 1);
    assert_failures_agree(pool, m);
    cr_assert_eq(dp_pool_check(pool), 0);
    dp_mock_fail_clear(m);
    cr_assert_eq(dp_pool_prime(pool, 3 * opp), 0);
    assert_pool_works(pool);
    finish(pool, m);
}

struct churner {
    dp_pool_t *pool;
    unsigned steps;
    uint64_t seed;
    size_t cap;
    atomic_int failed;
};

static void *churn_main(void *arg)
{
    struct churner *c = arg;
    void **objs = calloc(c->cap, sizeof *objs);
    size_t held = 0;
    uint64_t rng = c->seed;
    for (unsigned i = 0; i < c->steps; i++) {
        uint64_t r = tu_rng(&rng);
        if (held < c->cap && (held == 0 || r % 100 < 55)) {
            void *o = dp_pool_get(c->pool, DP_WAITOK);
            if (!o) {
                atomic_fetch_add(&c->failed, 1);
                continue;
            }
            objs[held++] = o;
        } else if (r % 300 == 0) {
            dp_pool_reclaim(c->pool); /* so later gets need the provider */
        } else {
            size_t k = (size_t)(r >> 32) % held;
            dp_pool_put(c->pool, objs[k]);
            objs[k] = objs[--held];
        }
    }
    while (held)
        dp_pool_put(c->pool, objs[--held]);
    free(objs);
    return NULL;
}

Test(faults, concurrent_waitok_gets_all_succeed_under_random_provider_failures,
     .timeout = 300)
{
    enum { T = 2 };
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = fault_pool(m);
    size_t opp = tu_stats(pool).objs_per_page;
    dp_mock_fail_random(m, 500000, 42);
    struct churner c[T];
    pthread_t t[T];
    for (int i = 0; i < T; i++) {
        c[i] = (struct churner){.pool = pool, .steps = tu_scaled(8000),
                                .seed = 1000 + (uint64_t)i, .cap = 3 * opp};
        cr_assert_eq(pthread_create(&t[i], NULL, churn_main, &c[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(atomic_load(&c[i].failed), 0, "a DP_WAITOK get failed");
    }
    cr_assert_gt(tu_counters(m).alloc_failures, 0, "the injection did not bite");
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_eq(s.gets_failed, 0);
    assert_failures_agree(pool, m);
    dp_mock_fail_clear(m);
    assert_pool_works(pool);
    finish(pool, m);
}
