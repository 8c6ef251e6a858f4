/*
 * test_ctor.c -- Bonwick object caching: a constructor runs once per object
 * when its page arrives from the provider, objects stay constructed while
 * they sit in the pool, destructors run when pages go back, and a failing
 * constructor abandons the page without leaking it.
 *
 * The constructor writes a pattern over the whole object that depends on
 * the object's address; the destructor checks it, so a pool that reused an
 * object's bytes (say, for a free-list link) is caught.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define OBJSIZE 80
#define AGE 1000000000ull

/* ---------------------------------------------------------------- helpers */

static struct cbstate {
    atomic_ulong ctor_calls, ctor_ok, ctor_failed;
    atomic_ulong dtor_calls, dtor_unconstructed, bad_arg;
    atomic_ulong flags_waitok, flags_nowait, flags_other;
    atomic_ulong fail_first; /* fail this many calls first               */
    atomic_ulong fail_at;    /* fail exactly call number n (1-based); 0 */
    atomic_uint fail_ppm;    /* then fail at random with this rate       */
    uint64_t rng;            /* only used by single-threaded tests       */
} cb;

static unsigned char pattern(const void *obj, size_t i)
{
    return (unsigned char)((((uintptr_t)obj >> 3) * 2654435761u) + i * 13 + 7);
}

static bool constructed(const void *obj)
{
    const unsigned char *b = obj;
    for (size_t i = 0; i < OBJSIZE; i++)
        if (b[i] != pattern(obj, i))
            return false;
    return true;
}

static int ctor(void *obj, void *arg, int flags)
{
    unsigned long call = atomic_fetch_add(&cb.ctor_calls, 1) + 1;
    if (arg != &cb)
        atomic_fetch_add(&cb.bad_arg, 1);
    if (flags == DP_WAITOK)
        atomic_fetch_add(&cb.flags_waitok, 1);
    else if (flags == DP_NOWAIT)
        atomic_fetch_add(&cb.flags_nowait, 1);
    else
        atomic_fetch_add(&cb.flags_other, 1);

    bool fail = call <= atomic_load(&cb.fail_first) ||
                call == atomic_load(&cb.fail_at);
    unsigned ppm = atomic_load(&cb.fail_ppm);
    if (!fail && ppm) {
        uint64_t x = cb.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cb.rng = x;
        fail = x % 1000000 < ppm;
    }
    if (fail) {
        atomic_fetch_add(&cb.ctor_failed, 1);
        return -1;
    }
    unsigned char *b = obj;
    for (size_t i = 0; i < OBJSIZE; i++)
        b[i] = pattern(obj, i);
    atomic_fetch_add(&cb.ctor_ok, 1);
    return 0;
}

static void dtor(void *obj, void *arg)
{
    atomic_fetch_add(&cb.dtor_calls, 1);
    if (arg != &cb)
        atomic_fetch_add(&cb.bad_arg, 1);
    if (!constructed(obj))
        atomic_fetch_add(&cb.dtor_unconstructed, 1);
    memset(obj, 0xdd, OBJSIZE);
}

static void ctor_attr(dp_pool_attr_t *a, dp_mock_t *m)
{
    dp_pool_attr_init(a);
    a->provider = dp_mock_provider(m);
    a->clock = dp_mock_clock;
    a->clock_arg = m;
    a->flags = DP_POOL_NOTHREAD;
    a->pagesize = 4096;
    a->reclaim_age_ns = AGE;
    a->ctor = ctor;
    a->dtor = dtor;
    a->cbarg = &cb;
}

static dp_pool_t *ctor_pool(dp_mock_t *m)
{
    dp_pool_attr_t a;
    ctor_attr(&a, m);
    dp_pool_t *pool = dp_pool_create("ctor", OBJSIZE, &a);
    cr_assert_not_null(pool, "dp_pool_create: %s", strerror(errno));
    return pool;
}

/* Destroy, then: no page leaked, every constructed object destructed once,
 * nothing destructed that was not constructed, cbarg always right. */
static void finish(dp_pool_t *pool, dp_mock_t *m)
{
    tu_destroy_checked(pool, m); /* and the mock */
    cr_assert_eq(atomic_load(&cb.ctor_ok), atomic_load(&cb.dtor_calls),
                 "%lu objects constructed, %lu destructed",
                 atomic_load(&cb.ctor_ok), atomic_load(&cb.dtor_calls));
    cr_assert_eq(atomic_load(&cb.dtor_unconstructed), 0,
                 "dtor saw objects not in their constructed state");
    cr_assert_eq(atomic_load(&cb.bad_arg), 0, "callbacks got the wrong cbarg");
}

