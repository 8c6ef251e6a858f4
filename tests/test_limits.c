/*
 * test_limits.c -- the hard limit (max_pages), DP_NOWAIT failure, the
 * DP_WAITOK sleep and its wake-up, timed gets, and DP_WAITOK retrying when
 * the provider itself is out of memory.
 *
 * Waiting is observed, never slept for: a test that needs a getter asleep
 * polls dp_pool_stats().waiting with sched_yield() (there is no blocking
 * API for that state).  Nothing asserts how long anything took.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include "testutil.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#define OBJSIZE 64
#define LIMIT 2

TestSuite(limits, .timeout = 120, .init = tu_watchdog_init);

struct full_pool {
    dp_mock_t *m;
    dp_pool_t *pool;
    size_t n;    /* objects held: every slot of LIMIT pages */
    void **objs;
};

/* A pool at its hard limit with every object out (none cached). */
static struct full_pool fill_to_limit(unsigned extra_flags)
{
    struct full_pool f = {.m = tu_mock(0)};
    dp_pool_attr_t a = tu_attr(f.m);
    a.max_pages = LIMIT;
    a.flags |= extra_flags;
    f.pool = tu_pool("limits", OBJSIZE, &a);
    dp_pool_stats_t s = tu_stats(f.pool);
    cr_assert_eq(s.max_pages, LIMIT);
    f.n = LIMIT * s.objs_per_page;
    f.objs = calloc(f.n, sizeof(void *));
    cr_assert_not_null(f.objs);
    for (size_t i = 0; i < f.n; i++) {
        f.objs[i] = dp_pool_get(f.pool, DP_NOWAIT);
        cr_assert_not_null(f.objs[i], "get %zu of %zu below the limit failed",
                           i, f.n);
    }
    s = tu_stats(f.pool);
    cr_assert_eq(s.pages, LIMIT);
    cr_assert_eq(s.objs_inuse, f.n);
    cr_assert_eq(s.objs_free, 0);
    cr_assert_eq(tu_counters(f.m).allocs, LIMIT);
    return f;
}

static void release_all(struct full_pool *f)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->objs[i])
            dp_pool_put(f->pool, f->objs[i]);
    free(f->objs);
    tu_destroy_checked(f->pool, f->m);
}

/* ------------------------------------------------------------ DP_NOWAIT */

Test(limits, nowait_get_at_hard_limit_fails_with_enomem_without_calling_provider)
{
    struct full_pool f = fill_to_limit(0);
    uint64_t calls = tu_counters(f.m).alloc_calls;
    for (int i = 1; i <= 3; i++) {
        errno = 0;
        cr_assert_null(dp_pool_get(f.pool, DP_NOWAIT));
        cr_assert_eq(errno, ENOMEM, "errno %d", errno);
        dp_pool_stats_t s = tu_stats(f.pool);
        cr_assert_eq(s.gets_failed, (uint64_t)i);
        cr_assert_eq(s.pages, LIMIT);
        cr_assert_eq(s.waiting, 0);
        cr_assert_eq(s.gets_waited, 0);
    }
    cr_assert_eq(tu_counters(f.m).alloc_calls, calls,
                 "the provider was asked for a page past the hard limit");
    release_all(&f);
}

/* ----------------------------------------------------- DP_WAITOK sleep */

struct waiter {
    dp_pool_t *pool;
    int flags;
    const struct timespec *deadline; /* NULL: dp_pool_get */
    bool timed;
    void *obj;
    int err;
    atomic_int done;
};

static void *waiter_thread(void *arg)
{
    struct waiter *w = arg;
    errno = 0;
    w->obj = w->timed ? dp_pool_get_timed(w->pool, w->flags, w->deadline)
                      : dp_pool_get(w->pool, w->flags);
    w->err = errno;
    atomic_store(&w->done, 1);
    return NULL;
}

struct one_put {
    dp_pool_t *pool;
    void *obj;
};

