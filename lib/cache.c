/*
 * cache.c -- the per-thread cache layer: one bin of free objects per pool
 * per thread, in front of the page lists.  A same-thread get or put
 * touches only the thread's own cache lines, with no atomic RMW and no
 * fence.  Drainers (reclaim GC, explicit reclaim, destroy, a getter about
 * to sleep) take a bin from a thread that is not inside a get/put, using
 * an asymmetric handshake built on membarrier(2).  docs/design.md,
 * "Thread caches".
 */
#include "dp_internal.h"

#include <linux/membarrier.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* The calling thread's cache; NULL until its first get of a cached pool.
 * initial-exec TLS: one %fs-relative load, no __tls_get_addr. */
DP_HIDDEN DP_TLS struct dp_tcache *dp_tc;

static struct {
    pthread_mutex_t lock;  /* the list, seen_sig, bin indices, and every
                              drain (drainers are serialised by it)    */
    struct dp_tcache *head;
    uint64_t used[DP_TC_BINS / 64]; /* bin indices given to pools      */
    pthread_key_t key;     /* destructor flushes a thread's cache     */
    int state;             /* 0 untried, 1 usable, -1 no membarrier   */
    bool forking;          /* lock: a fork holds the claims ("Fork")  */
} dp_tcg = {PTHREAD_MUTEX_INITIALIZER, NULL, {0}, 0, 0, false};

static pthread_once_t dp_tcg_once = PTHREAD_ONCE_INIT;

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

void (*_Atomic dp_tc_ext_flush)(struct dp_tclist *l, bool forget);

/* Hand back a cache's ext lists (same ownership rules as bin_flush). */
static size_t ext_flush(struct dp_tcache *tc, bool forget)
{
    void (*fn)(struct dp_tclist *, bool) = atomic_load(&dp_tc_ext_flush);
    size_t n = 0;
    if (!fn)
        return 0;
    for (int i = 0; i < DP_TC_EXT; i++) {
        struct dp_tclist *l = &tc->ext[i];
        uint32_t k = atomic_load_explicit(&l->n, DP_RLX);
        if (k || forget)
            fn(l, forget);
        n += k;
    }
    atomic_store_explicit(&tc->ext_units, 0, DP_RLX);
    return n;
}

static void tc_thread_exit(void *v);

static int membarrier(int cmd)
{
    return (int)syscall(SYS_membarrier, cmd, 0, 0);
}

static void tcg_init(void)
{
    /* Caches exist only where drainers can take them back: without
     * membarrier, every put and get goes to the pages. */
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0 ||
        pthread_key_create(&dp_tcg.key, tc_thread_exit) != 0) {
        dp_tcg.state = -1;
        return;
    }
    dp_tcg.state = 1;
}

/* A full barrier on every CPU running one of our threads.  -1: could not
 * (then no cache may be claimed). */
static int heavy_barrier(void)
{
    if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
        return 0;
    /* A forked child may need to register again. */
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 &&
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
        return 0;
    return -1;
}

void dp_tcache_pool_init(struct dp_pool *p)
{
    p->tcidx = -1;
    p->tcbin = DP_TC_BINS;
    pthread_once(&dp_tcg_once, tcg_init);
    if (dp_tcg.state != 1 || p->debug ||
        (p->flags & (DP_POOL_NOCACHE | DP_IPOOL_IMMEDIATE)))
        return;
    /* Hold up to 32 KiB of objects, between 8 and 256 of them, and
     * one flush more before a put must return some ("Soft limit"). */
    size_t max = (32u << 10) / p->slotsize;
    max = max < 8 ? 8 : max > 256 ? 256 : max;
    p->tc_batch = (uint32_t)max / 2;
    /* A full bin returns its oldest quarter, at most 16 objects (and at
     * most DP_TC_FLUSH_RUNS page runs).  A flush writes each returned
     * object's link word and does one CAS per run of same-page objects;
     * the put that cached the object has prefetched its line,
     * but the flush is still what a put pays in the tail.  Measured on
     * benchmarks/macro larson: free() p99.99 621 ns with a quarter (64),
     * 491 with 16, 491 with 8 (docs/design.md, "Thread caches"). */
    p->tc_flush = max >= 64 ? 16 : max >= 4 ? (uint32_t)max / 4 : 1;
    p->tc_soft = (uint32_t)max;
    p->tc_max = (uint32_t)max + p->tc_flush;
    pthread_mutex_lock(&dp_tcg.lock);
    for (int i = 0; i < DP_TC_BINS; i++) {
        if (!(dp_tcg.used[i / 64] & (1ull << (i % 64)))) {
            dp_tcg.used[i / 64] |= 1ull << (i % 64);
            p->tcidx = i;
            p->tcbin = (uint32_t)i;
            break;
        }
    }
    pthread_mutex_unlock(&dp_tcg.lock);
}