static void **get_n(dp_pool_t *pool, size_t n, int flags)
{
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++) {
        objs[i] = dp_pool_get(pool, flags);
        cr_assert_not_null(objs[i], "get %zu: %s", i, strerror(errno));
        cr_assert(constructed(objs[i]), "object %p handed out unconstructed",
                  objs[i]);
    }
    return objs;
}

/* Put back, and flush this thread's cache so the objects reach their
 * pages (which is where reclaim finds empty ones). */
static void put_n(dp_pool_t *pool, void **objs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    dp_thread_cache_flush();
}

/* ------------------------------------------------------------------ tests */

TestSuite(ctor, .init = tu_watchdog_init);

Test(ctor, ctor_runs_once_per_object_when_its_page_arrives)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m);
    size_t opp = tu_stats(pool).objs_per_page, n = 3 * opp + 1;
    void **objs = get_n(pool, n, DP_WAITOK);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.pages_alloc, 4);
    cr_assert_eq(atomic_load(&cb.ctor_calls), opp * s.pages_alloc,
                 "ctor calls %lu != %zu per page * %" PRIu64 " pages",
                 atomic_load(&cb.ctor_calls), opp, s.pages_alloc);
    put_n(pool, objs, n);
    finish(pool, m);
}

Test(ctor, repeated_get_and_put_does_not_rerun_the_ctor)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m);
    size_t opp = tu_stats(pool).objs_per_page;
    unsigned rounds = tu_scaled(20000);
    for (unsigned i = 0; i < rounds; i++) {
        void *o = dp_pool_get(pool, i % 2 ? DP_NOWAIT : DP_WAITOK);
        cr_assert_not_null(o);
        cr_assert(constructed(o));
        dp_pool_put(pool, o);
    }
    for (unsigned i = 0; i < tu_scaled(50); i++)
        put_n(pool, get_n(pool, 2 * opp, DP_WAITOK), 2 * opp);
    cr_assert_eq(tu_stats(pool).pages_alloc, 2);
    cr_assert_eq(atomic_load(&cb.ctor_calls), 2 * opp,
                 "ctor ran %lu times for 2 pages of %zu",
                 atomic_load(&cb.ctor_calls), opp);
    cr_assert_eq(atomic_load(&cb.dtor_calls), 0, "dtor ran while pages stayed");
    finish(pool, m);
}

Test(ctor, constructed_state_survives_put_and_get)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m);
    size_t opp = tu_stats(pool).objs_per_page, n = 2 * opp;
    /* Every object is out, then in, then out again: each time the whole
     * object must still hold what the ctor wrote (get_n checks it). */
    put_n(pool, get_n(pool, n, DP_WAITOK), n);
    void **objs = get_n(pool, n, DP_NOWAIT);
    /* Put back in a different order to shuffle the free lists. */
    for (size_t i = 0; i < n; i += 2)
        dp_pool_put(pool, objs[i]);
    for (size_t i = 1; i < n; i += 2)
        dp_pool_put(pool, objs[i]);
    free(objs);
    put_n(pool, get_n(pool, n, DP_WAITOK), n);
    cr_assert_eq(atomic_load(&cb.ctor_calls), n);
    finish(pool, m);
}

Test(ctor, dtor_runs_for_every_object_of_each_page_returned)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m); /* lowat 1 */
    size_t opp = tu_stats(pool).objs_per_page;

    /* Explicit reclaim. */
    put_n(pool, get_n(pool, 5 * opp, DP_WAITOK), 5 * opp);
    cr_assert_eq(dp_pool_reclaim(pool), 4);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(atomic_load(&cb.dtor_calls), opp * s.pages_freed);
    cr_assert_eq(atomic_load(&cb.ctor_calls), opp * s.pages_alloc);

    /* Ageing, by a reclaim pass in this thread. */
    put_n(pool, get_n(pool, 3 * opp, DP_WAITOK), 3 * opp);
    cr_assert_eq(tu_stats(pool).pages_empty, 3); /* emptied now, by the clock */
    dp_mock_clock_advance(m, AGE + 1);
    cr_assert_eq(dp_reclaim_step(), 2);
    s = tu_stats(pool);
    cr_assert_eq(s.pages_freed, 6);
    cr_assert_eq(atomic_load(&cb.dtor_calls), opp * s.pages_freed);
    cr_assert_eq(tu_counters(m).frees, s.pages_freed);

    /* Destroy returns the rest: ctor count == dtor count (finish). */
    cr_assert_eq(atomic_load(&cb.dtor_unconstructed), 0);
    finish(pool, m);
    cr_assert_eq(atomic_load(&cb.dtor_calls), 7 * opp);
}

