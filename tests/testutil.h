/*
 * testutil.h -- small helpers shared by the concurrency tests
 * (test_put_nonblocking.c, test_uvm.c, test_limits.c, test_stress.c).
 *
 * Include after <criterion/criterion.h> and <deferpool.h>.  Everything is
 * static: each test file is its own executable.
 *
 *   tu_scaled(n)      n divided by DP_TEST_SCALE (default 1), at least 1:
 *                     sanitizer builds set 4 (ASan) or 10 (TSan).
 *   tu_gate_*         a one-shot gate (mutex + condition variable): threads
 *                     wait until the test opens it.  Never a sleep.
 *   tu_stats/counters snapshots that assert the call succeeded.
 *   tu_mock_pool      a pool on a mock provider with the usual attributes.
 *   tu_destroy_all    the closing checks every test shares: nothing out,
 *                     no provider call from a put, the books balance, the
 *                     pool destroys, and the mock got every page back.
 *   tu_rng            xorshift64*: cheap, per thread, reproducible.
 *   tu_thread_minflt  the calling thread's minor page faults so far.
 *   tu_watchdog       fail a test that hangs within seconds, with a
 *                     message naming what it waited for (watchdog.h).
 *   tu_watchdog_init  the same for a whole suite: TestSuite(x, .init =
 *                     tu_watchdog_init) arms TU_WD_TEST seconds per test.
 */
#ifndef DP_TESTUTIL_H
#define DP_TESTUTIL_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "watchdog.h"

#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#ifndef TU_TSAN
#define TU_TSAN 0
#endif

/* ------------------------------------------------------------ watchdog */

/* Every test of the suites that use it takes well under a second in a
 * plain build (and DP_TEST_SCALE keeps sanitizer runs alike): a test
 * still running after this long waits for something that never comes. */
#define TU_WD_TEST 20

static inline void tu_watchdog_init(void)
{
    tu_watchdog(TU_WD_TEST, "this test (a waiter never woken, a thread "
                            "that never finishes?)");
}

/* ---------------------------------------------------------- page faults */

/* The calling thread's minor page faults so far (getrusage
 * RUSAGE_THREAD): a difference around a loop counts what it faulted in. */
static inline long tu_thread_minflt(void)
{
    struct rusage ru;
    cr_assert_eq(getrusage(RUSAGE_THREAD, &ru), 0);
    return ru.ru_minflt;
}

/* ------------------------------------------------------------- scaling */

static inline uint64_t tu_scale(void)
{
    const char *s = getenv("DP_TEST_SCALE");
    if (!s || !*s)
        return 1;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    return (*end == '\0' && v >= 1) ? (uint64_t)v : 1;
}

static inline uint64_t tu_scaled(uint64_t n)
{
    uint64_t v = n / tu_scale();
    return v ? v : 1;
}

/* ---------------------------------------------------------------- gate */

typedef struct tu_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
} tu_gate_t;

#define TU_GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}

