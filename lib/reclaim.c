/*
 * reclaim.c -- the reclaim layer, above the pools: the reclaim pass over
 * every registered pool and the background thread that runs it.
 * docs/design.md, "Reclamation".
 *
 * Reclaim-thread states (dp_rt.state, dp_rt.lock):
 *   STOPPED --start--> RUNNING --stop--> STOPPING --joined--> STOPPED
 *   fork child: RUNNING in the parent -> STOPPED with a start due
 *   (dp_reclaim_due, pool.h): the child's first DP_WAITOK get that
 *   misses its cache, a reclaim call or a pool create starts it.
 */
#include "reclaim.h"
#include "cache.h"
#include "depot.h"
#include "options.h"
#include "pool.h"
#include "probes.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

enum rt_state { RT_STOPPED, RT_RUNNING, RT_STOPPING };

/* The thread's control block.  Its two locks' place in the lock order:
 * docs/design.md §8. */
static DP_FORK_DATA struct {
    pthread_mutex_t ctl;  /* serialises start/stop                      */
    pthread_mutex_t lock; /* the fields below, but the atomics          */
    pthread_cond_t cv;    /* signalled at the end of every pass         */
    enum rt_state state;
    pthread_t tid;
    bool in_pass;         /* a pass is under way                        */
    uint64_t passes;      /* passes completed                           */
    uint64_t interval_ns; /* 0: options default                         */
    _Atomic uint64_t pages_returned; /* by the thread and by steps      */
    _Atomic uint64_t pages_filled;   /* likewise                        */
} dp_rt = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
           PTHREAD_COND_INITIALIZER, RT_STOPPED, 0, false, 0, 0, 0, 0};

/* The layer above's pass hook (reclaim.h); set once, read by each pass. */
static size_t (*_Atomic dp_reclaim_hook)(void);

void dp_reclaim_set_hook(size_t (*fn)(void))
{
    atomic_store(&dp_reclaim_hook, fn);
}

struct pass {
    size_t returned, filled;
    int by; /* enum dp_probe_by */
};

/* One pool of a pass, pinned and with no lock held (provider calls). */
static void pass_pool(struct dp_pool *p, void *arg)
{
    struct pass *ps = arg;
    size_t n = dp_pool_reclaim_pass(p, false);
    /* Magazines no get needed for the pool's page age go back to their
     * pages.  Those pages were unused for that age already: the pass
     * after the trim returns the ones it emptied at once, so an idle
     * depot's memory is back one age after its last use, not two (a page
     * a put empties between the two passes is taken for one of them). */
    if (dp_depot_drain(p, false, dp_pool_now(p)))
        n += dp_pool_reclaim_pass(p, true);
    DP_PROBE(pages_release, p, p->name, n, ps->by);
    ps->returned += n;
    ps->filled += dp_pool_refill(p);
}

/* One pass over every pool. */
static size_t step_all(size_t *filled, int by)
{
    uint64_t t0 = DP_PROBES_ON ? dp_mono_ns() : 0;
    struct pass ps = {0, 0, by};
    dp_tcache_gc(); /* caches idle since the last pass pin no pages */
    size_t (*hook)(void) = atomic_load(&dp_reclaim_hook);
    if (hook)
        ps.returned += hook();
    dp_registry_each_pinned(pass_pool, &ps);
    size_t returned = ps.returned;
    *filled += ps.filled;
    if (returned)
        dp_wake_all_waiters();
    atomic_fetch_add(&dp_rt.pages_returned, returned);
    atomic_fetch_add(&dp_rt.pages_filled, *filled);
    DP_PROBE(reclaim_pass, returned, *filled,
             DP_PROBES_ON ? dp_mono_ns() - t0 : 0, by);
    (void)t0;
    (void)by;
    return returned;
}

static void start_due(void);

size_t dp_reclaim_step(void)
{
    start_due();
    size_t filled = 0;
    return step_all(&filled, DP_BY_STEP);
}

/* ---- the thread ------------------------------------------------------------ */

static uint64_t interval_locked(void)
{
    return dp_rt.interval_ns ? dp_rt.interval_ns
                             : dp_options()->reclaim_interval_ns;
}

static void *rt_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&dp_rt.lock);
    while (dp_rt.state == RT_RUNNING) {
        dp_rt.in_pass = true;
        /* Read before the pass: a wake during the pass ends the sleep. */
        uint32_t seq = atomic_load(&dp_reclaim_bell);
        pthread_mutex_unlock(&dp_rt.lock);

        size_t filled = 0;
        step_all(&filled, DP_BY_THREAD);

        pthread_mutex_lock(&dp_rt.lock);
        dp_rt.in_pass = false;
        dp_rt.passes++;
        pthread_cond_broadcast(&dp_rt.cv);
        if (dp_rt.state != RT_RUNNING)
            break;
        /* An interval past the end of the clock (UINT64_MAX, or
         * reclaim_interval_ms near its maximum) is no bound: the sum
         * would wrap into the past and the thread would never sleep. */
        uint64_t iv = interval_locked(), now = dp_mono_ns();
        uint64_t until = iv > UINT64_MAX - now ? 0 : now + iv;
        pthread_mutex_unlock(&dp_rt.lock);
        dp_futex_wait(&dp_reclaim_bell, seq, until);
        pthread_mutex_lock(&dp_rt.lock);
    }
    pthread_mutex_unlock(&dp_rt.lock);
    return NULL;
}

void dp_reclaim_wake(void) { dp_reclaim_ring(); }

