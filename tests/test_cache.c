/*
 * test_cache.c -- per-thread caches: what a put leaves in the cache, and
 * every way the cache is taken back (flush, thread exit, the reclaim
 * thread's GC of idle threads, destroy, a getter at the hard limit).
 * Threads meet at barriers and condition variables; no sleeps.
 */
#include <criterion/criterion.h>
#include <deferpool.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static dp_pool_t *mkpool(dp_mock_t *m, unsigned flags, size_t max_pages)
{
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = dp_mock_provider(m);
    a.flags = flags | DP_POOL_NOTHREAD;
    a.max_pages = max_pages;
    a.pagesize = 4096;
    a.lowat = 0;
    dp_pool_t *p = dp_pool_create("cache", 64, &a);
    cr_assert_not_null(p);
    return p;
}

static void finish(dp_pool_t *p, dp_mock_t *m)
{
    cr_assert_eq(dp_pool_check(p), 0);
    cr_assert_eq(dp_pool_destroy(p), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    dp_mock_counters_t c;
    dp_mock_counters(m, &c);
    cr_assert_eq(c.allocs, c.frees, "pages leaked: %llu allocs, %llu frees",
                 (unsigned long long)c.allocs, (unsigned long long)c.frees);
    dp_mock_destroy(m);
}

/* Sort objs[0..n) by address and assert no object appears twice. */
static void assert_distinct(void **objs, size_t n, int round)
{
    qsort(objs, n, sizeof(void *), tu_cmp_ptr);
    for (size_t i = 1; i < n; i++)
        cr_assert_neq(objs[i - 1], objs[i], "round %d: %p handed out twice",
                      round, objs[i]);
}

TestSuite(cache, .init = tu_watchdog_init);

Test(cache, same_thread_put_keeps_objects_in_the_cache_and_flush_returns_them)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    void *o[10];
    for (int i = 0; i < 10; i++)
        cr_assert_not_null(o[i] = dp_pool_get(p, DP_WAITOK));
    for (int i = 0; i < 10; i++)
        dp_pool_put(p, o[i]);
    dp_pool_stats_t s = tu_stats(p);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_gt(s.objs_cached, 0, "a same-thread put should be cached");
    cr_assert_eq(s.pages_empty, 0, "cached objects keep the page busy");
    cr_assert_eq(s.gets, 10);
    cr_assert_eq(s.puts, 10);

    dp_thread_cache_flush();
    s = tu_stats(p);
    cr_assert_eq(s.objs_cached, 0);
    cr_assert_eq(s.pages_empty, s.pages, "flushed: every page empty");
    cr_assert_eq(s.gets, 10);
    finish(p, m);
}

Test(cache, a_get_after_a_put_on_the_same_thread_reuses_the_object)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    void *a = dp_pool_get(p, DP_WAITOK);
    dp_pool_put(p, a);
    void *b = dp_pool_get(p, DP_WAITOK);
    cr_assert_eq(a, b, "LIFO: the hottest object comes back");
    dp_pool_put(p, b);
    finish(p, m);
}

/* Many overflows of one bin: every full bin returns its oldest objects
 * to the pages and keeps the newest, so (a) what the cache holds stays
 * bounded, (b) the last object put is still the first one got, and (c)
 * over many rounds (the bin's stack moves through its area and back) no
 * object is ever handed out twice and the statistics stay exact. */
#define OVF_N 2000

Test(cache, overflowing_bin_returns_its_oldest_objects_and_loses_none)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    static void *objs[OVF_N], *sorted[OVF_N];
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < OVF_N; i++) {
            objs[i] = dp_pool_get(p, DP_WAITOK);
            cr_assert_not_null(objs[i]);
            *(int *)objs[i] = i; /* the object is ours: write it */
        }
        memcpy(sorted, objs, sizeof(objs));
        assert_distinct(sorted, OVF_N, round);
        dp_pool_stats_t s = tu_stats(p);
        cr_assert_eq(s.objs_inuse, OVF_N);
        /* OVF_N gets per round, plus the LIFO check's one. */
        cr_assert_eq(s.gets, (uint64_t)(round + 1) * OVF_N + (uint64_t)round);
        for (int i = 0; i < OVF_N; i++)
            dp_pool_put(p, objs[i]);
        s = tu_stats(p);
        cr_assert_eq(s.objs_inuse, 0);
        cr_assert_eq(s.puts, s.gets);
        /* The bin holds at most 512 + 16; its overflows went to the depot
         * (whole magazines) or to the pages, and stay counted as cached
         * only in the depot. */
        cr_assert_gt(s.objs_cached, 0, "the newest objects stay cached");
        cr_assert_leq(s.objs_cached, s.pages * s.objs_per_page);
        /* LIFO through the overflows: the last object put comes back. */
        void *o = dp_pool_get(p, DP_WAITOK);
        cr_assert_eq(o, objs[OVF_N - 1], "round %d", round);
        dp_pool_put(p, o);
    }
    dp_thread_cache_flush();
    dp_pool_stats_t s = tu_stats(p);
    cr_assert_eq(s.objs_cached, 0);
    cr_assert_eq(s.pages_empty, s.pages, "every page empty again");
    finish(p, m);
}

/* The soft limit (cache.c): puts fill a bin past its soft limit (512
 * objects of 64 bytes) up to the hard one (528) and return objects to the
 * pages only there; the first gets then return the oldest objects, down
 * to the soft limit, and still hand out the newest object first.  A
 * refill is 128 of them, a magazine two refills (depot.c). */
Test(cache, a_get_above_the_soft_limit_returns_the_oldest_objects_first)
{
    enum { N = 1200, SOFT = 512, HARD = 528, MAG = 256 };
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    static void *objs[N];
    for (int i = 0; i < N; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(p, DP_WAITOK));
    for (int i = 0; i < N; i++)
        dp_pool_put(p, objs[i]);
    dp_pool_stats_t s = tu_stats(p);
    uint64_t c0 = s.objs_cached;
    /* After the last flush a put made (at HARD, down to SOFT), every put
     * was cached: the bin is above its soft limit.  The first overflow
     * went to the depot in the magazine the first refill made, the later
     * ones to the pages (no empty magazine left). */
    cr_assert(c0 > SOFT + MAG && c0 <= HARD + MAG,
              "cached after the puts: %llu", (unsigned long long)c0);
    c0 -= MAG;
    uint64_t prev = c0;
    int k = 0;
    for (; prev > SOFT; k++) {
        void *o = dp_pool_get(p, DP_WAITOK);
        cr_assert_eq(o, objs[N - 1 - k], "get %d: newest first", k);
        s = tu_stats(p);
        s.objs_cached -= MAG; /* the depot's magazine stays */
        /* One object out, and between 1 and 16 of the oldest returned. */
        cr_assert(s.objs_cached < prev - 1 && s.objs_cached >= prev - 17,
                  "get %d: cached %llu -> %llu", k,
                  (unsigned long long)prev,
                  (unsigned long long)s.objs_cached);
        cr_assert_eq(s.objs_inuse, (uint64_t)k + 1);
        prev = s.objs_cached;
    }
    /* At or below the soft limit, a get only pops. */
    void *o = dp_pool_get(p, DP_WAITOK);
    cr_assert_eq(o, objs[N - 1 - k]);
    s = tu_stats(p);
    cr_assert_eq(s.objs_cached - MAG, prev - 1);
    for (int i = 0; i <= k; i++)
        dp_pool_put(p, objs[N - 1 - i]);
    dp_thread_cache_flush();
    s = tu_stats(p);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_eq(s.objs_cached, 0);
    cr_assert_eq(s.pages_empty, s.pages);
    finish(p, m);
}

