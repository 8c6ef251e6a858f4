/*
 * test_malloc_threads.c -- the drop-in malloc with threads and fork:
 * blocks freed by another thread, memory freed by a thread that then
 * blocks forever still returned, and fork (the child allocates and frees, its reclaim thread
 * comes back).  Run with DEFERPOOL_CONF=reclaim_age_ms:1,
 * reclaim_interval_ms:5 (tests/malloc/meson.build) so that ageing takes
 * passes, not seconds; every wait is for reclaim passes, never a sleep.
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "malloc_testutil.h"

static size_t rnd_size(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    uint64_t r = *s % 1000;
    if (r < 2)
        return 70000 + *s % (2 << 20); /* large */
    if (r < 50)
        return 1 + *s % 65536; /* medium */
    return 1 + *s % 512;       /* small */
}

/* ---- cross-thread free ------------------------------------------------- */

struct xfer {
    void **blk;
    size_t *len;
    size_t n;
    gate_t ready;
};

static void *producer(void *arg)
{
    struct xfer *x = arg;
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (uintptr_t)arg;
    for (size_t i = 0; i < x->n; i++) {
        x->len[i] = rnd_size(&s);
        x->blk[i] = malloc(x->len[i]);
        if (!x->blk[i])
            return (void *)1;
        mt_fill(x->blk[i], x->len[i] < 256 ? x->len[i] : 256, i);
    }
    gate_open(&x->ready);
    return NULL;
}

static void *consumer(void *arg)
{
    struct xfer *x = arg;
    gate_wait(&x->ready);
    for (size_t i = 0; i < x->n; i++) {
        size_t k = x->len[i] < 256 ? x->len[i] : 256;
        if (mt_check(x->blk[i], k, i) != k)
            return (void *)1;
        free(x->blk[i]);
    }
    return NULL;
}

Test(malloc_threads, blocks_freed_by_another_thread)
{
    size_t rounds = mt_scaled(20), n = 5000;
    dp_malloc_stats_t before, after;
    dp_malloc_stats_get(&before);
    for (size_t r = 0; r < rounds; r++) {
        struct xfer x = {.n = n, .ready = GATE_INIT};
        x.blk = calloc(n, sizeof(void *));
        x.len = calloc(n, sizeof(size_t));
        pthread_t p, c;
        void *rp, *rc;
        pthread_create(&p, NULL, producer, &x);
        pthread_create(&c, NULL, consumer, &x);
        pthread_join(p, &rp);
        pthread_join(c, &rc);
        cr_assert_null(rp, "producer failed");
        cr_assert_null(rc, "consumer found a block overwritten");
        free(x.blk);
        free(x.len);
    }
    dp_malloc_stats_get(&after);
    cr_assert_eq(after.large_inuse, before.large_inuse);
    cr_assert_eq(after.put_provider_calls, 0);
}

/* ---- a thread that frees, then blocks forever --------------------------- */

struct sleeper {
    size_t n;
    gate_t freed, wake;
};

static void *sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    void **v = malloc(s->n * sizeof(void *));
    for (size_t i = 0; i < s->n; i++) {
        v[i] = malloc(1024);
        memset(v[i], 1, 1024);
    }
    for (size_t i = 0; i < s->n; i++)
        free(v[i]);
    free(v);
    gate_open(&s->freed);
    gate_wait(&s->wake); /* "forever": no allocator call until the end */
    return NULL;
}

Test(malloc_threads, memory_freed_by_a_blocked_thread_is_returned)
{
    struct sleeper s = {.n = 8192, .freed = GATE_INIT, .wake = GATE_INIT};
    pthread_t t;
    dp_malloc_stats_t a, b;
    dp_malloc_stats_get(&a);
    pthread_create(&t, NULL, sleeper_main, &s);
    gate_wait(&s.freed);
    /* 8 MiB went through 1 KiB objects: ~128 pages of 64 KiB.  Without
     * any help from the sleeping thread, passes drain its cache (GC of
     * idle caches) and return the aged pages. */
    int passes = 0;
    for (; passes < 2000; passes++) {
        cr_assert_eq(dp_malloc_reclaim_sync(), 0, "reclaim thread not running");
        dp_malloc_stats_get(&b);
        if (b.small_pages_freed >= a.small_pages_freed + 120)
            break;
    }
    cr_assert_geq(b.small_pages_freed, a.small_pages_freed + 120,
                  "only %llu pages came back after %d passes",
                  (unsigned long long)(b.small_pages_freed - a.small_pages_freed),
                  passes);
    gate_open(&s.wake);
    pthread_join(t, NULL);
}

/* ---- fork --------------------------------------------------------------- */

static atomic_int churn_stop;

static void *churner(void *arg)
{
    (void)arg;
    uint64_t s = 12345;
    void *v[64] = {0};
    while (!atomic_load(&churn_stop)) {
        size_t i = s % 64;
        free(v[i]);
        v[i] = malloc(rnd_size(&s));
    }
    for (int i = 0; i < 64; i++)
        free(v[i]);
    return NULL;
}

/* In the child: allocate and free every kind of block, and see the
 * reclaim thread run.  Exit code: 0 ok, else the failing step. */
static int child_work(void)
{
    uint64_t s = 777;
    void *v[2000];
    for (int i = 0; i < 2000; i++) {
        size_t n = rnd_size(&s);
        if (!(v[i] = malloc(n)))
            return 2;
        memset(v[i], 7, n < 64 ? n : 64);
    }
    for (int i = 0; i < 2000; i++)
        free(v[i]);
    dp_malloc_stats_t st0;
    dp_malloc_stats_get(&st0);
    void *big = malloc(3 << 20);
    if (!big)
        return 3;
    free(big);
    if (dp_malloc_reclaim_sync() != 0)
        return 4;
    dp_malloc_stats_t st;
    dp_malloc_stats_get(&st);
    if (!st.reclaim_running)
        return 5;
    /* The large block went back through the child's own reclaim passes:
     * one moves it into the cache, a later one finds it past the age. */
    for (int i = 0; i < 100 && (st.large_queued || st.large_cached); i++) {
        dp_malloc_reclaim_sync();
        dp_malloc_stats_get(&st);
    }
    if (st.large_queued || st.large_cached ||
        st.large_unmaps <= st0.large_unmaps)
        return 6;
    return 0;
}

Test(malloc_threads, fork_child_allocates_and_its_reclaim_thread_runs)
{
    size_t rounds = mt_scaled(10);
    pthread_t t[2];
    atomic_store(&churn_stop, 0);
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, churner, NULL);
    for (size_t r = 0; r < rounds; r++) {
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0)
            _exit(child_work());
        int st;
        while (waitpid(pid, &st, 0) < 0)
            cr_assert_eq(errno, EINTR);
        cr_assert(WIFEXITED(st), "child died of signal %d",
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        cr_assert_eq(WEXITSTATUS(st), 0, "child failed at step %d",
                     WEXITSTATUS(st));
    }
    atomic_store(&churn_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    /* The parent is unaffected. */
    cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    void *p = malloc(100);
    cr_assert_not_null(p);
    free(p);
}
