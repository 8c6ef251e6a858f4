/*
 * test_depot.c -- the depot (lib/depot.c, docs/design.md "Thread
 * caches"): magazines that bins shed move between threads whole and lose
 * or duplicate nothing; the depot's objects count as cached; an idle
 * depot is trimmed by reclaim passes so its pages go back, one age after
 * its last use and not before; threads that come and go reuse its empty
 * magazines; destroy and a fork child find the depot's objects.  The put
 * side's promise with a full depot is in test_put_nonblocking.c.  Built
 * with lib/testhooks.c (dp_test_depot_magazines).
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define OBJSIZE 64
/* A bin of 64-byte objects holds at most 512 + 16 (docs/design.md §13,
 * "Limits"): more cached than that, and the depot holds some. */
#define BIN_MAX 528

TestSuite(depot, .timeout = 120, .init = tu_watchdog_init);

/* lib/testhooks.c: the magazines the pool's depot has made. */
uint32_t dp_test_depot_magazines(dp_pool_t *p);
uint32_t dp_test_depot_stock(dp_pool_t *p, uint32_t k);
void *dp_test_depot_mag(dp_pool_t *p, uint32_t i, size_t *len);
uint64_t dp_test_depot_objects(dp_pool_t *p);

static dp_pool_t *depot_pool(dp_mock_t *m, const char *name)
{
    dp_pool_attr_t a = tu_attr(m);
    a.lowat = 0;
    a.hiwat = 0; /* an empty page is due at once: what the depot pins shows */
    return tu_pool(name, OBJSIZE, &a);
}

/* n objects out and back on this thread, twice: the first round's
 * overflows ask for magazines, the second round's refills make them and
 * its overflows fill the depot. */
static void cycle(dp_pool_t *p, void **objs, size_t n, int rounds)
{
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < n; i++)
            cr_assert_not_null(objs[i] = dp_pool_get(p, DP_WAITOK));
        for (size_t i = 0; i < n; i++)
            dp_pool_put(p, objs[i]);
    }
}

/* ---------------------------------------------- between threads, whole */

#define XT 4      /* threads; each gets, hands its objects on, puts others' */
#define XOBJS 3000 /* per thread and round: far beyond a bin */

struct xshare {
    dp_pool_t *pool;
    pthread_barrier_t bar;
    void *objs[XT][XOBJS];
    long rounds;
    atomic_int bad;
};

struct xarg {
    struct xshare *x;
    int id;
};

static void *xthread(void *arg)
{
    struct xarg *a = arg;
    struct xshare *x = a->x;
    for (long r = 0; r < x->rounds; r++) {
        for (int i = 0; i < XOBJS; i++) {
            void *o = dp_pool_get(x->pool, DP_NOWAIT);
            if (!o && !(o = dp_pool_get(x->pool, DP_WAITOK))) {
                atomic_store(&x->bad, 1);
                break;
            }
            *(uintptr_t *)o = (uintptr_t)a->id; /* ours: write it */
            x->objs[a->id][i] = o;
        }
        pthread_barrier_wait(&x->bar);
        /* Thread 0 checks that no object was handed out twice. */
        if (a->id == 0) {
            static void *all[XT * XOBJS];
            for (int t = 0; t < XT; t++)
                memcpy(all + (size_t)t * XOBJS, x->objs[t],
                       sizeof(x->objs[t]));
            qsort(all, XT * XOBJS, sizeof(void *), tu_cmp_ptr);
            for (size_t i = 1; i < XT * XOBJS; i++)
                if (all[i] == all[i - 1] || !all[i])
                    atomic_store(&x->bad, 2);
        }
        pthread_barrier_wait(&x->bar);
        /* Put the next thread's objects: every put is a cross-thread put,
         * and every overflow a magazine another thread's refill takes. */
        int from = (a->id + 1) % XT;
        for (int i = 0; i < XOBJS; i++) {
            void *o = x->objs[from][i];
            if (*(uintptr_t *)o != (uintptr_t)from)
                atomic_store(&x->bad, 3);
            dp_pool_put(x->pool, o);
        }
        pthread_barrier_wait(&x->bar);
    }
    return NULL;
}

