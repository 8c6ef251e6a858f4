/*
 * cache.c -- the thread-cache layer, between the pages and the pool: one bin of free objects per pool
 * per thread, in front of the page lists.  A same-thread get or put
 * touches only the thread's own cache lines, with no atomic RMW and no
 * fence.  Drainers (reclaim GC, explicit reclaim, destroy, a getter about
 * to sleep) take a bin from a thread that is not inside a get/put, using
 * an asymmetric handshake built on membarrier(2).  docs/design.md,
 * "Thread caches".
 */
#include "cache_impl.h"
#include "depot.h"
#include "page.h"

#include <linux/membarrier.h>
#include <string.h>

/* The calling thread's cache; dp_tc_none until its first get of a cached
 * pool.  initial-exec TLS: one %fs-relative load, no __tls_get_addr. */
DP_HIDDEN struct dp_tcache dp_tc_none = {
    .active = 1,
    .drain = DP_TC_CLAIMED,
    .bins = {[0 ... DP_TC_BINS] = {.busy = 1}},
};
DP_HIDDEN DP_TLS struct dp_tcache *dp_tc = &dp_tc_none;

DP_FORK_DATA struct dp_tcg dp_tcg = {.lock = PTHREAD_MUTEX_INITIALIZER};
DP_FORK_DATA _Atomic uint32_t dp_tc_ncaches; /* cache.h */


static pthread_once_t dp_tcg_once = PTHREAD_ONCE_INIT; /* tcg_init */

/* Keys below this one are set without a lock or an allocation
 * ("Adopted caches"). */
#define DP_TC_KEY_DIRECT 32u

/* The test hook (deferpool.h, "Testing: hooks"). */
DP_HIDDEN _Atomic(dp_test_hook_t) dp_test_hook_fn;
static void *_Atomic dp_test_hook_arg;

void dp_test_set_hook(dp_test_hook_t fn, void *arg)
{
    atomic_store(&dp_test_hook_arg, arg);
    atomic_store(&dp_test_hook_fn, fn);
}

void dp_test_hook_call(dp_test_hook_t fn, int where)
{
    fn(where, atomic_load(&dp_test_hook_arg));
}

/* The layer above's ext ops (cache.h): set once, read by every flush. */
static _Atomic(const struct dp_tcache_ext_ops *) tc_ext_ops;

void dp_tcache_ext_register(const struct dp_tcache_ext_ops *ops)
{
    atomic_store(&tc_ext_ops, ops);
}

static const struct dp_tcache_ext_ops *ext_ops(void)
{
    return atomic_load(&tc_ext_ops);
}

/* Hand back a cache's ext lists (same ownership rules as bin_flush). */
size_t dp_tc_flush_ext(struct dp_tcache *tc, bool forget)
{
    const struct dp_tcache_ext_ops *ops = ext_ops();
    size_t n = 0;
    if (!ops)
        return 0;
    for (int i = 0; i < DP_TC_EXT; i++) {
        struct dp_tclist *l = &tc->ext[i];
        uint32_t k = atomic_load_explicit(&l->n, DP_RLX);
        if (k || forget)
            ops->flush(l, forget);
        n += k;
    }
    atomic_store_explicit(&tc->ext_units, 0, DP_RLX);
    return n;
}

static void tc_thread_exit(void *v);

static void tcg_init(void)
{
    /* Caches exist only where drainers can take them back: without
     * membarrier, every put and get goes to the pages. */
    if (dp_os_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0 ||
        pthread_key_create(&dp_tcg.key, tc_thread_exit) != 0) {
        dp_tcg.state = -1;
        return;
    }
    dp_tcg.state = 1;
    dp_tcg.adopt = dp_tcg.key < DP_TC_KEY_DIRECT; /* "Adopted caches" */
}


/* Take bin `want` (one dp_tcache_bin_reserve marked taken already), or
 * (want < 0) the first free one: its index, or -1 if none is free.
 * dp_tcg.lock held. */
static int tcg_take_bin_locked(int want)
{
    if (want >= 0) {
        dp_tcg.used[want / 64] |= 1ull << (want % 64);
        return want;
    }
    for (int i = 0; i < DP_TC_BINS; i++) {
        if (!(dp_tcg.used[i / 64] & (1ull << (i % 64)))) {
            dp_tcg.used[i / 64] |= 1ull << (i % 64);
            return i;
        }
    }
    return -1;
}

int dp_tcache_bin_reserve(void)
{
    pthread_once(&dp_tcg_once, tcg_init);
    if (dp_tcg.state != 1)
        return -1;
    pthread_mutex_lock(&dp_tcg.lock);
    int got = tcg_take_bin_locked(-1);
    pthread_mutex_unlock(&dp_tcg.lock);
    return got;
}

void dp_tcache_pool_init(struct dp_pool *p, int want)
{
    p->tcidx = -1;
    dp_tc_set_bin(p, DP_TC_BINS);
    pthread_once(&dp_tcg_once, tcg_init);
    if (dp_tcg.state != 1 || p->debug || p->vg ||
        (p->flags & (DP_POOL_NOCACHE | DP_IPOOL_IMMEDIATE))) {
        dp_depot_init(p); /* none */
        return;
    }
    /* Hold up to 64 KiB of objects, between 8 and 512 of them, and
     * one flush more before a put must return some ("Soft limit").  A
     * refill (and a depot magazine) is half of that, at most 128
     * objects. */
    size_t max = (64u << 10) / p->slotsize;
    max = max < 8 ? 8 : max > 512 ? 512 : max;
    p->tc_batch = (uint32_t)(max / 2 < 128 ? max / 2 : 128);
    /* A full bin returns its oldest quarter, at most 16 objects (and at
     * most DP_TC_FLUSH_RUNS page runs): the flush is what a put pays in
     * the tail, so it stays short (docs/benchmarks.md, larson). */
    p->tc_flush = max >= 64 ? 16 : max >= 4 ? (uint32_t)max / 4 : 1;
    p->tc_max = (uint32_t)max + p->tc_flush;
    p->tc_soft = 0; /* uncached until a bin is found */
    pthread_mutex_lock(&dp_tcg.lock);
    int i = tcg_take_bin_locked(want);
    if (i >= 0) {
        p->tcidx = i;
        dp_tc_set_bin(p, (uint32_t)i);
        p->tc_soft = (uint32_t)max;
    }
    pthread_mutex_unlock(&dp_tcg.lock);
    dp_depot_init(p);
}

