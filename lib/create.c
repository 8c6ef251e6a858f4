/*
 * create.c -- a pool's life cycle: create joins a new pool to every
 * layer (page layout, its cache bin, the registry, the fork handlers,
 * the reclaim thread) and destroy takes it out again.  It calls each
 * layer and none calls it, so it sits above them all, beside the fork
 * layer.  docs/design.md §1.
 */
#include "cache.h"
#include "debug.h"
#include "fork.h"
#include "lifo.h"
#include "options.h"
#include "page.h"
#include "pool.h"
#include "probes.h"
#include "reclaim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Pool memory is never unmapped.  The put that returns a pool's last
 * object reads the pool's `waiters` word after the page it emptied is on
 * the pending queue, where destroy can see it; so a destroy that raced
 * it may be done before that read.  Destroyed pools wait here, linked
 * through reg_next, for the next create: a lifo.h stack, of which a
 * create takes the whole, keeps the first and pushes the rest back as
 * one chain.  No lock, so nothing to do at fork.
 */
static struct dp_pool *_Atomic dp_spare_pools;

#define SPARE_LINK(p, next) ((p)->reg_next = (next))

static void spare_push(struct dp_pool *first, struct dp_pool *last)
{
    DP_LIFO_PUSH(&dp_spare_pools, first, last, SPARE_LINK,
                 memory_order_release);
}

/*
 * Fresh pool memory is carved from chunks of DP_POOL_CHUNK bytes, one
 * pool every DP_POOL_STRIDE bytes, so pools share pages: each page is a
 * fault at its first touch, and the malloc's 32 class pools, each made
 * at its class's first use, fill 7 pages, not 32 mappings of a page
 * each.  A pool starts on a line
 * of its own.  Slots are handed out by an atomic counter and chunks
 * installed by CAS (dp_os_map_once), as the lock table's are: no lock, so
 * nothing to do at fork.  DP_POOL_CHUNKS covers the lock table's
 * capacity.
 */
#define DP_POOL_STRIDE ((sizeof(struct dp_pool) + 63) & ~(size_t)63)
#define DP_POOL_CHUNK ((size_t)64 << 10)
#define DP_POOLS_PER_CHUNK (DP_POOL_CHUNK / DP_POOL_STRIDE)
#define DP_POOL_CHUNKS 8192
_Static_assert(DP_POOLS_PER_CHUNK >= 1, "a pool fits in a chunk");
/* About five pools to a page (depot.c, "Chunks"). */
_Static_assert(sizeof(struct dp_pool) <= 1024, "struct dp_pool outgrew 1 KiB");
static void *_Atomic dp_pool_chunk[DP_POOL_CHUNKS];
static _Atomic size_t dp_pool_next; /* slots handed out */

static struct dp_pool *pool_slot(void)
{
    size_t i = atomic_fetch_add(&dp_pool_next, 1);
    if (i >= (size_t)DP_POOL_CHUNKS * DP_POOLS_PER_CHUNK)
        return NULL;
    char *chunk =
        dp_os_map_once(&dp_pool_chunk[i / DP_POOLS_PER_CHUNK], DP_POOL_CHUNK);
    if (!chunk)
        return NULL; /* the slot stays unused */
    return (struct dp_pool *)(void *)(chunk + (i % DP_POOLS_PER_CHUNK) *
                                                  DP_POOL_STRIDE);
}

static struct dp_pool *pool_mem(void)
{
    struct dp_pool *p = DP_LIFO_TAKE(&dp_spare_pools, memory_order_acquire);
    if (p) {
        struct dp_pool *rest = p->reg_next, *last = rest;
        if (rest) {
            while (last->reg_next)
                last = last->reg_next;
            spare_push(rest, last);
        }
        pthread_mutex_t *lock = p->lock;
        memset(p, 0, sizeof(*p));
        p->lock = lock;
        return p;
    }
    pthread_mutex_t *lock = dp_lock_new();
    if (!lock)
        return NULL;
    p = pool_slot(); /* zero: fresh from the kernel */
    if (p)
        p->lock = lock; /* else the slot is lost: the map failed anyway */
    return p;
}

/* A put between its CAS, which took a page's count to 0 and set QUEUED,
 * and its push onto the pending queue: the page is not on the queue yet,
 * but every object of it is home.  Destroy waits for such puts instead of
 * counting their pages as busy. */
static bool put_in_flight_locked(struct dp_pool *p)
{
    struct dp_list *lists[2] = {&p->partial, &p->full};
    for (int i = 0; i < 2; i++)
        for (struct dp_page *pg = lists[i]->head; pg; pg = pg->next) {
            uint64_t st = atomic_load_explicit(&pg->state, DP_RLX);
            if ((st & DP_PG_QUEUED) && (st & DP_PG_COUNT) == 0)
                return true;
        }
    return false;
}

void dp_pool_attr_init(dp_pool_attr_t *a)
{
    if (!a)
        return;
    memset(a, 0, sizeof(*a));
    a->lowat = DP_DEFAULT_LOWAT;
    a->hiwat = DP_DEFAULT_HIWAT;
    a->reclaim_age_ns = 0; /* library default, DEFERPOOL_CONF reclaim_age_ms */
    a->reclaim_budget = DP_DEFAULT_RECLAIM_BUDGET;
}

