/*
 * test_put_nonblocking.c -- dp_pool_put() never blocks, never makes a
 * system call and never calls the provider.
 *
 * Two kinds of evidence:
 *
 *  1. Seccomp strict mode.  A thread that has called
 *     prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) may only read, write,
 *     _exit and sigreturn; any other system call makes the kernel kill
 *     that thread (not the process) with SIGKILL.  The putting thread
 *     enters strict mode, puts every object (emptying every page), sets a
 *     flag and leaves with a raw SYS_exit.  The flag proves no forbidden
 *     system call happened.  pthread_join still works on such a thread:
 *     the kernel clears its tid word (CLONE_CHILD_CLEARTID) and wakes the
 *     futex whichever way the thread ended.  Each scenario runs in a
 *     forked child so the test process stays clean, and the child reports
 *     through its exit code.  A negative control makes one forbidden call
 *     to show that the harness does catch them.  Skipped under TSan,
 *     whose runtime cannot join a thread that left by a raw SYS_exit.
 *
 *  2. Gated provider.  The mock's free (or alloc) gate is closed so that a
 *     DP_WAITOK get, the reclaim thread, dp_reclaim_step() or
 *     dp_pool_reclaim() is stuck inside the provider; four threads then
 *     put (emptying pages) and make DP_NOWAIT gets, and must all finish
 *     while the gate is still closed.
 *
 *  3. Page faults.  A fault on memory never touched allocates a page, and
 *     the kernel may sleep to find one.  The putting thread's minor
 *     faults (getrusage RUSAGE_THREAD) across puts of objects it got and
 *     touched must be zero: the thread cache's slot areas and magazines
 *     are faulted in by the gets' slow paths.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include "testutil.h"

#include <linux/seccomp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define OBJSIZE 64
#define STRICT_NOBJS 100000 /* not scaled: cheap, and the number is the point */

TestSuite(put_nonblocking, .timeout = 240, .init = tu_watchdog_init);

/* ====================================================== seccomp harness */

/* What the child reports.  Only CH_OK means the scenario held. */
enum child_rc {
    CH_OK = 0,
    CH_SETUP = 10,    /* creating the pool or getting the objects failed */
    CH_PRCTL = 11,    /* could not enter strict mode                     */
    CH_KILLED = 12,   /* the putting thread never reached its flag       */
    CH_INUSE = 13,    /* objects still counted out after the puts        */
    CH_NOT_EMPTY = 14,/* some page not empty after every object came back */
    CH_PROVIDER = 15, /* a provider call happened during the puts        */
    CH_BOOKS = 16,    /* gets/puts do not add up                         */
    CH_DESTROY = 17,  /* destroy did not give every page back            */
};

static const char *rc_text(int rc)
{
    switch (rc) {
    case CH_OK: return "ok";
    case CH_SETUP: return "setup failed (pool or gets)";
    case CH_PRCTL: return "prctl(PR_SET_SECCOMP, STRICT) failed";
    case CH_KILLED: return "putting thread killed: it made a forbidden syscall";
    case CH_INUSE: return "objs_inuse != 0 after all puts";
    case CH_NOT_EMPTY: return "pages_empty != pages after all puts";
    case CH_PROVIDER: return "provider called during the puts";
    case CH_BOOKS: return "gets/puts counts do not match";
    case CH_DESTROY: return "destroy did not return every page";
    default: return "unknown child exit code";
    }
}

enum who_puts {
    PUT_SAME_THREAD,      /* the thread that got the objects puts them  */
    PUT_FRESH_GETTER_LIVE,/* another thread, while the getter lives on  */
    PUT_FRESH_GETTER_GONE,/* another thread, after the getter exited    */
};

struct scenario {
    enum who_puts who;
    bool mmap_provider; /* default provider instead of the mock        */
    unsigned pool_flags;/* extra DP_POOL_* flags                       */
    bool forbidden;     /* negative control: one forbidden syscall     */
    bool full_depot;    /* 4 KiB objects, one put-get cycle first: the
                           puts shed magazines until the depot is full,
                           then flush to the pages                     */
};

/* The full-depot scenario: 24 MiB of 4 KiB objects, where the depot holds
 * at most 16 MiB (lib/depot.c). */
#define DEPOT_OBJSIZE 4096
#define DEPOT_NOBJS 6000

struct strict {
    dp_pool_t *pool;
    void **objs;
    size_t n, objsize;
    bool do_gets;
    bool warm;          /* put and get everything once before strict mode */
    bool forbidden;
    size_t got;
    int prctl_errno;
    atomic_int reached; /* stored last, right before SYS_exit */
};

static size_t get_all(dp_pool_t *pool, void **objs, size_t n, size_t objsize)
{
    size_t i;
    for (i = 0; i < n; i++) {
        void *o = dp_pool_get(pool, DP_WAITOK);
        if (!o)
            break;
        memset(o, 0xa5, objsize);
        objs[i] = o;
    }
    return i;
}