/* A flush stops at the fourth page run (or tc_flush objects): each run
 * is a CAS on a page's state, a line another thread may hold, and the
 * flush is a put's tail latency (docs/benchmarks.md, larson).
 * Sequential frees fill a run per page and are not affected. */
#define DP_TC_FLUSH_RUNS 4

/* Empty magazines a refill makes at most when bins went without. */
#define DP_MAG_STOCK 8


/*
 * Spare caches.  A thread's cache is one mapping of address space (about
 * a megabyte, mostly untouched) and a place on dp_tcg's list.  A thread
 * that exits keeps its emptied cache on dp_tcg.spare, up to
 * DP_TC_SPARES of them, and the next thread's first cached get takes it
 * from there: a program that starts and ends threads by the thousand
 * pays no mmap, madvise or munmap per thread, and the new thread finds
 * the bins' slot pages already faulted in.  A spare is an empty cache:
 * every bin unbound, active and drain 0.  The reclaim pass unmaps the
 * spares that stayed unused for a whole pass (dp_tcache_gc), so they
 * never pin memory for long.
 */
#define DP_TC_SPARES 16

static struct dp_tcache *tc_map(void)
{
    struct dp_tcache *tc = dp_os_map(DP_TC_MAPLEN);
    if (!tc)
        return NULL;
    /* Touched sparsely (the bins in use): no huge page may make the rest
     * resident (docs/tuning.md, `thp`). */
    dp_map_nohuge(tc, DP_TC_MAPLEN);
    /* A bin's slots pointer is set when the bin is first used
     * (bin_start): writing all 256 here would fault in three pages of
     * bin headers that a short-lived thread never reads. */
    tc->slotmem = (void **)((char *)tc + DP_TC_HEAD);
    return tc;
}

/* Fault in the page of slot memory at w, keeping its word, since the
 * bin may hold objects there already (the owner, inside
 * dp_tc_enter_bin): an atomic add of 0, a write.  A read first would
 * fault twice on a page never touched, once for the shared zero page
 * and again to copy it for the write. */
static inline void slot_page_touch(void *w)
{
    atomic_fetch_add_explicit((_Atomic uintptr_t *)w, 0, DP_RLX);
}

/* A bin's first use in this cache: its stack starts in its young area
 * ("Young bins"), whose page is faulted in here.  Every path that may
 * write a slot of an empty bin (a get's slow path, through bin_touch; a
 * put's) calls it first. */
static inline void bin_start(struct dp_tcache *tc, struct dp_tbin *b)
{
    if (DP_UNLIKELY(!b->slots)) {
        void **y = young_area(tc, (size_t)(b - tc->bins));
        slot_page_touch(y);
        b->slots = y;
    }
}

static bool tcg_lock(bool nowait)
{
    if (!nowait) {
        pthread_mutex_lock(&dp_tcg.lock);
        return true;
    }
    return pthread_mutex_trylock(&dp_tcg.lock) == 0;
}

/* Keep an exited thread's cache (emptied, unlinked) for the next thread;
 * false: enough are kept, the caller unmaps it.  Lock held. */
static bool tc_retire_locked(struct dp_tcache *tc)
{
    if (dp_tcg.nspare >= DP_TC_SPARES)
        return false;
    atomic_store_explicit(&tc->drain, 0, DP_RLX);
    atomic_store_explicit(&tc->active, 0, DP_RLX);
    tc->seen_sig = 0;
    tc->cow = 0; /* its bins are unbound: putlim 0 */
    tc->adopted = false;
    tc->prev = NULL;
    tc->next = dp_tcg.spare;
    dp_tcg.spare = tc;
    dp_tcg.nspare++;
    return true;
}

/* Set while this thread makes its cache, and from its exit on: no
 * adoption then ("Adopted caches"). */
static DP_TLS bool tc_noadopt;

/* A cache to link, dp_tcg.lock held: a spare, else a new mapping, made
 * with the lock dropped.  Returns it with the lock held, or NULL with
 * the lock dropped. */
static struct dp_tcache *tc_take_locked(bool nowait)
{
    struct dp_tcache *tc = dp_tcg.spare;
    if (tc) {
        dp_tcg.spare = tc->next;
        dp_tcg.nspare--;
        return tc;
    }
    pthread_mutex_unlock(&dp_tcg.lock);
    tc = tc_map();
    if (!tc)
        return NULL;
    if (!tcg_lock(nowait)) {
        tc_unmap(tc);
        return NULL;
    }
    return tc;
}

/* Link a cache tc_take_locked gave.  A fork between its claims and its
 * locks owns every cache: a new one starts claimed, so its owner keeps
 * off it until the fork is done (dp_tcache_atfork_*). */
static void tc_link_new_locked(struct dp_tcache *tc)
{
    if (dp_tcg.forking)
        atomic_store_explicit(&tc->drain, DP_TC_CLAIMED, DP_RLX);
    tc_link_locked(tc);
}

