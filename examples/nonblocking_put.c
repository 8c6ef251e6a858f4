/*
 * nonblocking_put.c -- dp_pool_put() from a signal handler and from a
 * real-time thread, with the proof that it makes no system call.
 *
 * The proof is the one tests/test_put_nonblocking.c uses: a thread that
 * has called prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) may only read,
 * write, _exit and sigreturn; any other system call makes the kernel kill
 * it with SIGKILL.  Each putting thread enters strict mode, puts, sets a
 * flag and leaves with a raw SYS_exit (pthread_exit would unmap its
 * stack).  The flag proves that no forbidden call was made.  pthread_join
 * still works on such a thread: the kernel clears its tid and wakes the
 * joiner however it ended.
 *
 *   1. control: in a forked child, a strict thread calls getpid() once
 *      and never reaches its flag -- the harness does catch system calls;
 *   2. signal:  a strict thread spins; the main thread sends it SIGUSR1,
 *      and the handler puts half of the objects (then sigreturn, which
 *      strict mode allows);
 *   3. real-time: a thread asks for SCHED_FIFO (granted when the process
 *      may: the proof does not depend on it), enters strict mode and puts
 *      the other half.
 * Then every object is back and the provider was never called from a
 * put.  Prints what happened and exits 0 when it all holds; 77 (skipped)
 * under ThreadSanitizer, whose runtime cannot join a thread that left by
 * SYS_exit.
 */
#include <deferpool.h>

#include <errno.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

#define NOBJS 20000

static dp_pool_t *pool;
static void *objs[NOBJS];

/* Signal phase: the strict thread waits for the handler. */
static atomic_int sig_armed, sig_handled, sig_done;
/* Real-time phase. */
static atomic_int rt_done;
static int rt_prio_err = -1;

static void on_sigusr1(int sig)
{
    (void)sig;
    for (size_t i = 0; i < NOBJS / 2; i++)
        dp_pool_put(pool, objs[i]); /* async-signal-safe: lock-free */
    atomic_store(&sig_handled, 1);
}

static int enter_strict(void)
{
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0);
}

static void *signal_thread(void *arg)
{
    (void)arg;
    if (enter_strict() != 0)
        return NULL;
    /* Strict from here on: no stdio, no malloc, no futex. */
    atomic_store(&sig_armed, 1);
    while (!atomic_load(&sig_handled))
        ; /* spin: the handler runs on this thread */
    dp_thread_cache_flush(); /* lock-free, no syscall: as a put */
    atomic_store(&sig_done, 1);
    syscall(SYS_exit, 0);
    return NULL;
}

static void *rt_thread(void *arg)
{
    (void)arg;
    struct sched_param sp = {.sched_priority = 1};
    rt_prio_err = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    if (enter_strict() != 0)
        return NULL;
    for (size_t i = NOBJS / 2; i < NOBJS; i++)
        dp_pool_put(pool, objs[i]);
    dp_thread_cache_flush();
    atomic_store(&rt_done, 1);
    syscall(SYS_exit, 0);
    return NULL;
}

static void *control_thread(void *arg)
{
    atomic_int *reached = arg;
    if (enter_strict() != 0)
        return NULL;
    syscall(SYS_getpid); /* forbidden: the kernel kills this thread */
    atomic_store(reached, 1);
    syscall(SYS_exit, 0);
    return NULL;
}

/* 1: a forbidden call in strict mode is caught (in a child process). */
static int control_caught(void)
{
    pid_t pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        static atomic_int reached;
        pthread_t t;
        if (pthread_create(&t, NULL, control_thread, &reached) != 0)
            _exit(2);
        pthread_join(t, NULL);
        _exit(atomic_load(&reached) ? 1 : 0);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    /* Either the child reports the thread died short of its flag, or the
     * kernel killed the whole child: both show the call was caught. */
    return (WIFEXITED(st) && WEXITSTATUS(st) == 0) ||
           (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

int main(void)
{
#ifdef UNDER_TSAN
    puts("skipped: ThreadSanitizer cannot join a thread that left by "
         "SYS_exit");
    return 77;
#endif
    if (!control_caught()) {
        fprintf(stderr, "control: a getpid() in strict mode went unseen\n");
        return 1;
    }
    puts("control: getpid() in strict mode killed the thread");

    dp_pool_attr_t attr;
    dp_pool_attr_init(&attr);
    attr.flags = DP_POOL_NOTHREAD;
    attr.pagesize = 4096; /* many pages: many puts empty one */
    pool = dp_pool_create("events", 48, &attr);
    if (!pool)
        return 1;
    for (size_t i = 0; i < NOBJS; i++)
        if (!(objs[i] = dp_pool_get(pool, DP_WAITOK)))
            return 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);

    /* Both strict threads exist before either leaves by SYS_exit
     * (AddressSanitizer cannot start a thread after that). */
    pthread_t st, rt;
    if (pthread_create(&st, NULL, signal_thread, NULL) != 0)
        return 1;
    while (!atomic_load(&sig_armed))
        sched_yield();
    if (pthread_create(&rt, NULL, rt_thread, NULL) != 0)
        return 1;
    pthread_kill(st, SIGUSR1);
    pthread_join(rt, NULL);
    pthread_join(st, NULL);

    dp_thread_cache_flush(); /* the objects our gets cached beyond NOBJS */
    dp_pool_stats_t s;
    dp_pool_stats(pool, &s);
    int ok = atomic_load(&sig_done) && atomic_load(&rt_done) &&
             s.objs_inuse == 0 && s.put_provider_calls == 0 &&
             s.pages_empty == s.pages;
    printf("signal handler: %d puts in strict mode: %s\n", NOBJS / 2,
           atomic_load(&sig_done) ? "no system call" : "KILLED");
    printf("real-time thread (SCHED_FIFO %s): %d puts in strict mode: %s\n",
           rt_prio_err == 0 ? "granted" : strerror(rt_prio_err), NOBJS / 2,
           atomic_load(&rt_done) ? "no system call" : "KILLED");
    printf("%llu pages, %llu empty and queued, %llu objects out, "
           "%llu provider calls from puts: %s\n",
           (unsigned long long)s.pages, (unsigned long long)s.pages_empty,
           (unsigned long long)s.objs_inuse,
           (unsigned long long)s.put_provider_calls, ok ? "ok" : "FAIL");
    if (dp_pool_destroy(pool) != 0)
        ok = 0;
    return ok ? 0 : 1;
}