Test(ctor, callbacks_receive_cbarg_and_the_gets_flags)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m);
    size_t opp = tu_stats(pool).objs_per_page;
    /* Page 1 arrives for a DP_NOWAIT get, page 2 for a DP_WAITOK get. */
    void **a = get_n(pool, opp, DP_NOWAIT);
    void **b = get_n(pool, 1, DP_WAITOK);
    cr_assert_eq(tu_stats(pool).pages_alloc, 2);
    cr_assert_eq(atomic_load(&cb.flags_nowait), opp);
    cr_assert_eq(atomic_load(&cb.flags_waitok), opp);
    cr_assert_eq(atomic_load(&cb.flags_other), 0);
    cr_assert_eq(atomic_load(&cb.bad_arg), 0);
    put_n(pool, a, opp);
    put_n(pool, b, 1);
    finish(pool, m);
}

Test(ctor, ctor_failure_makes_a_nowait_get_fail_with_enomem)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m);
    atomic_store(&cb.fail_first, 1);
    errno = 0;
    cr_assert_null(dp_pool_get(pool, DP_NOWAIT));
    cr_assert_eq(errno, ENOMEM);
    cr_assert_eq(atomic_load(&cb.ctor_failed), 1);
    cr_assert_eq(tu_counters(m).free_calls, 0, "a DP_NOWAIT get freed a page");
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.gets_failed, 1);
    cr_assert_eq(s.objs_inuse, 0);

    /* The ctor works again: so does the next get. */
    void *o = dp_pool_get(pool, DP_NOWAIT);
    cr_assert_not_null(o);
    cr_assert(constructed(o));
    dp_pool_put(pool, o);
    finish(pool, m);
}

Test(ctor, objects_constructed_before_a_ctor_failure_are_destructed, .timeout = 60)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m);
    size_t opp = tu_stats(pool).objs_per_page;
    /* Fail half-way through the first page, under DP_NOWAIT and, on the
     * next page, under DP_WAITOK. */
    atomic_store(&cb.fail_at, opp / 2 + 1);
    cr_assert_null(dp_pool_get(pool, DP_NOWAIT));
    cr_assert_eq(atomic_load(&cb.ctor_ok), opp / 2);

    void *o = dp_pool_get(pool, DP_WAITOK); /* also hands back the page */
    cr_assert_not_null(o);
    cr_assert(constructed(o));
    dp_pool_put(pool, o);
    finish(pool, m); /* ctor_ok == dtor_calls */
}

Test(ctor, waitok_get_retries_until_the_ctor_stops_failing, .timeout = 60)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m);
    const unsigned long k = 3;
    atomic_store(&cb.fail_first, k);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o, "DP_WAITOK get failed: %s", strerror(errno));
    cr_assert(constructed(o));
    cr_assert_eq(atomic_load(&cb.ctor_failed), k);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.gets, 1);
    cr_assert_eq(s.gets_failed, 0);
    dp_pool_put(pool, o);
    finish(pool, m);
}