/* tc_create's work. */
static struct dp_tcache *tc_create_inner(bool nowait)
{
    if (!tcg_lock(nowait))
        return NULL;
    struct dp_tcache *tc = tc_take_locked(nowait);
    if (!tc)
        return NULL;
    tc_link_new_locked(tc);
    pthread_mutex_unlock(&dp_tcg.lock);
    /* Outside the lock: glibc may allocate for the key (a malloc inside
     * the allocator, served by the bootstrap arena).  On failure the
     * cache, on the list but empty and never used, goes back. */
    if (pthread_setspecific(dp_tcg.key, tc) != 0) {
        pthread_mutex_lock(&dp_tcg.lock);
        tc_unlink_locked(tc);
        bool kept = tc_retire_locked(tc);
        pthread_mutex_unlock(&dp_tcg.lock);
        if (!kept)
            tc_unmap(tc);
        return NULL;
    }
    dp_tc = tc;
    return tc;
}

/* nowait: a DP_NOWAIT get's creation, which does not wait for the cache
 * lock (a drain holds it across membarrier): if it is taken, the get
 * goes uncached this time and a later miss tries again. */
static struct dp_tcache *tc_create(bool nowait)
{
    bool was = tc_noadopt; /* true after the thread's exit destructor */
    tc_noadopt = true;
    atomic_signal_fence(memory_order_seq_cst);
    struct dp_tcache *tc = tc_create_inner(nowait);
    atomic_signal_fence(memory_order_seq_cst);
    tc_noadopt = was;
    return tc;
}

/*
 * Adopted caches.  A thread's cache is made by its first get that
 * misses (tc_create, an mmap), so a thread that only frees what others
 * allocate -- a consumer -- would put every object to its page, one CAS
 * each, and hand it back as a page's put stack.  Instead, a put that
 * finds no cache takes a cache made ready for it: dp_tcg.ready, a cache
 * on the list that no thread owns.  Adopting it is an exchange of that
 * word, pthread_setspecific of the exit key, and the store of dp_tc: no
 * lock, no system call.  pthread_setspecific of a key below glibc's
 * PTHREAD_KEY_2NDLEVEL_SIZE (32) writes the thread's first block of
 * keys and nothing else (musl: always); with a higher key (a program
 * that made 32 keys before the first cache) there is no adoption.  A
 * put that finds none ready sets ready_want; the next get slow path
 * (dp_tcache_want) or reclaim pass makes one, from a spare cache or a
 * new mapping, and links it as tc_create does.  A thread adopts only
 * while it has no cache, never while it makes its own (a signal
 * handler's put in tc_create) or after its exit destructor ran (a later
 * destructor's free).  An unowned cache on the list is empty, so
 * drainers and the GC find nothing in it; a fork child drops it with
 * the other threads' caches.
 */
void dp_tc_ready_make(bool nowait)
{
    /* Without adoption the want stays set: the puts then write it no
     * more, and this is a load and a return. */
    pthread_once(&dp_tcg_once, tcg_init);
    if (!dp_tcg.adopt)
        return;
    atomic_store_explicit(&dp_tcg.ready_want, 0, DP_RLX);
    if (atomic_load_explicit(&dp_tcg.ready, memory_order_acquire) ||
        !tcg_lock(nowait))
        return;
    struct dp_tcache *tc = NULL;
    /* Adopters only take it: NULL seen under the lock stays NULL (the
     * lock may have been dropped for a mapping). */
    if (!atomic_load_explicit(&dp_tcg.ready, DP_RLX) &&
        (tc = tc_take_locked(nowait)) == NULL)
        return;
    if (tc && !atomic_load_explicit(&dp_tcg.ready, DP_RLX)) {
        tc_link_new_locked(tc);
        atomic_store_explicit(&dp_tcg.ready, tc, memory_order_release);
        tc = NULL;
    }
    bool kept = !tc || tc_retire_locked(tc);
    pthread_mutex_unlock(&dp_tcg.lock);
    if (!kept)
        tc_unmap(tc);
}

/* This thread, which has no cache, takes the ready one: true if it did
 * (dp_tc is it now). */
static bool tc_adopt(void)
{
    if (tc_noadopt)
        return false;
    struct dp_tcache *tc =
        atomic_load_explicit(&dp_tcg.ready, DP_RLX)
            ? atomic_exchange_explicit(&dp_tcg.ready, NULL,
                                       memory_order_acquire)
            : NULL;
    if (!tc) {
        /* A plain load first: the word is written once per want. */
        if (!atomic_load_explicit(&dp_tcg.ready_want, DP_RLX))
            atomic_store_explicit(&dp_tcg.ready_want, 1, DP_RLX);
        return false;
    }
    /* A ready cache is made only after tcg_init, with a key below
     * DP_TC_KEY_DIRECT, which pthread_setspecific does not refuse; if it
     * did, the cache would go back for the next adopter. */
    if (pthread_setspecific(dp_tcg.key, tc) != 0) {
        struct dp_tcache *none = NULL;
        atomic_compare_exchange_strong_explicit(
            &dp_tcg.ready, &none, tc, memory_order_release, DP_RLX);
        return false;
    }
    tc->adopted = true;
    dp_tc = tc;
    return true;
}

void dp_tcache_put_miss(struct dp_pool *p, void *obj)
{
    /* tcbin, not tcidx: a destroy may reset it meanwhile (a put racing
     * it finds the bin flushed, as on the fast path). */
    if (dp_tc == &dp_tc_none &&
        atomic_load_explicit(&p->tcbin, DP_RLX) < DP_TC_BINS &&
        tc_adopt() && dp_tcache_put(p, obj))
        return;
    dp_page_put(p, obj);
}

/* Reclaim pass: unmap the spares that were spare at the previous pass
 * too (seen_sig 1); mark the others.  Called by dp_tcache_gc, lock
 * held; returns the list to unmap after unlocking. */
struct dp_tcache *dp_tc_spares_age_locked(void)
{
    struct dp_tcache *old = NULL, **pp = &dp_tcg.spare;
    while (*pp) {
        struct dp_tcache *tc = *pp;
        if (tc->seen_sig) {
            *pp = tc->next;
            dp_tcg.nspare--;
            tc->next = old;
            old = tc;
        } else {
            tc->seen_sig = 1;
            pp = &tc->next;
        }
    }
    return old;
}