/* Objects a page got back from flushes go to the next refill whole, as a
 * chain the gets pop (cache.c, "chains"), with no walk: the refill counts
 * them from the page's state.  Here every object lives in one 64 KiB
 * page, so the second pass's refill finds ~1,250 objects on the page's
 * put stack, more than a bin's stack holds. */
#define CHAIN_N 1500
Test(cache, a_refill_takes_a_pages_returned_objects_whole_and_loses_none)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.pagesize = 65536;
    a.lowat = 0;
    dp_pool_t *p = tu_pool("chain", 16, &a);
    static void *objs[CHAIN_N], *sorted[CHAIN_N];
    uint64_t gets = 0;
    for (int round = 0; round < 6; round++) {
        bool chained = false;
        for (int i = 0; i < CHAIN_N; i++) {
            objs[i] = dp_pool_get(p, DP_WAITOK);
            cr_assert_not_null(objs[i]);
            memset(objs[i], 0xa5, 16); /* ours: the link word too */
            gets++;
            dp_pool_stats_t s = tu_stats(p);
            chained |= s.objs_cached > 528; /* more than a stack holds */
            cr_assert_eq(s.objs_inuse, (uint64_t)i + 1);
            cr_assert_eq(s.gets, gets);
        }
        cr_assert_eq(tu_stats(p).pages, 1, "all in one page");
        if (round > 0)
            cr_assert(chained, "round %d: no refill took a chain", round);
        memcpy(sorted, objs, sizeof(objs));
        assert_distinct(sorted, CHAIN_N, round);
        for (int i = 0; i < CHAIN_N; i++)
            dp_pool_put(p, objs[i]);
        dp_pool_stats_t s = tu_stats(p);
        cr_assert_eq(s.objs_inuse, 0);
        cr_assert_eq(s.puts, s.gets);
        cr_assert_eq(dp_pool_check(p), 0);
    }
    /* A chain left in the bin goes back with a flush... */
    void *o = dp_pool_get(p, DP_WAITOK);
    for (int i = 0; i < 300; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(p, DP_WAITOK));
    cr_assert_gt(tu_stats(p).objs_cached, 528, "a chain is cached");
    dp_pool_put(p, o);
    dp_thread_cache_flush();
    dp_pool_stats_t s = tu_stats(p);
    cr_assert_eq(s.objs_cached, 0);
    cr_assert_eq(s.objs_inuse, 300);
    for (int i = 0; i < 300; i++)
        dp_pool_put(p, objs[i]);
    dp_thread_cache_flush();
    s = tu_stats(p);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_eq(s.pages_empty, s.pages, "the page is empty again");
    /* ...and with destroy, which takes back what the bin holds. */
    for (int i = 0; i < CHAIN_N; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(p, DP_WAITOK));
    for (int i = 0; i < CHAIN_N; i++)
        dp_pool_put(p, objs[i]);
    for (int i = 0; i < 300; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(p, DP_WAITOK));
    for (int i = 0; i < 300; i++)
        dp_pool_put(p, objs[i]);
    finish(p, m);
}

/* A refill that takes a short chain from one page and the rest from the
 * next must not count the chain twice: it would file the second page as
 * full with free objects on it, and a get at the page limit would fail
 * while the pool still has room.  Objects go back in a shuffled order,
 * so the pages' put stacks have all lengths. */
#define LIM_PAGES 4
Test(cache, refills_with_chains_keep_every_object_reachable_at_the_page_limit)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.pagesize = 4096;
    a.lowat = 0;
    a.max_pages = LIM_PAGES;
    dp_pool_t *p = tu_pool("chainlim", 16, &a);
    static void *objs[LIM_PAGES * 4096 / 16];
    uint64_t rng = 7;
    size_t cap = 0;
    /* DP_NOWAIT gets use a thread cache but do not create one. */
    void *w = dp_pool_get(p, DP_WAITOK);
    cr_assert_not_null(w);
    dp_pool_put(p, w);
    while ((objs[cap] = dp_pool_get(p, DP_NOWAIT)) != NULL)
        cap++;
    cr_assert_eq(errno, ENOMEM);
    cr_assert_gt(cap, 3 * 4096 / 16, "the %d pages are full", LIM_PAGES);
    for (int round = 0; round < 200; round++) {
        /* Shuffle, put back a random number of them, then get until the
         * pool is out: exactly as many must come back. */
        for (size_t i = cap - 1; i > 0; i--) {
            size_t j = (size_t)(tu_rng(&rng) % (i + 1));
            void *t = objs[i];
            objs[i] = objs[j];
            objs[j] = t;
        }
        size_t k = 1 + (size_t)(tu_rng(&rng) % (cap - 1));
        for (size_t i = 0; i < k; i++)
            dp_pool_put(p, objs[i]);
        size_t n = 0;
        while (n < k && (objs[n] = dp_pool_get(p, DP_NOWAIT)) != NULL)
            n++;
        cr_assert_eq(n, k, "round %d: %zu of the %zu objects put back "
                     "could be got again", round, n, k);
        cr_assert_null(dp_pool_get(p, DP_NOWAIT), "round %d: more than "
                       "the pages hold", round);
        cr_assert_eq(tu_stats(p).objs_inuse, cap);
    }
    for (size_t i = 0; i < cap; i++)
        dp_pool_put(p, objs[i]);
    cr_assert_eq(tu_stats(p).objs_inuse, 0);
    finish(p, m);
}

Test(cache, nocache_and_debug_pools_put_straight_to_the_page)
{
    unsigned flags[] = {DP_POOL_NOCACHE, DP_POOL_DEBUG};
    for (int k = 0; k < 2; k++) {
        dp_mock_t *m = dp_mock_create(0);
        dp_pool_t *p = mkpool(m, flags[k], 0);
        void *o = dp_pool_get(p, DP_NOWAIT);
        dp_pool_put(p, o);
        dp_pool_stats_t s = tu_stats(p);
        cr_assert_eq(s.objs_cached, 0);
        cr_assert_eq(s.pages_empty, 1);
        finish(p, m);
    }
}

/*
 * Slow start (cache.c): a thread's first refill of a bin takes a few
 * objects, each refill after it four times as many, and a thread's exit
 * starts its successor over.  ramp_main gets one object, then empties
 * its bin and gets one more, twice, noting what the bin held after each
 * of the three refills; it runs in two threads, one after the other.
 */