/* Called with dp_rt.ctl held. */
static int start_ctl_locked(void)
{
    pthread_mutex_lock(&dp_rt.lock);
    if (dp_rt.state == RT_RUNNING) {
        pthread_mutex_unlock(&dp_rt.lock);
        return 0;
    }
    dp_rt.state = RT_RUNNING;
    pthread_mutex_unlock(&dp_rt.lock);

    /* The thread takes no signals meant for the application. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&dp_rt.tid, NULL, rt_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        pthread_mutex_lock(&dp_rt.lock);
        dp_rt.state = RT_STOPPED;
        pthread_mutex_unlock(&dp_rt.lock);
        errno = e;
        return -1;
    }
    return 0;
}

/* A fork child's due start (pool.h, dp_reclaim_due); clears it first, so
 * the allocations of pthread_create find nothing due. */
static void start_due(void)
{
    if (atomic_exchange(&dp_reclaim_due, NULL))
        dp_reclaim_autostart();
}

/* dp_reclaim_stop() called and no dp_reclaim_start() since (reclaim.h);
 * atomic stores by those two, loads by the malloc's lazy start. */
static _Atomic bool rt_stopped;

bool dp_reclaim_stopped(void)
{
    return atomic_load(&rt_stopped);
}

int dp_reclaim_start(void)
{
    atomic_store(&rt_stopped, false);
    /* Before the lock: pthread_create allocates, and a due start seen by
     * that allocation's get would take dp_rt.ctl again. */
    atomic_store(&dp_reclaim_due, NULL);
    pthread_mutex_lock(&dp_rt.ctl);
    int r = start_ctl_locked();
    pthread_mutex_unlock(&dp_rt.ctl);
    return r;
}

void dp_reclaim_autostart(void)
{
    static _Atomic bool warned;
    if (dp_reclaim_start() != 0 && !atomic_exchange(&warned, true))
        fprintf(stderr,
                "deferpool: cannot start the reclaim thread (%d); empty "
                "pages go back only from DP_WAITOK gets and explicit "
                "reclaim\n",
                errno);
}

void dp_reclaim_stop(void)
{
    atomic_store(&rt_stopped, true);
    atomic_store(&dp_reclaim_due, NULL); /* stopped stays stopped */
    pthread_mutex_lock(&dp_rt.ctl);
    pthread_mutex_lock(&dp_rt.lock);
    if (dp_rt.state != RT_RUNNING) {
        pthread_mutex_unlock(&dp_rt.lock);
        pthread_mutex_unlock(&dp_rt.ctl);
        return;
    }
    dp_rt.state = RT_STOPPING;
    pthread_mutex_unlock(&dp_rt.lock);
    dp_reclaim_wake();
    pthread_join(dp_rt.tid, NULL);
    pthread_mutex_lock(&dp_rt.lock);
    dp_rt.state = RT_STOPPED;
    pthread_cond_broadcast(&dp_rt.cv);
    pthread_mutex_unlock(&dp_rt.lock);
    pthread_mutex_unlock(&dp_rt.ctl);
}

int dp_reclaim_sync(void)
{
    start_due();
    pthread_mutex_lock(&dp_rt.lock);
    if (dp_rt.state != RT_RUNNING) {
        pthread_mutex_unlock(&dp_rt.lock);
        errno = ESRCH;
        return -1;
    }
    /* A pass under way began before us: wait for the one after it. */
    uint64_t target = dp_rt.passes + (dp_rt.in_pass ? 2 : 1);
    while (dp_rt.passes < target && dp_rt.state == RT_RUNNING) {
        dp_reclaim_wake();
        pthread_cond_wait(&dp_rt.cv, &dp_rt.lock);
    }
    int ok = dp_rt.passes >= target;
    pthread_mutex_unlock(&dp_rt.lock);
    if (!ok) {
        errno = ESRCH;
        return -1;
    }
    return 0;
}

void dp_reclaim_set_interval(uint64_t ns)
{
    pthread_mutex_lock(&dp_rt.lock);
    dp_rt.interval_ns = ns;
    pthread_mutex_unlock(&dp_rt.lock);
    dp_reclaim_wake();
}

void dp_reclaim_info(dp_reclaim_info_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out)); /* the reserved space reads 0 */
    pthread_mutex_lock(&dp_rt.lock);
    out->running = dp_rt.state == RT_RUNNING ||
                   atomic_load(&dp_reclaim_due) != NULL;
    out->passes = dp_rt.passes;
    out->interval_ns = interval_locked();
    pthread_mutex_unlock(&dp_rt.lock);
    out->pages_returned = atomic_load(&dp_rt.pages_returned);
    out->pages_filled = atomic_load(&dp_rt.pages_filled);
}

/* ---- fork (fork.c) ------------------------------------------------------- */

void dp_reclaim_atfork_prepare(void)
{
    pthread_mutex_lock(&dp_rt.ctl);
    pthread_mutex_lock(&dp_rt.lock);
}

void dp_reclaim_atfork_parent(void)
{
    pthread_mutex_unlock(&dp_rt.lock);
    pthread_mutex_unlock(&dp_rt.ctl);
}

/* The thread does not exist in the child.  If it ran in the parent, a
 * start is due: made by the child's first DP_WAITOK get that misses its
 * cache (pool.h, dp_reclaim_due), a reclaim call or a pool create, not
 * here: a child that execs or exits first (a shell's) never creates
 * one (docs/design.md, "Fork"). */
void dp_reclaim_atfork_child(void)
{
    if (dp_rt.state != RT_STOPPED)
        atomic_store(&dp_reclaim_due, start_due);
    dp_rt.state = RT_STOPPED;
    dp_rt.in_pass = false;
    pthread_cond_init(&dp_rt.cv, NULL);
    pthread_mutex_unlock(&dp_rt.lock);
    pthread_mutex_unlock(&dp_rt.ctl);
}