/*
 * Slow start.  A bin's first refill from the pages takes DP_TC_RAMP0
 * objects besides the caller's, and each one after it DP_TC_RAMPX times
 * as many as the last, up to tc_batch; a chain longer than that is not
 * taken whole either.  A thread that allocates a few blocks of a class
 * and exits (a thread pool's short task, a program that starts threads
 * by the thousand) then carries and gives back at its exit a few
 * objects, not a batch: taking one from a page's free list reads its
 * link word, giving one back writes it, and a chain must be walked to
 * its end, each a line another core may hold.  A bin in steady use
 * reaches tc_batch (128 at most) after four refills.
 */
#define DP_TC_RAMP0 2
#define DP_TC_RAMPX 4

/* This thread's ramp for p's bin (the thread has a cache). */
static _Atomic uint32_t *bin_ramp(struct dp_pool *p)
{
    return &bin_chain(dp_tc, &dp_tc->bins[p->tcidx])->ramp;
}

uint32_t dp_tcache_want(struct dp_pool *p, bool nowait)
{
    if (p->tcidx < 0)
        return 1;
    if (DP_UNLIKELY(atomic_load_explicit(&dp_tcg.ready_want, DP_RLX)))
        dp_tc_ready_make(nowait); /* "Adopted caches" */
    struct dp_tcache *mine = dp_tc_mine();
    if (mine && DP_UNLIKELY(mine->adopted))
        mine->adopted = false; /* it gets now: "Adopted caches" */
    if (!mine && !tc_create(nowait))
        return 1;
    _Atomic uint32_t *ramp = bin_ramp(p);
    /* An atomic add of 0, not a load: in a new cache this is the first
     * touch of the bin's page, and a write faults it in once where a
     * read would fault twice (slot_page_touch). */
    uint32_t r = atomic_fetch_add_explicit(ramp, 0, DP_RLX);
    if (r < p->tc_batch) {
        r = r ? DP_TC_RAMPX * r : DP_TC_RAMP0;
        if (r > p->tc_batch)
            r = p->tc_batch;
        atomic_store_explicit(ramp, r, DP_RLX);
    }
    return r + 1;
}


/*
 * Chains.  A refill that finds a page's put stack whole (the lock's list
 * empty) knows its length without walking it: the page's carved count
 * minus the objects out, which the CAS that takes the stack reads.  So it
 * hands the stack to the bin as it is, and the get fast path pops it
 * when the stack of pointers is empty.  Walking the list in the refill
 * costs one dependent load per object with nothing to overlap it; popping
 * it costs the same load where the caller's own work hides it.  A bin
 * holds at most one chain; puts go to its stack as usual.
 */
uint32_t dp_tcache_chain_max(struct dp_pool *p)
{
    if (p->tcidx < 0)
        return 0;
    uint32_t r =
        dp_tc_mine() ? atomic_load_explicit(bin_ramp(p), DP_RLX) : 0;
    if (r < p->tc_batch) /* "Slow start" */
        return r;
    size_t m = ((size_t)32 << 10) / p->slotsize;
    return m > p->tc_soft ? (uint32_t)m : p->tc_soft;
}

/*
 * Faults.  A put writes only memory that is already faulted in, so that it
 * never waits for the kernel to find a page: a bin's push into its slot
 * area, wherever the stack's base has climbed (bin_drop_oldest), and a
 * shed into the bin's spare magazine (depot.c faults in every magazine it
 * makes).  A bin's young area is faulted in where the bin starts, the
 * part of its own area that the bound pool's stack uses (its first
 * 2 * tc_max slots) by the get slow path that moves the stack there
 * ("Young bins").  A put that binds a bin its thread never got
 * from (a thread that only frees what others allocate) may still fault
 * in its pages, at most once per bin and thread; so may the first write
 * to any page in a fork child (copy on write): a free() there writes its
 * block's tag into a page it shares with the parent whatever the bin
 * does, so the child does not fault the slot areas in again -- a child
 * that only runs a few calls before it execs or exits would pay for
 * every bin it touches (docs/design.md, "Fork").
 *
 * Nor does it write a slot it need not: after a fork the forking
 * thread's first DP_TC_COW_PUTS puts, in the child and in the parent,
 * leave a slot alone that holds the object already.  A get pops a bin's
 * top without clearing it, so the put of the object a get just handed
 * out (a child that allocates, uses and frees, as a subshell does; the
 * parent meanwhile) finds it there, and the slot area's page stays
 * shared, where a store would copy it.  The fork handlers set every
 * bound bin's putlim to 0 and tc->cow to the count, so those puts take
 * the slow path, which compares; the hit path has no compare (it would
 * mispredict wherever frees do not mirror gets).  Once the count has
 * run out, a bin's next put, a slow one, sets its limit back to
 * tc_max - 1 as it does at a bind (one slow put per bin, not a walk of
 * the bins, which would read their pool pointers outside the
 * handshake): a process that lives on puts at full speed after that.
 */
#define DP_TC_COW_PUTS 256

/*
 * Young bins.  A bin's stack starts in a young area of DP_TC_YOUNG slots,
 * eight bins' to a page, and holds at most that many objects there
 * (bin_cap); it moves to its own area, and faults in the 2 * tc_max
 * slots its pool uses there, when a get's slow path is to give it more
 * (bin_grow: a refill, a magazine), or refills it once slow start has
 * reached DP_TC_YOUNG objects a refill ("Slow start"), its fourth.  So a
 * thread or process that takes a few dozen objects of a class keeps
 * that class's bin young: the classes of a program that lives a few
 * milliseconds fault in a page of slots for every eight, not one or two
 * each.  A put never grows a bin whose own area is not faulted in yet:
 * a young bin that a put fills sheds or flushes as a full bin does.  A
 * bin that grew stays grown while its cache lives (a spare cache's bins
 * too).
 */

