/*
 * dp_internal.h -- types shared by the layers of libdeferpool.
 * Theory of operation: docs/design.md.  Nothing here is public.
 *
 * Glossary
 *   page      A power-of-two sized, size-aligned block from the provider,
 *             carved into slots.  Its header (struct dp_page) sits at the
 *             start, so obj & ~(pagesize-1) finds it: no lookup on put.
 *   slot      Room for one object plus, for pools with a constructor, a
 *             trailing link word (the link must not clobber a constructed
 *             object).  slotsize is a multiple of the alignment.
 *   state     A page's atomic 64-bit word.  Low half: the number of
 *             objects out (31 bits) plus DP_PG_QUEUED, set while the
 *             page sits on the pool's pending queue.  High half: the top
 *             of the put stack, the page's lock-free stack of objects put
 *             back by any thread, as a byte offset in the page (0:
 *             empty).  One CAS pushes a run and lowers the count.
 *   lfree     A page's list of free objects, owned by the pool lock.
 *   pending   The pool's lock-free stack of pages whose state crossed
 *             "full -> not full" or "-> empty" in a put; drained by
 *             whoever next holds the pool lock.
 *   empty     The pool's list of empty pages (lock), oldest at the tail.
 *   reserve   Pages dp_pool_prime() asked to keep beyond the age policy.
 *   due       An empty page the policy says should go back to the
 *             provider now: beyond hiwat, or older than the age limit
 *             beyond max(lowat, reserve).
 *
 * Lock order: docs/design.md §8 (and reclaim.c, "Fork", for the fork
 * handlers).  No lock is held across a provider call, a ctor/dtor, or a
 * futex wait.
 */
#ifndef DP_INTERNAL_H
#define DP_INTERNAL_H

#include "deferpool.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define DP_HIDDEN __attribute__((visibility("hidden")))
#define DP_NOINLINE __attribute__((noinline))
#define DP_TLS __thread __attribute__((tls_model("initial-exec")))
#define DP_LIKELY(x) __builtin_expect(!!(x), 1)
#define DP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define DP_CACHELINE 64

#define DP_PAGE_MAGIC 0x64706167u /* "dpag" */
#define DP_PG_QUEUED 0x80000000u
#define DP_PG_COUNT 0x7fffffffu
#define DP_PG_LOW 0xffffffffull /* count | QUEUED: the low half of state */
#define DP_PG_TOP_SHIFT 32

/* Which pool list a page is on (pool lock). */
enum dp_pglist { DP_L_NONE = 0, DP_L_PARTIAL, DP_L_FULL, DP_L_EMPTY, DP_L_DEAD };

struct dp_page {
    /* Immutable while the page is held by the pool.  Read by every free()
     * of the malloc layer (magic, pool) on any thread: a line of their
     * own, so that puts and refills on other threads, which write the
     * lines below, never invalidate it. */
    uint32_t magic;
    uint32_t cap;         /* slots in this page                        */
    struct dp_pool *pool;
    char *slots;          /* first slot                                */
    /* Debug pools only: bit per slot, set while the object is out.
     * Atomic because puts clear bits lock-free. */
    _Atomic uint64_t *outmap;

    /* Lock-free: written by putters on any thread. */
    _Alignas(DP_CACHELINE) _Atomic uint64_t state; /* put-stack top |
                                         count | DP_PG_QUEUED (glossary) */
    struct dp_page *_Atomic qnext;    /* pending-queue link; written by
                                         the putter that set QUEUED,
                                         read by the drainer          */

    /* Pool lock.  list_remove() writes the neighbours' next/prev. */
    _Alignas(DP_CACHELINE) void *lfree; /* free list owned by the lock */
    uint32_t bump;        /* slots [0, bump) have been handed out once */
    uint8_t list;         /* enum dp_pglist                            */
    struct dp_page *next, *prev; /* list links                          */
    uint64_t empty_since; /* clock when classified empty               */
};

