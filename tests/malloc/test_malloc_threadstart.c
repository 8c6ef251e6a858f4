/*
 * test_malloc_threadstart.c -- a thread's life cycle is cheap and exact:
 * a new thread's first allocation makes no system call when an exited
 * thread left its cache behind (no mmap, madvise or membarrier before
 * it returns), and threads started and ended by the thousand, each
 * freeing blocks that others allocated, lose nothing.
 *
 * The system-call check runs the new thread in seccomp strict mode (any
 * call but read, write, _exit and sigreturn kills it) inside a forked
 * child that reports through its exit code; a control without an exited
 * thread shows the harness sees the mapping of a first cache.  Skipped
 * under TSan, whose runtime cannot join a thread that left by a raw
 * SYS_exit.  Run without the reclaim thread (DEFERPOOL_CONF
 * background_thread:0, tests/malloc/meson.build), so that no other
 * thread takes a lock the new thread needs.
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <errno.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../watchdog.h"
#include "malloc_testutil.h"

enum { CH_OK = 0, CH_SETUP = 10, CH_PRCTL, CH_KILLED, CH_BAD };

/* Sizes the new thread asks for first: classes from the table and above
 * it, each already holding objects in partly used pages. */
static const size_t first_sizes[] = {8, 64, 200, 512, 1000, 3000};
#define NFIRST (sizeof(first_sizes) / sizeof(first_sizes[0]))

struct starter {
    int prctl_errno;
    atomic_int reached;
    atomic_int bad;
};

static void *strict_first_alloc(void *arg)
{
    struct starter *s = arg;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0) {
        s->prctl_errno = errno ? errno : -1;
        return NULL;
    }
    /* Strict mode: no stdio, no pthread_exit; malloc and free only. */
    for (size_t i = 0; i < NFIRST; i++) {
        unsigned char *p = malloc(first_sizes[i]);
        if (!p) {
            atomic_store(&s->bad, 1);
            break;
        }
        memset(p, 0x5a, first_sizes[i]);
        free(p);
    }
    atomic_store_explicit(&s->reached, 1, memory_order_seq_cst);
    syscall(SYS_exit, 0);
    return NULL;
}

static void *alloc_and_exit(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < NFIRST; i++)
        free(malloc(first_sizes[i]));
    return NULL;
}

/* exited: whether a thread allocates and exits before the strict one
 * starts (its cache is the one the strict thread's first get takes). */
static int child_main(int exited, int unused)
{
    (void)unused;
    /* Keep objects of every class out, so each class has a partly used
     * page and the strict thread's refills need no new page. */
    void *keep[NFIRST][4];
    for (size_t i = 0; i < NFIRST; i++)
        for (int j = 0; j < 4; j++)
            if (!(keep[i][j] = malloc(first_sizes[i])))
                return CH_SETUP;
    pthread_t t;
    if (exited) {
        if (pthread_create(&t, NULL, alloc_and_exit, NULL) != 0)
            return CH_SETUP;
        pthread_join(t, NULL);
    }
    struct starter s = {0};
    if (pthread_create(&t, NULL, strict_first_alloc, &s) != 0)
        return CH_SETUP;
    pthread_join(t, NULL);
    if (s.prctl_errno)
        return CH_PRCTL;
    if (!atomic_load(&s.reached))
        return CH_KILLED;
    if (atomic_load(&s.bad))
        return CH_BAD;
    for (size_t i = 0; i < NFIRST; i++)
        for (int j = 0; j < 4; j++)
            free(keep[i][j]);
    return CH_OK;
}

static const char *rc_text(int rc)
{
    switch (rc) {
    case CH_OK: return "ok";
    case CH_SETUP: return "setup failed";
    case CH_PRCTL: return "prctl(PR_SET_SECCOMP, STRICT) failed";
    case CH_KILLED: return "new thread killed: a system call before its "
                           "first allocations returned";
    case CH_BAD: return "an allocation failed";
    default: return "unknown exit code";
    }
}

static void run_child(int exited, int expect)
{
    if (TU_TSAN)
        cr_skip_test("TSan cannot join a thread that left by raw SYS_exit");
    mt_run_child(child_main, exited, 0, expect, rc_text);
}

Test(malloc_threadstart,
     first_allocations_of_a_new_thread_make_no_syscall_after_a_thread_exited)
{
    run_child(1, CH_OK);
}