Test(depot, magazines_move_between_threads_and_nothing_is_lost_or_handed_out_twice)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_t *p = depot_pool(m, "xdepot");
    static struct xshare x;
    memset(&x, 0, sizeof(x));
    x.pool = p;
    x.rounds = (long)(40 / tu_scale()) + 2;
    cr_assert_eq(pthread_barrier_init(&x.bar, NULL, XT), 0);
    pthread_t t[XT];
    struct xarg args[XT];
    for (int i = 0; i < XT; i++) {
        args[i] = (struct xarg){&x, i};
        cr_assert_eq(pthread_create(&t[i], NULL, xthread, &args[i]), 0);
    }
    for (int i = 0; i < XT; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&x.bad), 0, "bad %d (1: get failed, 2: an "
                 "object handed out twice, 3: an object overwritten)",
                 atomic_load(&x.bad));
    pthread_barrier_destroy(&x.bar);
    cr_assert_eq(dp_pool_check(p), 0);
    /* Every thread has exited, so its bin went back to the pages: what
     * is still cached is in the depot, as whole magazines. */
    dp_pool_stats_t s = tu_stats(p);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_eq(s.puts, s.gets);
    cr_assert_eq(s.gets, (uint64_t)XT * XOBJS * (uint64_t)x.rounds);
    cr_assert_gt(s.objs_cached, 0, "the depot holds the overflows");
    cr_assert_eq(s.objs_cached % 256, 0, "whole magazines of 256: %llu",
                 (unsigned long long)s.objs_cached);
    /* dp_pool_reclaim empties the depot, and the pages go back. */
    dp_pool_reclaim(p);
    s = tu_stats(p);
    cr_assert_eq(s.objs_cached, 0);
    cr_assert_eq(s.pages, 0);
    cr_assert_eq(tu_counters(m).pages_out, 0);
    tu_destroy_checked(p, m);
}

/* ------------------------------------------------ ageing and reclaim */

#define AN 6000

Test(depot, reclaim_passes_trim_an_idle_depot_and_its_pages_go_back)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_t *p = depot_pool(m, "agedepot");
    static void *objs[AN];
    cycle(p, objs, AN, 2);
    dp_pool_stats_t s = tu_stats(p);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_gt(s.objs_cached, BIN_MAX, "the depot holds the overflows: %llu",
                 (unsigned long long)s.objs_cached);
    uint64_t pages = s.pages;
    cr_assert_lt(s.pages_empty, pages, "the depot pins pages");

    /* The first pass only notes the depot's depth; the next, an age
     * later, returns what no get needed since (all of it), and the pages
     * follow.  The GC takes
     * this thread's idle bin in the same passes. */
    for (int i = 0; i < 4; i++) {
        dp_mock_clock_advance(m, 2000000000ull);
        dp_reclaim_step();
    }
    s = tu_stats(p);
    cr_assert_eq(s.objs_cached, 0, "the idle depot kept %llu objects",
                 (unsigned long long)s.objs_cached);
    cr_assert_eq(s.pages, 0, "%llu pages kept", (unsigned long long)s.pages);
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.frees, c.allocs);
    cr_assert_eq(c.pages_out, 0);
    tu_destroy_checked(p, m);
}