/* The top of the put stack recorded in state word s, or NULL. */
static inline void *dp_pg_top(struct dp_page *pg, uint64_t s)
{
    uint32_t off = (uint32_t)(s >> DP_PG_TOP_SHIFT);
    return off ? (char *)pg + off : NULL;
}

struct dp_list {
    struct dp_page *head, *tail;
    size_t n;
};

struct dp_pool {
    /* Hot: everything the get and put fast paths read, in the first cache
     * line, so that a put touches one line of the pool (before, the
     * fields it reads sat on four: a program using many pools, as the
     * malloc layer's 45 classes, missed on them).  Immutable after
     * dp_pool_create, except `waiters`, written only by getters that
     * have to wait (rare), and tcbin/tcidx, reset by destroy. */
    _Alignas(DP_CACHELINE) uint32_t tcbin; /* the bin the fast paths use:
                             tcidx, or DP_TC_BINS (a bin that is always
                             empty, so an uncached pool needs no test of
                             its own)                                   */
    uint32_t tc_max;      /* objects a bin may hold: a put to a full
                             bin returns its oldest objects first      */
    _Atomic uint32_t waiters; /* getters asleep or about to be; while
                                  non-zero, puts bypass thread caches  */
    _Atomic uint32_t wake_seq; /* futex word getters sleep on (written
                                  by wakers, only while waiters != 0)  */
    size_t linkoff;       /* offset of the free-list link in a slot     */
    uintptr_t pagemask;   /* ~(pagesize - 1)                           */
    size_t objsize;
    int (*ctor)(void *, void *, int);
    int tcidx;            /* thread-cache bin index; -1: not cached     */
    unsigned flags;
    uint32_t tc_soft;     /* a get from a bin holding more than this
                             returns its oldest objects first, so that
                             a put rarely has to (cache.c, "Soft
                             limit"); tc_max - tc_flush, 0 uncached    */
    bool debug;

    /* Immutable after dp_pool_create. */
    char name[32];
    size_t slotsize, align, pagesize;
    size_t hdrsize;       /* bytes before the first slot               */
    uint32_t cap;         /* slots per page                            */
    void (*dtor)(void *, void *);
    void *cbarg;
    dp_provider_t prov;
    size_t max_pages;     /* SIZE_MAX when unlimited                   */
    uint64_t (*clock)(void *);
    void *clock_arg;
    bool pagemap;         /* pages registered in the page map (debug
                             pools, and pools created with
                             DP_IPOOL_PAGEMAP)                         */
    uint32_t tc_batch;    /* objects a refill takes                      */
    uint32_t tc_flush;    /* objects a full bin returns to the pages     */

    /* Registry lock.  Written at every reclaim pass (reg_refs): not on
     * the hot line.  After destroy, reg_next links the pool's memory on
     * the stack of spare pools (pool.c, pool_mem). */
    struct dp_pool *reg_next, *reg_prev;
    unsigned reg_refs;    /* reclaim passes currently using the pool   */
    bool reg_dead;        /* being destroyed: passes skip it           */

    /* Lock-free, written by putters on page edges: own cache line. */
    _Alignas(DP_CACHELINE) struct dp_page *_Atomic pending;
    _Atomic uint64_t put_provider_calls; /* must stay 0: see page.c      */
    _Atomic uint64_t tc_gets_folded; /* cache gets of bins since unbound */

    /* Pool lock. */
    _Alignas(DP_CACHELINE) pthread_mutex_t lock;
    struct dp_list partial, full, empty;
    size_t npages;        /* held + being allocated (reservations)     */
    size_t inflight;      /* provider allocs under way (reservations)  */
    size_t freeing;       /* pages taken off lists, being returned     */
    struct dp_page *dead; /* abandoned pages (ctor failed in NOWAIT)   */
    size_t lowat, hiwat, budget, reserve_pages;
    size_t priming_pages; /* pages primes under way need (kept)         */
    uint64_t reserve_objs, age_ns;
    uint64_t st_pages_alloc, st_pages_freed, st_alloc_fail;
    uint64_t st_gets, st_gets_waited, st_gets_failed;
};
/* The fast paths' fields share the pool's first line. */
_Static_assert(offsetof(struct dp_pool, debug) < DP_CACHELINE,
               "struct dp_pool: the hot fields overflow their line");