static void *strict_thread(void *arg)
{
    struct strict *s = arg;
    if (s->do_gets &&
        (s->got = get_all(s->pool, s->objs, s->n, s->objsize)) != s->n)
        return NULL;
    if (s->warm) {
        /* The puts ask for magazines, the gets' refills make them. */
        for (size_t i = 0; i < s->n; i++)
            dp_pool_put(s->pool, s->objs[i]);
        if ((s->got = get_all(s->pool, s->objs, s->n, s->objsize)) != s->n)
            return NULL;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0) {
        s->prctl_errno = errno ? errno : -1;
        return NULL;
    }
    /* Strict mode from here on: read, write, _exit, sigreturn only.  No
     * stdio, no malloc, no pthread_exit (it would unmap/madvise). */
    for (size_t i = 0; i < s->n; i++)
        dp_pool_put(s->pool, s->objs[i]);
    /* Documented as safe wherever a put is: move this thread's cached
     * objects back to their pages so every page really empties. */
    dp_thread_cache_flush();
    if (s->forbidden)
        syscall(SYS_getpid);
    atomic_store_explicit(&s->reached, 1, memory_order_seq_cst);
    syscall(SYS_exit, 0);
    return NULL; /* not reached */
}

struct getter {
    dp_pool_t *pool;
    void **objs;
    size_t n, got;
    tu_gate_t got_all; /* opened by the getter when its gets are done */
    tu_gate_t release; /* the getter exits once this opens            */
};

static void *getter_thread(void *arg)
{
    struct getter *g = arg;
    g->got = get_all(g->pool, g->objs, g->n, OBJSIZE);
    tu_gate_open(&g->got_all);
    tu_gate_wait(&g->release);
    return NULL; /* normal exit: its thread cache is flushed */
}

/* Runs in the forked child; returns its exit code. */
static int child_main(struct scenario sc)
{
    dp_mock_t *m = NULL;
    if (!sc.mmap_provider && !(m = dp_mock_create(0)))
        return CH_SETUP;
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.provider = m ? dp_mock_provider(m) : NULL;
    a.flags = DP_POOL_NOTHREAD | sc.pool_flags;
    a.pagesize = sc.full_depot ? 65536 : 4096;
    size_t objsize = sc.full_depot ? DEPOT_OBJSIZE : OBJSIZE;
    size_t nobjs = sc.full_depot ? DEPOT_NOBJS : STRICT_NOBJS;
    dp_pool_t *pool = dp_pool_create("strict", objsize, &a);
    /* Allocate everything the putting thread needs before strict mode. */
    void **objs = calloc(nobjs, sizeof(void *));
    if (!pool || !objs)
        return CH_SETUP;

    struct strict s = {.pool = pool, .objs = objs, .n = nobjs,
                       .objsize = objsize, .warm = sc.full_depot,
                       .forbidden = sc.forbidden};
    struct getter g = {.pool = pool, .objs = objs, .n = STRICT_NOBJS,
                       .got_all = TU_GATE_INIT, .release = TU_GATE_INIT};
    pthread_t st, gt;

    if (sc.who == PUT_SAME_THREAD) {
        s.do_gets = true;
        if (pthread_create(&st, NULL, strict_thread, &s) != 0)
            return CH_SETUP;
        pthread_join(st, NULL);
        if (s.got != s.n)
            return CH_SETUP;
    } else {
        if (pthread_create(&gt, NULL, getter_thread, &g) != 0)
            return CH_SETUP;
        tu_gate_wait(&g.got_all);
        if (g.got != g.n)
            return CH_SETUP;
        if (sc.who == PUT_FRESH_GETTER_GONE) {
            tu_gate_open(&g.release);
            pthread_join(gt, NULL);
        }
        /* The strict thread is the last thread this child creates (ASan
         * cannot start a thread after one that left by SYS_exit). */
        if (pthread_create(&st, NULL, strict_thread, &s) != 0)
            return CH_SETUP;
        pthread_join(st, NULL);
        if (sc.who == PUT_FRESH_GETTER_LIVE) {
            tu_gate_open(&g.release);
            pthread_join(gt, NULL);
        }
    }
    if (s.prctl_errno)
        return CH_PRCTL;
    if (!atomic_load_explicit(&s.reached, memory_order_seq_cst))
        return CH_KILLED;

    dp_pool_stats_t ps;
    if (dp_pool_stats(pool, &ps) != 0)
        return CH_SETUP;
    if (ps.objs_inuse != 0)
        return CH_INUSE;
    if (ps.pages == 0 || ps.pages_empty != ps.pages)
        return CH_NOT_EMPTY;
    if (ps.put_provider_calls != 0 || ps.pages_freed != 0)
        return CH_PROVIDER;
    uint64_t rounds = sc.full_depot ? 2 : 1;
    if (ps.gets != rounds * nobjs || ps.puts != rounds * nobjs ||
        ps.pages * ps.objs_per_page < nobjs)
        return CH_BOOKS;
    if (m) {
        dp_mock_counters_t c;
        dp_mock_counters(m, &c);
        if (c.free_calls != 0)
            return CH_PROVIDER;
        if (c.allocs != ps.pages_alloc)
            return CH_BOOKS;
    }
    if (dp_pool_destroy(pool) != 0)
        return CH_DESTROY;
    if (m) {
        dp_mock_counters_t c;
        dp_mock_counters(m, &c);
        if (c.allocs != c.frees || c.pages_out != 0)
            return CH_DESTROY;
        dp_mock_destroy(m);
    }
    free(objs);
    return CH_OK;
}