Test(depot, a_depot_in_use_keeps_what_its_gets_need)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_t *p = depot_pool(m, "busydepot");
    static void *objs[AN];
    cycle(p, objs, AN, 2);
    dp_mock_clock_advance(m, 2000000000ull);
    dp_reclaim_step(); /* notes the depth */
    /* Gets between the passes take most of the depot: the magazines they
     * left were not needed for a whole age, and only those go. */
    size_t k = AN - 1000;
    for (size_t i = 0; i < k; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(p, DP_WAITOK));
    uint64_t before = tu_stats(p).objs_cached;
    dp_reclaim_step(); /* within the age: nothing goes */
    cr_assert_eq(tu_stats(p).objs_cached, before);
    dp_mock_clock_advance(m, 2000000000ull);
    dp_reclaim_step();
    dp_pool_stats_t s = tu_stats(p);
    cr_assert_eq(s.objs_inuse, k);
    cr_assert_lt(s.objs_cached, before, "the pass trimmed nothing");
    for (size_t i = 0; i < k; i++)
        dp_pool_put(p, objs[i]);
    dp_thread_cache_flush();
    tu_destroy_checked(p, m);
}

/* The ageing window: the depot's magazines go back one age after its
 * last use, plus at most a period (age / 7) and a pass, never before
 * the age; the pages they held go back in the same pass, not an age
 * later.  The mock clock steps 100 ms per pass. */
#define AGE_NS 1000000000ull
#define PASS_NS 100000000ull

struct burst_arg {
    dp_pool_t *pool;
    void **objs;
};

/* Fill the depot from a thread that then exits: its bin goes back to the
 * pages, so what stays cached is the depot's. */
static void *burst_thread(void *arg)
{
    struct burst_arg *b = arg;
    cycle(b->pool, b->objs, AN, 2);
    return NULL;
}

Test(depot, an_idle_depot_and_its_pages_go_back_one_age_after_its_last_use)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.lowat = 0;
    a.hiwat = 1 << 20; /* pages go back by age only */
    a.reclaim_age_ns = AGE_NS;
    dp_pool_t *p = tu_pool("agewindow", OBJSIZE, &a);
    static void *objs[AN];

    /* A pass, then the burst half an age later: a trim that counted
     * whole ages from the first pass would come 1.5 ages after it. */
    dp_reclaim_step();
    dp_mock_clock_advance(m, AGE_NS / 2);
    struct burst_arg b = {p, objs};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, burst_thread, &b), 0);
    pthread_join(t, NULL);
    dp_pool_stats_t s = tu_stats(p);
    uint64_t depot = s.objs_cached;
    cr_assert_gt(depot, BIN_MAX, "the depot holds the overflows: %llu",
                 (unsigned long long)depot);
    cr_assert_lt(s.pages_empty, s.pages, "the depot pins pages");

    uint64_t bound = AGE_NS + AGE_NS / 7 + 2 * PASS_NS;
    for (uint64_t dt = PASS_NS; dt <= bound; dt += PASS_NS) {
        dp_mock_clock_advance(m, PASS_NS);
        dp_reclaim_step();
        s = tu_stats(p);
        if (dt < AGE_NS)
            cr_assert_eq(s.objs_cached, depot,
                         "%llu of %llu objects left the depot %llu ms "
                         "after its last use, before the age",
                         (unsigned long long)(depot - s.objs_cached),
                         (unsigned long long)depot,
                         (unsigned long long)(dt / 1000000));
    }
    cr_assert_eq(s.objs_cached, 0, "%llu objects still in the depot %llu ms "
                 "after its last use", (unsigned long long)s.objs_cached,
                 (unsigned long long)(bound / 1000000));
    cr_assert_eq(s.pages, 0, "%llu pages (%llu empty) kept %llu ms after "
                 "the depot's last use", (unsigned long long)s.pages,
                 (unsigned long long)s.pages_empty,
                 (unsigned long long)(bound / 1000000));
    cr_assert_eq(tu_counters(m).pages_out, 0);
    tu_destroy_checked(p, m);
}

/* ------------------------------------------------- magazines reused */

#define COMERS 200 /* threads, one after another */
#define COMER_GETS 272 /* two refills (of 129) at least: the second
                          finds the bin empty, without a spare
                          magazine */

struct comer {
    dp_pool_t *pool;
    void **objs; /* COMER_GETS */
};

