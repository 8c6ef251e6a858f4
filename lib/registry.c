/*
 * registry.c -- the pool layer's registry: every live pool, walked by the
 * reclaim pass, statistics and fork through the iteration calls of
 * pool.h; and the reclaim bell.  docs/design.md, "Reclamation" and
 * "Fork"; where its lock sits in the lock order: §8.
 */
#include "pool.h"
#include "page.h"

static DP_FORK_DATA struct {
    pthread_mutex_t lock;      /* the list and every pool's reg_* fields */
    pthread_cond_t cv;         /* remove waits here for reg_refs to drop */
    struct dp_pool_list pools; /* lock: every live pool                  */
} dp_registry = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                 {NULL, NULL, 0}};

/*
 * The lock table.  Every pool's mutex lives here, DP_LOCKS_PER_CHUNK to
 * a page, not in the pool's own page: the fork handlers lock every pool
 * before a fork and unlock each of them in the parent and in the child,
 * and after a fork the first touch of each page costs (a copy-on-write
 * fault for a write; on a shadow-paging hypervisor, an exit even for a
 * read).  With the table those handlers touch one page per 64 pools and
 * no pool's own page (docs/design.md, "Fork").  A slot belongs to a
 * pool's memory for good: spare pool memory keeps its slot (create.c).
 * Slots are handed out by an atomic counter and chunks installed by CAS,
 * so there is nothing to do for them at fork.
 */
#define DP_LOCKS_PER_CHUNK (4096 / sizeof(struct dp_lock))
#define DP_LOCK_CHUNKS 4096 /* 262144 pools' memory at most */
struct dp_lock {
    pthread_mutex_t m;    /* first: p->lock points here               */
    struct dp_pool *pool; /* registry lock: set by the fork prepare for
                             a pool whose child needs fixing up      */
    bool held;            /* registry lock: the fork prepare holds m  */
} __attribute__((aligned(64))); /* a line each: slow paths of pools */
_Static_assert(sizeof(struct dp_lock) == 64, "a lock per line");
static void *_Atomic dp_lock_chunk[DP_LOCK_CHUNKS]; /* struct dp_lock[] */
static DP_FORK_DATA _Atomic size_t dp_lock_next; /* slots handed out */

pthread_mutex_t *dp_lock_new(void)
{
    size_t i = atomic_fetch_add(&dp_lock_next, 1);
    if (i >= DP_LOCK_CHUNKS * DP_LOCKS_PER_CHUNK)
        return NULL;
    struct dp_lock *chunk =
        dp_os_map_once(&dp_lock_chunk[i / DP_LOCKS_PER_CHUNK], 4096);
    if (!chunk)
        return NULL; /* the slot stays unused */
    return &chunk[i % DP_LOCKS_PER_CHUNK].m;
}

static struct dp_lock *lock_of(struct dp_pool *p)
{
    return (struct dp_lock *)(void *)p->lock;
}

/* Call fn for every slot the fork prepare locked (the registry lock
 * held): the table's pages only.  A slot handed out but not yet in a
 * chunk (its creator is mapping one) belongs to no pool yet. */
static void each_held(void (*fn)(struct dp_lock *l))
{
    size_t n = atomic_load_explicit(&dp_lock_next, DP_RLX);
    if (n > DP_LOCK_CHUNKS * DP_LOCKS_PER_CHUNK)
        n = DP_LOCK_CHUNKS * DP_LOCKS_PER_CHUNK;
    for (size_t c = 0; c * DP_LOCKS_PER_CHUNK < n; c++) {
        struct dp_lock *chunk =
            atomic_load_explicit(&dp_lock_chunk[c], memory_order_acquire);
        if (!chunk)
            continue;
        for (size_t i = 0; i < DP_LOCKS_PER_CHUNK &&
                           c * DP_LOCKS_PER_CHUNK + i < n; i++)
            if (chunk[i].held)
                fn(&chunk[i]);
    }
}

_Atomic uint32_t dp_reclaim_bell;
DP_FORK_DATA void (*_Atomic dp_reclaim_due)(void);

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

DP_TLS unsigned dp_registry_depth;

size_t dp_registry_each(void (*fn)(struct dp_pool *p, void *arg), void *arg)
{
    size_t n = 0;
    pthread_mutex_lock(&dp_registry.lock);
    dp_registry_depth++;
    for (struct dp_pool *p = dp_registry.pools.head; p; p = p->reg_next, n++)
        fn(p, arg);
    dp_registry_depth--;
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

/* Whether a child must fix p up (dp_pool_atfork_child): work other
 * threads had under way.  p's lock and the registry lock held, so none
 * of it changes until the fork. */
static bool child_fixes(struct dp_pool *p)
{
    return p->inflight || p->freeing || p->priming_pages || p->reg_refs ||
           atomic_load(&p->waiters);
}

void dp_pool_atfork_prepare(void)
{
    pthread_mutex_lock(&dp_registry.lock);
    for (struct dp_pool *p = dp_registry.pools.head; p; p = p->reg_next) {
        pthread_mutex_lock(p->lock);
        struct dp_lock *l = lock_of(p);
        l->held = true;
        l->pool = child_fixes(p) ? p : NULL;
    }
}

static void unlock_held(struct dp_lock *l)
{
    l->held = false;
    l->pool = NULL;
    pthread_mutex_unlock(&l->m);
}

void dp_pool_atfork_parent(void)
{
    each_held(unlock_held);
    pthread_mutex_unlock(&dp_registry.lock);
}

/*
 * Work other threads had under way outside any lock does not exist in
 * the child: in-flight provider allocations are forgotten (their
 * reservations), pages the parent was returning count as returned (they
 * stay mapped, unowned), waiter counts and registry references are
 * cleared.  Only the pools the prepare noted (child_fixes) are visited,
 * most often none, and only what is not clear is written: each page
 * touched here costs the child (the lock table, above).
 */
static void child_fix(struct dp_lock *l)
{
    struct dp_pool *p = l->pool;
    if (p) {
        if (p->inflight || p->freeing) {
            p->npages -= p->inflight + p->freeing;
            p->st_pages_freed += p->freeing; /* gone, as far as the
                                                child knows */
            p->inflight = 0;
            p->freeing = 0;
        }
        if (p->priming_pages)
            p->priming_pages = 0; /* primes of other threads: gone too */
        if (p->reg_refs)
            p->reg_refs = 0;
        if (atomic_load(&p->waiters))
            atomic_store(&p->waiters, 0);
    }
}

void dp_pool_atfork_child(void)
{
    each_held(child_fix);
}

void dp_pool_atfork_child_unlock(void)
{
    each_held(unlock_held);
    pthread_cond_init(&dp_registry.cv, NULL);
    pthread_mutex_unlock(&dp_registry.lock);
}
