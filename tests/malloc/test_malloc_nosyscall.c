/*
 * test_malloc_nosyscall.c -- free() never blocks: it makes no system
 * call and takes no lock, for any size, from any thread and from a
 * signal handler.
 *
 * 1. Seccomp strict mode.
 * A thread that has called prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) may
 * only read, write, _exit and sigreturn; any other system call makes the
 * kernel kill that thread with SIGKILL.  The freeing thread enters strict
 * mode, frees small, medium and large blocks (up to 8 MiB, and enough
 * small ones to overflow its cache and empty pages), stores a flag and
 * leaves with a raw SYS_exit; pthread_join still works (the kernel clears
 * the tid word).  Once the blocks are freed by the thread that allocated
 * them, once by another thread.  Each size is asked for four times:
 * by malloc and at alignments of 128 bytes, a page and 64 KiB.  Some of
 * the large blocks come from the large-block cache (filled beforehand).  Every scenario runs in a forked
 * child that reports through its exit code; a negative control makes one
 * forbidden call to show the harness catches it.  Skipped under TSan,
 * whose runtime cannot join a thread that left by a raw SYS_exit.
 *
 * 2. Every lock held.  The program carries a private copy of the malloc
 * built with -DDP_TEST_HOOKS (tests/malloc/meson.build), whose
 * dp_test_lock_all() takes the malloc's locks and every lock of its core
 * (registry, pools, thread caches, reclaim thread), as the fork prepare
 * handlers do.  One thread holds them while two others free small,
 * medium and large blocks: a free() that took any lock would never
 * finish, and the watchdog would end the child.
 *
 * 3. Signal handlers.  A handler frees 48-byte blocks while the thread
 * it interrupted loops malloc/free on the same size class; nothing may
 * be lost or handed out twice.
 *
 * Every scenario runs in a forked child, whose only threads are its own
 * (so the statistics are exact), and reports through its exit code.
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

#include <signal.h>
#include <sched.h>

enum { CH_OK = 0, CH_SETUP = 10, CH_PRCTL, CH_KILLED, CH_BOOKS, CH_LOST,
       CH_DUP };

static const size_t sizes[] = {
    1,      8,      16,     100,     128,     129,     1000,   4096,
    5000,   16384,  40000,  65536,   65537,   100000,  1 << 20,
    3 << 20, 8 << 20,
};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
#define NSMALL 4000 /* 64-byte objects: overflow the bin, empty pages */
#define NBLK (NSIZES * 4 + NSMALL)
/* The alignment of each round of sizes (0: malloc). */
static const size_t align_of_round[4] = {0, 128, 4096, 65536};

/* Whether a block of round r, size i is a medium or large one. */
static int is_large(int r, size_t i, size_t small_max)
{
    return sizes[i] > small_max || align_of_round[r] > 4096;
}

struct strict {
    void **blk;
    int alloc_here;
    int forbidden;
    int prctl_errno;
    atomic_int reached;
};

static int alloc_all(void **blk)
{
    size_t k = 0;
    for (int r = 0; r < 4; r++)
        for (size_t i = 0; i < NSIZES; i++) {
            if (!align_of_round[r])
                blk[k] = malloc(sizes[i]);
            else if (posix_memalign(&blk[k], align_of_round[r], sizes[i]))
                blk[k] = NULL;
            if (!blk[k])
                return -1;
            memset(blk[k], 0x33, sizes[i] < 4096 ? sizes[i] : 4096);
            k++;
        }
    for (size_t i = 0; i < NSMALL; i++)
        if (!(blk[k++] = malloc(64)))
            return -1;
    return 0;
}

static void *strict_thread(void *arg)
{
    struct strict *s = arg;
    if (s->alloc_here && alloc_all(s->blk) != 0)
        return NULL;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0) {
        s->prctl_errno = errno ? errno : -1;
        return NULL;
    }
    /* Strict mode: no stdio, no pthread_exit, only free. */
    for (size_t i = 0; i < NBLK; i++)
        free(s->blk[i]);
    if (s->forbidden)
        syscall(SYS_getpid);
    atomic_store_explicit(&s->reached, 1, memory_order_seq_cst);
    syscall(SYS_exit, 0);
    return NULL;
}