struct ramp_run {
    dp_pool_t *pool;
    uint64_t held[3];
};

static void *ramp_main(void *arg)
{
    struct ramp_run *r = arg;
    static void *o[256];
    int n = 0;
    for (int step = 0; step < 3; step++) {
        uint64_t drain = step ? r->held[step - 1] : 0;
        for (uint64_t i = 0; i <= drain; i++)
            cr_assert_not_null(o[n++] = dp_pool_get(r->pool, DP_WAITOK));
        r->held[step] = tu_stats(r->pool).objs_cached;
        cr_assert_lt(n + r->held[step] + 1, 256);
    }
    for (int i = 0; i < n; i++)
        dp_pool_put(r->pool, o[i]);
    return NULL;
}

Test(cache, a_threads_refills_start_small_and_grow_fourfold)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.pagesize = 65536;
    dp_pool_t *p = tu_pool("ramp", 64, &a);
    struct ramp_run r[2] = {{.pool = p}, {.pool = p}};
    for (int k = 0; k < 2; k++) {
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, ramp_main, &r[k]), 0);
        pthread_join(t, NULL);
        cr_assert_eq(tu_stats(p).objs_cached, 0, "the exit gave all back");
    }
    for (int k = 0; k < 2; k++) {
        cr_assert_gt(r[k].held[0], 0, "thread %d: the first refill", k);
        cr_assert_leq(r[k].held[0], 16,
                      "thread %d: the first refill took %llu objects", k,
                      (unsigned long long)r[k].held[0]);
        cr_assert_eq(r[k].held[1], 4 * r[k].held[0], "thread %d", k);
        cr_assert_eq(r[k].held[2], 4 * r[k].held[1], "thread %d", k);
    }
    cr_assert_eq(r[1].held[0], r[0].held[0], "the exit reset the ramp");
    tu_destroy_checked(p, m);
}

/* Young bins (cache.c): a thread that takes a few objects of each of
 * sixteen pools faults in a page of slots for every eight of them, not
 * the two or three pages of a bin's own area for each.  The pools'
 * pages are primed beforehand and the thread's cache made by a get from
 * another pool, so that what the counted gets and puts fault in is
 * slots.  Then the bins hold the objects, and a bin that keeps being
 * refilled moves to its own area and keeps its objects.  Sanitizer
 * builds fault in shadow memory of their own. */
Test(cache, a_few_gets_from_sixteen_pools_fault_in_a_slot_page_per_eight)
{
#if TU_TSAN || defined(__SANITIZE_ADDRESS__)
    cr_skip_test("sanitizer runtimes fault in shadow memory on access");
#endif
    enum { NP = 16, K = 4, MANY = 3000 };
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.flags = DP_POOL_NOTHREAD;
    dp_pool_t *first = dp_pool_create("young-first", 64, &a);
    cr_assert_not_null(first);
    static dp_pool_t *ps[NP];
    for (int i = 0; i < NP; i++) {
        cr_assert_not_null(ps[i] = dp_pool_create("young", 64, &a));
        cr_assert_eq(dp_pool_prime(ps[i], 64), 0);
    }
    void *o[K];
    o[0] = dp_pool_get(first, DP_WAITOK);
    cr_assert_not_null(o[0]);
    dp_pool_put(first, o[0]);
    long before = tu_thread_minflt();
    for (int i = 0; i < NP; i++) {
        for (int k = 0; k < K; k++)
            cr_assert_not_null(o[k] = dp_pool_get(ps[i], DP_WAITOK));
        for (int k = 0; k < K; k++)
            dp_pool_put(ps[i], o[k]);
    }
    long faults = tu_thread_minflt() - before;
    cr_assert_lt(faults, NP / 4, "%ld page faults for the first gets and "
                 "puts of %d pools", faults, NP);
    for (int i = 0; i < NP; i++)
        cr_assert_geq(tu_stats(ps[i]).objs_cached, K, "pool %d", i);
    /* Refilled again and again: the bin grows and loses nothing. */
    static void *many[MANY];
    for (int r = 0; r < 2; r++) {
        for (int k = 0; k < MANY; k++)
            cr_assert_not_null(many[k] = dp_pool_get(ps[0], DP_WAITOK));
        for (int k = 0; k < MANY; k++)
            memset(many[k], k & 0xff, 64);
        for (int k = 0; k < MANY; k++)
            cr_assert_eq(*(unsigned char *)many[k], k & 0xff,
                         "object %d handed out twice", k);
        for (int k = 0; k < MANY; k++)
            dp_pool_put(ps[0], many[k]);
    }
    dp_pool_stats_t s = tu_stats(ps[0]);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_gt(s.objs_cached, 64, "a grown bin holds more than a young one");
    dp_thread_cache_flush();
    for (int i = 0; i < NP; i++) {
        cr_assert_eq(dp_pool_check(ps[i]), 0);
        cr_assert_eq(dp_pool_destroy(ps[i]), 0);
    }
    cr_assert_eq(dp_pool_destroy(first), 0);
}

/*
 * A cache's exit, its owner's flush and the reclaim thread's pass over
 * an idle cache visit only the bins the thread bound (cache.c, "Bound
 * bins"), found through a bitmap of 64-bit words: pools whose bins lie
 * on both sides of each word's edge, a thread that leaves objects in
 * each bin (and in one it only puts to, objects the test's thread got),
 * and every object must be back in the pages after its exit, its
 * dp_thread_cache_flush, or reclaim passes while it idles.
 */
#define BOUND_POOLS 200
static dp_pool_t *bound_pools[BOUND_POOLS];
static const int bound_used[] = {0, 1, 62, 63, 64, 65, 127, 128, 191, 192, 199};
#define BOUND_USED (sizeof bound_used / sizeof bound_used[0])
#define BOUND_PUTONLY 130
static void *bound_given[3];

static void bound_use(void)
{
    for (size_t i = 0; i < BOUND_USED; i++) {
        dp_pool_t *p = bound_pools[bound_used[i]];
        void *o[3];
        for (int k = 0; k < 3; k++)
            cr_assert_not_null(o[k] = dp_pool_get(p, DP_WAITOK));
        for (int k = 0; k < 3; k++)
            dp_pool_put(p, o[k]);
        cr_assert_gt(tu_stats(p).objs_cached, 0, "pool %d: nothing cached",
                     bound_used[i]);
    }
    for (int k = 0; k < 3; k++) /* the thread has a cache by now */
        dp_pool_put(bound_pools[BOUND_PUTONLY], bound_given[k]);
    cr_assert_gt(tu_stats(bound_pools[BOUND_PUTONLY]).objs_cached, 0);
}

static void bound_check(const char *after)
{
    for (int i = 0; i < BOUND_POOLS; i++) {
        dp_pool_stats_t s = tu_stats(bound_pools[i]);
        cr_assert_eq(s.objs_cached + s.objs_inuse, 0,
                     "after %s, pool %d: %llu cached, %llu out", after, i,
                     (unsigned long long)s.objs_cached,
                     (unsigned long long)s.objs_inuse);
    }
}

