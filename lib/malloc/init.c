/*
 * init.c -- the drop-in malloc's start-up (mc_init), the class pools,
 * each made at its class's first allocation (mc_class_pool), the lazy
 * start of the reclaim thread, the library constructor and
 * destructor, and this layer's part of the fork handlers.  Top layer
 * (docs/design.md §1, fork: §8); docs/malloc.md, "Recursion and
 * bootstrap", "The reclaim thread", "Fork".
 */
#include "malloc_internal.h"

#include <stdio.h>

extern char **environ;

/* Globals: malloc_internal.h says how each is synchronised. */
/* The stand-in mc_hot[c] names until class c's pool is made: its bin
 * (DP_TC_BINS) is the one no pool binds, always empty; tc_soft 0 makes
 * the pop miss. */
static struct dp_pool mc_nopool = {.tcbin = DP_TC_BINS,
                                   .tcoff = DP_TC_BINOFF(DP_TC_BINS)};
#define NOPOOL(i) [i] = &mc_nopool
dp_pool_t *_Atomic mc_hot[MC_NCLASS] = {
    NOPOOL(0),  NOPOOL(1),  NOPOOL(2),  NOPOOL(3),  NOPOOL(4),  NOPOOL(5),
    NOPOOL(6),  NOPOOL(7),  NOPOOL(8),  NOPOOL(9),  NOPOOL(10), NOPOOL(11),
    NOPOOL(12), NOPOOL(13), NOPOOL(14), NOPOOL(15), NOPOOL(16), NOPOOL(17),
    NOPOOL(18), NOPOOL(19), NOPOOL(20), NOPOOL(21), NOPOOL(22), NOPOOL(23),
    NOPOOL(24), NOPOOL(25), NOPOOL(26), NOPOOL(27), NOPOOL(28), NOPOOL(29),
    NOPOOL(30), NOPOOL(31),
};
_Static_assert(MC_NCLASS == 32, "mc_hot: one stand-in per class");
size_t mc_align[MC_NCLASS];
/* The thread-cache bin reserved for each class's pool by mc_init (-1:
 * none free): written by mc_init, read by mc_class_pool, both under
 * mc_init_lock. */
static int mc_bin[MC_NCLASS];
_Atomic uint64_t mc_hit[MC_TABLE_MAX / 8 + 1];
_Atomic int mc_inited;
DP_FORK_DATA _Atomic int mc_rt;
_Atomic uint64_t mc_mapped;
DP_TLS unsigned mc_depth;
static _Atomic int mc_ready;  /* the constructor ran (malloc_internal.h) */
/* Held by mc_init and while creating a class pool; outermost
 * (docs/design.md §8). */
static DP_FORK_DATA pthread_mutex_t mc_init_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Fork: this layer's part of the core's handlers, whose order
 * docs/design.md §8 gives.  mc_init_lock is taken after the core has
 * claimed the thread caches (an owner inside its cache may be flushing
 * its lists here) and before the core's locks; mc_heap_lock, a leaf, last.
 * Registered from the library constructor, so that a fork while another
 * thread is inside mc_init, or a program handler registered in main()
 * that allocates, finds them in place.
 */
static void mc_lock_init(void) { pthread_mutex_lock(&mc_init_lock); }
static void mc_unlock_init(void) { pthread_mutex_unlock(&mc_init_lock); }

/* In the child, every lock held, after the core handed the other
 * threads' lists to mc_lq. */
static void mc_atfork_child(void)
{
    /* A thread that was starting the reclaim thread is gone: let the
     * next allocation try (the core restarts a thread that was running). */
    if (atomic_load(&mc_rt) == 1)
        atomic_store(&mc_rt, 0);
    /* A thread caught between its counter update and its push (free), or
     * holding a drained list (evicted blocks being unmapped), left the
     * queue counters off; the blocks it held stay mapped, unowned.
     * Recount.  The cache itself is whole: we hold mc_heap_lock, and its
     * counters only change under it. */
    uint64_t n = 0, bytes = 0;
    for (struct mc_block *h = atomic_load(&mc_lq); h; h = mc_next_queued(h)) {
        n++;
        bytes += h->maplen;
    }
    /* Written only when off: each write is a copy-on-write fault. */
    if (atomic_load(&mc_bs.queued) != n)
        atomic_store(&mc_bs.queued, n);
    if (atomic_load(&mc_bs.queued_bytes) != bytes)
        atomic_store(&mc_bs.queued_bytes, bytes);
}