/* Each bin's stack lives in an area twice its largest size: a flush takes
 * the bottom of the stack and moves the stack's base up instead of
 * moving the rest down, and only when the base has gone past the middle
 * does the stack move back to the start of the area (cache.c,
 * dp_tcache_put_slow). */
#define DP_TC_AREA ((size_t)2 * DP_TC_MAXCAP)
/* A flush stops at the fourth page run (or tc_flush objects): each run
 * is a CAS on a page's state, a line another thread may hold.  Measured
 * on benchmarks/macro larson, free() p99.99 medians of back-to-back runs
 * in quiet periods: no limit 460 ns, 4 runs 441, mimalloc 401 (five
 * runs each); 4 runs ~400, 2 runs ~410, mimalloc ~430 (six each).
 * Sequential frees fill a run per page and are not affected. */
#define DP_TC_FLUSH_RUNS 4
#define DP_TC_SLOTMEM ((size_t)DP_TC_BINS * DP_TC_AREA * sizeof(void *))

/* The start of bin i's slot area. */
static void **bin_area(struct dp_tcache *tc, size_t i)
{
    return tc->slotmem + i * DP_TC_AREA;
}

/* One mapping for the cache and one for every bin's slot array: address
 * space only; a bin's slots cost memory once the bin is used. */
static void tc_unmap(struct dp_tcache *tc)
{
    munmap(tc->slotmem, DP_TC_SLOTMEM);
    munmap(tc, sizeof(*tc));
}

/* nowait: a DP_NOWAIT get's creation, which does not wait for the cache
 * lock (a drain holds it across membarrier): if it is taken, the get
 * goes uncached this time and a later miss tries again. */
static struct dp_tcache *tc_create(bool nowait)
{
    struct dp_tcache *tc =
        mmap(NULL, sizeof(*tc), PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tc == MAP_FAILED)
        return NULL;
    tc->slotmem = mmap(NULL, DP_TC_SLOTMEM, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tc->slotmem == MAP_FAILED) {
        munmap(tc, sizeof(*tc));
        return NULL;
    }
    /* Both are touched sparsely (the bins in use): no huge page may make
     * the rest resident (docs/tuning.md, `thp`). */
    dp_map_nohuge(tc, sizeof(*tc));
    dp_map_nohuge(tc->slotmem, DP_TC_SLOTMEM);
    for (int i = 0; i < DP_TC_BINS; i++)
        tc->bins[i].slots = bin_area(tc, (size_t)i);
    if (pthread_setspecific(dp_tcg.key, tc) != 0) {
        tc_unmap(tc);
        return NULL;
    }
    if (!nowait) {
        pthread_mutex_lock(&dp_tcg.lock);
    } else if (pthread_mutex_trylock(&dp_tcg.lock) != 0) {
        pthread_setspecific(dp_tcg.key, NULL);
        tc_unmap(tc);
        return NULL;
    }
    /* A fork between its claims and its locks owns every cache: a new
     * one starts claimed, so its owner keeps off it until the fork is
     * done (dp_tcache_atfork_*). */
    if (dp_tcg.forking)
        atomic_store_explicit(&tc->drain, DP_TC_CLAIMED, DP_RLX);
    tc->next = dp_tcg.head;
    if (dp_tcg.head)
        dp_tcg.head->prev = tc;
    dp_tcg.head = tc;
    pthread_mutex_unlock(&dp_tcg.lock);
    dp_tc = tc;
    return tc;
}

