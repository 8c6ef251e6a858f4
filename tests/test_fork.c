/*
 * test_fork.c -- fork and thread exit: after fork() in a process with a
 * running reclaim thread and live pools, the child can get and put, its
 * reclaim thread runs again and dp_reclaim_sync() works there, the parent
 * is unaffected, and a pool that another thread was using at the moment
 * of the fork -- even halfway through a flush of its cache -- still works
 * in the child; a program's own fork handlers may allocate.  A thread
 * that exits while a signal handler puts loses nothing.
 *
 * The handlers write no pool's own page, a get and a put after the fork
 * copy no page of the thread cache's slot areas, and a child starts its
 * reclaim thread at its first blocking get.
 *
 * A child never uses Criterion: it checks with CHILD_CHECK, which reports
 * on stderr and exits 1; the parent asserts a clean exit 0.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* ThreadSanitizer kills a child that starts threads after a multi-threaded
 * fork unless told otherwise; restarting the reclaim thread is the point. */
#if TU_TSAN
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "die_after_fork=0"; }
#endif

#define OBJSIZE 64
#define AGE 1000000000ull

/* ---------------------------------------------------------------- helpers */

#define CHILD_CHECK(cond)                                                    \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fork child: %s:%d: check failed: %s\n",         \
                    __FILE__, __LINE__, #cond);                              \
            _exit(1);                                                        \
        }                                                                    \
    } while (0)

static dp_reclaim_info_t info(void)
{
    dp_reclaim_info_t i;
    memset(&i, 0, sizeof i);
    dp_reclaim_info(&i);
    return i;
}

/* A pool on `prov`, its clock m's. */
static dp_pool_t *fork_pool_on(const dp_provider_t *prov, dp_mock_t *m,
                               unsigned flags, size_t lowat)
{
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = prov;
    a.clock = dp_mock_clock;
    a.clock_arg = m;
    a.flags = flags;
    a.pagesize = 4096;
    a.lowat = lowat;
    a.hiwat = 16;
    a.reclaim_age_ns = AGE;
    dp_pool_t *pool = dp_pool_create("fork", OBJSIZE, &a);
    cr_assert_not_null(pool, "dp_pool_create: %s", strerror(errno));
    return pool;
}

static dp_pool_t *fork_pool(dp_mock_t *m, unsigned flags, size_t lowat)
{
    return fork_pool_on(dp_mock_provider(m), m, flags, lowat);
}

static pid_t fork_now(void)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    return pid;
}

/* The child's wait status, or -1 when waitpid failed. */
static int child_status(pid_t pid)
{
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, 0)) == -1 && errno == EINTR)
        ;
    return r == pid ? st : -1;
}

static void assert_child_ok(int st)
{
    cr_assert_neq(st, -1, "fork or waitpid: %s", strerror(errno));
    cr_assert(WIFEXITED(st), "child killed by signal %d",
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), 0, "child failed a check (see stderr)");
}

static void wait_child_ok(pid_t pid)
{
    assert_child_ok(child_status(pid));
}

/*
 * A fork whose child (and whatever it forks) is waited for at most `secs`
 * seconds: only they hold a pipe's write end, so poll() sees EOF when the
 * last of them exits.  A hang kills the child's process group and fails
 * the test with a message naming `what`, at once rather than at the
 * suite's timeout.  fork_watched returns as fork() does; the parent gets
 * the read end in *fd.
 */
static pid_t fork_watched(int *fd)
{
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0, "pipe: %s", strerror(errno));
    pid_t pid = fork_now();
    if (pid == 0) {
        setpgid(0, 0);
        close(pfd[0]);
        return 0;
    }
    setpgid(pid, pid); /* whichever of us runs first */
    close(pfd[1]);
    *fd = pfd[0];
    return pid;
}

static void wait_watched(pid_t pid, int fd, int secs, const char *what)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, secs * 1000)) == -1 && errno == EINTR)
        ;
    close(fd);
    if (r == 0) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        cr_assert_fail("%s: no progress for %d s (a deadlock in fork?)",
                       what, secs);
    }
    wait_child_ok(pid);
}

/* fn(arg) in a watched child (a "runner"); it reports with CHILD_CHECK,
 * returning means success. */
static void run_bounded(void (*fn)(void *), void *arg, int secs,
                        const char *what)
{
    int fd;
    pid_t pid = fork_watched(&fd);
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    wait_watched(pid, fd, secs, what);
}

static void finish(dp_pool_t *pool, dp_mock_t *m)
{
    cr_assert_eq(dp_pool_check(pool), 0);
    cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy: %s",
                 strerror(errno));
    dp_reclaim_stop(); /* a thread left running slows exit under TSan */
    dp_mock_counters_t c = tu_counters(m);
    cr_assert_eq(c.allocs, c.frees, "pages leaked: %" PRIu64 " allocated, %"
                 PRIu64 " freed", c.allocs, c.frees);
    dp_mock_destroy(m);
}

static void fill(void *obj, uint64_t tag)
{
    memset(obj, (int)(tag & 0xff), OBJSIZE);
    memcpy(obj, &tag, sizeof tag);
}

static int holds(const void *obj, uint64_t tag)
{
    uint64_t t;
    memcpy(&t, obj, sizeof t);
    if (t != tag)
        return 0;
    const unsigned char *b = obj;
    for (size_t i = sizeof tag; i < OBJSIZE; i++)
        if (b[i] != (unsigned char)(tag & 0xff))
            return 0;
    return 1;
}

