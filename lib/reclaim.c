/*
 * reclaim.c -- the pool registry, the reclaim pass, the background
 * reclaim thread and fork handling.  docs/design.md, "Reclamation" and
 * "Fork".
 *
 * Reclaim-thread states (dp_rt.state, dp_rt.lock):
 *   STOPPED --start--> RUNNING --stop--> STOPPING --joined--> STOPPED
 *   fork child: RUNNING in the parent -> restarted in the child (after
 *   every lock is released).
 */
#include "dp_internal.h"
#include "probes.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

/* The registry: every live pool, so the thread can find them. */
static struct {
    pthread_mutex_t lock; /* protects the list and pool->reg_* fields    */
    pthread_cond_t cv;    /* destroy waits here for reg_refs to drop      */
    struct dp_pool *head;
} dp_registry = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL};

enum rt_state { RT_STOPPED, RT_RUNNING, RT_STOPPING };

static struct {
    pthread_mutex_t ctl;  /* serialises start/stop (outermost lock)     */
    pthread_mutex_t lock; /* protects the fields below (leaf)           */
    pthread_cond_t cv;    /* signalled at the end of every pass         */
    enum rt_state state;
    pthread_t tid;
    bool in_pass;         /* a pass is under way                        */
    uint64_t passes;      /* passes completed                           */
    uint64_t interval_ns; /* 0: options default                         */
    _Atomic uint32_t wake_seq;       /* futex word the thread sleeps on */
    _Atomic uint64_t pages_returned; /* by the thread and by steps      */
    _Atomic uint64_t pages_filled;
} dp_rt = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
           PTHREAD_COND_INITIALIZER, RT_STOPPED, 0, false, 0, 0, 0, 0, 0};

/* ---- registry ------------------------------------------------------------ */

void dp_registry_add(struct dp_pool *p)
{
    dp_fork_install(); /* done by the constructor; for a static link */
    pthread_mutex_lock(&dp_registry.lock);
    p->reg_dead = false;
    p->reg_prev = NULL;
    p->reg_next = dp_registry.head;
    if (dp_registry.head)
        dp_registry.head->reg_prev = p;
    dp_registry.head = p;
    pthread_mutex_unlock(&dp_registry.lock);
}

void dp_registry_remove(struct dp_pool *p)
{
    pthread_mutex_lock(&dp_registry.lock);
    p->reg_dead = true;
    while (p->reg_refs)
        pthread_cond_wait(&dp_registry.cv, &dp_registry.lock);
    if (p->reg_prev)
        p->reg_prev->reg_next = p->reg_next;
    else
        dp_registry.head = p->reg_next;
    if (p->reg_next)
        p->reg_next->reg_prev = p->reg_prev;
    p->reg_next = p->reg_prev = NULL;
    pthread_mutex_unlock(&dp_registry.lock);
}

/* Call fn for every live pool, the registry lock held (so fn may take
 * the pool lock, not the registry's).  Returns the pools visited. */
size_t dp_registry_each(void (*fn)(struct dp_pool *p, void *arg), void *arg)
{
    size_t n = 0;
    pthread_mutex_lock(&dp_registry.lock);
    for (struct dp_pool *p = dp_registry.head; p; p = p->reg_next, n++)
        fn(p, arg);
    pthread_mutex_unlock(&dp_registry.lock);
    return n;
}

/* Wake getters asleep on any pool: pages went back to the provider,
 * which may be what a pool waiting on provider capacity needs. */
void dp_wake_all_waiters(void)
{
    pthread_mutex_lock(&dp_registry.lock);
    for (struct dp_pool *p = dp_registry.head; p; p = p->reg_next)
        dp_wake_getters(p);
    pthread_mutex_unlock(&dp_registry.lock);
}

/* One pass over every pool.  The registry lock is dropped while a pool is
 * worked on (its reg_refs pins it), so provider calls run with no lock
 * held and a provider may create or destroy other pools. */
static size_t (*_Atomic dp_reclaim_hook)(void);

void dp_reclaim_set_hook(size_t (*fn)(void))
{
    atomic_store(&dp_reclaim_hook, fn);
}

static size_t step_all(size_t *filled, int by)
{
    uint64_t t0 = DP_PROBES_ON ? dp_mono_ns() : 0;
    size_t returned = 0;
    dp_tcache_gc(); /* caches idle since the last pass pin no pages */
    size_t (*hook)(void) = atomic_load(&dp_reclaim_hook);
    if (hook)
        returned += hook();
    pthread_mutex_lock(&dp_registry.lock);
    struct dp_pool *p = dp_registry.head;
    while (p) {
        if (p->reg_dead) {
            p = p->reg_next;
            continue;
        }
        p->reg_refs++;
        pthread_mutex_unlock(&dp_registry.lock);
        size_t n = dp_pool_reclaim_pass(p);
        DP_PROBE(pages_release, p, p->name, n, by);
        returned += n;
        *filled += dp_pool_refill(p);
        pthread_mutex_lock(&dp_registry.lock);
        struct dp_pool *next = p->reg_next;
        if (--p->reg_refs == 0 && p->reg_dead)
            pthread_cond_broadcast(&dp_registry.cv);
        p = next;
    }
    pthread_mutex_unlock(&dp_registry.lock);
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

size_t dp_reclaim_step(void)
{
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
        uint32_t seq = atomic_load(&dp_rt.wake_seq);
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
        dp_futex_wait(&dp_rt.wake_seq, seq, until);
        pthread_mutex_lock(&dp_rt.lock);
    }
    pthread_mutex_unlock(&dp_rt.lock);
    return NULL;
}

