/*
 * test_malloc_fork.c -- the drop-in malloc across fork(): a program whose
 * own pthread_atfork handlers allocate and free, registered before its
 * first malloc or after, forks without hanging; and a child forked while
 * other threads work the heap of medium and large blocks gets that heap
 * whole (its lock held across the fork, its queue recounted), so it can
 * allocate, free and trim to exact counters; and children forked while
 * threads churn pools (cached and uncached) and the malloc never get an
 * object twice.  Every wait for a child is bounded: a deadlock fails at
 * once, with a message.
 */
#include <criterion/criterion.h>
#include <deferpool.h>
#include <deferpool-malloc.h>

#include <errno.h>
#include <malloc.h>
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
    /* What the other threads held stays live; nothing is left queued
     * after a trim, nor cached but purged blocks of huge chunks, and
     * their counters agree with the lists. */
    if (a.large_queued || a.large_bytes_queued ||
        a.large_bytes_cached != a.large_bytes_purged ||
        (a.large_cached != 0) != (a.large_bytes_cached != 0) ||
        (a.large_cached && !a.large_huge_chunks))
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
    if (b.large_inuse != a.large_inuse || b.large_queued ||
        b.large_bytes_cached != b.large_bytes_purged)
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

/* ---- pools and the malloc, churned by threads, at many forks ------------- */

/* Threads get and put objects of a cached and an uncached pool and malloc
 * and free blocks of every class and some medium sizes, while the test
 * thread forks.  Each child takes many objects from every pool and every
 * class: none may be handed out twice (sorted, then compared), the pools
 * must pass dp_pool_check, and the blocks' usable bytes must not overlap.
 * The program links libdeferpool next to the drop-in malloc, as a program
 * may (docs/malloc.md). */

#define ST_POOLS 2
#define ST_THREADS 3
static dp_pool_t *st_pool[ST_POOLS];
static atomic_int st_stop;
static pthread_barrier_t st_started;

static uint64_t st_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *st_pool_churn(void *arg)
{
    uint64_t s = (uintptr_t)arg;
    void *v[ST_POOLS][32] = {{0}};
    pthread_barrier_wait(&st_started);
    while (!atomic_load(&st_stop)) {
        unsigned k = (unsigned)(st_next(&s) % ST_POOLS), i = (s >> 8) % 32;
        dp_pool_put(st_pool[k], v[k][i]);
        v[k][i] = dp_pool_get(st_pool[k], DP_WAITOK);
    }
    for (int k = 0; k < ST_POOLS; k++)
        for (int i = 0; i < 32; i++)
            dp_pool_put(st_pool[k], v[k][i]);
    return NULL;
}

/* 1 byte to the largest class, and medium blocks past it. */
static size_t st_size(uint64_t r)
{
    return r % 8 ? 1 + r % 8192 : 8193 + (r >> 16) % (120 << 10);
}

static void *st_malloc_churn(void *arg)
{
    uint64_t s = (uintptr_t)arg;
    void *v[64] = {0};
    pthread_barrier_wait(&st_started);
    while (!atomic_load(&st_stop)) {
        unsigned i = (unsigned)(st_next(&s) % 64);
        free(v[i]);
        v[i] = malloc(st_size(s >> 6));
        if (v[i])
            *(volatile char *)v[i] = 1;
    }
    for (int i = 0; i < 64; i++)
        free(v[i]);
    return NULL;
}

static int st_ptr_cmp(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

#define ST_OBJS 1000   /* per pool, in the child  */
#define ST_BLOCKS 1200 /* malloc blocks, in the child */

/* The child.  Exit code: 0, or the failing step. */
static int st_child(void)
{
    static uintptr_t v[ST_BLOCKS > ST_OBJS ? ST_BLOCKS : ST_OBJS];
    for (int k = 0; k < ST_POOLS; k++) {
        for (size_t i = 0; i < ST_OBJS; i++) {
            void *o = dp_pool_get(st_pool[k], DP_WAITOK);
            if (!o)
                return 10 + k;
            memset(o, 0xa5, 8);
            v[i] = (uintptr_t)o;
        }
        qsort(v, ST_OBJS, sizeof(v[0]), st_ptr_cmp);
        for (size_t i = 1; i < ST_OBJS; i++)
            if (v[i] == v[i - 1])
                return 20 + k; /* one object handed out twice */
        if (dp_pool_check(st_pool[k]) != 0)
            return 30 + k;
        for (size_t i = 0; i < ST_OBJS; i++)
            dp_pool_put(st_pool[k], (void *)v[i]);
        if (dp_pool_check(st_pool[k]) != 0)
            return 40 + k;
    }
    /* Every class, a few blocks each, and medium blocks. */
    uint64_t s = 99;
    for (size_t i = 0; i < ST_BLOCKS; i++) {
        size_t n = i < 1024 ? 1 + i * 8 : st_size(st_next(&s));
        void *p = malloc(n);
        if (!p)
            return 50;
        memset(p, 0x5a, n < 64 ? n : 64);
        v[i] = (uintptr_t)p;
    }
    qsort(v, ST_BLOCKS, sizeof(v[0]), st_ptr_cmp);
    for (size_t i = 1; i < ST_BLOCKS; i++)
        if (v[i - 1] + malloc_usable_size((void *)v[i - 1]) > v[i])
            return 51; /* a block handed out twice, or overlapping */
    for (size_t i = 0; i < ST_BLOCKS; i++)
        free((void *)v[i]);
    return 0;
}

Test(malloc_fork, children_of_forks_amid_pool_and_malloc_churn_get_no_object_twice, .timeout = 300)
{
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    st_pool[0] = dp_pool_create("fork-cached", 48, &a);
    a.flags = DP_POOL_NOCACHE;
    st_pool[1] = dp_pool_create("fork-uncached", 200, &a);
    cr_assert(st_pool[0] && st_pool[1], "dp_pool_create: %s", strerror(errno));
    atomic_store(&st_stop, 0);
    cr_assert_eq(pthread_barrier_init(&st_started, NULL, ST_THREADS + 1), 0);
    pthread_t t[ST_THREADS];
    cr_assert_eq(pthread_create(&t[0], NULL, st_pool_churn, (void *)3), 0);
    cr_assert_eq(pthread_create(&t[1], NULL, st_pool_churn, (void *)7), 0);
    cr_assert_eq(pthread_create(&t[2], NULL, st_malloc_churn, (void *)11), 0);
    pthread_barrier_wait(&st_started); /* every thread is churning */
    size_t forks = mt_scaled(100);
    for (size_t f = 0; f < forks; f++) {
        int rc = run_bounded(st_child, NULL, NULL,
                             "child of a fork amid pool and malloc churn");
        cr_assert_eq(rc, 0, "fork %zu: the child failed at step %d", f, rc);
    }
    atomic_store(&st_stop, 1);
    for (int i = 0; i < ST_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&st_started);
    for (int k = 0; k < ST_POOLS; k++) {
        cr_assert_eq(dp_pool_check(st_pool[k]), 0);
        cr_assert_eq(dp_pool_destroy(st_pool[k]), 0, "destroy: %s",
                     strerror(errno));
    }
}