/* ---- sys helpers ------------------------------------------------------ */

static inline uint64_t dp_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* FUTEX_WAKE never blocks: this is the one syscall a put may make. */
static inline void dp_futex_wake_all(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL,
            0);
}

/* Sleep while *w == val, at most until abs_ns (CLOCK_MONOTONIC; 0: no
 * bound).  Spurious returns are fine: every caller re-checks. */
static inline void dp_futex_wait(_Atomic uint32_t *w, uint32_t val,
                                 uint64_t abs_ns)
{
    struct timespec ts, *tp = NULL;
    if (abs_ns) {
        ts.tv_sec = (time_t)(abs_ns / 1000000000ull);
        ts.tv_nsec = (long)(abs_ns % 1000000000ull);
        tp = &ts;
    }
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_BITSET_PRIVATE, val, tp, NULL,
            FUTEX_BITSET_MATCH_ANY);
}

/* The clock of the reclaim policy: ages are hundreds of milliseconds, so
 * CLOCK_MONOTONIC_COARSE (the kernel's last tick, a few ns from the vDSO,
 * against ~20 ns for CLOCK_MONOTONIC) is precise enough, and a WAITOK
 * get that checks for due pages on each refill reads it. */
static inline uint64_t dp_coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t dp_pool_now(const struct dp_pool *p)
{
    return p->clock ? p->clock(p->clock_arg) : dp_coarse_ns();
}

#include "options.h"

/* ---- provider.c ------------------------------------------------------- */
/* A huge page (x86-64 and arm64 with 4 KiB pages). */
#define DP_HUGE_SIZE ((size_t)2 << 20)
/* Keep transparent huge pages off [p, p + len) if the thp option says so
 * (docs/tuning.md, `thp`).  One madvise; errors are ignored (a kernel
 * without THP).  Never called from a put. */
DP_HIDDEN void dp_map_nohuge(void *p, size_t len);

/* ---- pagemap.c: address -> owner -------------------------------------- */
/* A pool's pages (debug pools, DP_IPOOL_PAGEMAP pools) map to the pool,
 * tagged with the low bit (dp_pm_pool), so that a lookup names the pool
 * without reading the page header, which is a cache line (and often a
 * TLB entry) of its own.  The malloc layer maps a large block's first
 * frame to its header (low bits clear), and a free block in its cache by
 * its first and last frames to its header tagged with bit 1 (malloc.c).
 * NULL: not ours. */
DP_HIDDEN int dp_pagemap_set(void *base, size_t size, void *owner);
/* Create every map node the frames of [base, base + size) need, so that
 * later stores there never map memory.  -1: no memory for a node. */
DP_HIDDEN int dp_pagemap_reserve(void *base, size_t size);
/* Map addr's frame to owner, only if its node exists: never a system
 * call, so it may run under a lock.  -1: no node (nothing stored). */
DP_HIDDEN int dp_pagemap_store(void *addr, void *owner);
/* 48-bit addresses, 4 KiB frames: 36 bits of frame number, 12+12+12.
 * Nodes are installed with a CAS (pagemap.c) and never freed, so a reader
 * needs only acquire loads.  The root is static and zeroed. */