static const struct dp_fork_layer mc_fork_layer = {
    .lock_outer = mc_lock_init,
    .unlock_outer = mc_unlock_init,
    .lock_leaf = heap_fork_lock,
    .unlock_leaf = heap_fork_unlock,
    .child = mc_atfork_child,
};

/*
 * The class pools' provider.  Their pages of DP_PAGESIZE_DEFAULT_MIN
 * bytes (64 KiB, aligned to their size: all but the largest classes')
 * are carved from chunks of MC_CARVE_PAGES pages: one mmap and its
 * alignment trim a chunk, where a page of its own cost an mmap and one or
 * two munmaps (docs/malloc.md, "Size classes").  A page goes back alone,
 * with munmap; a chunk's pages never handed out stay mapped and
 * untouched (address space, no memory).  Other sizes go to the core's
 * mmap provider.  Everything handed out counts into mc_mapped (the
 * reclaim thread's start).
 *
 * mc_carve: the current chunk's address (aligned to a page) plus how many
 * of its pages are handed out, or 0 before the first; lock-free (a
 * NOWAIT get may call the provider), relaxed: the address is all it
 * publishes, and a fresh mapping holds nothing to see.  Only an empty or
 * used-up word is replaced, by a new chunk with its first page taken, so
 * a CAS that fails never hands a page out twice.
 */
#define MC_CARVE_PAGE DP_PAGESIZE_DEFAULT_MIN
#define MC_CARVE_PAGES 16u
_Static_assert(MC_CARVE_PAGES < MC_CARVE_PAGE, "the count fits below the address");
static _Atomic uintptr_t mc_carve;

static void *mc_carve_page(void)
{
    uintptr_t w = atomic_load_explicit(&mc_carve, MC_RLX);
    for (;;) {
        uintptr_t n = w & (MC_CARVE_PAGE - 1);
        if (!w || n >= MC_CARVE_PAGES)
            break;
        if (atomic_compare_exchange_weak_explicit(&mc_carve, &w, w + 1,
                                                  MC_RLX, MC_RLX))
            return (char *)(w - n) + n * MC_CARVE_PAGE;
    }
    const dp_provider_t *m = dp_provider_mmap();
    char *c = m->alloc(NULL, MC_CARVE_PAGES * MC_CARVE_PAGE, MC_CARVE_PAGE,
                       DP_NOWAIT);
    if (!c)
        return NULL;
    if (!atomic_compare_exchange_strong_explicit(&mc_carve, &w,
                                                 (uintptr_t)c + 1, MC_RLX,
                                                 MC_RLX))
        /* Another thread installed a chunk meanwhile: keep one page. */
        m->free(NULL, c + MC_CARVE_PAGE,
                (MC_CARVE_PAGES - 1) * MC_CARVE_PAGE);
    return c;
}

static void *mc_page_alloc(void *ctx, size_t size, size_t align, int flags)
{
    void *p = size == MC_CARVE_PAGE && align == MC_CARVE_PAGE
                  ? mc_carve_page()
                  : dp_provider_mmap()->alloc(ctx, size, align, flags);
    if (p)
        atomic_fetch_add_explicit(&mc_mapped, size, MC_RLX);
    return p;
}

static void mc_page_free(void *ctx, void *page, size_t size)
{
    dp_provider_mmap()->free(ctx, page, size);
}

static const dp_provider_t mc_pages = {mc_page_alloc, mc_page_free, NULL,
                                       "mmap"};

/* The malloc's reclaim age: DEFERPOOL_CONF reclaim_age_ms when it set
 * one, else MC_DEFAULT_AGE_NS (malloc_internal.h). */
static uint64_t mc_conf_age(void)
{
    return dp_option_is_set(DP_OPT_RECLAIM_AGE) ? dp_options()->reclaim_age_ns
                                                : MC_DEFAULT_AGE_NS;
}

/* Set up the malloc.  Called inside the recursion guard: allocations
 * made on the way (pthread_atfork, ...) come from the bootstrap arena.
 * false: too early (no environment yet, so DEFERPOOL_CONF cannot be
 * read); the caller serves the request another way.  The class pools
 * come later, each at its class's first allocation (mc_class_pool): a
 * process that lives a few milliseconds touches the pages of the pools
 * it uses, not of all 32 (docs/benchmarks.md, History, "process
 * start").  Their thread-cache bins are reserved here, at the first
 * allocation, before a program's own pools could take them all. */