uint32_t dp_tcache_want(struct dp_pool *p, bool nowait)
{
    if (p->tcidx < 0)
        return 1;
    if (!dp_tc && !tc_create(nowait))
        return 1;
    return p->tc_batch + 1;
}

static void bin_set_n(struct dp_tbin *b, uint32_t n)
{
    atomic_store_explicit(&b->n, n, memory_order_relaxed);
}

static uint32_t bin_n(struct dp_tbin *b)
{
    return atomic_load_explicit(&b->n, memory_order_relaxed);
}

static struct dp_tchain *bin_chain(struct dp_tcache *tc, struct dp_tbin *b)
{
    return &tc->chains[b - tc->bins];
}

/* Objects the bin holds: its stack and its chain. */
static uint32_t bin_held(struct dp_tcache *tc, struct dp_tbin *b)
{
    return bin_n(b) + atomic_load_explicit(&bin_chain(tc, b)->n, DP_RLX);
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
    size_t m = ((size_t)32 << 10) / p->slotsize;
    return m > p->tc_soft ? (uint32_t)m : p->tc_soft;
}

bool dp_tcache_fill(struct dp_pool *p, void *const *objs, uint32_t n,
                    const struct dp_chain *ch)
{
    struct dp_tcache *tc = dp_tc;
    if (!tc || p->tcidx < 0 || !dp_tc_enter(tc))
        return false;
    struct dp_tbin *b = &tc->bins[p->tcidx];
    uint32_t have = bin_n(b);
    /* Not while a getter waits: the objects go back to the pages. */
    struct dp_tchain *bc = bin_chain(tc, b);
    bool ok = have + n <= p->tc_soft && (!ch || !ch->n || !bc->head) &&
              !atomic_load_explicit(&p->waiters, DP_RLX);
    if (ok && ch && ch->n) {
        bc->head = ch->head;
        atomic_store_explicit(&bc->n, ch->n, DP_RLX);
        DP_BUMP(&b->net, (int64_t)ch->n);
    }
    if (ok) { /* binds the bin (b->pool) for the chain too */
        /* Reversed, so that pops walk up through memory: a freshly
         * carved page is handed out in address order, which the
         * hardware prefetcher follows (measured: 15 to 30% off a
         * 200,000-live get/put round). */
        void **dst = b->slots + have;
        for (void *const *src = objs + n; src != objs;)
            *dst++ = *--src;
        b->pool = p;
        bin_set_n(b, have + n);
        DP_BUMP(&b->net, (int64_t)n);
    }
    dp_tc_leave(tc);
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
 * `n - 1 < tc_soft` where it tested `n != 0`: the same one compare.
 * Measured on benchmarks/macro larson (docs/design.md §13): free()
 * p99.99 medians of 12 interleaved runs 331 ns, against 365 without the
 * soft limit and 376 for mimalloc; malloc's p99.99 rose by about 8%.
 */

/* Return the bin's oldest objects (the bottom of its stack: up to
 * tc_flush of them, in at most DP_TC_FLUSH_RUNS page runs) to the pages;
 * keep the newer ones (warm).  Returns the objects left.  The owner,
 * inside dp_tc_enter. */
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
    n -= out;
    /* Move the base, not the stack; the stack moves back down at most
     * once per DP_TC_AREA - tc_max flushed objects. */
    void **area = bin_area(tc, (size_t)p->tcidx);
    b->slots += out;
    if (b->slots + p->tc_max > area + DP_TC_AREA) {
        memmove(area, b->slots, n * sizeof(void *));
        b->slots = area;
    }
    DP_BUMP(&b->net, -(int64_t)out);
    return n;
}

/* The bin is empty (bind it to p) or full (return its oldest objects
 * first); then push obj.  Called inside dp_tc_enter; leaves.  The page
 * puts run before leaving, so no signal handler's put can reuse the slots
 * while they are read. */