static void run_in_child(struct scenario sc, int expect)
{
    if (TU_TSAN)
        cr_skip_test("TSan cannot join a thread that left by raw SYS_exit");
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0)
        _exit(child_main(sc)); /* _exit: no atexit/LSan in the child */
    tu_watchdog_child(pid);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    cr_assert(WIFEXITED(st), "child died of signal %d (the main thread must "
              "survive to report)", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), expect, "child: %s (expected: %s)",
                 rc_text(WEXITSTATUS(st)), rc_text(expect));
}

Test(put_nonblocking, put_emptying_every_page_from_the_getting_thread_makes_no_syscall)
{
    run_in_child((struct scenario){.who = PUT_SAME_THREAD}, CH_OK);
}

Test(put_nonblocking, put_emptying_every_page_makes_no_syscall_with_mmap_provider_and_no_cache)
{
    run_in_child((struct scenario){.who = PUT_SAME_THREAD,
                                   .mmap_provider = true,
                                   .pool_flags = DP_POOL_NOCACHE},
                 CH_OK);
}

/* Puts that shed magazines into the depot until it is full, and then
 * flush to the pages; the flush after them drains the depot. */
Test(put_nonblocking, puts_into_a_filling_and_then_full_depot_make_no_syscall)
{
    run_in_child((struct scenario){.who = PUT_SAME_THREAD,
                                   .full_depot = true},
                 CH_OK);
}

Test(put_nonblocking, put_from_a_thread_that_never_used_the_pool_makes_no_syscall_while_getter_lives)
{
    run_in_child((struct scenario){.who = PUT_FRESH_GETTER_LIVE}, CH_OK);
}

Test(put_nonblocking, put_from_a_thread_that_never_used_the_pool_makes_no_syscall_after_getter_exited)
{
    run_in_child((struct scenario){.who = PUT_FRESH_GETTER_GONE}, CH_OK);
}

/* A debug pool with every check and the audit record: the put checks
 * the page map, the redzones and the out bitmap, captures its stack with
 * backtrace() (made ready at create) and writes the junk, all without a
 * system call. */
Test(put_nonblocking, debug_audit_pool_puts_make_no_syscall)
{
    run_in_child((struct scenario){.who = PUT_FRESH_GETTER_LIVE,
                                   .pool_flags = DP_POOL_DEBUG |
                                                 DP_POOL_AUDIT},
                 CH_OK);
}

/* The harness can fail: one forbidden system call after the same puts and
 * the thread is killed before its flag, while the child's main thread
 * lives on to report it. */
Test(put_nonblocking, strict_mode_harness_detects_a_forbidden_syscall)
{
    run_in_child((struct scenario){.who = PUT_SAME_THREAD, .forbidden = true},
                 CH_KILLED);
}

/* ==================================================== gated provider */

#define NPUTTERS 4
#define PUT_PAGES 16     /* pages' worth of objects each putter puts back */
#define EMPTY_PAGES 8    /* empty pages made before the gate closes       */
#define BUDGET 4

enum blocker {
    BLK_GET_FREE,     /* DP_WAITOK get handing pages back: stuck in free  */
    BLK_GET_ALLOC,    /* DP_WAITOK get needing a page: stuck in alloc     */
    BLK_THREAD,       /* the reclaim thread: stuck in free                */
    BLK_STEP,         /* dp_reclaim_step() on a helper: stuck in free     */
    BLK_POOL_RECLAIM, /* dp_pool_reclaim() on a helper: stuck in free     */
};

struct blocked {
    dp_pool_t *pool;
    enum blocker how;
    void *obj;
    size_t returned;
    atomic_int done;
};

static void *blocked_thread(void *arg)
{
    struct blocked *b = arg;
    switch (b->how) {
    case BLK_GET_FREE:
    case BLK_GET_ALLOC:
        b->obj = dp_pool_get(b->pool, DP_WAITOK);
        break;
    case BLK_STEP:
        b->returned = dp_reclaim_step();
        break;
    case BLK_POOL_RECLAIM:
        b->returned = dp_pool_reclaim(b->pool);
        break;
    case BLK_THREAD:
        break;
    }
    atomic_store(&b->done, 1);
    return NULL;
}