#define DP_PM_BITS 12
#define DP_PM_FAN (1u << DP_PM_BITS)
typedef _Atomic(void *) dp_pm_slot;
extern DP_HIDDEN dp_pm_slot dp_pm_root[DP_PM_FAN];
/* Inline: free() in the malloc layer is this lookup and a tail call. */
static inline void *dp_pagemap_get(const void *addr)
{
    uintptr_t f = (uintptr_t)addr >> 12;
    if (DP_UNLIKELY(f >> (3 * DP_PM_BITS)))
        return NULL;
    dp_pm_slot *l2 = atomic_load_explicit(&dp_pm_root[f >> (2 * DP_PM_BITS)],
                                          memory_order_acquire);
    if (DP_UNLIKELY(!l2))
        return NULL;
    dp_pm_slot *l3 = atomic_load_explicit(
        &l2[(f >> DP_PM_BITS) & (DP_PM_FAN - 1)], memory_order_acquire);
    if (DP_UNLIKELY(!l3))
        return NULL;
    return atomic_load_explicit(&l3[f & (DP_PM_FAN - 1)],
                                memory_order_acquire);
}
static inline void *dp_pm_pool(struct dp_pool *p)
{
    return (void *)((uintptr_t)p | 1u); /* pools are page-aligned mmaps */
}
/* The pool a page-map value names, or NULL if it names something else. */
static inline struct dp_pool *dp_pm_as_pool(void *v)
{
    return ((uintptr_t)v & 1u) ? (struct dp_pool *)((uintptr_t)v - 1u)
                               : NULL;
}

/* ---- page.c ----------------------------------------------------------- */
/* Set when the calling thread is inside dp_pool_put(). */
extern DP_HIDDEN DP_TLS int dp_in_put;
/* Obtain and construct a page.  Called without the pool lock.  Returns
 * the page, or NULL with *why saying what happened (and so what the caller
 * must account): */
enum dp_pg_why {
    DP_PG_OK,        /* page returned                                    */
    DP_PG_NOMEM,     /* the provider failed                              */
    DP_PG_CTOR_FREED,/* obtained, ctor failed, given back (WAITOK)       */
    DP_PG_CTOR_DEAD, /* obtained, ctor failed, parked on p->dead: a
                        DP_NOWAIT caller may not call the provider's free;
                        it stays counted in npages                       */
};
DP_HIDDEN struct dp_page *dp_page_create(struct dp_pool *p, int flags,
                                         enum dp_pg_why *why);
/* True while the calling thread runs one of p's callbacks (its
 * provider's alloc or free, its ctor or dtor).  A get from p there may
 * take free objects but must not grow or wait: it fails with EDEADLK. */
DP_HIDDEN bool dp_in_callback_of(const struct dp_pool *p);
/* Run dtors (unless the page is dead) and return it to the provider.
 * Called without the pool lock, never from a put. */
DP_HIDDEN void dp_page_destroy(struct dp_pool *p, struct dp_page *pg);
DP_HIDDEN void dp_page_layout(size_t pagesize, size_t slotsize, size_t align,
                              bool debug, size_t *hdrsize, uint32_t *cap);

static inline void **dp_link(const struct dp_pool *p, void *obj)
{
    return (void **)((char *)obj + p->linkoff);
}

/* ---- cache.c: per-thread caches (docs/design.md, "Thread caches") ----- */

#define DP_TC_BINS 256
#define DP_TC_REQ 1     /* a drainer asks: owner, keep off the bins  */
#define DP_TC_CLAIMED 2 /* a drainer owns the bins until it stores 0  */

/* One pool's objects in one thread: a stack of pointers, so a get or put
 * reads and writes no object memory.  slots, pool and the slot contents
 * are touched only by the owner inside dp_tc_enter/dp_tc_leave, or by a
 * drainer that has claimed the cache.  The counters are also read by
 * statistics and the GC, hence atomic, but whoever owns the bin updates
 * them with plain relaxed load+store pairs: no RMW.  Only gets are
 * counted; a put touches n and its slot and nothing else (puts are
 * derived: the pool's puts = gets - objects out). */
/* Slots per bin: a pool's tc_max is at most this (a soft limit of up to
 * 256 objects, plus one flush of 16). */
#define DP_TC_MAXCAP 272
struct dp_tbin {
    void **slots;          /* base of the stack, [0, n) in use; inside
                              the bin's area of 2 * DP_TC_MAXCAP slots,
                              with room for tc_max above it          */
    struct dp_pool *pool;  /* pool of the objects; NULL: bin unused.
                              Set by the slow paths: the put fast path
                              runs only on a non-empty bin, which is
                              bound already                          */
    _Atomic uint32_t n;    /* objects in the bin's stack             */
    _Atomic uint64_t gets; /* gets served by the bin                 */
    _Atomic int64_t net;   /* objects taken from pages minus objects
                              returned to pages through this bin     */
};