static void *comer(void *arg)
{
    struct comer *c = arg;
    for (int i = 0; i < COMER_GETS; i++)
        c->objs[i] = dp_pool_get(c->pool, DP_WAITOK);
    return NULL;
}

Test(depot, threads_that_come_and_go_reuse_the_depots_empty_magazines)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_t *p = depot_pool(m, "comers");
    static void *objs[COMERS][COMER_GETS];
    /* Threads that get and exit, as producers that hand their objects
     * over: a refill that finds the bin empty, with no spare magazine
     * and nothing in the depot, goes to the pages and takes an empty
     * magazine as the bin's spare; the exit gives it back.  The next
     * thread must take that one, not make another: each new magazine is
     * memory touched for good. */
    for (int i = 0; i < COMERS; i++) {
        pthread_t t;
        struct comer c = {p, objs[i]};
        cr_assert_eq(pthread_create(&t, NULL, comer, &c), 0);
        pthread_join(t, NULL);
        for (int k = 0; k < COMER_GETS; k++)
            cr_assert_not_null(objs[i][k]);
    }
    uint32_t mags = dp_test_depot_magazines(p);
    cr_assert_gt(mags, 0, "no thread took a magazine: nothing was tested");
    cr_assert_leq(mags, 2, "%u magazines made for %d threads, one at a time",
                  mags, COMERS);
    for (int i = 0; i < COMERS; i++)
        for (int k = 0; k < COMER_GETS; k++)
            dp_pool_put(p, objs[i][k]);
    dp_pool_reclaim(p);
    tu_destroy_checked(p, m);
}

/* A thread that gets `n` objects, puts them back and exits; its cache
 * made first, by a get from another pool. */
struct getter {
    dp_pool_t *pool, *other;
    int n;
};

static void *get_put_exit(void *arg)
{
    struct getter *g = arg;
    void *o[256];
    cr_assert_leq(g->n, 256);
    dp_pool_put(g->other, dp_pool_get(g->other, DP_WAITOK));
    for (int i = 0; i < g->n; i++)
        cr_assert_not_null(o[i] = dp_pool_get(g->pool, DP_WAITOK));
    for (int i = 0; i < g->n; i++)
        dp_pool_put(g->pool, o[i]);
    return NULL;
}

static unsigned mags_after_thread(struct getter *g)
{
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, get_put_exit, g), 0);
    pthread_join(t, NULL);
    return dp_test_depot_magazines(g->pool);
}

/* A bin's spare magazine comes with its third refill from the pages,
 * not before, and only once the bin can hold more than a magazine: a
 * thread that gets a few blocks of a class and exits (a program that
 * starts threads by the thousand, or a process that lives a few
 * milliseconds) would only take a magazine and give it back, or fault
 * in a page for it (cache.c, dp_tcache_pop_slow).  Refills take 3
 * objects (the caller's and 2), then 9, then 33 and 129 for 64-byte
 * objects, whose magazine of 256 a young bin of 64 slots cannot shed
 * (cache.c, "Young bins"): the bin takes its spare at the refill after
 * it grew, its fifth.  For 2 KiB objects (magazines of 16) the third
 * refill, at the 13th get, takes one. */