/* The most objects bin b may hold: tc_max, or while young at most
 * DP_TC_YOUNG; in an adopted cache ("Adopted caches") at most
 * DP_TC_ADOPTED_BYTES of them, but DP_TC_ADOPTED_MIN objects.  A thread
 * that only frees never takes its bins' objects back, and holds up to a
 * bin's worth idle in every class it frees: a bin of a small class
 * holds a magazine's worth, one of a larger class less memory. */
#define DP_TC_ADOPTED_BYTES ((size_t)16 << 10)
#define DP_TC_ADOPTED_MIN 16
static uint32_t bin_cap(struct dp_tcache *tc, const struct dp_tbin *b,
                        const struct dp_pool *p)
{
    uint32_t cap = bin_young(tc, b) && p->tc_max > DP_TC_YOUNG
                       ? (uint32_t)DP_TC_YOUNG
                       : p->tc_max;
    if (DP_UNLIKELY(tc->adopted)) {
        size_t c = DP_TC_ADOPTED_BYTES / p->slotsize;
        if (c < DP_TC_ADOPTED_MIN)
            c = DP_TC_ADOPTED_MIN;
        if (c < cap)
            cap = (uint32_t)c;
    }
    return cap;
}

/* What a bin bound to p in cache tc gets as its putlim. */
static uint32_t bin_putlim(struct dp_tcache *tc, const struct dp_tbin *b,
                           const struct dp_pool *p)
{
    return tc->cow ? 0 : bin_cap(tc, b, p) - 1;
}

void dp_tcache_cow_begin(void)
{
    struct dp_tcache *tc = dp_tc_mine();
    if (!tc)
        return;
    tc->cow = DP_TC_COW_PUTS;
    /* A write only where a limit was: a bound bin's. */
    for (int j = -1; (j = dp_tc_bound_next(tc, j)) >= 0;)
        if (tc->bins[j].putlim)
            tc->bins[j].putlim = 0;
}

/*
 * Bound bins.  A cache has DP_TC_BINS bins, 48 bytes each, and a thread
 * uses a few of them: its exit, its owner's flush, the reclaim pass over
 * idle caches and a fork's handlers visit only the bins tc->bound marks
 * (dp_tc_bound_next), not 12 KiB of bin headers per cache.  Set where a
 * bin is bound to its pool, inside the bin; the test first, so that the
 * atomic OR runs once per binding, not per slow path.
 */
static void bin_bind(struct dp_tcache *tc, struct dp_tbin *b,
                     struct dp_pool *p)
{
    b->pool = p;
    size_t i = (size_t)(b - tc->bins);
    uint64_t bit = 1ull << (i % 64);
    if (!(atomic_load_explicit(&tc->bound[i / 64], DP_RLX) & bit))
        atomic_fetch_or_explicit(&tc->bound[i / 64], bit, DP_RLX);
}

/* Whether the part of the bin's own area that a stack of pool p uses,
 * its first 2 * tc_max slots (bin_drop_oldest), is faulted in. */
static bool bin_area_ready(struct dp_tcache *tc, struct dp_tbin *b,
                           const struct dp_pool *p)
{
    return bin_chain(tc, b)->touched >= 2 * p->tc_max;
}

/* Fault that part in if not done yet ("Faults"): the whole area only for
 * pools of small objects, a page or two for the others, which matters
 * to a thread or process that lives briefly. */
static void bin_area_touch(struct dp_tcache *tc, struct dp_tbin *b,
                           const struct dp_pool *p)
{
    if (DP_LIKELY(bin_area_ready(tc, b, p)))
        return;
    struct dp_tchain *bc = bin_chain(tc, b);
    uint32_t need = 2 * p->tc_max;
    void **area = bin_area(tc, (size_t)(b - tc->bins));
    for (char *w = (char *)(area + bc->touched); w < (char *)(area + need);
         w = (char *)(((uintptr_t)w | 4095u) + 1))
        slot_page_touch(w);
    bc->touched = need;
}

/* A get's slow path: the bin started, and unless young ("Young bins")
 * the part of its area its pool's stack uses faulted in. */
static void bin_touch(struct dp_tcache *tc, struct dp_tbin *b,
                      const struct dp_pool *p)
{
    bin_start(tc, b);
    if (!bin_young(tc, b))
        bin_area_touch(tc, b, p);
}

/* Move young bin b's stack of n objects to the bottom of its own area,
 * whose slots for p are faulted in first, unless they are already (the
 * only way a put may call this). */
static void bin_grow(struct dp_tcache *tc, struct dp_tbin *b,
                     const struct dp_pool *p, uint32_t n)
{
    void **area = bin_area(tc, (size_t)(b - tc->bins));
    bin_area_touch(tc, b, p);
    memcpy(area, b->slots, n * sizeof(void *));
    b->slots = area;
    b->putlim = bin_putlim(tc, b, p);
}

bool dp_tcache_fill(struct dp_pool *p, void *const *objs, uint32_t n,
                    const struct dp_chain *ch)
{
    struct dp_tcache *tc = dp_tc;
    if (p->tcidx < 0)
        return false;
    struct dp_tbin *b = &tc->bins[p->tcidx];
    if (!dp_tc_enter_bin(tc, b))
        return false;
    bin_touch(tc, b, p);
    uint32_t have = bin_n(b);
    /* Not while a getter waits: the objects go back to the pages. */
    struct dp_tchain *bc = bin_chain(tc, b);
    bool ok = have + n <= p->tc_soft && (!ch || !ch->n || !bc->head) &&
              !atomic_load_explicit(&p->waiters, DP_RLX);
    if (ok && bin_young(tc, b) &&
        (have + n > bin_cap(tc, b, p) ||
         atomic_load_explicit(&bc->ramp, DP_RLX) >= DP_TC_YOUNG))
        bin_grow(tc, b, p, have);
    if (ok && ch && ch->n) {
        bc->head = ch->head;
        atomic_store_explicit(&bc->n, ch->n, DP_RLX);
        DP_BUMP(&b->net, (int64_t)ch->n);
    }
    if (ok) { /* binds the bin (b->pool) for the chain too */
        /* Reversed, so that pops walk up through memory: a freshly
         * carved page is handed out in address order, which the
         * hardware prefetcher follows. */
        void **dst = b->slots + have;
        for (void *const *src = objs + n; src != objs;)
            *dst++ = *--src;
        bin_bind(tc, b, p);
        b->putlim = bin_putlim(tc, b, p);
        bin_set_n(b, have + n);
        DP_BUMP(&b->net, (int64_t)n);
    }
    dp_tc_leave_bin(tc, b);
    return ok;
}