struct putter {
    dp_pool_t *pool;
    void **objs;
    size_t n;
    size_t rounds;
    pthread_barrier_t *start;
    size_t nowait_null;
};

/* Put back every object (emptying pages), then churn DP_NOWAIT get/put:
 * none of it may wait for the stuck provider call. */
static void *putter_thread(void *arg)
{
    struct putter *p = arg;
    pthread_barrier_wait(p->start);
    for (size_t i = 0; i < p->n; i++)
        dp_pool_put(p->pool, p->objs[i]);
    for (size_t r = 0; r < p->rounds; r++) {
        void *o = dp_pool_get(p->pool, DP_NOWAIT);
        if (!o) {
            p->nowait_null++;
            continue;
        }
        memset(o, (int)r, OBJSIZE);
        dp_pool_put(p->pool, o);
    }
    return NULL;
}

static void run_gated(enum blocker how, unsigned pool_flags)
{
    const int gate = how == BLK_GET_ALLOC ? DP_MOCK_ALLOC : DP_MOCK_FREE;
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.flags |= pool_flags;
    a.lowat = 0;
    /* hiwat 0: every empty page is due at once (a WAITOK get hands back up
     * to BUDGET).  The reclaim thread and dp_reclaim_step must find them
     * due by age instead, so they only start when the test moves the
     * clock. */
    a.hiwat = (how == BLK_GET_FREE) ? 0 : 1000;
    a.reclaim_age_ns = 1000000000ull;
    a.reclaim_budget = BUDGET;
    dp_pool_t *pool = tu_pool("gated", OBJSIZE, &a);
    size_t opp = tu_stats(pool).objs_per_page;
    cr_assert_gt(opp, 1);

    /* The putters' objects. */
    size_t per = PUT_PAGES * opp;
    void **objs = calloc(NPUTTERS * per, sizeof(void *));
    cr_assert_not_null(objs);
    for (size_t i = 0; i < NPUTTERS * per; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));

    /* Extra objects held until the end (alloc mode: take every free one,
     * so the blocked get must ask the provider for a page). */
    size_t nextra = 0, extra_cap = 4 * opp;
    void **extra = calloc(extra_cap, sizeof(void *));
    cr_assert_not_null(extra);
    if (how == BLK_GET_ALLOC) {
        for (;;) {
            dp_thread_cache_flush();
            dp_pool_stats_t s = tu_stats(pool);
            if (s.objs_free == 0)
                break;
            cr_assert_leq(nextra + s.objs_free, extra_cap);
            for (uint64_t i = 0; i < s.objs_free; i++)
                cr_assert_not_null(extra[nextra++] =
                                       dp_pool_get(pool, DP_NOWAIT));
        }
        cr_assert_eq(tu_stats(pool).pages_empty, 0);
    } else {
        /* Pages that empty now, before the gate closes. */
        void **e = calloc(EMPTY_PAGES * opp, sizeof(void *));
        cr_assert_not_null(e);
        for (size_t i = 0; i < EMPTY_PAGES * opp; i++)
            cr_assert_not_null(e[i] = dp_pool_get(pool, DP_WAITOK));
        for (size_t i = 0; i < EMPTY_PAGES * opp; i++)
            dp_pool_put(pool, e[i]);
        free(e);
        dp_thread_cache_flush();
        cr_assert_geq(tu_stats(pool).pages_empty, EMPTY_PAGES - 1);
    }
    cr_assert_eq(tu_counters(m).free_calls, 0, "setup already freed pages");

    /* Get something stuck inside the provider. */
    dp_mock_gate_close(m, gate);
    struct blocked b = {.pool = pool, .how = how};
    pthread_t bt;
    if (how == BLK_THREAD) {
        cr_assert_eq(dp_reclaim_start(), 0);
        dp_mock_clock_advance(m, 2 * a.reclaim_age_ns);
        dp_reclaim_wake();
    } else {
        if (how == BLK_STEP)
            dp_mock_clock_advance(m, 2 * a.reclaim_age_ns);
        cr_assert_eq(pthread_create(&bt, NULL, blocked_thread, &b), 0);
    }
    dp_mock_gate_wait(m, gate, 1);

    /* The pool lock is not held across the provider call. */
    dp_pool_stats_t mid = tu_stats(pool);
    cr_assert_geq(mid.pages_pending, 1, "the stuck call is not accounted");

    /* Four putters, all while the provider stays stuck. */
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, NPUTTERS);
    struct putter pt[NPUTTERS];
    pthread_t tid[NPUTTERS];
    for (int i = 0; i < NPUTTERS; i++) {
        pt[i] = (struct putter){.pool = pool, .objs = objs + i * per,
                                .n = per, .rounds = tu_scaled(20000),
                                .start = &start};
        cr_assert_eq(pthread_create(&tid[i], NULL, putter_thread, &pt[i]), 0);
    }
    for (int i = 0; i < NPUTTERS; i++) {
        pthread_join(tid[i], NULL);
        cr_assert_eq(pt[i].nowait_null, 0,
                     "putter %d: DP_NOWAIT get failed %zu times", i,
                     pt[i].nowait_null);
    }
    pthread_barrier_destroy(&start);

    /* Every putter finished and the provider call is still stuck. */
    dp_mock_counters_t c = tu_counters(m);
    if (gate == DP_MOCK_FREE) {
        cr_assert_eq(c.blocked_free, 1, "the free is no longer at the gate");
        cr_assert_eq(c.frees, 0);
    } else {
        cr_assert_eq(c.blocked_alloc, 1, "the alloc is no longer at the gate");
    }
    if (how != BLK_THREAD)
        cr_assert_eq(atomic_load(&b.done), 0);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.put_provider_calls, 0);
    cr_assert_eq(s.objs_inuse, mid.objs_inuse - NPUTTERS * per,
                 "the putters' objects are not all back");
    cr_assert_geq(s.pages_empty, 1, "the putters emptied no page");

    /* Let it through and wait for it. */
    dp_mock_gate_open(m, gate);
    if (how == BLK_THREAD) {
        cr_assert_eq(dp_reclaim_sync(), 0);
        dp_reclaim_info_t ri;
        dp_reclaim_info(&ri);
        cr_assert_geq(ri.pages_returned, 1);
        dp_reclaim_stop();
    } else {
        pthread_join(bt, NULL);
    }
    s = tu_stats(pool);
    switch (how) {
    case BLK_GET_FREE:
        cr_assert_not_null(b.obj);
        dp_pool_put(pool, b.obj);
        cr_assert_geq(s.pages_freed, 1);
        cr_assert_leq(s.pages_freed, BUDGET, "one WAITOK get returned %llu "
                      "pages, budget %d", (unsigned long long)s.pages_freed,
                      BUDGET);
        break;
    case BLK_GET_ALLOC:
        cr_assert_not_null(b.obj);
        dp_pool_put(pool, b.obj);
        cr_assert_eq(s.pages_freed, 0);
        break;
    case BLK_STEP:
    case BLK_POOL_RECLAIM:
        cr_assert_geq(b.returned, 1);
        cr_assert_eq(b.returned, s.pages_freed);
        break;
    case BLK_THREAD:
        cr_assert_geq(s.pages_freed, 1);
        break;
    }
    for (size_t i = 0; i < nextra; i++)
        dp_pool_put(pool, extra[i]);
    cr_assert_eq(tu_stats(pool).gets_failed, 0);
    free(extra);
    free(objs);
    tu_destroy_checked(pool, m);
}