void dp_tcache_put_slow(struct dp_pool *p, struct dp_tcache *tc, void *obj)
{
    if (p->tcidx < 0) { /* uncached: the fast path used the empty bin */
        dp_tc_leave(tc);
        dp_page_put(p, obj);
        return;
    }
    struct dp_tbin *b = &tc->bins[p->tcidx];
    uint32_t n = bin_n(b);
    if (n >= p->tc_max)
        n = bin_flush_oldest(p, tc, b, n);
    b->slots[n] = obj;
    b->pool = p;
    bin_set_n(b, n + 1);
    dp_tc_leave(tc);
}

bool dp_tcache_pop_over(struct dp_pool *p, void **o)
{
    struct dp_tcache *tc = dp_tc;
    if (!tc || p->tcidx < 0 || !dp_tc_enter(tc))
        return false;
    struct dp_tbin *b = &tc->bins[p->tcidx];
    uint32_t n = bin_n(b);
    if (n <= p->tc_soft) {
        dp_tc_leave(tc);
        return false;
    }
    n = bin_flush_oldest(p, tc, b, n);
    *o = b->slots[n - 1];
    bin_set_n(b, n - 1);
    DP_BUMP(&b->gets, 1);
    dp_tc_leave(tc);
    return true;
}

static uint64_t bin_gets(struct dp_tbin *b)
{
    return atomic_load_explicit(&b->gets, DP_RLX);
}

/* Flush one bin (its owner or a drainer holding the claim).  forget:
 * also fold its get count into the pool and unbind it (thread exit,
 * pool destroy). */
static void bin_flush(struct dp_tcache *tc, struct dp_tbin *b, bool forget)
{
    struct dp_pool *p = b->pool;
    if (!p)
        return;
    uint32_t n = bin_n(b);
    dp_page_put_array(p, b->slots, n);
    bin_set_n(b, 0);
    /* Empty: the stack starts again at the bottom of its area, with room
     * for any pool's tc_max (the bin may be rebound after `forget`). */
    b->slots = bin_area(tc, (size_t)(b - tc->bins));
    DP_BUMP(&b->net, -(int64_t)n);
    struct dp_tchain *bc = bin_chain(tc, b);
    uint32_t cn = atomic_load_explicit(&bc->n, DP_RLX);
    if (cn) {
        dp_page_put_chain(p, bc->head, cn);
        bc->head = NULL;
        atomic_store_explicit(&bc->n, 0, DP_RLX);
        DP_BUMP(&b->net, -(int64_t)cn);
    }
    if (forget) {
        atomic_fetch_add(&p->tc_gets_folded, bin_gets(b));
        atomic_store_explicit(&b->gets, 0, DP_RLX);
        atomic_store_explicit(&b->net, 0, DP_RLX);
        b->pool = NULL;
    }
}

/*
 * Claim each cache in `want` (n of them, filtered by the caller) that is
 * not inside a get/put, and flush bin `idx` (or all bins when idx < 0).
 * dp_tcg.lock held.  Returns how many were busy.  A cache a fork holds
 * claimed (drain already CLAIMED: any other drainer gives its claim back
 * before it drops the lock) counts as busy.
 */
static size_t claim_and_flush_locked(struct dp_tcache **want, size_t n,
                                     int idx, bool forget)
{
    if (n == 0)
        return 0;
    size_t busy = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        if (atomic_load_explicit(&want[i]->drain, DP_RLX) == DP_TC_CLAIMED) {
            busy++;
            continue;
        }
        atomic_store_explicit(&want[i]->drain, DP_TC_REQ,
                              memory_order_relaxed);
        want[k++] = want[i];
    }
    n = k;
    if (n == 0)
        return busy;
    bool can = heavy_barrier() == 0;
    for (size_t i = 0; i < n; i++) {
        struct dp_tcache *tc = want[i];
        if (!can || atomic_load_explicit(&tc->active, memory_order_acquire)) {
            atomic_store_explicit(&tc->drain, 0, memory_order_release);
            busy++;
            continue;
        }
        atomic_store_explicit(&tc->drain, DP_TC_CLAIMED, memory_order_relaxed);
        if (idx >= 0) {
            bin_flush(tc, &tc->bins[idx], forget);
        } else {
            for (int j = 0; j < DP_TC_BINS; j++)
                bin_flush(tc, &tc->bins[j], forget);
            ext_flush(tc, forget);
        }
        atomic_store_explicit(&tc->drain, 0, memory_order_release);
    }
    return busy;
}