/*
 * Soft limit.  A bin may hold tc_max = tc_soft + tc_flush objects.  A put
 * returns objects to the pages only when the bin is full; a get that finds
 * more than tc_soft returns them first.  So where a thread both gets and
 * puts, the return of its surplus, which touches the pages' lines (the
 * put tail), is paid by a get, and a put pays it only when a run of at
 * least tc_flush more puts than gets ends in a full bin.  This is the
 * library's deferral again: what a free would have to do goes to the
 * allocating side, which may block anyway.  The get's hit path tests
 * `n - 1 < tc_soft`: one compare, as an emptiness test would be
 * (docs/benchmarks.md, larson, for what it buys the free tail).
 */

/* The bin's oldest `out` objects have left: move the stack's base up
 * past them; the stack stays in the first 2 * tc_max slots of the area
 * (what bin_touch faults in), so it moves back down at most once per
 * tc_max objects shed; a young bin's, in its young area.  Returns the
 * objects left. */
static uint32_t bin_drop_oldest(struct dp_pool *p, struct dp_tcache *tc,
                                struct dp_tbin *b, uint32_t n, uint32_t out)
{
    n -= out;
    void **area = bin_base(tc, b);
    size_t room = bin_young(tc, b) ? DP_TC_YOUNG : 2 * (size_t)p->tc_max;
    b->slots += out;
    if (b->slots + bin_cap(tc, b, p) > area + room) {
        memmove(area, b->slots, n * sizeof(void *));
        b->slots = area;
    }
    DP_BUMP(&b->net, -(int64_t)out);
    return n;
}

/* Return the bin's oldest objects (the bottom of its stack: up to
 * tc_flush of them, in at most DP_TC_FLUSH_RUNS page runs) to the pages;
 * keep the newer ones (warm).  Returns the objects left.  The owner,
 * inside dp_tc_enter_bin. */
static uint32_t bin_flush_oldest(struct dp_pool *p, struct dp_tcache *tc,
                                 struct dp_tbin *b, uint32_t n)
{
    /* Each page run costs a CAS on its page's state, whose line another
     * thread may hold. */
    dp_in_put++;
    uint32_t out = dp_page_put_runs(p, b->slots, p->tc_flush,
                                    DP_TC_FLUSH_RUNS);
    dp_in_put--;
    dp_test_hook(DP_TEST_TC_FLUSH);
    return bin_drop_oldest(p, tc, b, n, out);
}

/*
 * The depot (depot.c).  A bin above its soft limit sheds its oldest
 * mag_cap objects as one magazine: copied into an empty magazine (the
 * bin's spare, else one popped from the depot's empty stack) and pushed
 * on the full stack.  Lock-free, no system call, no object memory
 * touched: what a put may do.  Without an empty magazine, or with the
 * depot at its bound, the bin flushes to the pages as before.
 *
 * A full young bin ("Young bins") holds DP_TC_YOUNG objects, which may
 * be no more than a magazine: it sheds all but a quarter of them, a
 * magazine not full (shed_count).  That is the bin of a thread that
 * only frees what others allocate, which never grows: its objects reach
 * the allocating thread a magazine at a time, not as page runs written
 * into the objects and taken back under the pool lock.
 */
static uint32_t shed_count(const struct dp_pool *p, uint32_t n)
{
    uint32_t k = n - n / 4;
    return k < p->mag_cap ? k : p->mag_cap;
}

static uint32_t bin_shed(struct dp_pool *p, struct dp_tcache *tc,
                         struct dp_tbin *b, uint32_t n)
{
    struct dp_tchain *bc = bin_chain(tc, b);
    /* While a getter waits, what a bin sheds must reach the pages, whose
     * edges wake it (a get sheds too: "Soft limit"). */
    if (atomic_load_explicit(&p->waiters, DP_RLX))
        return bin_flush_oldest(p, tc, b, n);
    struct dp_mag *m = bc->spare;
    if (m)
        bc->spare = NULL;
    else if (p->mag_cap)
        m = dp_depot_pop_empty(p);
    if (m) {
        uint32_t k = shed_count(p, n);
        memcpy(m->o, b->slots, k * sizeof(void *));
        m->n = k;
        if (dp_depot_push(p, m)) {
            dp_test_hook(DP_TEST_TC_FLUSH);
            return bin_drop_oldest(p, tc, b, n, k);
        }
        m->n = 0;
        bc->spare = m;
    } else if (p->mag_cap) {
        /* Ask refills for a magazine: a plain load and store, not an RMW
         * (a count lost to a race only delays a magazine). */
        DP_BUMP(&p->mag_short, 1);
    }
    return bin_flush_oldest(p, tc, b, n);
}

/* The bin is empty (bind it to p) or full (return its oldest objects
 * first); then push obj.  The page puts run before leaving, so no signal
 * handler's put can reuse the slots while they are read. */