/* In a child: get n objects (some need new pages from the provider), prove
 * they are distinct and hold what was written, put them back. */
static void child_get_put(dp_pool_t *pool, size_t n)
{
    void **objs = calloc(n, sizeof *objs);
    CHILD_CHECK(objs != NULL);
    for (size_t i = 0; i < n; i++) {
        objs[i] = dp_pool_get(pool, i % 3 ? DP_WAITOK : DP_NOWAIT);
        CHILD_CHECK(objs[i] != NULL);
        fill(objs[i], 0xc0ffee00u + i);
    }
    for (size_t i = 0; i < n; i++)
        CHILD_CHECK(holds(objs[i], 0xc0ffee00u + i)); /* also: distinct */
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
}

/* ------------------------------------------------------------------ tests */

Test(fork, child_can_get_and_put_from_pools_live_at_fork, .timeout = 120)
{
    dp_mock_t *m = dp_mock_create(0);
    /* Starts the reclaim thread.  lowat 0: it never refills, so it is not
     * inside the mock provider (which has no fork handlers) at the fork. */
    dp_pool_t *pool = fork_pool(m, 0, 0);
    cr_assert(info().running);
    size_t opp = tu_stats(pool).objs_per_page, nlive = opp + 3;
    void **live = calloc(nlive, sizeof *live);
    for (size_t i = 0; i < nlive; i++) {
        cr_assert_not_null(live[i] = dp_pool_get(pool, DP_WAITOK));
        fill(live[i], i);
    }
    cr_assert_eq(dp_reclaim_sync(), 0);

    pid_t pid = fork_now();
    if (pid == 0) {
        for (size_t i = 0; i < nlive; i++)
            CHILD_CHECK(holds(live[i], i));
        child_get_put(pool, 3 * opp);
        for (size_t i = 0; i < nlive; i++)
            dp_pool_put(pool, live[i]);
        /* Quiescent first: the child's reclaim thread, woken by the
         * puts past hiwat, may be draining this thread's cache to the
         * pages, and objs_inuse may count objects on the way
         * (deferpool.h, dp_pool_stats).  A whole pass that begins after
         * the call ends after any pass under way. */
        CHILD_CHECK(dp_reclaim_sync() == 0);
        dp_pool_stats_t s = tu_stats(pool);
        CHILD_CHECK(s.objs_inuse == 0);
        CHILD_CHECK(dp_pool_check(pool) == 0);
        child_get_put(pool, 2 * opp);
        _exit(0);
    }
    wait_child_ok(pid);

    for (size_t i = 0; i < nlive; i++) {
        cr_assert(holds(live[i], i), "the child changed the parent's object");
        dp_pool_put(pool, live[i]);
    }
    free(live);
    finish(pool, m);
}

/* 4 empty pages, lowat 1, then the reclaim thread is started. */
static dp_pool_t *pool_with_empty_pages(dp_mock_t *m)
{
    dp_pool_t *pool = fork_pool(m, DP_POOL_NOTHREAD, 1);
    size_t n = 4 * tu_stats(pool).objs_per_page;
    void **objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    dp_thread_cache_flush(); /* cached objects would pin their pages */
    cr_assert_eq(tu_stats(pool).pages_empty, 4);
    cr_assert_eq(dp_reclaim_start(), 0);
    cr_assert_eq(dp_reclaim_sync(), 0);
    cr_assert(info().running);
    return pool;
}

Test(fork, child_reclaim_thread_is_running_and_sync_drives_reclamation, .timeout = 120)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = pool_with_empty_pages(m);

    pid_t pid = fork_now();
    if (pid == 0) {
        dp_reclaim_info_t i0 = info();
        CHILD_CHECK(i0.running);
        CHILD_CHECK(dp_reclaim_sync() == 0);
        CHILD_CHECK(info().passes > i0.passes);
        /* The child's own thread ages out the child's pages. */
        CHILD_CHECK(tu_stats(pool).pages_empty == 4);
        dp_mock_clock_advance(m, AGE + 1);
        CHILD_CHECK(dp_reclaim_sync() == 0);
        CHILD_CHECK(tu_stats(pool).pages_empty == 1);
        CHILD_CHECK(tu_counters(m).frees == 3);
        child_get_put(pool, 2 * tu_stats(pool).objs_per_page);
        _exit(0);
    }
    wait_child_ok(pid);
    finish(pool, m);
}

Test(fork, parent_keeps_its_reclaim_thread_and_pages_after_fork, .timeout = 120)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = pool_with_empty_pages(m);

    pid_t pid = fork_now();
    if (pid == 0) {
        /* Return everything the child can (its own thread may do it
         * first), to show the pages are not the parent's. */
        dp_mock_clock_advance(m, AGE + 1);
        CHILD_CHECK(dp_reclaim_sync() == 0);
        dp_pool_reclaim(pool);
        CHILD_CHECK(tu_stats(pool).pages_empty == 1);
        CHILD_CHECK(tu_counters(m).frees == 3);
        _exit(0);
    }
    wait_child_ok(pid);

    dp_reclaim_info_t i0 = info();
    cr_assert(i0.running);
    cr_assert_eq(dp_reclaim_sync(), 0);
    cr_assert_gt(info().passes, i0.passes);
    cr_assert_eq(tu_stats(pool).pages_empty, 4, "the child's reclaim reached the parent");
    cr_assert_eq(tu_counters(m).frees, 0);
    dp_mock_clock_advance(m, AGE + 1);
    cr_assert_eq(dp_reclaim_sync(), 0);
    cr_assert_eq(tu_stats(pool).pages_empty, 1);
    finish(pool, m);
}