Test(put_nonblocking, putters_finish_while_a_waitok_get_is_stuck_in_provider_free)
{
    run_gated(BLK_GET_FREE, 0);
}

Test(put_nonblocking, uncached_putters_finish_while_a_waitok_get_is_stuck_in_provider_free)
{
    run_gated(BLK_GET_FREE, DP_POOL_NOCACHE);
}

Test(put_nonblocking, putters_finish_while_a_waitok_get_is_stuck_in_provider_alloc)
{
    run_gated(BLK_GET_ALLOC, 0);
}

Test(put_nonblocking, putters_finish_while_the_reclaim_thread_is_stuck_in_provider_free)
{
    run_gated(BLK_THREAD, 0);
}

Test(put_nonblocking, putters_finish_while_dp_reclaim_step_is_stuck_in_provider_free)
{
    run_gated(BLK_STEP, 0);
}

Test(put_nonblocking, putters_finish_while_dp_pool_reclaim_is_stuck_in_provider_free)
{
    run_gated(BLK_POOL_RECLAIM, 0);
}

/* ============================================ every library lock held */

/*
 * The test program carries a private copy of the library built with
 * -DDP_TEST_HOOKS (tests/meson.build), whose dp_test_lock_all() takes
 * every deferpool lock in the lock order -- the registry, every pool's
 * lock, the thread-cache list, the reclaim thread's -- as the fork
 * prepare handler does.  One thread holds them all while others put:
 * a put or a cache flush that took any of them would never finish, and
 * the watchdog would fail the test.
 */
void dp_test_lock_all(void);
void dp_test_unlock_all(void);
/* The pool's lock and the cache lock only: lock_all's fork claims would
 * keep every put off the caches, so the depot variant takes these. */
void dp_test_lock_pool(dp_pool_t *p);
void dp_test_unlock_pool(dp_pool_t *p);

struct locker {
    tu_gate_t locked;  /* opened once every lock is held */
    tu_gate_t release; /* the locker unlocks once this opens */
    dp_pool_t *pool;   /* set: only this pool's lock and the cache lock */
};