static inline void tu_gate_open(tu_gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static inline void tu_gate_wait(tu_gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* ----------------------------------------------------------- snapshots */

static inline dp_pool_stats_t tu_stats(dp_pool_t *pool)
{
    dp_pool_stats_t s;
    cr_assert_eq(dp_pool_stats(pool, &s), 0, "dp_pool_stats failed");
    return s;
}

static inline dp_mock_counters_t tu_counters(dp_mock_t *m)
{
    dp_mock_counters_t c;
    dp_mock_counters(m, &c);
    return c;
}

/* Poll until pool has `n` getters asleep.  Used as a gate where the API
 * offers no blocking wait for that state; yields, never sleeps. */
static inline void tu_wait_waiting(dp_pool_t *pool, uint64_t n)
{
    for (;;) {
        dp_pool_stats_t s;
        if (dp_pool_stats(pool, &s) == 0 && s.waiting >= n)
            return;
        sched_yield();
    }
}

/* ---------------------------------------------------------------- pool */

static inline dp_mock_t *tu_mock(size_t capacity)
{
    dp_mock_t *m = dp_mock_create(capacity);
    cr_assert_not_null(m, "dp_mock_create: %s", strerror(errno));
    return m;
}

/* attr defaults + the mock as provider + its clock + no auto thread. */
static inline dp_pool_attr_t tu_attr(dp_mock_t *m)
{
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = dp_mock_provider(m);
    a.clock = dp_mock_clock;
    a.clock_arg = m;
    a.flags = DP_POOL_NOTHREAD;
    a.pagesize = 4096;
    return a;
}

static inline dp_pool_t *tu_pool(const char *name, size_t objsize,
                                 const dp_pool_attr_t *a)
{
    dp_pool_t *p = dp_pool_create(name, objsize, a);
    cr_assert_not_null(p, "dp_pool_create(%s): %s", name, strerror(errno));
    return p;
}

/*
 * The closing checks: with the pool quiescent, nothing is out, every get
 * has its put, no provider call came from a put, the page books balance
 * and the invariant checker is happy; then destroy, and the mock (which
 * served this pool only) has every page back.
 */
static inline void tu_destroy_checked(dp_pool_t *pool, dp_mock_t *m)
{
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.objs_inuse, 0, "objects still out: %llu",
                 (unsigned long long)s.objs_inuse);
    cr_assert_eq(s.gets, s.puts + s.objs_inuse,
                 "gets %llu != puts %llu + inuse %llu",
                 (unsigned long long)s.gets, (unsigned long long)s.puts,
                 (unsigned long long)s.objs_inuse);
    cr_assert_eq(s.put_provider_calls, 0, "a put called the provider");
    cr_assert_eq(s.pages, s.pages_alloc - s.pages_freed,
                 "pages %llu != alloc %llu - freed %llu",
                 (unsigned long long)s.pages,
                 (unsigned long long)s.pages_alloc,
                 (unsigned long long)s.pages_freed);
    cr_assert_eq(dp_pool_check(pool), 0, "dp_pool_check found damage");
    if (m) {
        dp_mock_counters_t c = tu_counters(m);
        cr_assert_eq(c.allocs, s.pages_alloc,
                     "mock allocs %llu != pool pages_alloc %llu",
                     (unsigned long long)c.allocs,
                     (unsigned long long)s.pages_alloc);
        cr_assert_eq(c.frees, s.pages_freed,
                     "mock frees %llu != pool pages_freed %llu",
                     (unsigned long long)c.frees,
                     (unsigned long long)s.pages_freed);
    }
    errno = 0;
    cr_assert_eq(dp_pool_destroy(pool), 0, "dp_pool_destroy refused: %s",
                 strerror(errno));
    if (m) {
        dp_mock_counters_t c = tu_counters(m);
        cr_assert_eq(c.allocs, c.frees, "mock: %llu allocs, %llu frees",
                     (unsigned long long)c.allocs,
                     (unsigned long long)c.frees);
        cr_assert_eq(c.pages_out, 0);
        cr_assert_eq(c.blocked_alloc + c.blocked_free, 0);
        dp_mock_destroy(m);
    }
}

/* --------------------------------------------------------- pointer sort */

/* qsort comparator for an array of pointers, by address. */
static inline int tu_cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a;
    uintptr_t y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

/* ----------------------------------------------------------------- rng */

static inline uint64_t tu_rng(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* ------------------------------------------------------- abort checks */

/*
 * Run fn(arg) in a forked child with its stderr captured, and expect it
 * to die by SIGABRT with a message that contains every string of want[]
 * (NULL-terminated; "%p" entries are not expanded, pass the text).  The
 * child's output goes to out (NUL-terminated) for the caller's messages.
 * Returns 1 when all of that held; the caller asserts on it.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static inline int tu_expect_abort(void (*fn)(void *), void *arg,
                                  const char *const *want, char *out,
                                  size_t outlen)
{
    int fd[2];
    out[0] = 0;
    if (pipe(fd) != 0)
        return 0;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        signal(SIGABRT, SIG_DFL);
        fn(arg);
        _exit(0); /* no abort: the parent sees exit status 0 */
    }
    close(fd[1]);
    size_t have = 0;
    ssize_t r;
    while ((r = read(fd[0], out + have, outlen - 1 - have)) > 0)
        have += (size_t)r;
    out[have] = 0;
    close(fd[0]);
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return 0;
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT)
        return 0;
    for (; want && *want; want++)
        if (!strstr(out, *want))
            return 0;
    return 1;
}

#endif /* DP_TESTUTIL_H */