static int child_main(int alloc_here, int forbidden)
{
    void **blk = calloc(NBLK, sizeof(void *));
    if (!blk)
        return CH_SETUP;
    struct strict s = {.blk = blk, .alloc_here = alloc_here,
                       .forbidden = forbidden};
    /* Fill the large-block cache, so that some of the blocks freed in
     * strict mode were reused from it (and some lost their tail). */
    dp_malloc_stats_t cold;
    dp_malloc_stats_get(&cold);
    size_t nlarge = 0;
    for (int r = 0; r < 4; r++)
        for (size_t i = 0; i < NSIZES; i++)
            nlarge += is_large(r, i, cold.small_max);
    void *warm[NSIZES];
    for (size_t i = 0; i < NSIZES; i++)
        if (!(warm[i] = malloc(sizes[i] > cold.small_max ? 2 * sizes[i] : 1)))
            return CH_SETUP;
    for (size_t i = 0; i < NSIZES; i++)
        free(warm[i]);
    dp_malloc_stats_get(&cold);
    if (!alloc_here && alloc_all(blk) != 0)
        return CH_SETUP;
    dp_malloc_stats_t before, after;
    dp_malloc_stats_get(&before);
    pthread_t t;
    if (pthread_create(&t, NULL, strict_thread, &s) != 0)
        return CH_SETUP;
    pthread_join(t, NULL);
    if (s.prctl_errno)
        return CH_PRCTL;
    if (!atomic_load(&s.reached))
        return CH_KILLED;
    dp_malloc_stats_get(&after);
    /* Every large block freed: none live (they may already be unmapped). */
    if (after.large_inuse != (alloc_here ? before.large_inuse
                                         : before.large_inuse - nlarge) ||
        after.put_provider_calls != 0 ||
        after.large_reused <= cold.large_reused)
        return CH_BOOKS;
    return CH_OK;
}

static const char *rc_text(int rc)
{
    switch (rc) {
    case CH_OK: return "ok";
    case CH_SETUP: return "setup failed";
    case CH_PRCTL: return "prctl(PR_SET_SECCOMP, STRICT) failed";
    case CH_KILLED: return "freeing thread killed: a forbidden system call";
    case CH_BOOKS: return "statistics do not add up";
    case CH_LOST: return "blocks lost: still counted in use after every free";
    case CH_DUP: return "a block handed out twice while live";
    default: return "unknown exit code";
    }
}

static void run(int alloc_here, int forbidden, int expect)
{
    if (TU_TSAN)
        cr_skip_test("TSan cannot join a thread that left by raw SYS_exit");
    mt_run_child(child_main, alloc_here, forbidden, expect, rc_text);
}

Test(malloc_nosyscall, free_in_the_allocating_thread_makes_no_syscall)
{
    run(1, 0, CH_OK);
}

Test(malloc_nosyscall, free_in_another_thread_makes_no_syscall)
{
    run(0, 0, CH_OK);
}

Test(malloc_nosyscall, harness_catches_a_forbidden_syscall)
{
    run(0, 1, CH_KILLED);
}

/* ============================================== every lock held */

void dp_test_lock_all(void);
void dp_test_unlock_all(void);

#define NL_NSMALL 3000 /* 64-byte blocks per freeing thread */
#define NL_NBLK (NSIZES * 2 + NL_NSMALL)

struct nl_thread {
    void *blk[NL_NBLK];
    int alloc_here;    /* allocate the blocks itself               */
    tu_gate_t start;      /* allocate (if alloc_here), then wait for go */
    tu_gate_t ready;      /* its blocks are allocated                  */
    tu_gate_t *go;
    tu_gate_t done;       /* its frees are done                        */
    tu_gate_t *leave;     /* exit once this opens                      */
    int failed;
};

static int nl_alloc(void **blk)
{
    size_t k = 0;
    for (int r = 0; r < 2; r++)
        for (size_t i = 0; i < NSIZES; i++) {
            if (!(blk[k] = malloc(sizes[i])))
                return -1;
            memset(blk[k], 0x5c, sizes[i] < 4096 ? sizes[i] : 4096);
            k++;
        }
    for (size_t i = 0; i < NL_NSMALL; i++)
        if (!(blk[k++] = malloc(64)))
            return -1;
    return 0;
}