#define DP_TC_BATCH 64

/* Caches to claim and flush, gathered under dp_tcg.lock and handed to
 * claim_and_flush_locked() DP_TC_BATCH at a time (one membarrier each). */
struct tc_batch {
    struct dp_tcache *tc[DP_TC_BATCH];
    size_t n;
    int idx;     /* bin to flush; < 0: every bin and the ext lists */
    bool forget;
    size_t busy; /* caches found inside a get/put, so far */
};

static void batch_flush_locked(struct tc_batch *b)
{
    b->busy += claim_and_flush_locked(b->tc, b->n, b->idx, b->forget);
    b->n = 0;
}

static void batch_add_locked(struct tc_batch *b, struct dp_tcache *tc)
{
    b->tc[b->n++] = tc;
    if (b->n == DP_TC_BATCH)
        batch_flush_locked(b);
}

void dp_tcache_drain_pool(struct dp_pool *p, bool wait, bool release)
{
    if (p->tcidx < 0)
        return;
    int idx = p->tcidx;
    pthread_mutex_lock(&dp_tcg.lock);
    for (;;) {
        struct tc_batch b = {.n = 0, .idx = idx, .forget = release};
        for (struct dp_tcache *tc = dp_tcg.head; tc; tc = tc->next) {
            /* A waiter or destroy must catch puts on their way into an
             * empty bin, and destroy must unbind every bin: they visit
             * every cache.  Others only those holding objects. */
            if (!wait && !release && bin_held(tc, &tc->bins[idx]) == 0)
                continue;
            batch_add_locked(&b, tc);
        }
        batch_flush_locked(&b);
        if (!b.busy || !wait)
            break;
        pthread_mutex_unlock(&dp_tcg.lock);
        sched_yield();
        pthread_mutex_lock(&dp_tcg.lock);
    }
    if (release) {
        dp_tcg.used[idx / 64] &= ~(1ull << (idx % 64));
        p->tcidx = -1;
        p->tcbin = DP_TC_BINS;
    }
    pthread_mutex_unlock(&dp_tcg.lock);
}

void dp_tcache_gc(void)
{
    pthread_mutex_lock(&dp_tcg.lock);
    struct tc_batch batch = {.n = 0, .idx = -1, .forget = false};
    for (struct dp_tcache *tc = dp_tcg.head; tc; tc = tc->next) {
        /* A get changes `gets`; a put changes n, and a flush n and net
         * together; so if no bin's (gets, n, net) moved, the thread did
         * nothing since the last pass.  A signature collision only makes
         * a busy cache look idle, which costs a refill, not correctness:
         * the claim handshake still keeps off a cache in use. */
        uint64_t sig = 0;
        bool any = false;
        for (int j = 0; j < DP_TC_BINS; j++) {
            struct dp_tbin *b = &tc->bins[j];
            uint32_t n = bin_held(tc, b);
            sig = sig * 0x100000001b3ull +
                  atomic_load_explicit(&b->gets, DP_RLX);
            sig = sig * 0x100000001b3ull + n;
            sig = sig * 0x100000001b3ull +
                  (uint64_t)atomic_load_explicit(&b->net, DP_RLX);
            any |= n != 0;
        }
        for (int j = 0; j < DP_TC_EXT; j++) {
            struct dp_tclist *l = &tc->ext[j];
            uint32_t n = atomic_load_explicit(&l->n, DP_RLX);
            sig = sig * 0x100000001b3ull + n;
            sig = sig * 0x100000001b3ull +
                  atomic_load_explicit(&l->pops, DP_RLX);
            any |= n != 0;
        }
        if (sig != tc->seen_sig) {
            tc->seen_sig = sig; /* busy since the last pass: leave it */
            continue;
        }
        if (!any)
            continue;
        batch_add_locked(&batch, tc);
    }
    batch_flush_locked(&batch);
    pthread_mutex_unlock(&dp_tcg.lock);
}