static void *locker_thread(void *arg)
{
    struct locker *l = arg;
    if (l->pool)
        dp_test_lock_pool(l->pool);
    else
        dp_test_lock_all();
    tu_gate_open(&l->locked);
    tu_gate_wait(&l->release);
    if (l->pool)
        dp_test_unlock_pool(l->pool);
    else
        dp_test_unlock_all();
    return NULL;
}

#define NOLOCK_PAGES 32 /* pages' worth of objects each putter puts */

struct nolock_putter {
    dp_pool_t *pool;
    void **objs;
    size_t n;
    bool get_first;      /* get the objects itself (its cache is bound) */
    bool warm;           /* and put and get them once more first       */
    tu_gate_t got;       /* opened when its gets are done               */
    tu_gate_t *go;       /* puts start once this opens                  */
    tu_gate_t done;      /* opened when its puts and flush are done     */
    atomic_size_t put;   /* puts completed                              */
};

static void *nolock_putter_thread(void *arg)
{
    struct nolock_putter *p = arg;
    for (int round = 0; round < (p->warm ? 2 : 1) && p->get_first; round++) {
        if (round)
            for (size_t i = 0; i < p->n; i++)
                dp_pool_put(p->pool, p->objs[i]);
        for (size_t i = 0; i < p->n; i++)
            if (!(p->objs[i] = dp_pool_get(p->pool, DP_WAITOK)))
                break;
    }
    tu_gate_open(&p->got);
    tu_gate_wait(p->go);
    for (size_t i = 0; i < p->n; i++) {
        dp_pool_put(p->pool, p->objs[i]);
        atomic_store_explicit(&p->put, i + 1, memory_order_relaxed);
    }
    /* Documented as safe wherever a put is. */
    dp_thread_cache_flush();
    tu_gate_open(&p->done);
    return NULL; /* thread exit takes the cache lock: after the unlock */
}

/* full_depot: 4 KiB objects, more than the depot holds, and putter 0
 * puts and gets them once more first, so that its refills make
 * magazines; the locker holds the pool's lock and the cache lock (not
 * the fork's claims, which would keep the puts off the caches): the
 * puts shed magazines into the depot until it is full and then flush to
 * the pages, and the other putter's bin takes its empty magazines from
 * the depot. */
static void run_nolock_depot(unsigned pool_flags, bool reclaim_thread,
                             bool full_depot)
{
    tu_watchdog(30, "setting up the pool and the putters");
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.flags |= pool_flags;
    a.lowat = 0;
    a.hiwat = 0; /* every empty page is due at once */
    if (full_depot)
        a.pagesize = 65536;
    dp_pool_t *pool = tu_pool("nolock", full_depot ? DEPOT_OBJSIZE : OBJSIZE,
                              &a);
    if (reclaim_thread)
        cr_assert_eq(dp_reclaim_start(), 0);
    size_t n = full_depot ? DEPOT_NOBJS
                          : NOLOCK_PAGES * tu_stats(pool).objs_per_page;

    /* Two putters: one puts what it got itself (through its cache: the
     * bin overflows, flushes return runs, pages empty and are pushed on
     * the pending queue), one puts what this thread got (a thread that
     * never used the pool). */
    tu_gate_t go = TU_GATE_INIT;
    struct nolock_putter pt[2];
    pthread_t tid[2];
    for (int i = 0; i < 2; i++) {
        pt[i] = (struct nolock_putter){.pool = pool, .n = n,
                                       .get_first = i == 0,
                                       .warm = full_depot,
                                       .got = TU_GATE_INIT, .go = &go,
                                       .done = TU_GATE_INIT};
        pt[i].objs = calloc(n, sizeof(void *));
        cr_assert_not_null(pt[i].objs);
        atomic_init(&pt[i].put, 0);
    }
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(pt[1].objs[i] = dp_pool_get(pool, DP_WAITOK));
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&tid[i], NULL, nolock_putter_thread,
                                    &pt[i]), 0);
    for (int i = 0; i < 2; i++)
        tu_gate_wait(&pt[i].got);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(pt[0].objs[i], "putter 0 could not get");
    dp_pool_stats_t before = tu_stats(pool);
    cr_assert_eq(before.objs_inuse, 2 * n);

    struct locker l = {TU_GATE_INIT, TU_GATE_INIT, full_depot ? pool : NULL};
    pthread_t lt;
    cr_assert_eq(pthread_create(&lt, NULL, locker_thread, &l), 0);
    tu_gate_wait(&l.locked);

    /* Every lock is held: the puts must still all complete. */
    tu_watchdog(10, "dp_pool_put/dp_thread_cache_flush while another "
                    "thread holds every deferpool lock (a put or a flush "
                    "takes a lock)");
    tu_gate_open(&go);
    for (int i = 0; i < 2; i++)
        tu_gate_wait(&pt[i].done);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(atomic_load(&pt[i].put), n);

    tu_watchdog(30, "unlocking, the putters' exit and the closing checks");
    tu_gate_open(&l.release);
    pthread_join(lt, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(tid[i], NULL);
    if (reclaim_thread)
        dp_reclaim_stop();
    dp_pool_stats_t s = tu_stats(pool);
    if (full_depot) /* the flushes emptied the depot, the exits the bins */
        cr_assert_leq(s.objs_cached, tu_stats(pool).objs_per_page * 2);
    cr_assert_eq(s.objs_inuse, 0, "%llu objects still out",
                 (unsigned long long)s.objs_inuse);
    cr_assert_eq(s.gets, before.gets);
    cr_assert_eq(s.put_provider_calls, 0);
    cr_assert_geq(s.pages_empty + s.pages_freed, NOLOCK_PAGES,
                  "the puts emptied no page");
    for (int i = 0; i < 2; i++)
        free(pt[i].objs);
    tu_destroy_checked(pool, m);
}