static void *one_put_thread(void *arg)
{
    struct one_put *p = arg;
    dp_pool_put(p->pool, p->obj);
    return NULL;
}

/* A waiter sleeps at the limit until one object is given back, by the
 * main thread (which has a thread cache for the pool) or by a thread
 * that never used the pool. */
static void waitok_woken_by_put(unsigned flags, bool put_from_fresh_thread)
{
    struct full_pool f = fill_to_limit(flags);
    struct waiter w = {.pool = f.pool, .flags = DP_WAITOK};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, waiter_thread, &w), 0);
    tu_wait_waiting(f.pool, 1);
    cr_assert_eq(atomic_load(&w.done), 0, "returned although at the limit");
    cr_assert_eq(tu_stats(f.pool).pages, LIMIT);

    void *given = f.objs[f.n - 1];
    f.objs[f.n - 1] = NULL;
    if (put_from_fresh_thread) {
        struct one_put p = {.pool = f.pool, .obj = given};
        pthread_t pt;
        cr_assert_eq(pthread_create(&pt, NULL, one_put_thread, &p), 0);
        pthread_join(pt, NULL);
    } else {
        dp_pool_put(f.pool, given); /* main: a thread with a cache */
    }
    pthread_join(t, NULL);

    cr_assert_not_null(w.obj, "WAITOK get returned NULL, errno %d", w.err);
    memset(w.obj, 0x5a, OBJSIZE); /* a real object: ASan checks the range */
    dp_pool_stats_t s = tu_stats(f.pool);
    cr_assert_eq(s.gets_waited, 1);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.gets_failed, 0);
    cr_assert_eq(s.pages, LIMIT, "the limit was exceeded");
    cr_assert_eq(s.objs_inuse, f.n);
    cr_assert_eq(tu_counters(f.m).allocs, LIMIT);
    f.objs[f.n - 1] = w.obj;
    release_all(&f);
}

Test(limits, waitok_get_at_hard_limit_sleeps_until_a_put_from_main_wakes_it)
{
    waitok_woken_by_put(0, false);
}

Test(limits, waitok_get_at_hard_limit_sleeps_until_a_put_from_a_fresh_thread_wakes_it)
{
    waitok_woken_by_put(0, true);
}

Test(limits, waitok_get_at_hard_limit_woken_by_put_on_uncached_pool)
{
    waitok_woken_by_put(DP_POOL_NOCACHE, false);
}

/* ---------------------------------------------------------- timed gets */

static struct timespec mono_plus_ns(int64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t = (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec + ns;
    if (t < 1)
        t = 1;
    ts.tv_sec = (time_t)(t / 1000000000ll);
    ts.tv_nsec = (long)(t % 1000000000ll);
    return ts;
}

Test(limits, timed_get_with_past_deadline_at_hard_limit_fails_with_etimedout)
{
    struct full_pool f = fill_to_limit(0);
    struct timespec past = mono_plus_ns(-1000000000ll);
    errno = 0;
    cr_assert_null(dp_pool_get_timed(f.pool, DP_WAITOK, &past));
    cr_assert_eq(errno, ETIMEDOUT, "errno %d", errno);
    dp_pool_stats_t s = tu_stats(f.pool);
    cr_assert_eq(s.gets_failed, 1);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.pages, LIMIT);
    release_all(&f);
}

Test(limits, timed_get_with_past_deadline_still_returns_an_available_object)
{
    struct full_pool f = fill_to_limit(0);
    void *back = f.objs[0];
    f.objs[0] = NULL;
    dp_pool_put(f.pool, back);
    struct timespec past = mono_plus_ns(-1000000000ll);
    void *o = dp_pool_get_timed(f.pool, DP_WAITOK, &past);
    cr_assert_not_null(o, "errno %d", errno);
    f.objs[0] = o;
    cr_assert_eq(tu_stats(f.pool).gets_failed, 0);
    release_all(&f);
}