Test(depot, a_bins_first_two_refills_take_no_magazine_its_third_does)
{
    dp_mock_t *m = tu_mock(0), *m2 = tu_mock(0), *m3 = tu_mock(0);
    dp_pool_t *p = depot_pool(m, "spare"), *other = depot_pool(m2, "other");
    struct getter one = {p, other, 1}, two = {p, other, 12},
                  three = {p, other, 16}, five = {p, other, 200};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(mags_after_thread(&one), 0,
                     "threads that refilled once made %u magazines",
                     dp_test_depot_magazines(p));
    cr_assert_eq(mags_after_thread(&two), 0,
                 "a thread that refilled twice made %u magazines",
                 dp_test_depot_magazines(p));
    cr_assert_eq(mags_after_thread(&three), 0,
                 "a young bin that refilled three times made %u magazines",
                 dp_test_depot_magazines(p));
    cr_assert_eq(mags_after_thread(&five), 1,
                 "a bin that refilled five times made %u magazines",
                 dp_test_depot_magazines(p));
    dp_pool_attr_t a = tu_attr(m3);
    a.lowat = 0;
    a.hiwat = 0;
    a.pagesize = 65536; /* 31 objects a page: refills as large as asked */
    dp_pool_t *big = tu_pool("spare-2k", 2048, &a);
    struct getter bone = {big, other, 12}, bthree = {big, other, 16};
    cr_assert_eq(mags_after_thread(&bone), 0,
                 "2 KiB: a thread that refilled twice made %u magazines",
                 dp_test_depot_magazines(big));
    cr_assert_eq(mags_after_thread(&bthree), 1,
                 "2 KiB: a thread that refilled three times made %u "
                 "magazines", dp_test_depot_magazines(big));
    tu_destroy_checked(p, m);
    tu_destroy_checked(big, m3);
    tu_destroy_checked(other, m2);
}

/* ------------------------------------------------------------ destroy */

Test(depot, destroy_with_magazines_in_the_depot_returns_every_page)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_t *p = depot_pool(m, "destroydepot");
    static void *objs[AN];
    cycle(p, objs, AN, 2);
    dp_pool_stats_t s = tu_stats(p);
    cr_assert_gt(s.objs_cached, BIN_MAX);
    cr_assert_eq(s.objs_inuse, 0);
    errno = 0;
    cr_assert_eq(dp_pool_destroy(p), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, c.frees);
    cr_assert_eq(c.pages_out, 0);
    dp_mock_destroy(m);
}

/* --------------------------------------------------------------- fork */

#define FORK_PAGES 64

Test(depot, a_fork_child_gets_the_depots_objects_once_each)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.max_pages = FORK_PAGES;
    dp_pool_t *p = tu_pool("forkdepot", OBJSIZE, &a);
    size_t cap = FORK_PAGES * tu_stats(p).objs_per_page;
    void **objs = calloc(cap + 1, sizeof(void *));
    cr_assert_not_null(objs);
    cycle(p, objs, cap / 2, 2);
    cr_assert_gt(tu_stats(p).objs_cached, BIN_MAX);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        /* Every object of the hard limit exactly once, the depot's
         * included, then all back and the books balanced. */
        int rc = 0;
        size_t n = 0;
        while (n <= cap && (objs[n] = dp_pool_get(p, DP_NOWAIT)) != NULL)
            n++;
        if (n != cap)
            rc = 1;
        qsort(objs, n, sizeof(void *), tu_cmp_ptr);
        for (size_t i = 1; i < n; i++)
            if (objs[i] == objs[i - 1])
                rc = 2;
        for (size_t i = 0; i < n; i++)
            dp_pool_put(p, objs[i]);
        dp_pool_stats_t s;
        if (dp_pool_stats(p, &s) != 0 || s.objs_inuse != 0 ||
            dp_pool_check(p) != 0)
            rc = 3;
        _exit(rc);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        cr_assert_eq(errno, EINTR);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "child: %d (1: not every object, 2: one twice, 3: books)",
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    dp_thread_cache_flush();
    free(objs);
    tu_destroy_checked(p, m);
}

/* ------------------------------------------------- magazines resident */

/* Every magazine the depot makes is faulted in whole, so that a put's
 * shed into it never first-touches a page (docs/design.md §13,
 * "Faults").  Four magazines of 256 objects (2,112 bytes each) from a
 * fresh chunk, after its 1 KiB directory: the fourth runs into a page in
 * which no magazine starts. */
