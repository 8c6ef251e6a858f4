/*
 * watchdog.h -- make a test that hangs fail fast, with a message.
 * Included by testutil.h and by the malloc tests; needs only libc.
 *
 *   tu_watchdog(seconds, what)  arm (or re-arm) this process's watchdog:
 *                     if it is not re-armed or stopped within `seconds`
 *                     (times TU_WD_SLOW under a sanitizer), it writes
 *                     "watchdog: <what> still not done after N s" to
 *                     stderr, SIGKILLs the processes given to
 *                     tu_watchdog_child() and aborts the process, so the
 *                     test fails as crashed within seconds instead of
 *                     running into the runner's timeout.
 *   tu_watchdog_child(pid)      a forked child the expiry must not leave
 *                     behind (up to TU_WD_CHILDREN).
 *   tu_watchdog_stop()          disarm.
 *
 * The watchdog is a thread that waits on a condition variable until the
 * deadline (CLOCK_MONOTONIC): it runs even when every other thread is
 * deadlocked, it takes no lock any library under test may hold, and on
 * expiry it makes only write, kill and abort calls.  A process forked
 * after arming has no watchdog thread (fork copies only the caller): a
 * child that can hang arms its own.  Each test runs in its own process
 * (Criterion's sandbox, tests/tsan-criterion), so a test that arms the
 * watchdog need not stop it.
 */
#ifndef DP_WATCHDOG_H
#define DP_WATCHDOG_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Sanitizers make everything slower than DP_TEST_SCALE's cut in
 * iterations wins back: give them more time before calling it a hang. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define TU_WD_SLOW 4
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define TU_WD_SLOW 4
#endif
#endif
#ifndef TU_WD_SLOW
#define TU_WD_SLOW 1
#endif

#define TU_WD_CHILDREN 16

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pid_t owner;          /* the process the thread runs in (0: none) */
    int running;          /* the thread has started                   */
    int armed;
    unsigned gen;         /* bumped at every (re-)arm and stop       */
    struct timespec deadline;
    unsigned seconds;
    char what[200];
    pid_t children[TU_WD_CHILDREN];
    int nchildren;
} tu_wd = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0,
           {0, 0}, 0, "", {0}, 0};

static void tu_wd_expire(void)
{
    char msg[320];
    int n = snprintf(msg, sizeof(msg),
                     "watchdog: %s still not done after %u s: a hang, "
                     "failing the test\n",
                     tu_wd.what, tu_wd.seconds);
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof(msg) ? (size_t)n
                                                      : sizeof(msg) - 1);
    for (int i = 0; i < tu_wd.nchildren; i++)
        kill(tu_wd.children[i], SIGKILL);
    abort();
}

static void *tu_wd_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&tu_wd.mu);
    tu_wd.running = 1;
    pthread_cond_broadcast(&tu_wd.cv);
    for (;;) {
        while (!tu_wd.armed)
            pthread_cond_wait(&tu_wd.cv, &tu_wd.mu);
        unsigned gen = tu_wd.gen;
        struct timespec dl = tu_wd.deadline;
        int rc = 0;
        while (tu_wd.armed && tu_wd.gen == gen && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&tu_wd.cv, &tu_wd.mu, &dl);
        if (tu_wd.armed && tu_wd.gen == gen)
            tu_wd_expire(); /* the lock stays held: nothing re-arms now */
    }
    return NULL;
}

static inline void tu_watchdog(unsigned seconds, const char *what)
{
    if (tu_wd.owner != getpid()) {
        /* First arm in this process, or in a forked child, which has no
         * watchdog thread and may have inherited the mutex locked: start
         * afresh.  The first arm comes from the test's own thread, before
         * any other thread uses the watchdog. */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_mutex_init(&tu_wd.mu, NULL);
        pthread_cond_init(&tu_wd.cv, &ca);
        pthread_condattr_destroy(&ca);
        tu_wd.armed = 0;
        tu_wd.running = 0;
        tu_wd.nchildren = 0;
        pthread_attr_t ta;
        pthread_attr_init(&ta);
        pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        if (pthread_create(&t, &ta, tu_wd_thread, NULL) != 0) {
            static const char m[] = "watchdog: pthread_create failed\n";
            (void)!write(2, m, sizeof(m) - 1);
            abort();
        }
        pthread_attr_destroy(&ta);
        tu_wd.owner = getpid();
        /* Wait until the thread runs: a test that forks right after
         * arming must not fork while the new thread is still inside the
         * thread library or a sanitizer's runtime, whose locks the child
         * would inherit held. */
        pthread_mutex_lock(&tu_wd.mu);
        while (!tu_wd.running)
            pthread_cond_wait(&tu_wd.cv, &tu_wd.mu);
        pthread_mutex_unlock(&tu_wd.mu);
    }
    pthread_mutex_lock(&tu_wd.mu);
    tu_wd.seconds = seconds * TU_WD_SLOW;
    snprintf(tu_wd.what, sizeof(tu_wd.what), "%s", what);
    clock_gettime(CLOCK_MONOTONIC, &tu_wd.deadline);
    tu_wd.deadline.tv_sec += (time_t)tu_wd.seconds;
    tu_wd.armed = 1;
    tu_wd.gen++;
    pthread_cond_broadcast(&tu_wd.cv);
    pthread_mutex_unlock(&tu_wd.mu);
}

static inline void tu_watchdog_child(pid_t pid)
{
    pthread_mutex_lock(&tu_wd.mu);
    if (tu_wd.nchildren < TU_WD_CHILDREN)
        tu_wd.children[tu_wd.nchildren++] = pid;
    pthread_mutex_unlock(&tu_wd.mu);
}

static inline void tu_watchdog_stop(void)
{
    pthread_mutex_lock(&tu_wd.mu);
    tu_wd.armed = 0;
    tu_wd.gen++;
    pthread_cond_broadcast(&tu_wd.cv);
    pthread_mutex_unlock(&tu_wd.mu);
}

#endif /* DP_WATCHDOG_H */