struct worker {
    dp_pool_t *pool;
    size_t batch;
    atomic_int stop;
    atomic_ulong bad;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;
};

/* Gets and puts batches of objects until told to stop, its largest batch
 * first. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    void **objs = calloc(w->batch, sizeof *objs);
    uint64_t rng = 88172645463325252ull, tag = 0;
    size_t k = w->batch;
    for (unsigned long it = 0; !atomic_load(&w->stop); it++) {
        for (size_t i = 0; i < k; i++) {
            objs[i] = dp_pool_get(w->pool, DP_WAITOK);
            if (!objs[i]) {
                atomic_fetch_add(&w->bad, 1);
                k = i;
                break;
            }
            fill(objs[i], ++tag);
        }
        for (size_t i = 0; i < k; i++) {
            if (!holds(objs[i], tag - k + 1 + i))
                atomic_fetch_add(&w->bad, 1);
            dp_pool_put(w->pool, objs[i]);
        }
        if (it == 100) {
            pthread_mutex_lock(&w->mu);
            w->ready = 1;
            pthread_cond_signal(&w->cv);
            pthread_mutex_unlock(&w->mu);
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        k = 1 + (size_t)(rng % w->batch);
    }
    free(objs);
    return NULL;
}

Test(fork, pool_in_use_by_another_thread_at_fork_still_works_in_the_child, .timeout = 300)
{
    dp_mock_t *m = dp_mock_create(0);
    /* The worker may be inside a provider call at any fork, and the mock
     * has no fork handlers (docs/api.md §8): the pages come from the mmap
     * provider, the mock only keeps the clock. */
    dp_pool_t *pool = fork_pool_on(dp_provider_mmap(), m, 0, 0);
    cr_assert(info().running);
    size_t opp = tu_stats(pool).objs_per_page;

    struct worker w = {.pool = pool, .batch = 2 * opp};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, worker_main, &w), 0);
    pthread_mutex_lock(&w.mu);
    while (!w.ready)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);

    /* No Criterion assertion until the forks are done: each one is a
     * message that Criterion's I/O thread handles, allocating, and a fork
     * while that thread holds a lock of ASan's allocator leaves the
     * child's first thread (the reclaim thread, whose start ASan's
     * runtime allocates for) waiting on it for good. */
    unsigned forks = tu_scaled(40);
    int bad_st = 0;
    for (unsigned f = 0; f < forks; f++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            /* The worker does not exist here; what it held stays out. An
             * object it was putting at the fork may count as out too. */
            child_get_put(pool, 3 * opp);
            child_get_put(pool, 3 * opp);
            CHILD_CHECK(info().running);
            CHILD_CHECK(dp_reclaim_sync() == 0);
            child_get_put(pool, opp);
            _exit(0);
        }
        int st = pid == -1 ? -1 : child_status(pid);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            bad_st = st;
            break;
        }
    }
    assert_child_ok(bad_st);

    atomic_store(&w.stop, 1);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&w.bad), 0, "the worker saw a failed get or a corrupted object");
    cr_assert_eq(tu_stats(pool).objs_inuse, 0);
    finish(pool, m);
}

/* --------------------------------------------- a cache halfway at the fork */

/*
 * The owner of a cache stops in the middle of a flush (the test hook:
 * the oldest objects are in a magazine in the depot, the bin not yet
 * updated)
 * and another thread forks.  The fork must wait for the owner to leave
 * (DP_TEST_FORK_WAIT opens the owner's gate) and the child must find the
 * cache whole.  Without that, the child flushes the half-updated bin and
 * hands the objects already returned out twice.
 */
#define HALF_OBJS 600 /* past a bin's hard limit (528 of 64 bytes) */
#define HALF_PAGES 16

struct half {
    dp_pool_t *pool;
    atomic_int armed;       /* the owner's next flush stops            */
    atomic_uint puts_done;  /* puts the owner completed                */
    atomic_uint puts_at_stop; /* puts_done when it stopped; the put under
                                 way then is the owner's last before the
                                 fork                                   */
    tu_gate_t stopped;      /* the owner is inside its flush            */
    tu_gate_t go;           /* the owner may finish the flush           */
    tu_gate_t after;        /* the owner may put the rest (after fork)  */
};

static _Thread_local int half_is_owner;

static void half_hook(int where, void *arg)
{
    struct half *h = arg;
    if (where == DP_TEST_TC_FLUSH && half_is_owner &&
        atomic_exchange(&h->armed, 0)) {
        atomic_store(&h->puts_at_stop, atomic_load(&h->puts_done));
        tu_gate_open(&h->stopped);
        tu_gate_wait(&h->go);
    } else if (where == DP_TEST_FORK_WAIT) {
        tu_gate_open(&h->go); /* the fork waits for the owner: let it on */
    }
}