/* A bin's chain: a page's put stack, taken whole by a refill and linked
 * through the objects' link words; a get pops it when the bin's stack is
 * empty (cache.c, "Chains").  Kept apart from struct dp_tbin so that the
 * fast paths' bin stays 40 bytes.  Same rules as the bin. */
struct dp_tchain {
    void *head;
    _Atomic uint32_t n;    /* objects on the chain (statistics read it) */
};

/* A list a layer above the pools keeps in each thread's cache (the
 * malloc's medium blocks, malloc.c "Thread lists"), linked through the
 * layer's own link word.  Same rules as a bin: the owner inside
 * dp_tc_enter/dp_tc_leave, or a drainer holding the claim; counters
 * updated with DP_BUMP, read by statistics and the GC. */
#define DP_TC_EXT 16
struct dp_tclist {
    void *head;
    _Atomic uint32_t n;     /* entries                                  */
    _Atomic uint64_t pops;  /* entries taken by the owner, ever         */
};
/* Empty a list (its owner, or a drainer holding the claim, or thread
 * exit / a fork child with dp_tcg.lock held): hand every entry back to
 * the layer.  forget: the list's thread is gone; fold its counters.
 * Set once by the layer before it uses a list; never makes a syscall. */
extern DP_HIDDEN void (*_Atomic dp_tc_ext_flush)(struct dp_tclist *l,
                                                 bool forget);

struct dp_tcache {
    _Atomic uint32_t active; /* owner: 1 inside a get/put             */
    _Atomic uint32_t drain;  /* drainer: 0, DP_TC_REQ, DP_TC_CLAIMED   */
    uint64_t seen_sig;       /* dp_tcg.lock: bins' signature at the
                                last GC (cache.c, dp_tcache_gc)      */
    struct dp_tcache *next, *prev; /* dp_tcg.lock                     */
    void **slotmem;          /* immutable: the bins' slot arrays       */
    struct dp_tbin bins[DP_TC_BINS + 1]; /* [DP_TC_BINS]: never used,
                                            n stays 0 (dp_pool.tcbin)  */
    struct dp_tchain chains[DP_TC_BINS + 1]; /* bins[i]'s chain; the
                                               last stays empty        */
    struct dp_tclist ext[DP_TC_EXT]; /* the layer above's lists       */
    _Atomic uint64_t ext_units; /* the layer's tally of what its lists
                                   hold (its unit); same rules as ext[];
                                   a flush of the lists zeroes it      */
};

extern DP_HIDDEN DP_TLS struct dp_tcache *dp_tc;

#define DP_RLX memory_order_relaxed
/* Owner-only increment of a counter others may read: no RMW. */
#define DP_BUMP(a, d) atomic_store_explicit((a), atomic_load_explicit((a), DP_RLX) + (d), DP_RLX)

/* Fetch a line for writing.  PREFETCHW exists on every x86-64 since
 * Broadwell and K8 (older ones run it as a NOP); GCC's
 * __builtin_prefetch(.., 1, ..) emits a read prefetch without -mprfchw. */
static inline void dp_prefetchw(const void *a)
{
#if defined(__x86_64__)
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)a));
#else
    __builtin_prefetch(a, 1, 3);
#endif
}

/*
 * The owner's side of the handshake with drainers (docs/design.md,
 * "Thread caches"): store active=1, then load drain.  The drainer stores
 * drain=REQ, runs membarrier(PRIVATE_EXPEDITED) -- a full barrier on
 * every CPU running one of our threads -- and then loads active.  So
 * either the drainer sees active=1 and leaves the cache alone, or the
 * owner sees drain!=0 and keeps off its bins.  The owner needs no fence
 * and no RMW: a compiler barrier is enough.
 */