void dp_tcache_sum(struct dp_pool *p, uint64_t *cached, uint64_t *gets)
{
    *cached = 0;
    *gets = atomic_load(&p->tc_gets_folded);
    if (p->tcidx < 0)
        return;
    pthread_mutex_lock(&dp_tcg.lock);
    for (struct dp_tcache *tc = dp_tcg.head; tc; tc = tc->next) {
        struct dp_tbin *b = &tc->bins[p->tcidx];
        *cached += bin_held(tc, b);
        *gets += bin_gets(b);
    }
    pthread_mutex_unlock(&dp_tcg.lock);
}

static void tc_unlink_locked(struct dp_tcache *tc)
{
    if (tc->prev)
        tc->prev->next = tc->next;
    else
        dp_tcg.head = tc->next;
    if (tc->next)
        tc->next->prev = tc->prev;
}

/* Thread exit: give everything back.  The cache leaves the thread
 * first: a signal handler's put from here on finds no cache and goes to
 * the pages, and active = 1 keeps any put that still holds the pointer
 * off the bins (dp_tc_enter).  Holding dp_tcg.lock means no drainer is
 * working on the cache, and a concurrent destroy cannot miss these
 * objects. */
static void tc_thread_exit(void *v)
{
    struct dp_tcache *tc = v;
    atomic_store_explicit(&tc->active, 1, DP_RLX);
    dp_tc = NULL;
    atomic_signal_fence(memory_order_seq_cst);
    pthread_mutex_lock(&dp_tcg.lock);
    tc_unlink_locked(tc);
    for (int j = 0; j < DP_TC_BINS; j++)
        bin_flush(tc, &tc->bins[j], true);
    ext_flush(tc, true);
    dp_test_hook(DP_TEST_TC_EXIT);
    pthread_mutex_unlock(&dp_tcg.lock);
    tc_unmap(tc);
}

void dp_thread_cache_flush(void)
{
    struct dp_tcache *tc = dp_tc;
    if (!tc || !dp_tc_enter(tc))
        return;
    dp_in_put++;
    for (int j = 0; j < DP_TC_BINS; j++)
        bin_flush(tc, &tc->bins[j], false);
    ext_flush(tc, false);
    dp_in_put--;
    dp_tc_leave(tc);
}

struct dp_tcache *dp_tcache_self(void)
{
    if (dp_tc)
        return dp_tc;
    pthread_once(&dp_tcg_once, tcg_init);
    return dp_tcg.state == 1 ? tc_create(false) : NULL;
}

size_t dp_tcache_ext_drain(bool self)
{
    if (self) {
        struct dp_tcache *tc = dp_tc;
        if (!tc || !dp_tc_enter(tc))
            return 0;
        size_t n = ext_flush(tc, false);
        dp_tc_leave(tc);
        return n;
    }
    size_t n = 0;
    pthread_mutex_lock(&dp_tcg.lock);
    struct tc_batch batch = {.n = 0, .idx = -1, .forget = false};
    for (struct dp_tcache *tc = dp_tcg.head; tc; tc = tc->next) {
        bool any = false;
        for (int j = 0; j < DP_TC_EXT; j++) {
            uint32_t e = atomic_load_explicit(&tc->ext[j].n, DP_RLX);
            any |= e != 0;
            n += e;
        }
        if (any)
            batch_add_locked(&batch, tc);
    }
    batch_flush_locked(&batch);
    pthread_mutex_unlock(&dp_tcg.lock);
    return n;
}

void dp_tcache_ext_sum(uint64_t n[DP_TC_EXT], uint64_t *pops)
{
    memset(n, 0, DP_TC_EXT * sizeof(n[0]));
    *pops = 0;
    pthread_mutex_lock(&dp_tcg.lock);
    for (struct dp_tcache *tc = dp_tcg.head; tc; tc = tc->next)
        for (int j = 0; j < DP_TC_EXT; j++) {
            n[j] += atomic_load_explicit(&tc->ext[j].n, DP_RLX);
            *pops += atomic_load_explicit(&tc->ext[j].pops, DP_RLX);
        }
    pthread_mutex_unlock(&dp_tcg.lock);
}