Test(ctor, random_ctor_failures_leak_no_page_and_no_constructed_object, .timeout = 120)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m);
    size_t opp = tu_stats(pool).objs_per_page, cap = 4 * opp, held = 0;
    void **objs = calloc(cap, sizeof *objs);
    cb.rng = 0x2545f4914f6cdd1dull;
    atomic_store(&cb.fail_ppm, 5000); /* ~0.5% of ctor calls */
    uint64_t rng = 99, nulls = 0;
    unsigned steps = tu_scaled(20000);
    for (unsigned i = 0; i < steps; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if (held < cap && (held == 0 || rng % 100 < 55)) {
            int flags = rng % 64 == 0 ? DP_WAITOK : DP_NOWAIT;
            errno = 0;
            void *o = dp_pool_get(pool, flags);
            if (!o) {
                cr_assert_eq(flags, DP_NOWAIT, "a DP_WAITOK get failed");
                cr_assert_eq(errno, ENOMEM);
                nulls++;
                continue;
            }
            cr_assert(constructed(o));
            objs[held++] = o;
        } else if (rng % 500 == 0) {
            dp_pool_reclaim(pool);
        } else {
            size_t j = (size_t)(rng >> 32) % held;
            dp_pool_put(pool, objs[j]);
            objs[j] = objs[--held];
        }
    }
    cr_assert_gt(atomic_load(&cb.ctor_failed), 0, "no ctor failure injected");
    cr_assert_eq(tu_stats(pool).gets_failed, nulls);
    cr_assert_eq(dp_pool_check(pool), 0);
    while (held)
        dp_pool_put(pool, objs[--held]);
    free(objs);
    finish(pool, m);
}

Test(ctor, zero_flag_on_a_pool_with_a_ctor_is_einval)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m);
    static const int flags[] = {DP_WAITOK | DP_ZERO, DP_NOWAIT | DP_ZERO};
    for (size_t i = 0; i < 2; i++) {
        errno = 0;
        cr_assert_null(dp_pool_get(pool, flags[i]));
        cr_assert_eq(errno, EINVAL, "flags %#x: errno %d", flags[i], errno);
    }
    cr_assert_eq(tu_counters(m).alloc_calls, 0);
    cr_assert_eq(atomic_load(&cb.ctor_calls), 0);
    cr_assert_eq(tu_stats(pool).gets, 0);
    /* The pool is unharmed. */
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o);
    dp_pool_put(pool, o);
    finish(pool, m);
}

/* ------------------------------------------- constructors that keep failing */

Test(ctor, waitok_get_gives_up_with_enomem_after_dp_ctor_tries_failed_pages,
     .timeout = 60)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = ctor_pool(m);
    atomic_store(&cb.fail_first, ~0ul); /* every ctor call fails */
    errno = 0;
    cr_assert_null(dp_pool_get(pool, DP_WAITOK),
                   "a DP_WAITOK get succeeded with a ctor that always fails");
    cr_assert_eq(errno, ENOMEM, "errno %d", errno);
    /* Each page fails at its first object: one ctor call per page. */
    cr_assert_eq(atomic_load(&cb.ctor_failed), DP_CTOR_TRIES);
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, DP_CTOR_TRIES);
    cr_assert_eq(c.frees, DP_CTOR_TRIES, "a failed page was not given back");
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.gets_failed, 1);
    cr_assert_eq(s.pages, 0);

    /* One failure fewer than the bound: the get still succeeds. */
    atomic_store(&cb.fail_first, 0);
    atomic_store(&cb.ctor_calls, 0);
    atomic_store(&cb.ctor_failed, 0);
    atomic_store(&cb.fail_first, DP_CTOR_TRIES - 1);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o, "get failed after %d ctor failures", DP_CTOR_TRIES - 1);
    cr_assert(constructed(o));
    dp_pool_put(pool, o);
    finish(pool, m);
}

/* -------------------------------------------- callbacks re-entering the pool */

/* What a callback saw when it got from its own pool. */
static struct reentry {
    dp_pool_t *pool;
    int flags;             /* the get's flags                            */
    atomic_int depth;      /* callbacks of this pool active (one thread) */
    atomic_ulong recursed; /* a callback ran inside itself               */
    atomic_ulong tries, got, edeadlk, other_err;
    atomic_int last_errno;
    atomic_int put_obj;    /* dtor: put `obj` back (0: get and put)      */
    void *obj;
} re;

/* What a callback tries on its own pool: 0 if it worked, else -1 and
 * errno. */
static int get_and_put(void)
{
    void *o = dp_pool_get(re.pool, re.flags);
    if (!o)
        return -1;
    dp_pool_put(re.pool, o);
    return 0;
}

static int prime_one(void) { return dp_pool_prime(re.pool, 1); }

/* Try op on re.pool from inside one of its callbacks; count how it went.
 * A second callback level means op recursed into the same callback:
 * recorded, and failed, so that the test ends instead of the stack. */