void dp_tcache_put_slow(struct dp_pool *p, void *obj)
{
    struct dp_tcache *tc = dp_tc;
    /* Uncached (the fast path used the empty bin), or a getter waits
     * for room (its drain emptied the bin): the page, whose edge wakes
     * it.  Also a signal handler's put that interrupted a slow path, and
     * a drainer at work. */
    /* tcbin, not tcidx: a put may race the destroy that resets both. */
    uint32_t bi = atomic_load_explicit(&p->tcbin, DP_RLX);
    struct dp_tbin *b = bi >= DP_TC_BINS ? NULL : &tc->bins[bi];
    if (!b || atomic_load_explicit(&p->waiters, DP_RLX) ||
        !dp_tc_enter_bin(tc, b)) {
        dp_page_put(p, obj);
        return;
    }
    uint32_t n = bin_n(b);
    bin_start(tc, b);
    uint32_t cap = bin_cap(tc, b, p);
    if (DP_UNLIKELY(tc->cow) && n != 0 && n < cap) {
        /* A put after a fork ("Faults"): the slot may hold obj still. */
        if (b->slots[n] != obj)
            b->slots[n] = obj;
        bin_set_n(b, n + 1);
        dp_tc_leave_bin(tc, b);
        /* One load, one store: a signal handler's put in between leaves
         * the count one too high, never wrapped below 0. */
        uint32_t c = tc->cow;
        if (c)
            tc->cow = c - 1;
        return;
    }
    if (n >= cap) {
        /* A young bin grows here only into slots faulted in already
         * ("Young bins"). */
        if (cap < p->tc_max && bin_area_ready(tc, b, p))
            bin_grow(tc, b, p, n);
        else
            n = bin_shed(p, tc, b, n);
    }
    b->slots[n] = obj;
    bin_bind(tc, b, p);
    b->putlim = bin_putlim(tc, b, p);
    bin_set_n(b, n + 1);
    dp_tc_leave_bin(tc, b);
}

/* A magazine popped from the depot: one object for the caller, the rest
 * into the bin, the magazine kept as the bin's spare (or given back
 * empty).  The bin must be empty; otherwise (a signal handler's put got
 * there first, a drainer holds the cache, a getter waits) the objects go
 * to the pages, where a waiting getter finds them. */
static void bin_load(struct dp_pool *p, struct dp_mag *m, void **o)
{
    uint32_t n = m->n;
    *o = m->o[--n];
    struct dp_tcache *tc = dp_tc;
    struct dp_tbin *b = &tc->bins[p->tcidx];
    if (dp_tc_enter_bin(tc, b)) {
        struct dp_tchain *bc = bin_chain(tc, b);
        if (bin_n(b) == 0 && !atomic_load_explicit(&p->waiters, DP_RLX)) {
            if (n > bin_cap(tc, b, p))
                bin_grow(tc, b, p, 0);
            memcpy(b->slots, m->o, n * sizeof(void *));
            bin_bind(tc, b, p);
            b->putlim = bin_putlim(tc, b, p);
            bin_set_n(b, n);
            DP_BUMP(&b->net, (int64_t)n);
            DP_BUMP(&b->gets, 1);
            if (!bc->spare) {
                m->n = 0;
                bc->spare = m;
                m = NULL;
            }
            dp_tc_leave_bin(tc, b);
            if (m)
                dp_depot_give_empty(p, m);
            return;
        }
        dp_tc_leave_bin(tc, b);
    }
    dp_page_put_array(p, m->o, n);
    dp_depot_give_empty(p, m);
    /* A get from the cache layer, counted where a bin's would be. */
    atomic_fetch_add(&p->tc_gets_folded, 1);
}

/* Inside bin b, its stack empty: pop its chain ch ("Chains"), which
 * must not be empty. */
static void *chain_pop(struct dp_pool *p, struct dp_tbin *b,
                       struct dp_tchain *ch)
{
    /* The link load is the one a refill would have made walking the
     * page's list; here the caller's own work overlaps it. */
    void *c = ch->head;
    void *next = dp_link_get_cached(p, c);
    ch->head = next;
    /* The next pop loads next's link word, and the caller will write
     * next: fetch its line for writing now, one get ahead (the chain may
     * come from another core's frees). */
    if (next)
        dp_prefetchw((char *)next + p->linkoff);
    DP_BUMP(&ch->n, -1);
    dp_tc_count(&b->gets);
    return c;
}

void *dp_tcache_pop_chain(struct dp_pool *p)
{
    struct dp_tcache *tc = dp_tc;
    struct dp_tbin *b = dp_tc_bin(tc, p);
    /* An uncached pool is refused before the flag's store, as on the hit
     * path (cache.h, dp_tcache_pop_hit). */
    if (p->tc_soft == 0 || !dp_tc_bin_enter(tc, b))
        return NULL;
    struct dp_tchain *ch = bin_chain(tc, b);
    void *c = NULL;
    if (dp_tc_bin_count(b) == 0 && ch->head)
        c = chain_pop(p, b, ch);
    dp_tc_bin_leave(b);
    if (c)
        dp_an_get_asan(p, c);
    return c;
}