static void *half_owner(void *arg)
{
    struct half *h = arg;
    half_is_owner = 1;
    void **objs = calloc(HALF_OBJS, sizeof *objs);
    for (size_t i = 0; i < HALF_OBJS; i++)
        objs[i] = dp_pool_get(h->pool, DP_WAITOK);
    atomic_store(&h->armed, 1);
    for (size_t i = 0; i < HALF_OBJS; i++) {
        dp_pool_put(h->pool, objs[i]);
        atomic_fetch_add(&h->puts_done, 1);
        if (i == atomic_load(&h->puts_at_stop) && !atomic_load(&h->armed))
            tu_gate_wait(&h->after); /* nothing more until the fork is done */
    }
    free(objs);
    return NULL;
}

static int ptr_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

Test(fork, child_never_sees_a_cache_its_owner_was_flushing_at_the_fork, .timeout = 120)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a = tu_attr(m); /* NOTHREAD: no GC may take the owner's
                                      bin first */
    a.max_pages = HALF_PAGES;
    dp_pool_t *pool = dp_pool_create("half", OBJSIZE, &a);
    cr_assert_not_null(pool);
    dp_reclaim_stop();
    size_t opp = tu_stats(pool).objs_per_page;
    cr_assert_geq(HALF_PAGES * opp, HALF_OBJS + 128, "the owner's refills must fit");

    struct half h = {.pool = pool, .stopped = TU_GATE_INIT, .go = TU_GATE_INIT,
                     .after = TU_GATE_INIT};
    dp_test_set_hook(half_hook, &h);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, half_owner, &h), 0);
    tu_gate_wait(&h.stopped);
    cr_assert(dp_pool_stats(pool, &(dp_pool_stats_t){0}) == 0);

    pid_t pid = fork_now();
    if (pid == 0) {
        /* The owner is gone: what it held out stays out, nothing else.
         * Its put that was flushing completed before the fork. */
        unsigned held = HALF_OBJS - atomic_load(&h.puts_at_stop) - 1;
        CHILD_CHECK(dp_pool_check(pool) == 0);
        dp_pool_stats_t s = tu_stats(pool);
        /* The owner's first overflow went to the depot as a magazine (the
         * hook stopped it there): cached in the pool, free for any get. */
        CHILD_CHECK(s.objs_cached > 0);
        CHILD_CHECK(s.objs_inuse == held);
        /* Every free object exactly once: up to the hard limit. */
        size_t cap = HALF_PAGES * opp, n = 0;
        void **objs = calloc(cap + 1, sizeof *objs);
        CHILD_CHECK(objs != NULL);
        while (n <= cap && (objs[n] = dp_pool_get(pool, DP_NOWAIT)) != NULL)
            n++;
        CHILD_CHECK(n + held == cap);
        qsort(objs, n, sizeof *objs, ptr_cmp);
        for (size_t i = 1; i < n; i++)
            CHILD_CHECK(objs[i] != objs[i - 1]);
        for (size_t i = 0; i < n; i++)
            dp_pool_put(pool, objs[i]);
        CHILD_CHECK(tu_stats(pool).objs_inuse == held);
        CHILD_CHECK(dp_pool_check(pool) == 0);
        _exit(0);
    }
    tu_gate_open(&h.go);
    tu_gate_open(&h.after);
    wait_child_ok(pid);
    pthread_join(t, NULL);
    dp_test_set_hook(NULL, NULL);
    cr_assert_eq(tu_stats(pool).objs_inuse, 0);
    finish(pool, m);
}

/* ------------------------------------ program fork handlers that allocate */

/*
 * A program's own pthread_atfork handlers may allocate: get and put on a
 * pool, malloc and free.  The library registers its handlers from a
 * constructor, so a program's handlers, registered before or after the
 * first pool, run outside ours: prepare before our locks are taken,
 * parent and child after they are released (and after the child's
 * reclaim thread is restarted).  Each order runs in a watchdog.
 */
static dp_pool_t *ph_pool;
static atomic_uint ph_calls;

static void ph_alloc(void)
{
    if (!ph_pool)
        return;
    void *o = dp_pool_get(ph_pool, DP_WAITOK);
    void *small = malloc(100), *big = malloc((size_t)1 << 20);
    CHILD_CHECK(o != NULL && small != NULL && big != NULL);
    fill(o, 7);
    dp_pool_put(ph_pool, o);
    free(small);
    free(big);
    atomic_fetch_add(&ph_calls, 1);
}

static void ph_prepare(void) { ph_alloc(); }
static void ph_parent(void) { ph_alloc(); }
static void ph_child(void) { ph_alloc(); }