static void *bound_exit(void *arg)
{
    (void)arg;
    bound_use();
    return NULL;
}

static void *bound_flush(void *arg)
{
    (void)arg;
    bound_use();
    dp_thread_cache_flush();
    bound_check("dp_thread_cache_flush");
    return NULL;
}

static pthread_barrier_t bound_ready;
static tu_gate_t bound_release = TU_GATE_INIT;

static void *bound_idle(void *arg)
{
    (void)arg;
    bound_use();
    pthread_barrier_wait(&bound_ready);
    tu_gate_wait(&bound_release);
    return NULL;
}

Test(cache, a_threads_exit_and_flush_return_every_bin_it_used)
{
    dp_mock_t *m = dp_mock_create(0);
    for (int i = 0; i < BOUND_POOLS; i++)
        bound_pools[i] = mkpool(m, 0, 0);
    void *(*fn[2])(void *) = {bound_exit, bound_flush};
    for (int r = 0; r < 4; r++) { /* the later threads reuse the cache */
        for (int k = 0; k < 3; k++)
            bound_given[k] =
                dp_pool_get(bound_pools[BOUND_PUTONLY], DP_NOWAIT);
        dp_thread_cache_flush(); /* this thread's bin kept the rest */
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, fn[r % 2], NULL), 0);
        pthread_join(t, NULL);
        bound_check(r % 2 ? "a flush and an exit" : "an exit");
    }
    /* An idle thread's cache: one reclaim pass sees it idle, the next
     * takes its objects. */
    for (int k = 0; k < 3; k++)
        bound_given[k] = dp_pool_get(bound_pools[BOUND_PUTONLY], DP_NOWAIT);
    dp_thread_cache_flush();
    pthread_barrier_init(&bound_ready, NULL, 2);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, bound_idle, NULL), 0);
    pthread_barrier_wait(&bound_ready);
    cr_assert_eq(dp_reclaim_start(), 0);
    for (int k = 0; k < 3; k++)
        cr_assert_eq(dp_reclaim_sync(), 0);
    bound_check("reclaim passes over an idle thread");
    dp_reclaim_stop();
    tu_gate_open(&bound_release);
    pthread_join(t, NULL);
    for (int i = 0; i < BOUND_POOLS; i++)
        cr_assert_eq(dp_pool_destroy(bound_pools[i]), 0);
    dp_mock_destroy(m);
}

/* A thread that fills its cache, then waits at `release` until opened. */
struct sleeper {
    dp_pool_t *pool;
    int n;
    pthread_barrier_t ready;
    tu_gate_t release;
};

static void *sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    void **o = calloc((size_t)s->n, sizeof *o);
    for (int i = 0; i < s->n; i++)
        cr_assert_not_null(o[i] = dp_pool_get(s->pool, DP_WAITOK));
    for (int i = 0; i < s->n; i++)
        dp_pool_put(s->pool, o[i]);
    free(o);
    pthread_barrier_wait(&s->ready);
    tu_gate_wait(&s->release);
    return NULL;
}

static void sleeper_start(struct sleeper *s, pthread_t *t, dp_pool_t *p,
                          int n)
{
    s->pool = p;
    s->n = n;
    s->release = (tu_gate_t)TU_GATE_INIT;
    pthread_barrier_init(&s->ready, NULL, 2);
    cr_assert_eq(pthread_create(t, NULL, sleeper_main, s), 0);
    pthread_barrier_wait(&s->ready);
}

static void sleeper_stop(struct sleeper *s, pthread_t t)
{
    tu_gate_open(&s->release);
    pthread_join(t, NULL);
}

Test(cache, reclaim_thread_drains_the_cache_of_a_thread_that_sleeps_forever)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    struct sleeper s;
    pthread_t t;
    sleeper_start(&s, &t, p, 20);
    cr_assert_gt(tu_stats(p).objs_cached, 0);

    cr_assert_eq(dp_reclaim_start(), 0);
    /* Idle for a whole pass, then drained by the next one. */
    cr_assert_eq(dp_reclaim_sync(), 0);
    cr_assert_eq(dp_reclaim_sync(), 0);
    cr_assert_eq(dp_reclaim_sync(), 0);
    dp_pool_stats_t st = tu_stats(p);
    cr_assert_eq(st.objs_cached, 0, "the sleeping thread's cache was drained");
    cr_assert_eq(st.objs_inuse, 0);
    cr_assert_eq(st.gets, 20);
    dp_reclaim_stop();

    sleeper_stop(&s, t);
    finish(p, m);
}

Test(cache, thread_exit_returns_the_threads_cached_objects)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    struct sleeper s;
    pthread_t t;
    sleeper_start(&s, &t, p, 20);
    cr_assert_gt(tu_stats(p).objs_cached, 0);
    sleeper_stop(&s, t); /* joined: its key destructor has run */
    dp_pool_stats_t st = tu_stats(p);
    cr_assert_eq(st.objs_cached, 0);
    cr_assert_eq(st.pages_empty, st.pages);
    cr_assert_eq(st.gets, 20, "gets of an exited thread are kept");
    cr_assert_eq(st.puts, 20);
    finish(p, m);
}

/* Threads by the thousand, in waves of four: each gets a few objects,
 * puts the ones a thread of the previous wave left, keeps its own in the
 * slot; while alive it sees its puts in its own cache.  Exited threads'
 * caches are reused by later threads (cache.c, "Spare caches"): every
 * one must start empty and working, and the counts stay exact. */
enum { CHURN_WAVE = 4, CHURN_PER = 5 };
struct churn {
    dp_pool_t *p;
    void **slot;
    int uncached; /* the thread's puts never reached its own cache */
};

static void *churn_main(void *arg)
{
    struct churn *c = arg;
    void *mine[CHURN_PER];
    for (int i = 0; i < CHURN_PER; i++) {
        mine[i] = dp_pool_get(c->p, DP_WAITOK);
        cr_assert_not_null(mine[i]);
        memset(mine[i], 0x6b, 64);
    }
    /* A put and a get of its own: the object stays in this thread's
     * bin, no other thread's cache holds anything now (they have
     * exited, or wait at the join), so the pool must count it cached. */
    dp_pool_put(c->p, mine[0]);
    c->uncached = tu_stats(c->p).objs_cached == 0;
    mine[0] = dp_pool_get(c->p, DP_WAITOK);
    cr_assert_not_null(mine[0]);
    for (int i = 0; i < CHURN_PER; i++) {
        if (c->slot[i])
            dp_pool_put(c->p, c->slot[i]); /* another thread's object */
        c->slot[i] = mine[i];
    }
    return NULL;
}