static void *nl_freer(void *arg)
{
    struct nl_thread *t = arg;
    tu_gate_wait(&t->start);
    if (t->alloc_here)
        t->failed = nl_alloc(t->blk) != 0;
    tu_gate_open(&t->ready);
    tu_gate_wait(t->go);
    for (size_t i = 0; i < NL_NBLK; i++)
        free(t->blk[i]);
    tu_gate_open(&t->done);
    /* Thread exit may take locks (the cache list): after the unlock. */
    tu_gate_wait(t->leave);
    return NULL;
}

struct nl_locker {
    tu_gate_t lock;   /* take every lock once this opens */
    tu_gate_t locked;
    tu_gate_t unlock;
};

static void *nl_locker(void *arg)
{
    struct nl_locker *l = arg;
    tu_gate_wait(&l->lock);
    dp_test_lock_all();
    tu_gate_open(&l->locked);
    tu_gate_wait(&l->unlock);
    dp_test_unlock_all();
    return NULL;
}

static int nolock_child(int a, int b)
{
    (void)a;
    (void)b;
    tu_watchdog(60, "setting up the threads and blocks");
    static struct nl_thread t[2];
    static struct nl_locker l = {TU_GATE_INIT, TU_GATE_INIT, TU_GATE_INIT};
    static tu_gate_t go = TU_GATE_INIT, leave = TU_GATE_INIT;
    pthread_t tid[2], lt;
    /* Every thread first: creating one allocates. */
    for (int i = 0; i < 2; i++) {
        t[i] = (struct nl_thread){.alloc_here = i == 0, .start = TU_GATE_INIT,
                                  .ready = TU_GATE_INIT, .go = &go,
                                  .done = TU_GATE_INIT, .leave = &leave};
        if (pthread_create(&tid[i], NULL, nl_freer, &t[i]) != 0)
            return CH_SETUP;
    }
    if (pthread_create(&lt, NULL, nl_locker, &l) != 0)
        return CH_SETUP;
    dp_malloc_stats_t before, after;
    dp_malloc_stats_get(&before);
    /* One thread frees what it allocated itself (its cache and its own
     * thread list), the other what this thread allocated. */
    if (nl_alloc(t[1].blk) != 0)
        return CH_SETUP;
    for (int i = 0; i < 2; i++) {
        tu_gate_open(&t[i].start);
        tu_gate_wait(&t[i].ready);
        if (t[i].failed)
            return CH_SETUP;
    }
    tu_gate_open(&l.lock);
    tu_gate_wait(&l.locked);
    tu_watchdog(10, "free() while another thread holds every lock of the "
                    "malloc and of its core (free takes a lock)");
    tu_gate_open(&go);
    for (int i = 0; i < 2; i++)
        tu_gate_wait(&t[i].done);
    tu_watchdog(60, "unlocking and the closing checks");
    tu_gate_open(&l.unlock);
    pthread_join(lt, NULL);
    dp_malloc_stats_get(&after);
    int rc = CH_OK;
    if (after.small_objs_inuse != before.small_objs_inuse ||
        after.large_inuse != before.large_inuse)
        rc = CH_LOST;
    else if (after.put_provider_calls != 0)
        rc = CH_BOOKS;
    tu_gate_open(&leave);
    for (int i = 0; i < 2; i++)
        pthread_join(tid[i], NULL);
    return rc;
}

Test(malloc_nosyscall, free_of_every_size_finishes_while_another_thread_holds_every_lock)
{
    mt_run_child(nolock_child, 0, 0, CH_OK, rc_text);
}

/* ==================================================== signal handlers */

/*
 * Another thread sends SIGUSR1, one at a time, each once the previous
 * one was handled, until the handler has freed every one of its blocks;
 * meanwhile the interrupted thread loops malloc/free on their size
 * class.  Every live block carries a stamp: a malloc that returns one
 * still stamped is a duplicate.  At the end, the blocks in use are what
 * they were before: none lost in a thread cache.
 */