static void ph_runner(void *arg)
{
    bool before = *(bool *)arg;
    if (before)
        CHILD_CHECK(pthread_atfork(ph_prepare, ph_parent, ph_child) == 0);
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = dp_mock_provider(m);
    a.pagesize = 4096;
    a.flags = DP_POOL_NOCACHE; /* every get takes the pool lock */
    ph_pool = dp_pool_create("handlers", OBJSIZE, &a); /* starts the thread */
    CHILD_CHECK(ph_pool != NULL);
    if (!before)
        CHILD_CHECK(pthread_atfork(ph_prepare, ph_parent, ph_child) == 0);
    child_get_put(ph_pool, 100);
    CHILD_CHECK(info().running);

    fflush(NULL);
    pid_t pid = fork();
    CHILD_CHECK(pid != -1);
    if (pid == 0) {
        CHILD_CHECK(atomic_load(&ph_calls) == 2); /* prepare, child */
        child_get_put(ph_pool, 100);
        CHILD_CHECK(info().running);
        CHILD_CHECK(dp_reclaim_sync() == 0);
        CHILD_CHECK(tu_stats(ph_pool).objs_inuse == 0);
        CHILD_CHECK(dp_pool_check(ph_pool) == 0);
        _exit(0);
    }
    int st;
    CHILD_CHECK(waitpid(pid, &st, 0) == pid);
    CHILD_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHILD_CHECK(atomic_load(&ph_calls) == 2); /* prepare, parent */
    CHILD_CHECK(tu_stats(ph_pool).objs_inuse == 0);
}

Test(fork, program_handlers_registered_before_the_first_pool_may_allocate, .timeout = 120)
{
    bool before = true;
    run_bounded(ph_runner, &before, 30, "fork with allocating handlers "
                                        "registered before the first pool");
}

Test(fork, program_handlers_registered_after_the_first_pool_may_allocate, .timeout = 120)
{
    bool before = false;
    run_bounded(ph_runner, &before, 30, "fork with allocating handlers "
                                        "registered after the first pool");
}

/* ------------------------------------------- thread exit and a signal put */

/*
 * A thread exits; its cache's destructor has flushed the bins (the hook
 * DP_TEST_TC_EXIT) when a signal handler on that thread puts an object.
 * The put must go to the page, not into the cache about to be freed.
 */
static dp_pool_t *exit_pool;
static void *_Atomic exit_obj;
static _Thread_local int exit_is_owner;
static atomic_int exit_hook_ran;

static void exit_handler(int sig)
{
    (void)sig;
    void *o = atomic_exchange(&exit_obj, NULL);
    if (o)
        dp_pool_put(exit_pool, o);
}

static void exit_hook(int where, void *arg)
{
    (void)arg;
    if (where == DP_TEST_TC_EXIT && exit_is_owner &&
        !atomic_exchange(&exit_hook_ran, 1))
        raise(SIGUSR1);
}

static void *exit_owner(void *arg)
{
    (void)arg;
    exit_is_owner = 1;
    void *objs[40];
    for (size_t i = 0; i < 40; i++)
        objs[i] = dp_pool_get(exit_pool, DP_WAITOK);
    for (size_t i = 1; i < 40; i++)
        dp_pool_put(exit_pool, objs[i]); /* into this thread's bin */
    atomic_store(&exit_obj, objs[0]);    /* the handler puts this one */
    return NULL;                         /* exit: the cache's destructor */
}

Test(fork, a_signal_handler_put_during_thread_exit_goes_to_the_pages, .timeout = 60)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a = tu_attr(m);
    exit_pool = dp_pool_create("exit", OBJSIZE, &a);
    cr_assert_not_null(exit_pool);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = exit_handler;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    dp_test_set_hook(exit_hook, NULL);

    unsigned rounds = (unsigned)tu_scaled(20);
    for (unsigned r = 0; r < rounds; r++) {
        atomic_store(&exit_hook_ran, 0);
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, exit_owner, NULL), 0);
        pthread_join(t, NULL);
        cr_assert(atomic_load(&exit_hook_ran), "the exit hook did not run");
        cr_assert_null(atomic_load(&exit_obj), "the handler did not put");
        dp_pool_stats_t s = tu_stats(exit_pool);
        cr_assert_eq(s.objs_cached, 0);
        cr_assert_eq(s.objs_inuse, 0, "round %u: %" PRIu64 " object(s) lost",
                     r, s.objs_inuse);
        cr_assert_eq(dp_pool_check(exit_pool), 0);
    }
    dp_test_set_hook(NULL, NULL);
    signal(SIGUSR1, SIG_DFL);
    finish(exit_pool, m);
}

/* ------------------------------------------- fork while inside the provider */

/*
 * One thread waits at the mock's closed alloc gate (a page reserved
 * against the hard limit, the pool lock dropped), another at its closed
 * free gate (a page being returned).  Neither exists in the child: it
 * forgets the reservation, counts the page being returned as gone, and
 * can fill the pool to its hard limit and return every page.
 */
struct in_provider {
    dp_pool_t *pool;
    void *got;
    size_t returned;
};

static void *in_alloc(void *arg)
{
    struct in_provider *ip = arg;
    ip->got = dp_pool_get(ip->pool, DP_WAITOK);
    return NULL;
}

static void *in_free(void *arg)
{
    struct in_provider *ip = arg;
    ip->returned = dp_pool_reclaim(ip->pool);
    return NULL;
}

#define INP_LIMIT 4