Test(cache, short_lived_threads_by_the_thousand_reuse_caches_and_count_exactly)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    static void *slots[CHURN_WAVE][CHURN_PER];
    memset(slots, 0, sizeof(slots));
    uint64_t waves = tu_scaled(500);
    for (uint64_t w = 0; w < waves; w++) {
        pthread_t t[CHURN_WAVE];
        struct churn c[CHURN_WAVE];
        /* One thread at a time is alive: its cache is the only one that
         * can hold objects while it looks. */
        for (int i = 0; i < CHURN_WAVE; i++) {
            c[i] = (struct churn){.p = p, .slot = slots[(i + w) % CHURN_WAVE]};
            cr_assert_eq(pthread_create(&t[i], NULL, churn_main, &c[i]), 0);
            pthread_join(t[i], NULL);
            cr_assert_eq(c[i].uncached, 0,
                         "wave %llu: a thread's put did not reach its cache",
                         (unsigned long long)w);
        }
        dp_pool_stats_t st = tu_stats(p);
        cr_assert_eq(st.objs_cached, 0, "wave %llu: exited caches hold %llu",
                     (unsigned long long)w,
                     (unsigned long long)st.objs_cached);
    }
    dp_pool_stats_t st = tu_stats(p);
    uint64_t threads = waves * CHURN_WAVE;
    cr_assert_eq(st.gets, threads * (CHURN_PER + 1), "gets: %llu",
                 (unsigned long long)st.gets);
    cr_assert_eq(st.objs_inuse, CHURN_WAVE * CHURN_PER);
    for (int i = 0; i < CHURN_WAVE; i++)
        for (int j = 0; j < CHURN_PER; j++)
            dp_pool_put(p, slots[i][j]);
    st = tu_stats(p);
    cr_assert_eq(st.objs_inuse, 0);
    cr_assert_eq(st.puts, st.gets);
    finish(p, m);
}

/* A thread whose mmap fails (EPERM, by a seccomp filter of its own) can
 * create a cache only from a spare: it gets and puts one object and
 * reports whether the put stayed in a cache.  Skipped under sanitizers,
 * whose runtimes map memory in any thread. */
static void *nommap_get_put(void *arg)
{
    dp_pool_t *p = arg;
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return (void *)(intptr_t)-1;
    void *o = dp_pool_get(p, DP_WAITOK);
    if (!o)
        return (void *)(intptr_t)-1;
    dp_pool_put(p, o);
    return (void *)(intptr_t)(tu_stats(p).objs_cached != 0);
}

static intptr_t run_nommap(dp_pool_t *p)
{
    pthread_t t;
    void *r;
    cr_assert_eq(pthread_create(&t, NULL, nommap_get_put, p), 0);
    pthread_join(t, &r);
    cr_assert_neq((intptr_t)r, -1, "seccomp filter or get failed");
    return (intptr_t)r;
}

static void *get_put_exit(void *arg)
{
    dp_pool_put(arg, dp_pool_get(arg, DP_WAITOK));
    return NULL;
}

/* An exited thread's cache serves the next thread without a mapping;
 * two reclaim passes with no thread starting in between unmap it, and
 * the next thread has to map a cache of its own. */
Test(cache, an_exited_threads_cache_serves_the_next_thread_until_two_passes_unmap_it)
{
#if TU_TSAN || defined(__SANITIZE_ADDRESS__)
    cr_skip_test("sanitizer runtimes map memory in any thread");
#endif
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    /* One object out: its page is never empty, so no pass returns it and
     * no get needs the provider. */
    void *keep = dp_pool_get(p, DP_WAITOK);
    cr_assert_not_null(keep);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, get_put_exit, p), 0);
    pthread_join(t, NULL);
    cr_assert_eq(run_nommap(p), 1, "no spare cache after a thread exited");
    dp_reclaim_step(); /* marks the spare */
    cr_assert_eq(run_nommap(p), 1, "one pass unmapped a spare in use since");
    dp_reclaim_step();
    dp_reclaim_step(); /* unmaps it */
    cr_assert_eq(run_nommap(p), 0, "a spare unused for a whole pass was kept");
    dp_pool_put(p, keep);
    finish(p, m);
}

Test(cache, destroy_takes_back_objects_cached_by_a_live_idle_thread)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    struct sleeper s;
    pthread_t t;
    sleeper_start(&s, &t, p, 20);
    errno = 0;
    cr_assert_eq(dp_pool_destroy(p), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    cr_assert_eq(errno, 0, "cached objects are not objects out");
    dp_mock_counters_t c;
    dp_mock_counters(m, &c);
    cr_assert_eq(c.allocs, c.frees);
    /* The thread's bin for the destroyed pool is unbound: its exit must
     * not touch the pool. */
    sleeper_stop(&s, t);
    dp_mock_destroy(m);
}

/* lib/testhooks.c: hold this thread's bin of p busy, as a get or put does
 * while it works on the bin. */
void dp_test_bin_busy(dp_pool_t *p, bool busy);

struct holder {
    dp_pool_t *pool;
    pthread_barrier_t held;
    tu_gate_t release, done; /* done: the thread may exit (its exit
                                flushes its cache, a drain of its own) */
};

static void *holder_main(void *arg)
{
    struct holder *h = arg;
    void *o[20];
    for (int i = 0; i < 20; i++)
        cr_assert_not_null(o[i] = dp_pool_get(h->pool, DP_WAITOK));
    for (int i = 0; i < 20; i++)
        dp_pool_put(h->pool, o[i]);
    dp_test_bin_busy(h->pool, true);
    pthread_barrier_wait(&h->held);
    tu_gate_wait(&h->release);
    dp_test_bin_busy(h->pool, false);
    pthread_barrier_wait(&h->held);
    tu_gate_wait(&h->done);
    return NULL;
}

/* A get or put marks its bin busy, and a drainer that sees the mark after
 * its barrier leaves the bin alone: the owner may be halfway through an
 * update of the bin's count and slots. */
Test(cache, a_drainer_leaves_a_bin_alone_while_its_owner_works_on_it)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    struct holder h = {.pool = p};
    h.release = (tu_gate_t)TU_GATE_INIT;
    h.done = (tu_gate_t)TU_GATE_INIT;
    pthread_barrier_init(&h.held, NULL, 2);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, holder_main, &h), 0);
    pthread_barrier_wait(&h.held);
    dp_pool_stats_t st0 = tu_stats(p);
    cr_assert_eq(st0.objs_inuse, 0);
    cr_assert_gt(st0.objs_cached, 0);
    cr_assert_eq(st0.pages, 1);
    cr_assert_eq(dp_pool_reclaim(p), 0, "the busy bin was drained");
    dp_pool_stats_t st = tu_stats(p);
    cr_assert_eq(st.objs_cached, st0.objs_cached);
    cr_assert_eq(st.pages, 1);
    /* The owner leaves the bin: the next drain takes it. */
    tu_gate_open(&h.release);
    pthread_barrier_wait(&h.held);
    cr_assert_eq(dp_pool_reclaim(p), 1);
    st = tu_stats(p);
    cr_assert_eq(st.objs_cached, 0);
    cr_assert_eq(st.pages, 0);
    tu_gate_open(&h.done);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&h.held);
    finish(p, m);
}