void dp_reclaim_wake(void)
{
    atomic_fetch_add(&dp_rt.wake_seq, 1);
    dp_futex_wake_all(&dp_rt.wake_seq);
}

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

int dp_reclaim_start(void)
{
    dp_fork_install();
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
    out->running = dp_rt.state == RT_RUNNING;
    out->passes = dp_rt.passes;
    out->interval_ns = interval_locked();
    pthread_mutex_unlock(&dp_rt.lock);
    out->pages_returned = atomic_load(&dp_rt.pages_returned);
    out->pages_filled = atomic_load(&dp_rt.pages_filled);
}

/* ---- fork ------------------------------------------------------------------ */

/*
 * Fork (docs/design.md §10).  A library constructor registers the
 * handlers, so they come before any handler the program registers from
 * main() on: the program's prepare handlers run before ours and its
 * parent and child handlers after ours, and all of them may allocate.
 * The complete order, for this layer and the one above (the drop-in
 * malloc, through dp_fork_set_layer):
 *
 *   prepare
 *     1. claim every other thread's cache (owners inside a get/put are
 *        waited for with no lock held, so nothing they do inside can
 *        deadlock with us)                         dp_tcache_atfork_claim
 *     2. the layer's outer lock                   malloc: mc_init_lock
 *     3. dp_rt.ctl, 4. dp_rt.lock, 5. dp_registry.lock,
 *     6. every pool->lock in registry order, 7. dp_tcg.lock
 *     8. the layer's leaf lock                    malloc: mc_lc_lock
 *   parent: release 8 to 2, then the claims (1).
 *   child, with every lock held: flush and drop the claimed caches (the
 *     objects go back to their pages, the layer's lists to the layer);
 *     forget the pools' in-flight provider calls; the layer's fix-ups;
 *     release 8 to 2; then, with no lock held, restart the reclaim
 *     thread if it was running (pthread_create allocates).
 */
static _Atomic(const struct dp_fork_layer *) dp_fork_layer;

void dp_fork_set_layer(const struct dp_fork_layer *l)
{
    atomic_store(&dp_fork_layer, l);
}

static void atfork_prepare(void)
{
    const struct dp_fork_layer *l = atomic_load(&dp_fork_layer);
    dp_tcache_atfork_claim();
    if (l)
        l->lock_outer();
    pthread_mutex_lock(&dp_rt.ctl);
    pthread_mutex_lock(&dp_rt.lock);
    pthread_mutex_lock(&dp_registry.lock);
    for (struct dp_pool *p = dp_registry.head; p; p = p->reg_next)
        pthread_mutex_lock(&p->lock);
    dp_tcache_atfork_prepare();
    if (l)
        l->lock_leaf();
}

static void atfork_parent(void)
{
    const struct dp_fork_layer *l = atomic_load(&dp_fork_layer);
    if (l)
        l->unlock_leaf();
    dp_tcache_atfork_parent(); /* releases dp_tcg.lock and the claims */
    for (struct dp_pool *p = dp_registry.head; p; p = p->reg_next)
        pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&dp_registry.lock);
    pthread_mutex_unlock(&dp_rt.lock);
    pthread_mutex_unlock(&dp_rt.ctl);
    if (l)
        l->unlock_outer();
}

/*
 * Work other threads had under way outside any lock does not exist in
 * the child: in-flight provider allocations are forgotten (their
 * reservations), pages the parent was returning count as returned (they
 * stay mapped, unowned), waiter counts and registry references are
 * cleared.
 */
static void atfork_child(void)
{
    const struct dp_fork_layer *l = atomic_load(&dp_fork_layer);
    dp_tcache_atfork_child();
    for (struct dp_pool *p = dp_registry.head; p; p = p->reg_next) {
        p->npages -= p->inflight + p->freeing;
        p->st_pages_freed += p->freeing; /* gone, as far as the child knows */
        p->inflight = 0;
        p->freeing = 0;
        p->priming_pages = 0; /* primes of other threads: gone too */
        p->reg_refs = 0;
        atomic_store(&p->waiters, 0);
    }
    if (l) {
        l->child();
        l->unlock_leaf();
    }
    dp_tcache_atfork_child_unlock();
    for (struct dp_pool *p = dp_registry.head; p; p = p->reg_next)
        pthread_mutex_unlock(&p->lock);
    pthread_cond_init(&dp_registry.cv, NULL);
    pthread_mutex_unlock(&dp_registry.lock);
    bool restart = dp_rt.state != RT_STOPPED;
    dp_rt.state = RT_STOPPED;
    dp_rt.in_pass = false;
    pthread_cond_init(&dp_rt.cv, NULL);
    pthread_mutex_unlock(&dp_rt.lock);
    pthread_mutex_unlock(&dp_rt.ctl);
    if (l)
        l->unlock_outer();
    if (restart)
        dp_reclaim_autostart();
}

#ifdef DP_TEST_HOOKS
/* Test builds only (lib/testhooks.c): every lock of the library and of
 * the layer above, in the fork order (the prepare handler). */
void dp_test_core_lock(void) { atfork_prepare(); }
void dp_test_core_unlock(void) { atfork_parent(); }
#endif

void dp_fork_install(void)
{
    static _Atomic bool installed;
    if (!atomic_exchange(&installed, true))
        pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

__attribute__((constructor)) static void dp_fork_ctor(void)
{
    dp_fork_install();
}