static int reenter_with(int (*op)(void))
{
    if (atomic_fetch_add(&re.depth, 1) > 0) {
        atomic_fetch_add(&re.recursed, 1);
        atomic_fetch_sub(&re.depth, 1);
        return -1;
    }
    atomic_fetch_add(&re.tries, 1);
    errno = 0;
    if (op() == 0)
        atomic_fetch_add(&re.got, 1);
    else if (errno == EDEADLK)
        atomic_fetch_add(&re.edeadlk, 1);
    else
        atomic_fetch_add(&re.other_err, 1);
    atomic_store(&re.last_errno, errno);
    atomic_fetch_sub(&re.depth, 1);
    return 0;
}

static int reenter(void) { return reenter_with(get_and_put); }

static int reentrant_ctor(void *obj, void *arg, int flags)
{
    (void)arg;
    (void)flags;
    memset(obj, 0x11, OBJSIZE);
    /* Once per page is enough: the first object of a page. */
    return atomic_load(&re.tries) == 0 ? reenter() : 0;
}

static dp_pool_t *reentry_pool(dp_mock_t *m, size_t max_pages, int flags,
                               int (*c)(void *, void *, int),
                               void (*d)(void *, void *))
{
    dp_pool_attr_t a;
    ctor_attr(&a, m);
    a.ctor = c;
    a.dtor = d;
    a.max_pages = max_pages;
    a.lowat = 0;
    a.flags |= DP_POOL_NOCACHE; /* every get reaches the pages */
    dp_pool_t *pool = dp_pool_create("reentry", OBJSIZE, &a);
    cr_assert_not_null(pool, "dp_pool_create: %s", strerror(errno));
    re.pool = pool;
    re.flags = flags;
    return pool;
}

static void reentry_finish(dp_pool_t *pool, dp_mock_t *m)
{
    tu_destroy_checked(pool, m); /* and the mock */
}

Test(ctor, ctor_getting_from_its_own_pool_gets_edeadlk_instead_of_recursing)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = reentry_pool(m, 0, DP_NOWAIT, reentrant_ctor, NULL);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o, "the outer get failed: %s", strerror(errno));
    cr_assert_eq(atomic_load(&re.recursed), 0, "the ctor ran inside itself");
    cr_assert_eq(atomic_load(&re.tries), 1);
    cr_assert_eq(atomic_load(&re.edeadlk), 1, "the ctor's get: errno %d",
                 atomic_load(&re.last_errno));
    cr_assert_eq(tu_counters(m).allocs, 1, "the ctor's get took a page");
    dp_pool_put(pool, o);
    reentry_finish(pool, m);
}

Test(ctor, ctor_waiting_on_its_own_full_pool_gets_edeadlk_instead_of_hanging,
     .timeout = 60)
{
    dp_mock_t *m = dp_mock_create(0);
    /* One page, and the ctor is building it: a DP_WAITOK get inside it
     * would wait for room only this thread can make. */
    dp_pool_t *pool = reentry_pool(m, 1, DP_WAITOK, reentrant_ctor, NULL);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o, "the outer get failed: %s", strerror(errno));
    cr_assert_eq(atomic_load(&re.recursed), 0);
    cr_assert_eq(atomic_load(&re.edeadlk), 1, "the ctor's get: errno %d",
                 atomic_load(&re.last_errno));
    dp_pool_put(pool, o);
    reentry_finish(pool, m);
}

/* A provider whose alloc gets from the pool it is serving. */
static int reentrant_hook(void *arg, int op, void *page, size_t size,
                          int flags)
{
    (void)arg;
    (void)page;
    (void)size;
    (void)flags;
    if (op != DP_MOCK_ALLOC || atomic_load(&re.tries) > 0)
        return 0;
    return reenter();
}

Test(ctor, provider_getting_from_the_pool_it_serves_gets_edeadlk)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = reentry_pool(m, 0, DP_NOWAIT, NULL, NULL);
    dp_mock_set_hook(m, reentrant_hook, NULL);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o, "the outer get failed: %s", strerror(errno));
    cr_assert_eq(atomic_load(&re.recursed), 0, "the provider ran inside itself");
    cr_assert_eq(atomic_load(&re.edeadlk), 1, "the provider's get: errno %d",
                 atomic_load(&re.last_errno));
    cr_assert_eq(tu_counters(m).allocs, 1);
    dp_pool_put(pool, o);
    dp_mock_set_hook(m, NULL, NULL);
    reentry_finish(pool, m);
}