Test(fork, child_of_a_fork_while_threads_are_inside_the_provider_is_exact, .timeout = 120)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = dp_mock_provider(m);
    a.clock = dp_mock_clock;
    a.clock_arg = m;
    a.flags = DP_POOL_NOTHREAD | DP_POOL_NOCACHE;
    a.pagesize = 4096;
    a.max_pages = INP_LIMIT;
    a.lowat = 0; /* the empty page is due to a reclaim */
    dp_pool_t *pool = dp_pool_create("inprov", OBJSIZE, &a);
    cr_assert_not_null(pool);
    size_t opp = tu_stats(pool).objs_per_page;
    /* Two full pages held, then a third page got and put back: empty. */
    size_t nheld = 2 * opp;
    void **held = calloc(nheld + 1, sizeof *held);
    for (size_t i = 0; i < nheld + 1; i++)
        cr_assert_not_null(held[i] = dp_pool_get(pool, DP_WAITOK));
    dp_pool_put(pool, held[nheld]);
    cr_assert_eq(tu_stats(pool).pages_empty, 1);

    /* The empty page goes back: its free waits at the gate. */
    struct in_provider ip = {.pool = pool};
    dp_mock_gate_close(m, DP_MOCK_FREE);
    pthread_t tf, ta;
    cr_assert_eq(pthread_create(&tf, NULL, in_free, &ip), 0);
    dp_mock_gate_wait(m, DP_MOCK_FREE, 1);
    /* Room for one more page (the returning one still counts): its
     * alloc waits at the gate. */
    dp_mock_gate_close(m, DP_MOCK_ALLOC);
    cr_assert_eq(pthread_create(&ta, NULL, in_alloc, &ip), 0);
    dp_mock_gate_wait(m, DP_MOCK_ALLOC, 1);
    dp_pool_stats_t s0 = tu_stats(pool);
    cr_assert_eq(s0.pages, 3, "the returning page counts, the reserved one not yet");
    dp_mock_counters_t c0 = tu_counters(m);
    cr_assert_eq(c0.allocs, 3);
    cr_assert_eq(c0.frees, 0);

    int fd;
    pid_t pid = fork_watched(&fd);
    if (pid == 0) {
        /* The held pages, nothing in flight. */
        dp_pool_stats_t s = tu_stats(pool);
        CHILD_CHECK(s.pages == 2);
        CHILD_CHECK(s.pages_empty == 0);
        CHILD_CHECK(s.objs_inuse == nheld);
        CHILD_CHECK(s.pages_freed == s0.pages_freed + 1);
        CHILD_CHECK(dp_pool_check(pool) == 0);
        /* The provider works again; the hard limit has room for two
         * pages (the reservation and the returning page are gone). */
        dp_mock_gate_open(m, DP_MOCK_ALLOC);
        dp_mock_gate_open(m, DP_MOCK_FREE);
        size_t nmore = (INP_LIMIT - 2) * opp;
        void **more = calloc(nmore, sizeof *more);
        CHILD_CHECK(more != NULL);
        for (size_t i = 0; i < nmore; i++)
            CHILD_CHECK((more[i] = dp_pool_get(pool, DP_WAITOK)) != NULL);
        errno = 0;
        CHILD_CHECK(dp_pool_get(pool, DP_NOWAIT) == NULL && errno == ENOMEM);
        CHILD_CHECK(tu_stats(pool).pages == INP_LIMIT);
        CHILD_CHECK(tu_counters(m).allocs == c0.allocs + 2);
        for (size_t i = 0; i < nmore; i++)
            dp_pool_put(pool, more[i]);
        for (size_t i = 0; i < nheld; i++)
            dp_pool_put(pool, held[i]);
        /* Every page the child knows goes back. */
        CHILD_CHECK(dp_pool_reclaim(pool) == INP_LIMIT);
        s = tu_stats(pool);
        CHILD_CHECK(s.pages == 0 && s.objs_inuse == 0);
        CHILD_CHECK(tu_counters(m).frees == INP_LIMIT);
        CHILD_CHECK(dp_pool_check(pool) == 0);
        _exit(0);
    }
    wait_watched(pid, fd, 30, "child of a fork while threads wait in the provider");

    /* The parent: both calls complete. */
    dp_mock_gate_open(m, DP_MOCK_ALLOC);
    dp_mock_gate_open(m, DP_MOCK_FREE);
    pthread_join(ta, NULL);
    pthread_join(tf, NULL);
    cr_assert_not_null(ip.got);
    cr_assert_eq(ip.returned, 1);
    dp_pool_put(pool, ip.got);
    for (size_t i = 0; i < nheld; i++)
        dp_pool_put(pool, held[i]);
    free(held);
    cr_assert_eq(tu_stats(pool).objs_inuse, 0);
    finish(pool, m);
}

/* ----------------------------------------------- what a fork costs the pools */

static long minflt(int who)
{
    struct rusage ru;
    if (getrusage(who, &ru) != 0)
        return -1;
    return ru.ru_minflt;
}

static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/*
 * After a fork every page the two processes share is copied at its first
 * write.  The handlers lock and unlock every pool, and a child fixes up
 * pools: all of that lives in the lock table and one section of globals
 * (registry.c, util.h DP_FORK_DATA), so neither process writes a pool's
 * own memory (about two to a page).  With FORK_POOLS pools on about 128
 * pages, the parent's thread and the child fault a few pages in
 * fork(), not one per pool; the child then takes every pool's lock
 * (dp_pool_stats) and gets and puts.  Sanitizer runtimes fault in shadow
 * memory of their own.
 */