static void run_nolock(unsigned pool_flags, bool reclaim_thread)
{
    run_nolock_depot(pool_flags, reclaim_thread, false);
}

Test(put_nonblocking, puts_and_cache_flushes_finish_while_another_thread_holds_every_lock)
{
    run_nolock(0, false);
}

Test(put_nonblocking, puts_into_a_full_depot_finish_while_another_thread_holds_the_pool_and_cache_locks)
{
    run_nolock_depot(0, false, true);
}

Test(put_nonblocking, uncached_puts_finish_while_another_thread_holds_every_lock)
{
    run_nolock(DP_POOL_NOCACHE, false);
}

Test(put_nonblocking, debug_pool_puts_finish_while_another_thread_holds_every_lock)
{
    run_nolock(DP_POOL_DEBUG, false);
}

Test(put_nonblocking, puts_finish_while_another_thread_holds_every_lock_and_the_reclaim_thread_runs)
{
    run_nolock(0, true);
}

/* ===================================================== signal handlers */

/*
 * A handler puts while the thread it interrupted loops get/put on the
 * same pool: the put may land in the middle of the thread's own get or
 * put, inside its thread cache.  dp_tc_enter() keeps such a put off the
 * cache (it goes to the page), or the handler would overwrite the slot
 * the interrupted code is about to write, losing or duplicating objects.
 * Another thread sends the signals, one at a time, each once the
 * previous one was handled, until the handler has put SIG_PUTS objects,
 * SIG_BATCH per signal: each signal costs a scheduling round trip
 * between the two threads, which on a loaded 2-CPU machine can take
 * milliseconds, so the count of signals, not of puts, bounds the run.
 * Every live object carries a stamp: a get that returns one still
 * stamped is a duplicate.
 */
#define SIG_PUTS 20000
#define SIG_LIVE 0x4c495645u /* "LIVE" */
#define SIG_HELD 8           /* objects the loop holds at once */
#define SIG_BATCH 16         /* objects the handler puts per signal */

static struct {
    dp_pool_t *pool;
    void **objs;           /* the handler's objects, got beforehand */
    size_t n;
    atomic_size_t next;    /* handler: next object to put            */
    atomic_size_t handled; /* handler runs                           */
    atomic_int done;
} sig;

static uint32_t *stamp(void *o) { return (uint32_t *)((char *)o + 16); }