/* The control: with no exited thread's cache to take, the first cache is
 * mapped, and the harness must see that call. */
Test(malloc_threadstart, harness_sees_the_mapping_of_a_first_thread_cache)
{
    run_child(0, CH_KILLED);
}

/* ---- threads by the thousand ------------------------------------------- */

enum { WAVE = 4, PER = 8 };
static void *box[WAVE][PER]; /* what the previous wave's thread left */

struct churn_arg {
    void **slot;
    uintptr_t seed;
    atomic_int *bad;
};

static size_t churn_size(int i) { return 16 + (size_t)i * 200; }

/* The fill pattern's seed of block j of thread i of wave w. */
static uintptr_t seed_of(uint64_t w, int i, int j)
{
    return (uintptr_t)((w * WAVE + (uint64_t)i) * PER + (uint64_t)j);
}

static void *churner(void *arg)
{
    struct churn_arg *a = arg;
    void *mine[PER];
    for (int i = 0; i < PER; i++) {
        mine[i] = malloc(churn_size(i));
        if (!mine[i]) {
            atomic_store(a->bad, 1);
            return NULL;
        }
        mt_fill(mine[i], churn_size(i), a->seed + (uintptr_t)i); /* seed_of */
    }
    for (int i = 0; i < PER; i++) {
        free(a->slot[i]); /* another thread's block, or NULL */
        a->slot[i] = mine[i];
    }
    return NULL;
}

static void *idle_main(void *arg) { return arg; }

/* Threads in waves of four, each allocating eight blocks (16 B to 1.4
 * KiB, small classes on both sides of the table) and freeing the eight
 * that a thread of the previous wave left: after the last join and the
 * last frees, every small object is back and the contents survived. */
Test(malloc_threadstart, thousands_of_short_lived_threads_lose_nothing)
{
    uint64_t waves = mt_scaled(500);
    /* glibc keeps a stopped thread's stack, with blocks it allocated for
     * it, for the next thread: one wave of idle threads first, so those
     * are counted in `before`. */
    pthread_t idle[WAVE];
    for (int i = 0; i < WAVE; i++)
        cr_assert_eq(pthread_create(&idle[i], NULL, idle_main, NULL), 0);
    for (int i = 0; i < WAVE; i++)
        pthread_join(idle[i], NULL);
    dp_malloc_stats_t before = mt_stats();
    atomic_int bad = 0;
    struct churn_arg args[WAVE];
    for (uint64_t w = 0; w < waves; w++) {
        pthread_t t[WAVE];
        for (int i = 0; i < WAVE; i++) {
            args[i] = (struct churn_arg){
                .slot = box[(i + w) % WAVE],
                .seed = seed_of(w, i, 0),
                .bad = &bad};
            /* The slot was filled by thread (i + 1) % WAVE of wave w - 1. */
            if (w > 0)
                for (int j = 0; j < PER; j++)
                    cr_assert_eq(mt_check(args[i].slot[j], churn_size(j),
                                          seed_of(w - 1, (i + 1) % WAVE, j)),
                                 churn_size(j), "wave %llu: block corrupted",
                                 (unsigned long long)w);
            cr_assert_eq(pthread_create(&t[i], NULL, churner, &args[i]), 0);
        }
        for (int i = 0; i < WAVE; i++)
            pthread_join(t[i], NULL);
        cr_assert_eq(atomic_load(&bad), 0, "malloc failed in a thread");
    }
    dp_malloc_stats_t mid = mt_stats();
    cr_assert_eq(mid.small_objs_inuse, before.small_objs_inuse + WAVE * PER,
                 "in use: %llu, expected %llu",
                 (unsigned long long)mid.small_objs_inuse,
                 (unsigned long long)(before.small_objs_inuse + WAVE * PER));
    for (int i = 0; i < WAVE; i++)
        for (int j = 0; j < PER; j++) {
            free(box[i][j]);
            box[i][j] = NULL;
        }
    dp_malloc_stats_t after = mt_stats();
    cr_assert_eq(after.small_objs_inuse, before.small_objs_inuse,
                 "objects lost: %llu in use, expected %llu",
                 (unsigned long long)after.small_objs_inuse,
                 (unsigned long long)before.small_objs_inuse);
    cr_assert_eq(after.put_provider_calls, 0);
}