/* The put nested in a flush, as a signal handler's would be: it must find
 * the bin busy and go to the page. */
struct nested {
    dp_pool_t *pool;
    void *obj;   /* put from inside the first flush */
    int done;
};

static void nested_put_hook(int where, void *arg)
{
    struct nested *n = arg;
    if (where != DP_TEST_TC_FLUSH || n->done)
        return;
    n->done = 1;
    dp_pool_put(n->pool, n->obj);
}

/* A put that lands while a slow path works on the same bin (a signal
 * handler's, here called from the flush's test hook) keeps off the bin:
 * the slow path marks the bin busy as a fast path does.  Otherwise the
 * slow path's store of the count would drop the nested object.  The
 * flush is a get's (a bin above its soft limit sheds first), so the
 * nested put finds room in the bin. */
Test(cache, a_put_nested_in_a_flush_of_its_bin_loses_nothing)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    enum { N = 600, SOFT = 512 }; /* 64-byte objects: tc_soft 512 */
    static void *o[N + 1];
    for (int i = 0; i <= N; i++)
        cr_assert_not_null(o[i] = dp_pool_get(p, DP_WAITOK));
    dp_thread_cache_flush();
    for (int i = 0; i < SOFT + 4; i++) /* above the soft limit, not full */
        dp_pool_put(p, o[i]);
    struct nested n = {.pool = p, .obj = o[N]};
    dp_test_set_hook(nested_put_hook, &n);
    void *x = dp_pool_get(p, DP_WAITOK);
    dp_test_set_hook(NULL, NULL);
    cr_assert_not_null(x);
    cr_assert_eq(n.done, 1, "the get did not shed");
    dp_pool_put(p, x);
    for (int i = SOFT + 4; i < N; i++)
        dp_pool_put(p, o[i]);
    dp_pool_stats_t st = tu_stats(p);
    cr_assert_eq(st.objs_inuse, 0, "%llu objects lost",
                 (unsigned long long)st.objs_inuse);
    /* Every object comes back once. */
    for (int i = 0; i <= N; i++)
        cr_assert_not_null(o[i] = dp_pool_get(p, DP_WAITOK));
    assert_distinct(o, N + 1, 0);
    for (int i = 0; i <= N; i++)
        dp_pool_put(p, o[i]);
    dp_thread_cache_flush();
    finish(p, m);
}

Test(cache, reclaim_drains_idle_caches_so_their_pages_go_back)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    struct sleeper s;
    pthread_t t;
    sleeper_start(&s, &t, p, 20);
    cr_assert_eq(tu_stats(p).pages_empty, 0);
    cr_assert_eq(dp_pool_reclaim(p), 1, "the drained page went back");
    dp_pool_stats_t st = tu_stats(p);
    cr_assert_eq(st.objs_cached, 0);
    cr_assert_eq(st.pages, 0);
    sleeper_stop(&s, t);
    finish(p, m);
}

struct getter {
    dp_pool_t *pool;
    void *obj;
};

static void *getter_main(void *arg)
{
    struct getter *g = arg;
    g->obj = dp_pool_get(g->pool, DP_WAITOK);
    return NULL;
}

Test(cache, a_getter_at_the_hard_limit_takes_objects_idling_in_another_cache)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 1);
    size_t cap = tu_stats(p).objs_per_page;
    /* The main thread takes the whole page, then puts back 5 objects:
     * they sit in its cache, the page stays at the limit. */
    void **o = calloc(cap, sizeof *o);
    for (size_t i = 0; i < cap; i++)
        cr_assert_not_null(o[i] = dp_pool_get(p, DP_WAITOK));
    cr_assert_null(dp_pool_get(p, DP_NOWAIT));
    for (size_t i = 0; i < 5; i++)
        dp_pool_put(p, o[i]);
    cr_assert_eq(tu_stats(p).objs_cached, 5);

    /* Another thread has no cache: its WAITOK get must not sleep forever
     * while the main thread (idle, not inside a get/put) holds them. */
    struct getter g = {p, NULL};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, getter_main, &g), 0);
    pthread_join(t, NULL);
    cr_assert_not_null(g.obj);
    dp_pool_put(p, g.obj);
    for (size_t i = 5; i < cap; i++)
        dp_pool_put(p, o[i]);
    free(o);
    dp_thread_cache_flush();
    dp_pool_stats_t st = tu_stats(p);
    cr_assert_eq(st.objs_inuse, 0);
    cr_assert_eq(st.pages_empty, 1);
    finish(p, m);
}

/* The same with a chain: the main thread's bin holds a page's returned
 * objects as a chain when it goes idle; another thread at the page limit
 * must get every object of the page, the chain's included. */
struct all_getter {
    dp_pool_t *pool;
    size_t cap, got;
    void **objs;
};

static void *all_getter_main(void *arg)
{
    struct all_getter *g = arg;
    for (g->got = 0; g->got < g->cap; g->got++)
        if (!(g->objs[g->got] = dp_pool_get(g->pool, DP_WAITOK)))
            break;
    return NULL;
}

Test(cache, a_getter_at_the_hard_limit_takes_a_chain_idling_in_another_cache,
     .timeout = 300) /* a lost chain would make the getter wait forever */
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.pagesize = 65536;
    a.lowat = 0;
    a.max_pages = 1;
    dp_pool_t *p = tu_pool("chainidle", 16, &a);
    size_t cap = tu_stats(p).objs_per_page;
    void **o = calloc(cap, sizeof *o);
    /* 1,800 out and back, and flushed (bin and depot) to the page's put
     * stack; the next get takes that stack as the bin's chain. */
    for (size_t i = 0; i < 1800; i++)
        cr_assert_not_null(o[i] = dp_pool_get(p, DP_WAITOK));
    for (size_t i = 0; i < 1800; i++)
        dp_pool_put(p, o[i]);
    dp_thread_cache_flush();
    for (size_t i = 0; i < 257; i++)
        cr_assert_not_null(o[i] = dp_pool_get(p, DP_WAITOK));
    dp_pool_stats_t st = tu_stats(p);
    cr_assert_gt(st.objs_cached, 1000, "the bin holds a chain (%llu)",
                 (unsigned long long)st.objs_cached);
    for (size_t i = 0; i < 257; i++)
        dp_pool_put(p, o[i]);
    cr_assert_eq(tu_stats(p).objs_inuse, 0);

    struct all_getter g = {p, cap, 0, calloc(cap, sizeof(void *))};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, all_getter_main, &g), 0);
    pthread_join(t, NULL);
    cr_assert_eq(g.got, cap, "got %zu of the page's %zu objects", g.got, cap);
    assert_distinct(g.objs, cap, 0);
    st = tu_stats(p);
    cr_assert_eq(st.objs_inuse, cap);
    cr_assert_eq(st.objs_cached, 0);
    for (size_t i = 0; i < cap; i++)
        dp_pool_put(p, g.objs[i]);
    free(g.objs);
    free(o);
    dp_thread_cache_flush();
    st = tu_stats(p);
    cr_assert_eq(st.objs_inuse, 0);
    cr_assert_eq(st.pages_empty, 1);
    finish(p, m);
}