static void put_handler(int signo)
{
    (void)signo;
    int saved = errno;
    size_t i = atomic_load_explicit(&sig.next, memory_order_relaxed);
    for (int b = 0; b < SIG_BATCH && i < sig.n; b++, i++) {
        *stamp(sig.objs[i]) = 0;
        dp_pool_put(sig.pool, sig.objs[i]);
        atomic_store_explicit(&sig.next, i + 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&sig.handled, 1, memory_order_release);
    errno = saved;
}

struct kicker {
    pthread_t target;
    size_t sent;
};

/* One signal at a time: the next once the handler has run. */
static void *kicker_thread(void *arg)
{
    struct kicker *k = arg;
    while (atomic_load_explicit(&sig.next, memory_order_relaxed) < sig.n) {
        size_t h = atomic_load_explicit(&sig.handled, memory_order_acquire);
        if (pthread_kill(k->target, SIGUSR1) != 0)
            break;
        k->sent++;
        while (atomic_load_explicit(&sig.handled, memory_order_acquire) == h)
            sched_yield();
        /* A handler that never returns (it took a lock its thread
         * holds) shows here: fail within seconds. */
        if (h % 256 == 0)
            tu_watchdog(10, "the signal handler's put to return (it may "
                            "wait for a lock its own thread holds)");
    }
    atomic_store(&sig.done, 1);
    return NULL;
}

static void run_signal_puts(unsigned pool_flags)
{
    tu_watchdog(60, "the signal-handler put loop");
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.flags |= pool_flags;
    dp_pool_t *pool = tu_pool("sigput", OBJSIZE, &a);
    sig.pool = pool;
    sig.n = tu_scaled(SIG_PUTS);
    sig.objs = calloc(sig.n, sizeof(void *));
    cr_assert_not_null(sig.objs);
    for (size_t i = 0; i < sig.n; i++) {
        cr_assert_not_null(sig.objs[i] = dp_pool_get(pool, DP_WAITOK));
        *stamp(sig.objs[i]) = SIG_LIVE;
    }
    atomic_init(&sig.next, 0);
    atomic_init(&sig.handled, 0);
    atomic_init(&sig.done, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = put_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);

    struct kicker k = {.target = pthread_self()};
    pthread_t kt;
    cr_assert_eq(pthread_create(&kt, NULL, kicker_thread, &k), 0);
    size_t dups = 0, nulls = 0, rounds = 0;
    void *held[SIG_HELD];
    while (!atomic_load_explicit(&sig.done, memory_order_relaxed)) {
        for (int j = 0; j < SIG_HELD; j++) {
            void *o = dp_pool_get(pool, DP_NOWAIT);
            held[j] = o;
            if (!o) {
                nulls++;
                continue;
            }
            dups += *stamp(o) == SIG_LIVE;
            *stamp(o) = SIG_LIVE;
        }
        for (int j = 0; j < SIG_HELD; j++) {
            if (!held[j])
                continue;
            *stamp(held[j]) = 0;
            dp_pool_put(pool, held[j]);
        }
        /* A flush interrupted by a handler's put, now and then. */
        if (++rounds % 64 == 0)
            dp_thread_cache_flush();
    }
    pthread_join(kt, NULL);
    signal(SIGUSR1, SIG_DFL);
    tu_watchdog(60, "the closing checks");

    cr_assert_eq(atomic_load(&sig.next), sig.n, "the handler put %zu of %zu",
                 atomic_load(&sig.next), sig.n);
    cr_assert_eq(dups, 0, "%zu objects handed out while still live", dups);
    cr_assert_eq(nulls, 0, "%zu DP_NOWAIT gets failed", nulls);
    dp_thread_cache_flush();
    cr_assert_eq(dp_pool_check(pool), 0, "dp_pool_check found damage");
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.objs_inuse, 0, "%llu objects lost (out, but nobody has "
                 "them)", (unsigned long long)s.objs_inuse);
    free(sig.objs);
    tu_destroy_checked(pool, m);
}

Test(put_nonblocking, puts_from_a_signal_handler_interrupting_gets_and_puts_lose_nothing)
{
    run_signal_puts(0);
}

Test(put_nonblocking, uncached_puts_from_a_signal_handler_interrupting_gets_and_puts_lose_nothing)
{
    run_signal_puts(DP_POOL_NOCACHE);
}

/* ============================================================ page faults */

/* Gets of FAULT_NOBJS objects (each written whole), then their puts: the
 * puts fill the bin, flush it over and over (its stack's base climbing
 * through the slots its pool's stack may use), shed magazines into the
 * depot and empty pages, and fault in nothing.  Three pools in turn,
 * each destroyed before the next is made, so that all three use the
 * same bin of this thread's cache: one of 1 KiB objects, whose stack
 * uses a page or two of the bin's slot area, then one of small objects,
 * whose stack uses all of it (the first get slow path must fault in the
 * rest), then the large one again.  Sanitizer builds read shadow memory
 * of their own on every access, which may fault. */
#define FAULT_NOBJS 20000
Test(put_nonblocking, puts_of_objects_the_thread_got_fault_in_no_page)
{
#if TU_TSAN || defined(__SANITIZE_ADDRESS__)
    cr_skip_test("sanitizer runtimes fault in shadow memory on access");
#endif
    static void *objs[FAULT_NOBJS];
    static const size_t sz[] = {1024, OBJSIZE, 1024};
    for (int round = 0; round < 3; round++) {
        dp_pool_t *p = dp_pool_create("faults", sz[round], NULL);
        cr_assert_not_null(p);
        for (size_t i = 0; i < FAULT_NOBJS; i++) {
            objs[i] = dp_pool_get(p, DP_WAITOK);
            cr_assert_not_null(objs[i]);
            memset(objs[i], 0x5a, sz[round]);
        }
        long before = tu_thread_minflt();
        for (size_t i = 0; i < FAULT_NOBJS; i++)
            dp_pool_put(p, objs[i]);
        long faults = tu_thread_minflt() - before;
        cr_assert_eq(faults, 0, "round %d: %ld page faults in %d puts",
                     round, faults, FAULT_NOBJS);
        dp_pool_stats_t s = tu_stats(p);
        cr_assert_eq(s.objs_inuse, 0);
        cr_assert_eq(dp_pool_destroy(p), 0);
    }
}