Test(limits, timed_get_with_future_deadline_at_hard_limit_times_out_with_etimedout)
{
    struct full_pool f = fill_to_limit(0);
    struct timespec soon = mono_plus_ns(50 * 1000000ll);
    errno = 0;
    cr_assert_null(dp_pool_get_timed(f.pool, DP_WAITOK, &soon));
    cr_assert_eq(errno, ETIMEDOUT, "errno %d", errno);
    dp_pool_stats_t s = tu_stats(f.pool);
    cr_assert_eq(s.gets_failed, 1);
    cr_assert_eq(s.waiting, 0, "a timed-out getter is still counted asleep");
    cr_assert_eq(s.pages, LIMIT);
    release_all(&f);
}

Test(limits, timed_get_asleep_at_hard_limit_is_woken_by_a_put_before_its_deadline)
{
    struct full_pool f = fill_to_limit(0);
    struct timespec later = mono_plus_ns(3600ll * 1000000000ll);
    struct waiter w = {.pool = f.pool, .flags = DP_WAITOK, .timed = true,
                       .deadline = &later};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, waiter_thread, &w), 0);
    tu_wait_waiting(f.pool, 1);
    cr_assert_eq(atomic_load(&w.done), 0);
    void *given = f.objs[0];
    f.objs[0] = NULL;
    dp_pool_put(f.pool, given);
    pthread_join(t, NULL);
    cr_assert_not_null(w.obj, "errno %d", w.err);
    f.objs[0] = w.obj;
    dp_pool_stats_t s = tu_stats(f.pool);
    cr_assert_eq(s.gets_waited, 1);
    cr_assert_eq(s.gets_failed, 0);
    cr_assert_eq(s.waiting, 0);
    release_all(&f);
}

Test(limits, timed_nowait_get_at_hard_limit_ignores_deadline_and_fails_with_enomem)
{
    struct full_pool f = fill_to_limit(0);
    struct timespec soon = mono_plus_ns(3600ll * 1000000000ll);
    errno = 0;
    cr_assert_null(dp_pool_get_timed(f.pool, DP_NOWAIT, &soon));
    cr_assert_eq(errno, ENOMEM, "errno %d", errno);
    release_all(&f);
}

/* A deadline later than 2^64 ns (the year 2554) cannot be a nanosecond
 * count: it is no bound, not a deadline that has passed. */
Test(limits, timed_get_with_a_deadline_beyond_2554_sleeps_until_a_put)
{
    static const struct timespec far[] = {
        {.tv_sec = (time_t)INT64_MAX, .tv_nsec = 999999999L},
        {.tv_sec = (time_t)100000000000ll, .tv_nsec = 0}, /* year ~5138 */
        {.tv_sec = (time_t)18446744073ll, .tv_nsec = 709551616L}, /* 2^64 ns */
    };
    for (size_t k = 0; k < sizeof far / sizeof far[0]; k++) {
        struct full_pool f = fill_to_limit(0);
        struct waiter w = {.pool = f.pool, .flags = DP_WAITOK, .timed = true,
                           .deadline = &far[k]};
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, waiter_thread, &w), 0);
        /* Asleep, or (the bug) already back. */
        while (!atomic_load(&w.done) && tu_stats(f.pool).waiting < 1)
            sched_yield();
        if (atomic_load(&w.done)) {
            pthread_join(t, NULL);
            cr_assert_fail("deadline %lld.%09ld: the get returned at once "
                           "(obj %p, errno %d)", (long long)far[k].tv_sec,
                           far[k].tv_nsec, w.obj, w.err);
        }
        void *given = f.objs[0];
        f.objs[0] = NULL;
        dp_pool_put(f.pool, given);
        pthread_join(t, NULL);
        cr_assert_not_null(w.obj, "errno %d", w.err);
        f.objs[0] = w.obj;
        cr_assert_eq(tu_stats(f.pool).gets_waited, 1);
        release_all(&f);
    }
}

