/*
 * registry.c -- the pool layer's registry: every live pool, walked by the
 * reclaim pass, statistics and fork through the iteration calls of
 * pool.h; and the reclaim bell.  docs/design.md, "Reclamation" and
 * "Fork"; where its lock sits in the lock order: §8.
 */
#include "pool.h"
#include "page.h"

static struct {
    pthread_mutex_t lock;      /* the list and every pool's reg_* fields */
    pthread_cond_t cv;         /* remove waits here for reg_refs to drop */
    struct dp_pool_list pools; /* lock: every live pool                  */
} dp_registry = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                 {NULL, NULL, 0}};

_Atomic uint32_t dp_reclaim_bell;

void dp_registry_add(struct dp_pool *p)
{
    pthread_mutex_lock(&dp_registry.lock);
    p->reg_dead = false;
    DP_LIST_PUSH_HEAD(&dp_registry.pools, p, reg_next, reg_prev);
    pthread_mutex_unlock(&dp_registry.lock);
}

void dp_registry_remove(struct dp_pool *p)
{
    pthread_mutex_lock(&dp_registry.lock);
    p->reg_dead = true;
    while (p->reg_refs)
        pthread_cond_wait(&dp_registry.cv, &dp_registry.lock);
    DP_LIST_REMOVE(&dp_registry.pools, p, reg_next, reg_prev);
    pthread_mutex_unlock(&dp_registry.lock);
}

size_t dp_registry_each(void (*fn)(struct dp_pool *p, void *arg), void *arg)
{
    size_t n = 0;
    pthread_mutex_lock(&dp_registry.lock);
    for (struct dp_pool *p = dp_registry.pools.head; p; p = p->reg_next, n++)
        fn(p, arg);
    pthread_mutex_unlock(&dp_registry.lock);
    return n;
}

/* The registry lock is dropped while fn runs; reg_refs keeps the pool
 * (and so its reg_next) from leaving the list meanwhile. */
void dp_registry_each_pinned(void (*fn)(struct dp_pool *p, void *arg),
                             void *arg)
{
    pthread_mutex_lock(&dp_registry.lock);
    struct dp_pool *p = dp_registry.pools.head;
    while (p) {
        if (p->reg_dead) {
            p = p->reg_next;
            continue;
        }
        p->reg_refs++;
        pthread_mutex_unlock(&dp_registry.lock);
        fn(p, arg);
        pthread_mutex_lock(&dp_registry.lock);
        struct dp_pool *next = p->reg_next;
        if (--p->reg_refs == 0 && p->reg_dead)
            pthread_cond_broadcast(&dp_registry.cv);
        p = next;
    }
    pthread_mutex_unlock(&dp_registry.lock);
}

/* Pages went back to the provider, which may be what a pool waiting on
 * provider capacity needs. */
void dp_wake_all_waiters(void)
{
    pthread_mutex_lock(&dp_registry.lock);
    for (struct dp_pool *p = dp_registry.pools.head; p; p = p->reg_next)
        dp_wake_getters(p);
    pthread_mutex_unlock(&dp_registry.lock);
}

/* ---- fork (fork.c) ----------------------------------------------------- */

void dp_pool_atfork_prepare(void)
{
    pthread_mutex_lock(&dp_registry.lock);
    for (struct dp_pool *p = dp_registry.pools.head; p; p = p->reg_next)
        pthread_mutex_lock(&p->lock);
}

void dp_pool_atfork_parent(void)
{
    for (struct dp_pool *p = dp_registry.pools.head; p; p = p->reg_next)
        pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&dp_registry.lock);
}

/*
 * Work other threads had under way outside any lock does not exist in
 * the child: in-flight provider allocations are forgotten (their
 * reservations), pages the parent was returning count as returned (they
 * stay mapped, unowned), waiter counts and registry references are
 * cleared.
 */
void dp_pool_atfork_child(void)
{
    for (struct dp_pool *p = dp_registry.pools.head; p; p = p->reg_next) {
        p->npages -= p->inflight + p->freeing;
        p->st_pages_freed += p->freeing; /* gone, as far as the child knows */
        p->inflight = 0;
        p->freeing = 0;
        p->priming_pages = 0; /* primes of other threads: gone too */
        p->reg_refs = 0;
        atomic_store(&p->waiters, 0);
    }
}

void dp_pool_atfork_child_unlock(void)
{
    for (struct dp_pool *p = dp_registry.pools.head; p; p = p->reg_next)
        pthread_mutex_unlock(&p->lock);
    pthread_cond_init(&dp_registry.cv, NULL);
    pthread_mutex_unlock(&dp_registry.lock);
}