static inline bool dp_tc_enter(struct dp_tcache *tc)
{
    /* Already inside: a put from a signal handler that interrupted this
     * thread's own get/put.  Leave the bins alone; use the pages. */
    if (DP_UNLIKELY(atomic_load_explicit(&tc->active, DP_RLX)))
        return false;
    atomic_store_explicit(&tc->active, 1, DP_RLX);
    atomic_signal_fence(memory_order_seq_cst);
    if (DP_LIKELY(atomic_load_explicit(&tc->drain, memory_order_acquire) ==
                  0))
        return true;
    atomic_store_explicit(&tc->active, 0, memory_order_release);
    return false;
}

static inline void dp_tc_leave(struct dp_tcache *tc)
{
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&tc->active, 0, memory_order_release);
}

/* Fast path: pop this thread's bin (its stack, else its chain) into *o.
 * false: no object (no cache, an empty bin, or a drainer at work on it).
 * A bool result, not NULL, so that a caller's hit path returns the
 * object untested.  The hit path is unchanged by the chain: 35
 * instructions in dp_pool_get (docs/design.md §13). */
/* A get's slow path, first: if this thread's bin holds more than
 * tc_soft objects, return its oldest ones to the pages and pop one into
 * *o (cache.c, "Soft limit").  false: nothing done. */
DP_HIDDEN bool dp_tcache_pop_over(struct dp_pool *p, void **o);
static inline bool dp_tcache_pop(struct dp_pool *p, void **o)
{
    struct dp_tcache *tc = dp_tc;
    if (!tc || !dp_tc_enter(tc))
        return false;
    struct dp_tbin *b = &tc->bins[p->tcbin];
    uint32_t n = atomic_load_explicit(&b->n, DP_RLX);
    /* 1 <= n <= tc_soft: one unsigned compare, as `n != 0` was.  Above
     * the soft limit, the slow path (dp_tcache_pop_over) takes over. */
    if (DP_LIKELY(n - 1 < p->tc_soft)) {
        *o = b->slots[n - 1];
        atomic_store_explicit(&b->n, n - 1, DP_RLX);
    } else if (n == 0 && tc->chains[p->tcbin].head) {
        /* The stack is empty: pop the chain.  Its link load is the one a
         * refill would have made walking the page's list; here the
         * caller's own work overlaps it. */
        struct dp_tchain *ch = &tc->chains[p->tcbin];
        void *c = ch->head;
        *o = c;
        void *next = *(void **)((char *)c + p->linkoff);
        ch->head = next;
        /* The next pop loads next's link word, and the caller will write
         * next: fetch its line for writing now, one get ahead (the
         * chain may come from another core's frees). */
        if (next)
            dp_prefetchw((char *)next + p->linkoff);
        DP_BUMP(&ch->n, -1);
    } else {
        dp_tc_leave(tc);
        return false;
    }
    DP_BUMP(&b->gets, 1);
    dp_tc_leave(tc);
    return true;
}

/* The same, as an object or NULL. */
static inline void *dp_tcache_get(struct dp_pool *p)
{
    void *o = NULL;
    dp_tcache_pop(p, &o);
    return o;
}

/* The bin is empty or full (or the pool is uncached): bind it, flush its
 * oldest objects if full, push obj.  Called inside dp_tc_enter; leaves. */
DP_HIDDEN void dp_tcache_put_slow(struct dp_pool *p, struct dp_tcache *tc,
                                  void *obj);

/* Fast path: obj into this thread's bin, or hand it to the bin's slow
 * path.  false: nothing done; the caller puts to the page (no cache, a
 * drainer is at work on it, or a getter is waiting).  Written so that
 * dp_pool_put's fast path needs no stack frame: both slow paths are
 * tail calls. */