bool mc_init(void)
{
    if (DP_LIKELY(atomic_load_explicit(&mc_inited, memory_order_acquire)))
        return true;
    if (!environ)
        return false;
    pthread_mutex_lock(&mc_init_lock);
    if (!atomic_load_explicit(&mc_inited, MC_RLX)) {
        mc_age_ns = mc_conf_age();
        for (unsigned c = 0; c < MC_NCLASS; c++) {
            mc_align[c] = mc_class_align(c);
            mc_bin[c] = dp_tcache_bin_reserve();
        }
        dp_reclaim_set_hook(heap_reclaim_hook);
        dp_tcache_ext_register(&mc_tl_ext_ops);
        mc_stats_keep_stderr();
        atomic_store_explicit(&mc_inited, 1, memory_order_release);
    }
    pthread_mutex_unlock(&mc_init_lock);
    return true;
}

/* Make class c's pool and publish it (mc_init_lock held). */
static dp_pool_t *mc_class_create(unsigned c)
{
    size_t sz = mc_class_size(c);
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.align = mc_align[c];
    a.lowat = 0;  /* everything may age out: RSS comes back */
    a.reclaim_age_ns = mc_age_ns;
    a.flags = DP_POOL_NOTHREAD; /* started lazily, below */
    a.provider = &mc_pages;
    /* "malloc-<size>", without snprintf (create.c, the pool's name). */
    char name[32] = "malloc-", digits[20];
    size_t nd = 0, at = 7;
    for (size_t v = sz; v || !nd; v /= 10)
        digits[nd++] = (char)('0' + v % 10);
    while (nd)
        name[at++] = digits[--nd];
    name[at] = 0;
    unsigned iflags = DP_IPOOL_PAGEMAP | DP_IPOOL_SMALLDEPOT;
    if (mc_bin[c] >= 0)
        iflags |= DP_IPOOL_BINIDX(mc_bin[c]);
    dp_pool_t *p = dp_pool_create_ex(name, sz, &a, iflags);
    if (!p)
        return NULL;
    uint64_t e = atomic_load_explicit(&p->tcoff, MC_RLX) |
                 (uint64_t)p->tc_soft << 32;
    for (size_t i = 0; i <= MC_TABLE_MAX / 8; i++)
        if (mc_small_class[i] == c)
            atomic_store_explicit(&mc_hit[i], e, MC_RLX);
    atomic_store_explicit(&mc_hot[c], p, memory_order_release);
    return p;
}

dp_pool_t *mc_class_pool_if(unsigned c)
{
    dp_pool_t *p = atomic_load_explicit(&mc_hot[c], memory_order_acquire);
    return p == &mc_nopool ? NULL : p;
}

dp_pool_t *mc_class_pool(unsigned c)
{
    dp_pool_t *p = mc_class_pool_if(c);
    if (DP_LIKELY(p != NULL))
        return p;
    pthread_mutex_lock(&mc_init_lock);
    p = mc_class_pool_if(c);
    if (!p)
        p = mc_class_create(c);
    pthread_mutex_unlock(&mc_init_lock);
    return p;
}

/*
 * Start the reclaim thread, once, from an allocation made outside the
 * recursion guard, after the library constructor ran (so never from the
 * loader's first allocations, before libc is set up), and once the malloc
 * has mapped MC_RT_START bytes.  A smaller program has little to give
 * back, and a thread costs every process more than its creation: each
 * fork() must flush the TLB entries of the process on every CPU one of
 * its threads ran on (docs/malloc.md, "The reclaim thread").
 * pthread_create allocates (the new thread's DTV): those calls find
 * mc_rt == 1 and go on normally; no lock of ours is held.  The library
 * is linked with -z now, so the thread never enters the lazy binder.
 */
void mc_maybe_start(bool force)
{
    int zero = 0;
    if ((!force && atomic_load_explicit(&mc_mapped, MC_RLX) < MC_RT_START) ||
        !atomic_load_explicit(&mc_ready, MC_RLX) ||
        !atomic_compare_exchange_strong(&mc_rt, &zero, 1))
        return;
    /* A program that stopped the thread (dp_reclaim_stop) keeps it
     * stopped. */
    if (dp_options()->background_thread && !dp_reclaim_stopped())
        dp_reclaim_autostart();
    atomic_store(&mc_rt, 2);
}

/* stats_print is read here too, not only at the first allocation after
 * start-up: a program that never allocates still prints at exit. */
__attribute__((constructor)) static void mc_ctor(void)
{
    /* Inside the recursion guard: pthread_atfork may allocate. */
    mc_depth++;
    dp_fork_set_layer(&mc_fork_layer);
    dp_fork_install();
    mc_depth--;
    atomic_store(&mc_ready, 1);
    mc_stats_keep_stderr();
}

__attribute__((destructor)) static void mc_dtor(void)
{
    if (dp_options()->stats_print)
        mc_stats_print_at_exit();
}
