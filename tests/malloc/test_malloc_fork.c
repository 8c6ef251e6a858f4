/*
 * test_malloc_fork.c -- the drop-in malloc across fork(): a program whose
 * own pthread_atfork handlers allocate and free, registered before its
 * first malloc or after, forks without hanging; and a child forked while
 * other threads work the heap of medium and large blocks gets that heap
 * whole (its lock held across the fork, its queue recounted), so it can
 * allocate, free and trim to exact counters.  Every wait for a child is
 * bounded: a deadlock fails at once, with a message.
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "malloc_testutil.h"

#define WATCHDOG_S 30

/*
 * Fork (fn != NULL: run fn in the child and _exit with its result; else
 * exec argv with LD_PRELOAD of the library and env `extra`), in a process
 * group of its own, and wait at most WATCHDOG_S for it and everything it
 * forks: they alone hold a pipe's write end.  A hang kills the group and
 * fails with `what`.  Returns the exit status.
 */
static int run_bounded(int (*fn)(void), char *const argv[], const char *extra,
                       const char *what)
{
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        close(pfd[0]);
        if (fn)
            _exit(fn());
        setenv("LD_PRELOAD", getenv("DP_MALLOC_LIB"), 1);
        putenv((char *)extra);
        execv(argv[0], argv);
        _exit(127);
    }
    setpgid(pid, pid);
    close(pfd[1]);
    struct pollfd p = {.fd = pfd[0], .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, WATCHDOG_S * 1000)) == -1 && errno == EINTR)
        ;
    close(pfd[0]);
    if (r == 0) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        cr_assert_fail("%s: no progress for %d s (a deadlock in fork?)", what,
                       WATCHDOG_S);
    }
    int st;
    while (waitpid(pid, &st, 0) == -1)
        cr_assert_eq(errno, EINTR);
    cr_assert(WIFEXITED(st), "%s: killed by signal %d", what,
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return WEXITSTATUS(st);
}

/* ---- program handlers that allocate ------------------------------------- */

static void probe(const char *order)
{
    const char *prog = getenv("DP_MALLOC_FORK_PROBE");
    cr_assert(prog && access(prog, X_OK) == 0, "DP_MALLOC_FORK_PROBE not set");
    cr_assert(getenv("DP_MALLOC_LIB"), "DP_MALLOC_LIB not set");
    static char env[64];
    snprintf(env, sizeof env, "FORK_PROBE_ORDER=%s", order);
    char *argv[] = {(char *)prog, NULL};
    char what[96];
    snprintf(what, sizeof what, "fork_probe, handlers registered %s", order);
    int rc = run_bounded(NULL, argv, env, what);
    cr_assert_eq(rc, 0, "%s: failed at step %d", what, rc);
}

Test(malloc_fork, handlers_registered_before_the_first_malloc_may_allocate, .timeout = 120)
{
    probe("before");
}

Test(malloc_fork, handlers_registered_after_the_first_malloc_may_allocate, .timeout = 120)
{
    probe("after");
}

/* ---- the heap of medium and large blocks at the fork --------------------- */

/* Sizes past the thread lists (at most 18 pages), so that every malloc
 * and free goes through the heap: its queue and its lock. */
static const size_t heap_sizes[] = {100 << 10, 260 << 10, 700 << 10,
                                    1100 << 10, 2600 << 10};

static atomic_int heap_stop;

/* Frees in bursts: a free's counters and its push onto the queue are two
 * steps, and a fork between them is what the child's recount repairs. */
static void *heap_burst(void *arg)
{
    (void)arg;
    void *v[64];
    while (!atomic_load(&heap_stop)) {
        for (int i = 0; i < 64; i++)
            v[i] = malloc(heap_sizes[i % 5]);
        for (int i = 0; i < 64; i++)
            free(v[i]);
    }
    return NULL;
}

static void *heap_churn(void *arg)
{
    uint64_t s = (uintptr_t)arg;
    void *v[16] = {0};
    while (!atomic_load(&heap_stop)) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        unsigned i = (unsigned)(s % 16);
        free(v[i]);
        v[i] = malloc(heap_sizes[(s >> 8) % 5]);
        if (v[i])
            *(volatile char *)v[i] = 1;
    }
    for (int i = 0; i < 16; i++)
        free(v[i]);
    return NULL;
}

/* The child: the heap must be usable and its counters exact.  Exit code:
 * 0, or the failing step. */
static int heap_child(void)
{
    dp_malloc_stats_t a, b;
    void *v[40];
    for (int i = 0; i < 40; i++) {
        size_t n = heap_sizes[i % 5];
        if (!(v[i] = malloc(n)))
            return 2;
        memset(v[i], i, 4096);
    }
    for (int i = 0; i < 40; i++)
        for (int j = 0; j < i; j++)
            if (v[i] == v[j])
                return 3;
    for (int i = 0; i < 40; i++)
        free(v[i]);
    dp_malloc_trim();
    dp_malloc_stats_get(&a);
    /* What the other threads held stays live; nothing is left queued or
     * cached after a trim, and their counters agree with the lists. */
    if (a.large_queued || a.large_bytes_queued || a.large_cached ||
        a.large_bytes_cached || a.large_bytes_purged)
        return 4;
    void *x = malloc(heap_sizes[1]);
    if (!x)
        return 5;
    dp_malloc_stats_get(&b);
    if (b.large_inuse != a.large_inuse + 1)
        return 6;
    free(x);
    dp_malloc_trim();
    dp_malloc_stats_get(&b);
    if (b.large_inuse != a.large_inuse || b.large_queued || b.large_cached)
        return 7;
    return 0;
}

Test(malloc_fork, child_gets_the_heap_whole_while_other_threads_use_it, .timeout = 300)
{
    pthread_t t[2];
    atomic_store(&heap_stop, 0);
    cr_assert_eq(pthread_create(&t[0], NULL, heap_churn, (void *)5), 0);
    cr_assert_eq(pthread_create(&t[1], NULL, heap_burst, NULL), 0);
    size_t forks = mt_scaled(200);
    for (size_t f = 0; f < forks; f++) {
        int rc = run_bounded(heap_child, NULL, NULL, "child of a fork while "
                                                     "threads use the heap");
        cr_assert_eq(rc, 0, "fork %zu: the child failed at step %d", f, rc);
    }
    atomic_store(&heap_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
}