dp_pool_t *dp_pool_create(const char *name, size_t objsize,
                          const dp_pool_attr_t *attr)
{
    return dp_pool_create_ex(name, objsize, attr, 0);
}

dp_pool_t *dp_pool_create_ex(const char *name, size_t objsize,
                             const dp_pool_attr_t *attr, unsigned iflags)
{
    dp_pool_attr_t def;
    if (!attr) {
        dp_pool_attr_init(&def);
        attr = &def;
    }
    const struct dp_options *opt = dp_options();
    unsigned dbg = dp_debug_features(attr->flags, opt->debug, attr->ctor);
    bool debug = dbg || ((attr->flags | opt->debug) & DP_POOL_DEBUG);
    size_t align = attr->align ? attr->align : (objsize < 16 ? 8 : 16);
    if (objsize == 0 || objsize > DP_PAGESIZE_MAX || !dp_is_pow2(align) ||
        align > DP_PAGESIZE_MAX / 2 ||
        (attr->flags &
         ~(unsigned)(DP_POOL_DEBUG | DP_POOL_NOTHREAD | DP_POOL_NOCACHE |
                     DP_POOL_REDZONE | DP_POOL_JUNK | DP_POOL_AUDIT)) ||
        (attr->pagesize &&
         (!dp_is_pow2(attr->pagesize) || attr->pagesize < 4096 ||
          attr->pagesize > DP_PAGESIZE_MAX)) ||
        (attr->hiwat && attr->lowat > attr->hiwat) ||
        (attr->max_pages && attr->lowat > attr->max_pages)) {
        errno = EINVAL;
        return NULL;
    }
    if (align < sizeof(void *))
        align = sizeof(void *);
    /* With a ctor the free-list link lives after the object so that it
     * never clobbers constructed state. */
    size_t linkoff = 0, slot = objsize;
    if (attr->ctor) {
        linkoff = (objsize + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
        slot = linkoff + sizeof(void *);
    }
    if (slot < sizeof(void *))
        slot = sizeof(void *);
    slot = (slot + align - 1) & ~(align - 1);
    /* A debug pool's slot: redzones, the link after the object, the
     * audit record (debug.c). */
    struct dp_debug_layout dl = {0, 0, 0, 0};
    if (debug) {
        dp_debug_layout(objsize, align, dbg, &dl);
        linkoff = dl.linkoff;
        slot = dl.slot;
    }

    size_t pagesize = attr->pagesize, hdr;
    uint32_t cap;
    if (pagesize) {
        dp_page_layout(pagesize, slot, align, debug, dl.front, &hdr, &cap);
    } else {
        /* 64 KiB pages, as mimalloc's small pages: one provider call
         * per many objects; bigger only to hold at least 8 objects. */
        for (pagesize = DP_PAGESIZE_DEFAULT_MIN;; pagesize <<= 1) {
            dp_page_layout(pagesize, slot, align, debug, dl.front, &hdr,
                           &cap);
            if (cap >= 8 || (pagesize >= ((size_t)1 << 20) && cap >= 1) ||
                pagesize == DP_PAGESIZE_MAX)
                break;
        }
    }
    if (cap == 0) {
        errno = EINVAL;
        return NULL;
    }

    dp_link_key_init(); /* before any link is written (link.h) */
    struct dp_pool *p = pool_mem();
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    /* Zeroed: every counter and list starts empty, and the name ends in
     * a NUL.  A copy, not snprintf: the malloc creates its class pools
     * inside short-lived processes' first allocations. */
    if (name)
        memcpy(p->name, name, strnlen(name, sizeof(p->name) - 1));
    p->objsize = objsize;
    p->slotsize = slot;
    p->align = align;
    p->pagesize = pagesize;
    p->linkoff = linkoff;
    p->pagemask = ~(uintptr_t)(pagesize - 1);
    p->hdrsize = hdr;
    p->cap = cap;
    p->slot_tz = (uint32_t)__builtin_ctzl(slot);
    p->slot_inv = dp_inverse_odd(slot >> p->slot_tz);
    p->slot_offmask = pagesize - 1;
    p->slot_cap = cap;
    p->ctor = attr->ctor;
    p->dtor = attr->dtor;
    p->cbarg = attr->cbarg;
    p->prov = attr->provider ? *attr->provider : *dp_provider_mmap();
    p->max_pages = attr->max_pages ? attr->max_pages : SIZE_MAX;
    p->clock = attr->clock;
    p->clock_arg = attr->clock_arg;
    p->flags = attr->flags |
               (iflags & (DP_IPOOL_IMMEDIATE | DP_IPOOL_SMALLDEPOT));
    p->debug = debug;
    p->dbg = dbg;
    p->dbg_recoff = dl.recoff;
    /* NOCACHE pools too: their put checks the map (page.c). */
    p->pagemap = debug || (attr->flags & DP_POOL_NOCACHE) ||
                 (iflags & DP_IPOOL_PAGEMAP);
    p->lowat = attr->lowat;
    p->hiwat = attr->hiwat;
    p->budget = attr->reclaim_budget ? attr->reclaim_budget
                                     : DP_DEFAULT_RECLAIM_BUDGET;
    p->age_ns = attr->reclaim_age_ns ? attr->reclaim_age_ns
                                     : opt->reclaim_age_ns;
    pthread_mutex_init(p->lock, NULL);
    if (debug)
        dp_debug_pool_init(p);
    dp_an_pool_create(p); /* before the cache: a Valgrind pool has none */
    p->leak_report = !(iflags & DP_IPOOL_PAGEMAP);
    dp_tcache_pool_init(p, (iflags & DP_IPOOL_BIN)
                               ? (int)(iflags >> DP_IPOOL_BIN_SHIFT)
                               : -1);
    dp_fork_install(); /* done by the constructor; for a static link */
    dp_registry_add(p);
    if (!(attr->flags & DP_POOL_NOTHREAD) && opt->background_thread)
        dp_reclaim_autostart();
    return p;
}

long dp_pool_leaks(dp_pool_t *p, FILE *f)
{
    if (!p || !p->debug) {
        errno = EINVAL;
        return -1;
    }
    return dp_debug_leaks(p, f ? f : stderr);
}

int dp_pool_destroy(dp_pool_t *p)
{
    if (!p) {
        errno = EINVAL;
        return -1;
    }
    dp_registry_remove(p); /* waits for a reclaim pass using it */
    /* Every thread's bin of p, and its depot, to the pages.  The bins stay
     * bound and the magazines mapped until nothing is out: a refused
     * destroy leaves the pool as the puts racing it find it. */
    dp_tcache_drain_pool(p, true, false);
    struct dp_page *all = NULL;
    pthread_mutex_lock(p->lock);
    dp_drain_pending_locked(p, 0);
    while (put_in_flight_locked(p)) {
        pthread_mutex_unlock(p->lock);
        dp_os_yield();
        pthread_mutex_lock(p->lock);
        dp_drain_pending_locked(p, 0);
    }
    if (p->partial.n || p->full.n || p->inflight || p->freeing) {
        uint64_t out = 0;
        for (struct dp_page *pg = p->partial.head; pg; pg = pg->next)
            out += atomic_load(&pg->state) & DP_PG_COUNT;
        for (struct dp_page *pg = p->full.head; pg; pg = pg->next)
            out += atomic_load(&pg->state) & DP_PG_COUNT;
        pthread_mutex_unlock(p->lock);
        if (p->debug)
            dp_debug_leaks(p, stderr);
        fprintf(stderr,
                "deferpool: dp_pool_destroy('%s'): %llu object(s) still "
                "out; pool left intact\n",
                p->name, (unsigned long long)out);
        if (p->debug)
            abort();
        dp_registry_add(p);
        errno = EBUSY;
        return -1;
    }
    /* Nothing is out, so no put can come: the bin index and the
     * magazines go (empty bins, an empty depot). */
    pthread_mutex_unlock(p->lock);
    dp_tcache_drain_pool(p, true, true);
    pthread_mutex_lock(p->lock);
    size_t lowat = p->lowat, reserve = p->reserve_pages;
    p->lowat = p->reserve_pages = 0;
    dp_collect_due_locked(p, 0, SIZE_MAX, true, &all);
    p->lowat = lowat;
    p->reserve_pages = reserve;
    pthread_mutex_unlock(p->lock);
    size_t n = dp_release_pages(p, all);
    DP_PROBE(pages_release, p, p->name, n, DP_BY_DESTROY);
    (void)n;
    pthread_mutex_destroy(p->lock);
    dp_an_pool_destroy(p);
    spare_push(p, p);
    return 0;
}

#ifndef DP_MALLOC_CORE
/*
 * DEFERPOOL_CONF stats_print: libdeferpool prints dp_stats_print() (stats.c)
 * at unload, after the program's atexit handlers, on a duplicate of
 * stderr taken at load: programs such as coreutils close stderr in an
 * atexit handler.  Here, at the top of the graph, so that a static link
 * that creates pools always has it (options.c reads the options at
 * load).  The drop-in malloc, which carries its own copy of this file
 * compiled with DP_MALLOC_CORE, prints its own statistics instead
 * (lib/malloc/).
 */
static int dp_stats_fd = -1;

__attribute__((constructor)) static void dp_stats_ctor(void)
{
    if (dp_options()->stats_print != DP_SP_OFF)
        dp_stats_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
}

__attribute__((destructor)) static void dp_stats_dtor(void)
{
    int how = dp_options()->stats_print;
    if (how == DP_SP_OFF)
        return;
    FILE *f = dp_stats_fd >= 0 ? fdopen(dp_stats_fd, "w") : NULL;
    dp_stats_print(f ? f : stderr, how == DP_SP_JSON ? DP_STATS_JSON : 0);
    if (f)
        fclose(f);
}
#endif