#define XN 4
static dp_pool_t *xpool;
static void *xobj[XN][200];

static void *cross_putter(void *arg)
{
    long k = (long)arg;
    for (int i = 0; i < 200; i++)
        dp_pool_put(xpool, xobj[k][i]);
    return NULL;
}

Test(cache, objects_put_by_other_threads_are_counted_exactly)
{
    dp_mock_t *m = dp_mock_create(0);
    xpool = mkpool(m, 0, 0);
    for (int k = 0; k < XN; k++)
        for (int i = 0; i < 200; i++)
            cr_assert_not_null(xobj[k][i] = dp_pool_get(xpool, DP_WAITOK));
    pthread_t t[XN];
    for (long k = 0; k < XN; k++)
        cr_assert_eq(pthread_create(&t[k], NULL, cross_putter, (void *)k), 0);
    for (int k = 0; k < XN; k++)
        pthread_join(t[k], NULL);
    dp_pool_stats_t st = tu_stats(xpool);
    cr_assert_eq(st.gets, XN * 200);
    cr_assert_eq(st.puts, XN * 200);
    cr_assert_eq(st.objs_inuse, 0);
    dp_thread_cache_flush();
    st = tu_stats(xpool);
    cr_assert_eq(st.objs_cached, 0);
    cr_assert_eq(st.pages_empty, st.pages);
    finish(xpool, m);
}

/* ------------------------------------------- a thread that only puts */

#define ADOPT_N 40 /* fewer than a young bin holds: no shed */

struct adopt_arg {
    dp_pool_t *pool;
    void *objs[ADOPT_N];
    tu_gate_t first, go, rest, done; /* the putter's steps and the test's */
};

/* Never gets: puts the objects the test's thread got, one, then (once a
 * get has made a cache ready) the rest. */
static void *only_puts(void *arg)
{
    struct adopt_arg *a = arg;
    dp_pool_put(a->pool, a->objs[0]); /* no cache, none ready: the page */
    tu_gate_open(&a->first);
    tu_gate_wait(&a->go);
    for (int i = 1; i < ADOPT_N; i++)
        dp_pool_put(a->pool, a->objs[i]); /* the adopted cache */
    tu_gate_open(&a->rest);
    tu_gate_wait(&a->done);
    return NULL; /* the exit hands the cache back */
}

/* A thread that only puts what others got has no cache of its own (a
 * cache is made by a get); its first put goes to the page and asks for
 * one, the next get's slow path on any thread makes it ready, and the
 * thread's next put adopts it (lib/cache.c, "Adopted caches"): its
 * objects stay cached, and its exit hands them back. */
Test(cache, a_thread_that_only_puts_adopts_a_cache_a_get_made_ready)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    static struct adopt_arg a = {.first = TU_GATE_INIT, .go = TU_GATE_INIT,
                                 .rest = TU_GATE_INIT, .done = TU_GATE_INIT};
    a.pool = p;
    for (int i = 0; i < ADOPT_N; i++)
        cr_assert_not_null(a.objs[i] = dp_pool_get(p, DP_WAITOK));
    dp_thread_cache_flush(); /* this thread caches nothing from here */
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, only_puts, &a), 0);
    tu_gate_wait(&a.first);
    dp_pool_stats_t st = tu_stats(p);
    cr_assert_eq(st.objs_cached, 0, "the first put went to its page");
    cr_assert_eq(st.objs_inuse, ADOPT_N - 1);
    /* A miss: this thread's bin is empty. */
    void *o = dp_pool_get(p, DP_WAITOK);
    cr_assert_not_null(o);
    dp_pool_put(p, o);
    dp_thread_cache_flush();
    cr_assert_eq(tu_stats(p).objs_cached, 0);
    tu_gate_open(&a.go);
    tu_gate_wait(&a.rest);
    st = tu_stats(p);
    cr_assert_eq(st.objs_cached, ADOPT_N - 1,
                 "the putter's cache holds %llu of its %d later puts",
                 (unsigned long long)st.objs_cached, ADOPT_N - 1);
    cr_assert_eq(st.objs_inuse, 0);
    tu_gate_open(&a.done);
    pthread_join(t, NULL);
    st = tu_stats(p);
    cr_assert_eq(st.objs_cached, 0, "the putter's exit kept %llu",
                 (unsigned long long)st.objs_cached);
    cr_assert_eq(st.pages_empty, st.pages);
    finish(p, m);
}

/* ------------------------------------------------- DP_NOWAIT and the cache */

/* Gate for the exit hook: the exiting thread parks there holding the
 * cache lock until the test opens it. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int parked, open;
} exit_gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void exit_gate_hook(int where, void *arg)
{
    (void)arg;
    if (where != DP_TEST_TC_EXIT)
        return;
    pthread_mutex_lock(&exit_gate.mu);
    exit_gate.parked = 1;
    pthread_cond_broadcast(&exit_gate.cv);
    while (!exit_gate.open)
        pthread_cond_wait(&exit_gate.cv, &exit_gate.mu);
    pthread_mutex_unlock(&exit_gate.mu);
}

/* Wait until *flag is set; fail with `what` after 60 s (a hang). */
static void gate_wait(int *flag, const char *what)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 60;
    pthread_mutex_lock(&exit_gate.mu);
    int e = 0;
    while (!*flag && e == 0)
        e = pthread_cond_timedwait(&exit_gate.cv, &exit_gate.mu, &dl);
    int ok = *flag;
    pthread_mutex_unlock(&exit_gate.mu);
    cr_assert(ok, "%s", what);
}

static void *cached_get_then_exit(void *arg)
{
    dp_pool_put(arg, dp_pool_get(arg, DP_WAITOK)); /* creates a cache */
    return NULL;
}

struct nowait_probe {
    dp_pool_t *p;
    int done, go;                  /* exit_gate.mu */
    uint64_t cached_locked, cached_free;
};

static void *nowait_probe_thread(void *arg)
{
    struct nowait_probe *np = arg;
    /* The cache lock is held by the exiting thread: this get must not
     * wait for it, and goes to the pages. */
    void *o = dp_pool_get(np->p, DP_NOWAIT);
    cr_assert_not_null(o);
    dp_pool_put(np->p, o);
    pthread_mutex_lock(&exit_gate.mu);
    np->done = 1;
    pthread_cond_broadcast(&exit_gate.cv);
    while (!np->go)
        pthread_cond_wait(&exit_gate.cv, &exit_gate.mu);
    pthread_mutex_unlock(&exit_gate.mu);
    /* Lock free: the next miss creates the cache, which keeps the put. */
    np->cached_locked = tu_stats(np->p).objs_cached;
    o = dp_pool_get(np->p, DP_NOWAIT);
    cr_assert_not_null(o);
    dp_pool_put(np->p, o);
    np->cached_free = tu_stats(np->p).objs_cached;
    return NULL;
}