#define FORK_POOLS 256
Test(fork, the_handlers_write_no_pools_own_page, .timeout = 120)
{
#if TU_TSAN || defined(__SANITIZE_ADDRESS__)
    cr_skip_test("sanitizer runtimes fault in shadow memory on access");
#endif
    static dp_pool_t *pools[FORK_POOLS];
    static void *objs[FORK_POOLS];
    for (int i = 0; i < FORK_POOLS; i++) {
        pools[i] = dp_pool_create("forkmany", OBJSIZE, NULL);
        cr_assert_not_null(pools[i], "dp_pool_create: %s", strerror(errno));
        objs[i] = dp_pool_get(pools[i], DP_WAITOK);
        cr_assert_not_null(objs[i]);
    }
    fflush(NULL);
    long before = minflt(RUSAGE_THREAD);
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        long faults = minflt(RUSAGE_SELF); /* the child's, since fork */
        if (faults >= FORK_POOLS / 4) {
            fprintf(stderr, "fork child: %ld page faults in fork() with "
                            "%d pools\n", faults, FORK_POOLS);
            _exit(1);
        }
        for (int i = 0; i < FORK_POOLS; i++) {
            dp_pool_stats_t s;
            CHILD_CHECK(dp_pool_stats(pools[i], &s) == 0);
            CHILD_CHECK(s.objs_inuse >= 1);
            dp_pool_put(pools[i], objs[i]);
            child_get_put(pools[i], 3);
        }
        _exit(0);
    }
    long faults = minflt(RUSAGE_THREAD) - before;
    cr_expect_lt(faults, FORK_POOLS / 4,
                 "parent: %ld page faults in fork() with %d pools", faults,
                 FORK_POOLS);
    wait_child_ok(pid);
    for (int i = 0; i < FORK_POOLS; i++) {
        dp_pool_put(pools[i], objs[i]);
        cr_assert_eq(dp_pool_destroy(pools[i]), 0);
    }
}

/*
 * The child of a parent whose reclaim thread runs has none until it needs
 * one: its first DP_WAITOK get that misses the cache starts it (so does a
 * reclaim call, dp_reclaim_sync in the test above).  Before that,
 * dp_reclaim_info reports it running and a DP_NOWAIT get does not start
 * it; a child that execs or exits first never creates a thread.
 */
Test(fork, child_starts_its_reclaim_thread_at_its_first_blocking_get, .timeout = 120)
{
#if defined(__SANITIZE_ADDRESS__)
    /* ASan's allocator (GCC 12) is not locked across fork: a child's
     * pthread_create waits for ever on a lock the parent's reclaim thread
     * held in it at the fork (docs/malloc.md, "Tests"). */
    cr_skip_test("ASan's allocator is not fork-safe for a child's threads");
#endif
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = fork_pool(m, 0, 0);
    cr_assert_eq(dp_reclaim_start(), 0);
    /* The thread idle at the fork, between passes. */
    cr_assert_eq(dp_reclaim_sync(), 0);
    pid_t pid = fork_now();
    if (pid == 0) {
        CHILD_CHECK(thread_count() == 1);
        CHILD_CHECK(info().running);
        void *o = dp_pool_get(pool, DP_NOWAIT); /* a miss: no cache yet */
        CHILD_CHECK(o != NULL);
        CHILD_CHECK(thread_count() == 1);
        dp_pool_put(pool, o);
        dp_thread_cache_flush(); /* the next get misses again */
        o = dp_pool_get(pool, DP_WAITOK);
        CHILD_CHECK(o != NULL);
        CHILD_CHECK(thread_count() == 2);
        CHILD_CHECK(dp_reclaim_sync() == 0);
        dp_pool_put(pool, o);
        _exit(0);
    }
    wait_child_ok(pid);
    finish(pool, m);
}

/*
 * After a fork, a get and a put of the same object leave the bin's slot
 * area unwritten, in the child and in the parent while the child lives:
 * the put finds the object in the slot the get popped (lib/cache.c,
 * "Faults").  A page either of them writes first is copied, a page fault
 * each; a slot area is a page apart from the next pool's, so with a
 * store per put, a get and a put on each of COW_POOLS pools cost each
 * process COW_POOLS faults or more.  Past the counted puts
 * (DP_TC_COW_PUTS) the bins have their full limit again and lose
 * nothing.
 */
#define COW_POOLS 32

uint32_t dp_test_bin_putlim(dp_pool_t *p); /* lib/testhooks.c */

static long cow_pairs(dp_pool_t **pools)
{
    minflt(RUSAGE_THREAD); /* its own first-call costs */
    long before = minflt(RUSAGE_THREAD);
    for (int i = 0; i < COW_POOLS; i++) {
        void *o = dp_pool_get(pools[i], DP_NOWAIT);
        if (!o)
            return -1;
        dp_pool_put(pools[i], o);
    }
    return minflt(RUSAGE_THREAD) - before;
}