/* A dtor that, on its first call, gets from its own pool (or puts re.obj
 * back into it). */
static void reentrant_dtor(void *obj, void *arg)
{
    (void)obj;
    (void)arg;
    if (atomic_load(&re.tries) > 0)
        return;
    if (atomic_load(&re.put_obj)) {
        atomic_fetch_add(&re.tries, 1);
        dp_pool_put(re.pool, re.obj);
        return;
    }
    reenter();
}

Test(ctor, dtor_get_from_its_own_pool_takes_a_free_object_or_gets_edeadlk)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = reentry_pool(m, 0, DP_NOWAIT, NULL, reentrant_dtor);
    atomic_store(&re.tries, 1); /* quiet while the test sets up */
    size_t opp = tu_stats(pool).objs_per_page;
    /* Page A: all out but one.  Page B: emptied. */
    void **objs = calloc(2 * opp, sizeof *objs);
    for (size_t i = 0; i < 2 * opp; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
    dp_pool_put(pool, objs[0]);
    for (size_t i = opp; i < 2 * opp; i++)
        dp_pool_put(pool, objs[i]);
    cr_assert_eq(tu_stats(pool).pages_empty, 1);

    /* Reclaim returns B; its dtor's get finds A's free object. */
    atomic_store(&re.tries, 0);
    cr_assert_eq(dp_pool_reclaim(pool), 1);
    cr_assert_eq(atomic_load(&re.tries), 1);
    cr_assert_eq(atomic_load(&re.got), 1, "errno %d",
                 atomic_load(&re.last_errno));
    cr_assert_eq(tu_counters(m).allocs, 2, "the dtor's get took a page");

    /* Destroy: no free object anywhere, the dtor's get must not take a
     * page for a pool that is going away. */
    for (size_t i = 1; i < opp; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    atomic_store(&re.tries, 0);
    cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    cr_assert_eq(atomic_load(&re.recursed), 0);
    cr_assert_eq(atomic_load(&re.edeadlk), 1, "the dtor's get: errno %d",
                 atomic_load(&re.last_errno));
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, 2);
    cr_assert_eq(c.allocs, c.frees, "pages leaked");
    dp_mock_destroy(m);
}

Test(ctor, dtor_may_put_objects_of_its_own_pool)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = reentry_pool(m, 0, DP_NOWAIT, NULL, reentrant_dtor);
    atomic_store(&re.tries, 1);
    size_t opp = tu_stats(pool).objs_per_page;
    void **objs = calloc(2 * opp, sizeof *objs);
    for (size_t i = 0; i < 2 * opp; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
    /* Page B empties; page A stays out, and its first object is put back
     * by the dtor of B's objects. */
    for (size_t i = opp; i < 2 * opp; i++)
        dp_pool_put(pool, objs[i]);
    re.obj = objs[0];
    atomic_store(&re.put_obj, 1);
    atomic_store(&re.tries, 0);
    cr_assert_eq(dp_pool_reclaim(pool), 1);
    cr_assert_eq(atomic_load(&re.tries), 1);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.objs_inuse, opp - 1, "the dtor's put was lost");
    cr_assert_eq(s.put_provider_calls, 0);
    for (size_t i = 1; i < opp; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    atomic_store(&re.tries, 1);
    reentry_finish(pool, m);
}

/* A ctor that primes its own pool: the prime would need a page, whose
 * construction would run this ctor again. */
static int priming_ctor(void *obj, void *arg, int flags)
{
    (void)arg;
    (void)flags;
    memset(obj, 0x22, OBJSIZE);
    return atomic_load(&re.tries) == 0 ? reenter_with(prime_one) : 0;
}

Test(ctor, ctor_priming_its_own_pool_gets_edeadlk_instead_of_recursing)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = reentry_pool(m, 0, DP_WAITOK, priming_ctor, NULL);
    void *o = dp_pool_get(pool, DP_WAITOK);
    cr_assert_not_null(o, "the outer get failed: %s", strerror(errno));
    cr_assert_eq(atomic_load(&re.recursed), 0, "the ctor ran inside itself");
    cr_assert_eq(atomic_load(&re.edeadlk), 1, "the ctor's prime: errno %d",
                 atomic_load(&re.last_errno));
    cr_assert_eq(tu_stats(pool).reserve_objs, 0);
    dp_pool_put(pool, o);
    reentry_finish(pool, m);
}