/* A thread's first miss creates its cache whatever the flags; a DP_NOWAIT
 * get does not wait for the cache lock to do so (a drain holds it across
 * membarrier): while another thread holds it, the get is served from
 * the pages, and the thread's next miss creates the cache. */
Test(cache, a_nowait_get_creates_the_cache_but_never_waits_for_its_lock)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    dp_test_set_hook(exit_gate_hook, NULL);
    pthread_t x, y;
    cr_assert_eq(pthread_create(&x, NULL, cached_get_then_exit, p), 0);
    gate_wait(&exit_gate.parked, "the exiting thread never reached its hook");
    struct nowait_probe np = {.p = p};
    cr_assert_eq(pthread_create(&y, NULL, nowait_probe_thread, &np), 0);
    gate_wait(&np.done, "a DP_NOWAIT get waited for the cache lock");
    pthread_mutex_lock(&exit_gate.mu);
    exit_gate.open = 1;
    pthread_cond_broadcast(&exit_gate.cv);
    pthread_mutex_unlock(&exit_gate.mu);
    pthread_join(x, NULL); /* the cache lock is free from here on */
    pthread_mutex_lock(&exit_gate.mu);
    np.go = 1;
    pthread_cond_broadcast(&exit_gate.cv);
    pthread_mutex_unlock(&exit_gate.mu);
    pthread_join(y, NULL);
    dp_test_set_hook(NULL, NULL);
    cr_assert_eq(np.cached_locked, 0,
                 "the get under the held lock left %llu objects cached",
                 (unsigned long long)np.cached_locked);
    cr_assert_gt(np.cached_free, 0,
                 "a DP_NOWAIT-only thread never got a cache");
    finish(p, m);
}

/* ------------------------------------------------ more pools than bins */

/* A cache has 256 bins: pools created while all are taken run uncached,
 * correctly, and a destroyed pool's bin goes to the next pool. */
Test(cache, pools_beyond_the_256_bins_run_uncached_and_lose_nothing)
{
    enum { NPOOLS = 300 };
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t **pools = calloc(NPOOLS, sizeof *pools);
    size_t cached = 0, uncached = 0;
    for (size_t i = 0; i < NPOOLS; i++) {
        pools[i] = mkpool(m, 0, 0);
        void *o[3];
        for (int k = 0; k < 3; k++)
            cr_assert_not_null(o[k] = dp_pool_get(pools[i], DP_WAITOK));
        cr_assert(o[0] != o[1] && o[1] != o[2] && o[0] != o[2]);
        for (int k = 0; k < 3; k++)
            dp_pool_put(pools[i], o[k]);
        dp_pool_stats_t s = tu_stats(pools[i]);
        cr_assert_eq(s.objs_inuse, 0, "pool %zu", i);
        cr_assert_eq(s.gets, 3, "pool %zu", i);
        if (s.objs_cached) {
            cached++;
        } else {
            uncached++;
            cr_assert_eq(s.pages_empty, 1, "pool %zu: uncached puts reach "
                         "the page", i);
        }
        cr_assert_eq(dp_pool_check(pools[i]), 0, "pool %zu", i);
    }
    if (cached == 0)
        cr_skip_test("no thread caches here (membarrier unavailable)");
    cr_assert_eq(cached, 256, "%zu pools had a cache", cached);
    cr_assert_eq(uncached, NPOOLS - 256);
    /* Free one bin: the next pool takes it. */
    size_t first_cached = 0;
    while (tu_stats(pools[first_cached]).objs_cached == 0)
        first_cached++;
    dp_thread_cache_flush();
    cr_assert_eq(dp_pool_destroy(pools[first_cached]), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    pools[first_cached] = mkpool(m, 0, 0);
    void *o = dp_pool_get(pools[first_cached], DP_WAITOK);
    dp_pool_put(pools[first_cached], o);
    cr_assert_gt(tu_stats(pools[first_cached]).objs_cached, 0,
                 "a freed bin was not reused");
    dp_thread_cache_flush();
    for (size_t i = 0; i < NPOOLS; i++)
        cr_assert_eq(dp_pool_destroy(pools[i]), 0, "dp_pool_destroy: %s",
                     strerror(errno));
    free(pools);
    dp_mock_counters_t c;
    dp_mock_counters(m, &c);
    cr_assert_eq(c.allocs, c.frees);
    dp_mock_destroy(m);
}

/* ------------------------------------------------ without membarrier(2) */

/* Forbid membarrier (ENOSYS, as on a kernel before 4.14 or under a
 * sandbox's seccomp filter) in this thread and those it creates. */
static int forbid_membarrier(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

struct nomb_worker {
    dp_pool_t *p;
    pthread_barrier_t *bar;
    void *objs[200];
};

static void *nomb_thread(void *arg)
{
    struct nomb_worker *w = arg;
    for (int k = 0; k < 200; k++)
        w->objs[k] = dp_pool_get(w->p, k % 2 ? DP_WAITOK : DP_NOWAIT);
    pthread_barrier_wait(w->bar); /* main checks the counts */
    pthread_barrier_wait(w->bar);
    return NULL;
}

/* The child's checks; its exit status is the number of the failed one. */
static int nomb_child(void)
{
    if (forbid_membarrier() != 0)
        return 100;
    if (syscall(__NR_membarrier, 0, 0, 0) != -1 || errno != ENOSYS)
        return 101;
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = mkpool(m, 0, 0);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 3);
    struct nomb_worker w[2] = {{.p = p, .bar = &bar}, {.p = p, .bar = &bar}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, nomb_thread, &w[i]) != 0)
            return 102;
    pthread_barrier_wait(&bar);
    dp_pool_stats_t s;
    dp_pool_stats(p, &s);
    if (s.objs_inuse != 400 || s.objs_cached != 0)
        return 1;
    /* Each thread puts the other's objects: no cache holds any. */
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 200; k++) {
            if (!w[i].objs[k])
                return 2;
            dp_pool_put(p, w[i].objs[k]);
        }
    dp_pool_stats(p, &s);
    if (s.objs_inuse != 0 || s.objs_cached != 0 || s.pages_empty != s.pages)
        return 3;
    pthread_barrier_wait(&bar);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    if (dp_pool_check(p) != 0)
        return 4;
    if (dp_pool_reclaim(p) != s.pages)
        return 5;
    if (dp_pool_destroy(p) != 0)
        return 7;
    dp_mock_counters_t c;
    dp_mock_counters(m, &c);
    if (c.allocs != c.frees)
        return 6;
    dp_mock_destroy(m);
    return 0;
}

/* A suite of its own, without the per-test watchdog: the child starts
 * threads, which ThreadSanitizer refuses after a fork from a parent with
 * more than one thread (the watchdog's). */
Test(cache_nomembarrier, pools_run_uncached_and_lose_nothing)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(nomb_child());
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "the child died (signal %d)",
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), 0, "check %d failed in the child",
                 WEXITSTATUS(st));
}