bool dp_tcache_pop_slow(struct dp_pool *p, void **o)
{
    struct dp_tcache *tc = dp_tc;
    if (p->tcidx < 0)
        return false;
    struct dp_tbin *b = &tc->bins[p->tcidx];
    if (!dp_tc_enter_bin(tc, b))
        return false;
    bin_touch(tc, b, p);
    struct dp_tchain *bc = bin_chain(tc, b);
    uint32_t n = bin_n(b);
    if (n > p->tc_soft) {
        n = bin_shed(p, tc, b, n);
        *o = b->slots[n - 1];
        bin_set_n(b, n - 1);
        DP_BUMP(&b->gets, 1);
        dp_tc_leave_bin(tc, b);
        return true;
    }
    bool empty = n == 0 && !bc->head && p->mag_cap &&
                 !atomic_load_explicit(&p->waiters, DP_RLX);
    /* A bin going to the pages makes empty magazines for the puts: one
     * for its own spare, from its third refill on and once it can hold
     * more than a magazine's worth (a young bin of small objects cannot:
     * "Young bins").  A thread that makes a refill or two of a class and
     * exits would only take a magazine from the depot's empty stack and
     * give it back (two CASes on a line other threads use), or fault in
     * a page for a new one, a cost a process that lives a few
     * milliseconds pays per class; a shed without a spare pops one
     * itself.  And up to DP_MAG_STOCK for the depot's empty stack while
     * bins have gone without (mag_short; another thread's puts may need
     * them). */
    bool mine = empty && !bc->spare &&
                atomic_load_explicit(&bc->ramp, DP_RLX) > DP_TC_RAMP0 &&
                p->mag_cap < bin_cap(tc, b, p);
    uint32_t shared = empty ? atomic_load_explicit(&p->mag_short, DP_RLX)
                            : 0;
    dp_tc_leave_bin(tc, b);
    if (!empty)
        return false;
    struct dp_mag *m = dp_depot_pop(p);
    if (m) {
        bin_load(p, m, o);
        return true;
    }
    if (shared > DP_MAG_STOCK)
        shared = DP_MAG_STOCK;
    if (shared) { /* a store, not an RMW; never below 0 */
        uint32_t left = atomic_load_explicit(&p->mag_short, DP_RLX);
        atomic_store_explicit(&p->mag_short, left > shared ? left - shared : 0,
                              DP_RLX);
    }
    if ((mine || shared) && (m = dp_depot_stock(p, shared, mine)) != NULL) {
        if (dp_tc_enter_bin(tc, b)) {
            if (!bc->spare) {
                bin_bind(tc, b, p);
                bc->spare = m;
                m = NULL;
            }
            dp_tc_leave_bin(tc, b);
        }
        if (m)
            dp_depot_give_empty(p, m);
    }
    return false;
}


/* Flush one bin (its owner or a drainer holding the claim).  forget:
 * also fold its get count into the pool and unbind it (thread exit,
 * pool destroy). */
void dp_tc_flush_bin(struct dp_tcache *tc, struct dp_tbin *b, bool forget)
{
    struct dp_pool *p = b->pool;
    if (!p)
        return;
    uint32_t n = bin_n(b);
    dp_page_put_array(p, b->slots, n);
    bin_set_n(b, 0);
    /* Empty: the stack starts again at the bottom of its area, with room
     * for any pool's tc_max (the bin may be rebound after `forget`), or
     * of its young area. */
    b->slots = bin_base(tc, b);
    DP_BUMP(&b->net, -(int64_t)n);
    struct dp_tchain *bc = bin_chain(tc, b);
    uint32_t cn = atomic_load_explicit(&bc->n, DP_RLX);
    if (cn) {
        dp_page_put_chain(p, bc->head, cn);
        bc->head = NULL;
        atomic_store_explicit(&bc->n, 0, DP_RLX);
        DP_BUMP(&b->net, -(int64_t)cn);
    }
    if (bc->spare) { /* the empty magazine goes back to the depot */
        dp_depot_give_empty(p, bc->spare);
        bc->spare = NULL;
    }
    if (forget) {
        atomic_store_explicit(&bc->ramp, 0, DP_RLX); /* "Slow start" */
        atomic_fetch_add(&p->tc_gets_folded, bin_gets(b));
        atomic_store_explicit(&b->gets, 0, DP_RLX);
        atomic_store_explicit(&b->net, 0, DP_RLX);
        b->putlim = 0;
        b->pool = NULL;
        size_t i = (size_t)(b - tc->bins);
        atomic_fetch_and_explicit(&tc->bound[i / 64], ~(1ull << (i % 64)),
                                  DP_RLX);
    }
}



/* Thread exit: give everything back.  The cache leaves the thread
 * first: a signal handler's put from here on finds no cache and goes to
 * the pages (one that ran before put to a bin, which the loop below
 * flushes), and active = 1 keeps slow paths off.  Holding dp_tcg.lock
 * means no drainer is working on the cache, and a concurrent destroy
 * cannot miss these objects. */
static void tc_thread_exit(void *v)
{
    struct dp_tcache *tc = v;
    atomic_store_explicit(&tc->active, 1, DP_RLX);
    tc_noadopt = true; /* a later destructor's free: the pages */
    dp_tc = &dp_tc_none;
    atomic_signal_fence(memory_order_seq_cst);
    pthread_mutex_lock(&dp_tcg.lock);
    tc_unlink_locked(tc);
    for (int j = -1; (j = dp_tc_bound_next(tc, j)) >= 0;)
        dp_tc_flush_bin(tc, &tc->bins[j], true);
    dp_tc_flush_ext(tc, true);
    dp_test_hook(DP_TEST_TC_EXIT);
    bool kept = tc_retire_locked(tc);
    pthread_mutex_unlock(&dp_tcg.lock);
    if (!kept)
        tc_unmap(tc);
}

void dp_thread_cache_flush(void)
{
    struct dp_tcache *tc = dp_tc;
    if (!dp_tc_enter(tc))
        return;
    dp_in_put++;
    for (int j = -1; (j = dp_tc_bound_next(tc, j)) >= 0;) {
        struct dp_tbin *b = &tc->bins[j];
        struct dp_pool *p = b->pool;
        /* A signal handler's put keeps off the bin while it is flushed
         * (a handler's fast path does not look at active). */
        atomic_store_explicit(&b->busy, 1, DP_RLX);
        atomic_signal_fence(memory_order_seq_cst);
        dp_tc_flush_bin(tc, b, false);
        dp_tc_bin_leave(b);
        /* The depots of the pools this thread uses too: what the thread
         * shed may sit there (lock-free, like the flush). */
        if (p)
            dp_depot_drain(p, true, 0);
    }
    dp_tc_flush_ext(tc, false);
    dp_in_put--;
    dp_tc_leave(tc);
}

struct dp_tcache *dp_tcache_self(void)
{
    struct dp_tcache *tc = dp_tc_mine();
    if (tc) {
        tc->adopted = false; /* the layer above allocates: "Adopted caches" */
        return tc;
    }
    pthread_once(&dp_tcg_once, tcg_init);
    return dp_tcg.state == 1 ? tc_create(false) : NULL;
}