Test(depot, every_magazine_the_depot_makes_is_faulted_in_whole)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_t *p = depot_pool(m, "residentmags");
    if (!dp_test_depot_stock(p, 4))
        cr_skip_test("no depot here (no thread caches)");
    uint32_t mags = dp_test_depot_magazines(p);
    cr_assert_eq(mags, 4);
    long pg = sysconf(_SC_PAGESIZE);
    for (uint32_t i = 0; i < mags; i++) {
        size_t len;
        char *mag = dp_test_depot_mag(p, i, &len);
        char *lo = (char *)((uintptr_t)mag & ~(uintptr_t)(pg - 1));
        size_t n = (size_t)((mag + len - lo + pg - 1) / pg);
        unsigned char vec[8];
        cr_assert_leq(n, sizeof(vec));
        cr_assert_eq(mincore(lo, n * (size_t)pg, vec), 0, "mincore");
        for (size_t j = 0; j < n; j++)
            cr_assert(vec[j] & 1, "magazine %u (%zu bytes at %p): page %zu "
                      "of %zu not resident", i, len, (void *)mag, j, n);
    }
    tu_destroy_checked(p, m);
}

/* ------------------------------------------------------------- chunks */

/* Magazines come in chunks of 64, the first of which also holds the
 * directory of chunks (lib/depot.c, "Chunks").  130 magazines take three
 * chunks: each magazine lies apart from every other, objects move
 * through them (the empty stack hands out the newest, the third chunk's,
 * first), and destroy unmaps every chunk. */
#define CHUNK_MAGS 130

Test(depot, magazines_beyond_the_first_chunk_are_apart_used_and_unmapped)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_t *p = depot_pool(m, "chunkdepot");
    if (!dp_test_depot_stock(p, CHUNK_MAGS))
        cr_skip_test("no depot here (no thread caches)");
    cr_assert_eq(dp_test_depot_magazines(p), CHUNK_MAGS);
    static char *mag[CHUNK_MAGS];
    size_t len = 0;
    for (uint32_t i = 0; i < CHUNK_MAGS; i++) {
        mag[i] = dp_test_depot_mag(p, i, &len);
        /* Mapped, both ends (a read: the stack's link is in it). */
        (void)*(volatile char *)mag[i];
        (void)*(volatile char *)(mag[i] + len - 1);
    }
    qsort(mag, CHUNK_MAGS, sizeof(mag[0]), tu_cmp_ptr);
    for (uint32_t i = 1; i < CHUNK_MAGS; i++)
        cr_assert_geq((uintptr_t)mag[i], (uintptr_t)mag[i - 1] + len,
                      "magazines at %p and %p overlap (%zu bytes each)",
                      (void *)mag[i - 1], (void *)mag[i], len);
    static void *objs[AN];
    cycle(p, objs, AN, 3);
    dp_thread_cache_flush();
    dp_pool_stats_t s = tu_stats(p);
    cr_assert_eq(s.objs_inuse, 0);
    cr_assert_eq(dp_pool_check(p), 0);
    tu_destroy_checked(p, m);
    long pg = sysconf(_SC_PAGESIZE);
    for (uint32_t i = 0; i < CHUNK_MAGS; i++) {
        unsigned char vec;
        char *lo = (char *)((uintptr_t)mag[i] & ~(uintptr_t)(pg - 1));
        errno = 0;
        cr_assert(mincore(lo, (size_t)pg, &vec) == -1 && errno == ENOMEM,
                  "magazine %p still mapped after destroy", (void *)mag[i]);
    }
}

/* ------------------------------------------------------- a young bin */

/* A young bin (lib/cache.c, "Young bins") holds 64 objects at most. */
#define YOUNG 64

struct young_arg {
    dp_pool_t *pool;
    void **objs; /* YOUNG objects another thread got */
    uint64_t cached_before, cached_after, depot_after;
};

/* One get (the thread's cache, its bin young), then puts only: the
 * objects another thread got, one more than the young bin holds. */