/* The deadline is ignored for DP_NOWAIT: not even checked. */
Test(limits, timed_nowait_get_ignores_a_malformed_deadline)
{
    static const struct timespec bad[] = {
        {.tv_sec = -1, .tv_nsec = 0},
        {.tv_sec = 0, .tv_nsec = -1},
        {.tv_sec = 0, .tv_nsec = 1000000000L},
    };
    struct full_pool f = fill_to_limit(0);
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        errno = 0;
        cr_assert_null(dp_pool_get_timed(f.pool, DP_NOWAIT, &bad[k]));
        cr_assert_eq(errno, ENOMEM, "case %zu: errno %d", k, errno);
        /* With room, the get succeeds. */
        void *given = f.objs[0];
        dp_pool_put(f.pool, given);
        errno = 0;
        f.objs[0] = dp_pool_get_timed(f.pool, DP_NOWAIT, &bad[k]);
        cr_assert_not_null(f.objs[0], "case %zu: errno %d", k, errno);
        /* DP_WAITOK still rejects it. */
        errno = 0;
        cr_assert_null(dp_pool_get_timed(f.pool, DP_WAITOK, &bad[k]));
        cr_assert_eq(errno, EINVAL, "case %zu: errno %d", k, errno);
    }
    release_all(&f);
}

/* ------------------------------------------- provider out of capacity */

/*
 * Two pools share a mock that holds two pages.  Pool A takes both and
 * lets them go empty; a DP_WAITOK get on pool B finds the provider failing
 * and sleeps.  Reclaiming A frees the provider, and B's getter retries and
 * succeeds: a WAITOK get treats a provider failure as "later", not "no".
 */
Test(limits, waitok_get_retries_after_provider_failure_once_another_pool_is_reclaimed)
{
    dp_mock_t *m = tu_mock(2);
    dp_pool_attr_t a = tu_attr(m);
    a.lowat = 0;
    dp_pool_t *pa = tu_pool("limits-a", OBJSIZE, &a);
    dp_pool_t *pb = tu_pool("limits-b", OBJSIZE, &a);
    size_t opp = tu_stats(pa).objs_per_page;
    size_t n = 2 * opp;
    void **objs = calloc(n, sizeof(void *));
    cr_assert_not_null(objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pa, DP_WAITOK));
    cr_assert_eq(tu_counters(m).pages_out, 2);
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pa, objs[i]);
    dp_thread_cache_flush();
    cr_assert_eq(tu_stats(pa).pages_empty, 2);

    /* B can get nothing without waiting. */
    errno = 0;
    cr_assert_null(dp_pool_get(pb, DP_NOWAIT));
    cr_assert_eq(errno, ENOMEM);

    struct waiter w = {.pool = pb, .flags = DP_WAITOK};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, waiter_thread, &w), 0);
    tu_wait_waiting(pb, 1);
    cr_assert_eq(atomic_load(&w.done), 0);
    cr_assert_geq(tu_stats(pb).provider_alloc_failures, 2);

    size_t back = dp_pool_reclaim(pa);
    cr_assert_eq(back, 2, "dp_pool_reclaim(A) returned %zu pages", back);
    pthread_join(t, NULL);
    cr_assert_not_null(w.obj, "errno %d", w.err);
    memset(w.obj, 1, OBJSIZE);

    dp_pool_stats_t sb = tu_stats(pb);
    cr_assert_eq(sb.gets_waited, 1);
    cr_assert_eq(sb.pages, 1);
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_geq(c.alloc_failures, 2);
    cr_assert_eq(c.pages_out, 1);
    dp_pool_put(pb, w.obj);
    free(objs);

    tu_destroy_checked(pa, NULL);
    tu_destroy_checked(pb, NULL);
    c = tu_counters(m);
    cr_assert_eq(c.allocs, c.frees);
    cr_assert_eq(c.pages_out, 0);
    dp_mock_destroy(m);
}