static inline bool dp_tcache_put(struct dp_pool *p, void *obj)
{
    struct dp_tcache *tc = dp_tc;
    if (!tc || !dp_tc_enter(tc))
        return false;
    /* A getter is waiting for room: the put must reach the page and wake
     * it.  The load comes after active=1, so a waiter's drain either sees
     * us active and retries, or we see its waiters increment (cache.c). */
    if (DP_UNLIKELY(atomic_load_explicit(&p->waiters, DP_RLX))) {
        dp_tc_leave(tc);
        return false;
    }
    struct dp_tbin *b = &tc->bins[p->tcbin];
    uint32_t n = atomic_load_explicit(&b->n, DP_RLX);
    /* Full, or empty (the bin may not be bound to p yet): the slow path.
     * One unsigned compare covers both. */
    if (DP_UNLIKELY(n - 1 >= p->tc_max - 1)) {
        dp_tcache_put_slow(p, tc, obj); /* leaves the cache */
        return true;
    }
    /* The flush that returns this object will write its link word: start
     * fetching the line for writing now, off the critical path, so the
     * flush (the put tail) does not wait for memory. */
    dp_prefetchw((char *)obj + p->linkoff);
    b->slots[n] = obj;
    atomic_store_explicit(&b->n, n + 1, DP_RLX);
    dp_tc_leave(tc);
    return true;
}

/* How many objects a slow-path get should take (1: no cache).  Creates
 * the thread's cache on its first call; nowait (a DP_NOWAIT get): only
 * if the cache lock is free at once. */
DP_HIDDEN uint32_t dp_tcache_want(struct dp_pool *p, bool nowait);
/* A page's put stack taken whole by a refill: `n` objects from `head`,
 * linked through their link words, NULL-terminated.  max: the longest
 * stack the refill may take this way. */
struct dp_chain {
    void *head;
    uint32_t n, max;
};
/* The longest chain a bin takes: what the bin's stack holds, or 32 KiB of
 * objects if that is more; 0 for an uncached pool. */
DP_HIDDEN uint32_t dp_tcache_chain_max(struct dp_pool *p);
/* Install n objects and the chain (may be NULL) in this thread's bin;
 * false: nothing taken. */
DP_HIDDEN bool dp_tcache_fill(struct dp_pool *p, void *const *objs,
                              uint32_t n, const struct dp_chain *ch);
DP_HIDDEN void dp_tcache_pool_init(struct dp_pool *p);
/* Empty the pool's bins in every thread not inside a get/put right now.
 * wait: visit every cache, even empty ones, and retry those caught
 * inside a get/put until each has been claimed once: afterwards no put
 * that started before the call is still on its way into a cache (waiters,
 * destroy).  release: also unbind the bins and give the index back.
 * May block (membarrier, cache lock, yields while waiting). */
DP_HIDDEN void dp_tcache_drain_pool(struct dp_pool *p, bool wait,
                                    bool release);
/* Reclaim pass: empty the caches of threads idle since the last pass. */
DP_HIDDEN void dp_tcache_gc(void);
/* Objects cached and cache gets, summed over threads (pool lock held). */
DP_HIDDEN void dp_tcache_sum(struct dp_pool *p, uint64_t *cached,
                             uint64_t *gets);
/* This thread's cache, created if need be; NULL without caches. */
DP_HIDDEN struct dp_tcache *dp_tcache_self(void);
/* Flush every thread's ext lists (those not inside a get/put), or only
 * this thread's (self).  Returns the entries handed back.  May block
 * (cache lock, membarrier) unless self. */
DP_HIDDEN size_t dp_tcache_ext_drain(bool self);
/* Per list: entries summed over threads (n[]), and pops (dp_tcg.lock). */
DP_HIDDEN void dp_tcache_ext_sum(uint64_t n[DP_TC_EXT], uint64_t *pops);
/* Fork handlers' parts (order: reclaim.c, "Fork").  claim: before any
 * lock, claim every other thread's cache (waits for owners, no lock
 * held).  prepare: take dp_tcg.lock.  parent: release the claims and the
 * lock.  child: flush and drop the claimed caches, lock kept;
 * child_unlock releases it. */
DP_HIDDEN void dp_tcache_atfork_claim(void);
DP_HIDDEN void dp_tcache_atfork_prepare(void);
DP_HIDDEN void dp_tcache_atfork_parent(void);
DP_HIDDEN void dp_tcache_atfork_child(void);
DP_HIDDEN void dp_tcache_atfork_child_unlock(void);
/* The test hook at point `where` (deferpool.h, "Testing: hooks"): one
 * load on the slow paths that have a point, a call only when a test set
 * a hook. */