static void *young_putter(void *arg)
{
    struct young_arg *y = arg;
    void *mine = dp_pool_get(y->pool, DP_WAITOK);
    cr_assert_not_null(mine);
    dp_pool_put(y->pool, mine);
    y->cached_before = tu_stats(y->pool).objs_cached;
    for (int i = 0; i < YOUNG; i++)
        dp_pool_put(y->pool, y->objs[i]);
    y->cached_after = tu_stats(y->pool).objs_cached;
    y->depot_after = dp_test_depot_objects(y->pool);
    return NULL; /* the exit returns the bin */
}

/* A young bin that fills, as the bin of a thread that only frees what
 * others allocate does (it never grows), holds no more than a magazine:
 * it sheds all but a quarter of its objects as one magazine, not full,
 * instead of flushing them to their pages. */
Test(depot, a_full_young_bin_sheds_all_but_a_quarter_as_one_magazine)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *p = depot_pool(m, "young");
    void *objs[YOUNG];
    for (int i = 0; i < YOUNG; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(p, DP_WAITOK));
    cr_assert_geq(dp_test_depot_stock(p, 1), 1, "an empty magazine");
    struct young_arg y = {.pool = p, .objs = objs};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, young_putter, &y), 0);
    pthread_join(t, NULL);
    cr_assert_eq(y.cached_after - y.cached_before, YOUNG,
                 "every put stayed cached: %llu of %d",
                 (unsigned long long)(y.cached_after - y.cached_before),
                 YOUNG);
    cr_assert_eq(y.depot_after, YOUNG - YOUNG / 4,
                 "the magazine holds %llu objects",
                 (unsigned long long)y.depot_after);
    tu_destroy_checked(p, m);
}

/* -------------------------------------------- an adopted cache's bins */

#define BIG 512 /* a 16 KiB bin of these holds 32 */
#define BIG_CAP 32

struct adopt_big {
    dp_pool_t *pool;
    void *objs[BIG_CAP + 2];
    pthread_barrier_t bar;
    uint64_t depot_after;
};

/* Never gets: one put (no cache yet), then, once a cache is ready, one
 * more than an adopted bin of BIG objects holds. */
static void *big_putter(void *arg)
{
    struct adopt_big *a = arg;
    dp_pool_put(a->pool, a->objs[0]);
    pthread_barrier_wait(&a->bar);
    pthread_barrier_wait(&a->bar);
    for (int i = 1; i < BIG_CAP + 2; i++)
        dp_pool_put(a->pool, a->objs[i]);
    a->depot_after = dp_test_depot_objects(a->pool);
    return NULL;
}

/* A thread that only puts holds what it puts idle in every class (it
 * never gets it back): in a cache it adopted, a bin holds at most 16 KiB
 * of objects, so a bin of 512-byte objects sheds at 32, three quarters
 * of them as one magazine (lib/cache.c, "Adopted caches"). */
Test(depot, an_adopted_caches_bin_holds_16_kib_of_objects)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t at = tu_attr(m);
    at.pagesize = 65536;
    dp_pool_t *p = tu_pool("adopted", BIG, &at);
    static struct adopt_big a;
    a.pool = p;
    for (int i = 0; i < BIG_CAP + 2; i++)
        cr_assert_not_null(a.objs[i] = dp_pool_get(p, DP_WAITOK));
    cr_assert_eq(pthread_barrier_init(&a.bar, NULL, 2), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, big_putter, &a), 0);
    pthread_barrier_wait(&a.bar);
    /* The putter asked for a cache: a miss here makes it ready. */
    dp_thread_cache_flush();
    void *o = dp_pool_get(p, DP_WAITOK);
    cr_assert_not_null(o);
    dp_pool_put(p, o);
    dp_thread_cache_flush();
    cr_assert_geq(dp_test_depot_stock(p, 1), 1, "an empty magazine");
    pthread_barrier_wait(&a.bar);
    pthread_join(t, NULL);
    cr_assert_eq(a.depot_after, BIG_CAP - BIG_CAP / 4,
                 "the depot holds %llu objects",
                 (unsigned long long)a.depot_after);
    pthread_barrier_destroy(&a.bar);
    tu_destroy_checked(p, m);
}