Test(fork, a_get_and_put_after_fork_copy_no_slot_page, .timeout = 120)
{
#if TU_TSAN || defined(__SANITIZE_ADDRESS__)
    cr_skip_test("sanitizer runtimes fault in shadow memory on access");
#endif
    static dp_pool_t *pools[COW_POOLS];
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.flags = DP_POOL_NOTHREAD; /* no reclaim pass drains a bin meanwhile */
    for (int i = 0; i < COW_POOLS; i++) {
        pools[i] = dp_pool_create("cow", OBJSIZE, &a);
        cr_assert_not_null(pools[i], "dp_pool_create: %s", strerror(errno));
        void *o[4];
        for (int j = 0; j < 4; j++) /* a refill: the bin bound, stocked */
            cr_assert_not_null(o[j] = dp_pool_get(pools[i], DP_NOWAIT));
        for (int j = 0; j < 4; j++)
            dp_pool_put(pools[i], o[j]);
    }
    int up[2], down[2];
    cr_assert_eq(pipe(up), 0);
    cr_assert_eq(pipe(down), 0);
    uint32_t full = dp_test_bin_putlim(pools[0]);
    cr_assert_gt(full, 0, "a bound bin has a put limit");
    pid_t pid = fork_now();
    if (pid == 0) {
        long faults = cow_pairs(pools);
        close(up[0]);
        close(down[1]);
        CHILD_CHECK(dp_test_bin_putlim(pools[0]) == 0);
        CHILD_CHECK(write(up[1], &faults, sizeof faults) == sizeof faults);
        char go;
        CHILD_CHECK(read(down[0], &go, 1) == 1);
        /* Past the counted puts: still exact. */
        enum { N = 600 };
        static void *objs[N];
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < N; i++) {
                objs[i] = dp_pool_get(pools[0], DP_NOWAIT);
                CHILD_CHECK(objs[i] != NULL);
                fill(objs[i], (uint64_t)i);
            }
            for (int i = 0; i < N; i++)
                CHILD_CHECK(holds(objs[i], (uint64_t)i)); /* distinct */
            for (int i = 0; i < N; i++)
                dp_pool_put(pools[0], objs[i]);
        }
        /* The limit is back: a young bin's, or (the bin grew in these
         * rounds) its own area's, which is higher. */
        CHILD_CHECK(dp_test_bin_putlim(pools[0]) >= full);
        dp_pool_stats_t s;
        CHILD_CHECK(dp_pool_stats(pools[0], &s) == 0);
        CHILD_CHECK(s.objs_inuse == 0);
        CHILD_CHECK(dp_pool_check(pools[0]) == 0);
        _exit(0);
    }
    /* Only the child holds up's write end: if it dies first, read sees
     * EOF and the wait below reports why. */
    close(up[1]);
    close(down[0]);
    long child = -2;
    ssize_t got = read(up[0], &child, sizeof child);
    long parent = cow_pairs(pools); /* the child is alive: pages shared */
    if (got == (ssize_t)sizeof child)
        cr_assert_eq(write(down[1], "g", 1), 1);
    close(up[0]);
    close(down[1]);
    wait_child_ok(pid);
    cr_assert_eq(got, (ssize_t)sizeof child, "the child sent no count");
    cr_expect(child >= 0, "the child's gets failed");
    cr_expect_lt(child, COW_POOLS / 4,
                 "child: a get and a put on %d pools took %ld page faults",
                 COW_POOLS, child);
    cr_expect(parent >= 0, "the parent's gets failed");
    cr_expect_lt(parent, COW_POOLS / 4,
                 "parent: a get and a put on %d pools took %ld page faults",
                 COW_POOLS, parent);
    for (int i = 0; i < COW_POOLS; i++)
        cr_assert_eq(dp_pool_destroy(pools[i]), 0);
}

/* ------------------------------------------------- a cache made ready */

int dp_test_tc_ready(void); /* lib/testhooks.c */

static void *put_one(void *arg)
{
    void **a = arg;
    dp_pool_put(a[0], a[1]);
    return NULL;
}

/* A put on a new thread that never got: with a cache ready, it adopts
 * it (lib/cache.c, "Adopted caches"). */
static void put_on_new_thread(dp_pool_t *pool, void *o)
{
    void *a[2] = {pool, o};
    pthread_t t;
    if (pthread_create(&t, NULL, put_one, a) != 0)
        abort();
    pthread_join(t, NULL);
}

/* The cache made ready for a thread that only puts is not the child's:
 * it was no thread's, and goes with the other threads' caches.  A
 * thread of the child that only puts finds none ready and puts to the
 * page; the parent's ready cache is still adopted there. */
Test(fork, a_cache_ready_at_the_fork_is_gone_in_the_child, .timeout = 120)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_pool_t *pool = fork_pool(m, DP_POOL_NOTHREAD, 0);
    void *o[3];
    for (int i = 0; i < 3; i++)
        cr_assert_not_null(o[i] = dp_pool_get(pool, DP_WAITOK));
    put_on_new_thread(pool, o[0]); /* no cache, none ready: asks */
    dp_thread_cache_flush();
    void *x = dp_pool_get(pool, DP_WAITOK); /* a miss: makes one ready */
    cr_assert_not_null(x);
    cr_assert(dp_test_tc_ready(), "a get made a cache ready");

    pid_t pid = fork_now();
    if (pid == 0) {
        CHILD_CHECK(!dp_test_tc_ready());
        put_on_new_thread(pool, o[1]);
        dp_pool_put(pool, x);
        CHILD_CHECK(dp_pool_check(pool) == 0);
        CHILD_CHECK(tu_stats(pool).objs_inuse == 1);
        _exit(0);
    }
    wait_child_ok(pid);

    cr_assert(dp_test_tc_ready(), "the parent's ready cache stays");
    put_on_new_thread(pool, o[1]); /* adopts it, and its exit hands it back */
    cr_assert_not(dp_test_tc_ready(), "adopted");
    dp_pool_put(pool, o[2]);
    dp_pool_put(pool, x);
    finish(pool, m);
}