extern DP_HIDDEN _Atomic(dp_test_hook_t) dp_test_hook_fn;
DP_HIDDEN void dp_test_hook_call(dp_test_hook_t fn, int where);
static inline void dp_test_hook(int where)
{
    dp_test_hook_t fn = atomic_load_explicit(&dp_test_hook_fn,
                                             memory_order_acquire);
    if (DP_UNLIKELY(fn != NULL))
        dp_test_hook_call(fn, where);
}

/* ---- pool.c ----------------------------------------------------------- */
DP_HIDDEN void dp_page_put(struct dp_pool *p, void *obj);
/* Give a chain's objects back to their page (no cache). */
DP_HIDDEN void dp_page_put_chain(struct dp_pool *p, void *head, uint32_t n);
DP_HIDDEN void dp_page_put_array(struct dp_pool *p, void *const *objs,
                                 uint32_t n);
DP_HIDDEN uint32_t dp_page_put_runs(struct dp_pool *p, void *const *objs,
                                    uint32_t n, uint32_t max_runs);
DP_HIDDEN void dp_drain_pending_locked(struct dp_pool *p, uint64_t now);
DP_HIDDEN size_t dp_collect_due_locked(struct dp_pool *p, uint64_t now,
                                       size_t budget, bool ignore_age,
                                       struct dp_page **out);
DP_HIDDEN size_t dp_release_pages(struct dp_pool *p, struct dp_page *list);
DP_HIDDEN void dp_wake_getters(struct dp_pool *p);
DP_HIDDEN size_t dp_pool_refill(struct dp_pool *p);
DP_HIDDEN size_t dp_pool_reclaim_pass(struct dp_pool *p);

/* Internal creation flags, for layers built on pools (the malloc) and for
 * the benchmarks' private copy of the library (benchmarks/meson.build). */
#define DP_IPOOL_PAGEMAP 0x1 /* register pages in the page map */
/* For comparison only: a naive pool -- the put that empties a page takes
 * the pool lock and returns it (and any other empty page beyond lowat) to
 * the provider, counted in put_provider_calls; implies DP_POOL_NOCACHE.
 * Kept in p->flags (above the public DP_POOL_* bits), written once at
 * create. */
#define DP_IPOOL_IMMEDIATE 0x100
DP_HIDDEN dp_pool_t *dp_pool_create_ex(const char *name, size_t objsize,
                                       const dp_pool_attr_t *attr,
                                       unsigned iflags);

/* ---- reclaim.c -------------------------------------------------------- */
DP_HIDDEN void dp_registry_add(struct dp_pool *p);
DP_HIDDEN void dp_registry_remove(struct dp_pool *p);
DP_HIDDEN size_t dp_registry_each(void (*fn)(struct dp_pool *p, void *arg),
                                  void *arg);
DP_HIDDEN void dp_reclaim_autostart(void);
DP_HIDDEN void dp_wake_all_waiters(void);
/* A layer above the pools (the malloc's deferred large blocks) hooks
 * into every reclaim pass: fn runs with no lock held and returns the
 * number of pages it gave back.  One hook; NULL removes it. */
DP_HIDDEN void dp_reclaim_set_hook(size_t (*fn)(void));
/* The layer above joins the fork handlers (reclaim.c, "Fork", which
 * lists the order): lock_outer after the caches are claimed and before
 * dp_rt.ctl, lock_leaf after dp_tcg.lock; in the child, child() runs with
 * every lock held, after the claimed caches were flushed (their ext
 * lists handed to the layer).  Set once, from a constructor; l must stay
 * valid. */
struct dp_fork_layer {
    void (*lock_outer)(void);
    void (*unlock_outer)(void);
    void (*lock_leaf)(void);
    void (*unlock_leaf)(void);
    void (*child)(void);
};
DP_HIDDEN void dp_fork_set_layer(const struct dp_fork_layer *l);
/* Register the fork handlers (once; a constructor does it at load). */
DP_HIDDEN void dp_fork_install(void);

#endif /* DP_INTERNAL_H */