#define SIG_FREES 20000
#define SIG_SIZE 48
#define SIG_LIVE 0x4c495645u /* "LIVE" */
#define SIG_HELD 8
/* Blocks the handler frees per signal: each signal costs a scheduling
 * round trip between the two threads, which on a loaded 2-CPU machine
 * can take milliseconds, so the count of signals bounds the run. */
#define SIG_BATCH 16

static struct {
    void **blk;
    size_t n;
    atomic_size_t next;
    atomic_size_t handled;
    atomic_int done;
    pthread_t target;
    tu_gate_t start;
} sg = {.start = TU_GATE_INIT};

static uint32_t *stamp(void *o) { return (uint32_t *)((char *)o + 16); }

static void free_handler(int signo)
{
    (void)signo;
    int saved = errno;
    size_t i = atomic_load_explicit(&sg.next, memory_order_relaxed);
    for (int b = 0; b < SIG_BATCH && i < sg.n; b++, i++) {
        *stamp(sg.blk[i]) = 0;
        free(sg.blk[i]);
        atomic_store_explicit(&sg.next, i + 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&sg.handled, 1, memory_order_release);
    errno = saved;
}

static void *sig_kicker(void *arg)
{
    (void)arg;
    tu_gate_wait(&sg.start);
    while (atomic_load_explicit(&sg.next, memory_order_relaxed) < sg.n) {
        size_t h = atomic_load_explicit(&sg.handled, memory_order_acquire);
        if (pthread_kill(sg.target, SIGUSR1) != 0)
            break;
        while (atomic_load_explicit(&sg.handled, memory_order_acquire) == h)
            sched_yield();
        /* A handler that never returns (it took a lock its thread
         * holds) shows here: fail within seconds. */
        if (h % 256 == 0)
            tu_watchdog(10, "the signal handler's free to return (it may "
                            "wait for a lock its own thread holds)");
    }
    atomic_store(&sg.done, 1);
    return NULL;
}

static int signal_child(int a, int b)
{
    (void)a;
    (void)b;
    tu_watchdog(60, "the signal-handler free loop");
    sg.n = mt_scaled(SIG_FREES);
    sg.target = pthread_self();
    pthread_t kt;
    if (pthread_create(&kt, NULL, sig_kicker, NULL) != 0)
        return CH_SETUP;
    /* The handler's array, and every block of the loop's class touched
     * once, before the baseline. */
    sg.blk = calloc(sg.n, sizeof(void *));
    if (!sg.blk)
        return CH_SETUP;
    dp_malloc_stats_t before, after;
    dp_malloc_stats_get(&before);
    for (size_t i = 0; i < sg.n; i++) {
        if (!(sg.blk[i] = malloc(SIG_SIZE)))
            return CH_SETUP;
        *stamp(sg.blk[i]) = SIG_LIVE;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = free_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        return CH_SETUP;
    tu_gate_open(&sg.start);
    size_t dups = 0, rounds = 0;
    void *held[SIG_HELD];
    while (!atomic_load_explicit(&sg.done, memory_order_relaxed)) {
        for (int j = 0; j < SIG_HELD; j++) {
            void *o = malloc(SIG_SIZE);
            if (!o)
                return CH_SETUP;
            held[j] = o;
            dups += *stamp(o) == SIG_LIVE;
            *stamp(o) = SIG_LIVE;
        }
        for (int j = 0; j < SIG_HELD; j++) {
            *stamp(held[j]) = 0;
            free(held[j]);
        }
        if (++rounds % 64 == 0)
            dp_malloc_thread_flush();
    }
    pthread_join(kt, NULL);
    signal(SIGUSR1, SIG_DFL);
    tu_watchdog(60, "the closing checks");
    if (atomic_load(&sg.next) != sg.n)
        return CH_SETUP;
    if (dups)
        return CH_DUP;
    dp_malloc_stats_get(&after);
    if (after.small_objs_inuse != before.small_objs_inuse)
        return CH_LOST;
    free(sg.blk);
    return CH_OK;
}

Test(malloc_nosyscall, frees_from_a_signal_handler_interrupting_malloc_and_free_lose_nothing)
{
    mt_run_child(signal_child, 0, 0, CH_OK, rc_text);
}