/* ---- fork ------------------------------------------------------------------ */

/*
 * The fork handlers' part for the caches (docs/design.md §10; the order
 * of all handlers is in reclaim.c).  Before any lock is taken, claim
 * every other thread's cache with the drainers' handshake, waiting --
 * yielding, no lock held -- for owners inside a get/put to leave: an
 * owner may be halfway through a flush, a chain pop or an ext-list
 * flush, and the child must not see that.  The claims are held until
 * the parent handler (owners meanwhile use the pages) or the child
 * handler, where the claimed caches have no owner and are consistent.
 * A cache that cannot be claimed (no membarrier) is left alone in the
 * child: its objects stay out.
 */
void dp_tcache_atfork_claim(void)
{
    pthread_mutex_lock(&dp_tcg.lock);
    dp_tcg.forking = true;
    for (;;) {
        struct dp_tcache *want[DP_TC_BATCH];
        size_t n = 0, busy = 0;
        bool more = false;
        for (struct dp_tcache *tc = dp_tcg.head; tc; tc = tc->next) {
            if (tc == dp_tc || atomic_load_explicit(&tc->drain, DP_RLX) ==
                                   DP_TC_CLAIMED)
                continue;
            if (n == DP_TC_BATCH) {
                more = true;
                break;
            }
            atomic_store_explicit(&tc->drain, DP_TC_REQ, DP_RLX);
            want[n++] = tc;
        }
        if (n == 0)
            break;
        if (heavy_barrier() != 0) {
            for (size_t i = 0; i < n; i++)
                atomic_store_explicit(&want[i]->drain, 0,
                                      memory_order_release);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            struct dp_tcache *tc = want[i];
            if (atomic_load_explicit(&tc->active, memory_order_acquire)) {
                atomic_store_explicit(&tc->drain, 0, memory_order_release);
                busy++;
            } else {
                atomic_store_explicit(&tc->drain, DP_TC_CLAIMED, DP_RLX);
            }
        }
        if (!busy && !more)
            break;
        if (busy) {
            pthread_mutex_unlock(&dp_tcg.lock);
            dp_test_hook(DP_TEST_FORK_WAIT);
            sched_yield();
            pthread_mutex_lock(&dp_tcg.lock);
        }
    }
    pthread_mutex_unlock(&dp_tcg.lock);
}

void dp_tcache_atfork_prepare(void) { pthread_mutex_lock(&dp_tcg.lock); }

void dp_tcache_atfork_parent(void)
{
    for (struct dp_tcache *tc = dp_tcg.head; tc; tc = tc->next)
        if (atomic_load_explicit(&tc->drain, DP_RLX) == DP_TC_CLAIMED)
            atomic_store_explicit(&tc->drain, 0, memory_order_release);
    dp_tcg.forking = false;
    pthread_mutex_unlock(&dp_tcg.lock);
}

/* In the child only the forking thread exists.  The other threads'
 * caches were claimed outside any get/put: flush them and drop them.
 * Called with every deferpool lock held; leaves dp_tcg.lock held. */
void dp_tcache_atfork_child(void)
{
    struct dp_tcache *tc = dp_tcg.head;
    while (tc) {
        struct dp_tcache *next = tc->next;
        if (tc == dp_tc) {
            atomic_store(&tc->drain, 0);
            atomic_store(&tc->active, 0);
        } else if (atomic_load_explicit(&tc->drain, DP_RLX) ==
                   DP_TC_CLAIMED) {
            tc_unlink_locked(tc);
            for (int j = 0; j < DP_TC_BINS; j++)
                bin_flush(tc, &tc->bins[j], true);
            ext_flush(tc, true);
            tc_unmap(tc);
        } else {
            tc_unlink_locked(tc); /* unclaimable: its objects stay out */
        }
        tc = next;
    }
    dp_tcg.forking = false;
}

void dp_tcache_atfork_child_unlock(void)
{
    pthread_mutex_unlock(&dp_tcg.lock);
}
