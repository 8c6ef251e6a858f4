/*
 * types.h -- the core's data: struct dp_page, dp_pool and dp_tcache and
 * their constants, shared by the page, cache and pool layers.  Every
 * field says who may touch it and how (lock, atomic, owner only).
 * docs/design.md §1 (Layers) and §8 (lock order, not repeated here).
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
 *   bin       A thread's cache of one pool's free objects: a stack of
 *             pointers, and at most one chain (a page's put stack taken
 *             whole).
 *   magazine  An array of free objects' pointers, a bin's overflow or
 *             refill moved whole (depot.h).
 *   depot     A pool's stack of full magazines between the bins and the
 *             pages, and its stack of empty ones (depot.c).
 *   drainer   A thread that takes objects out of other threads' bins
 *             (reclaim GC, explicit reclaim, destroy, a getter about to
 *             sleep), after claiming their caches (cache.c).
 */
#ifndef DP_TYPES_H
#define DP_TYPES_H

#include "deferpool.h"
#include "list.h"
#include "util.h"

#include <pthread.h>

#define DP_PAGE_MAGIC 0x64706167u /* "dpag" */
#define DP_PG_QUEUED 0x80000000u
#define DP_PG_COUNT 0x7fffffffu
#define DP_PG_LOW 0xffffffffull /* count | QUEUED: the low half of state */
#define DP_PG_TOP_SHIFT 32

struct dp_page;
struct dp_pool;
struct dp_tcache;
struct dp_mag;
/* The depot's ageing window: periods of at least age / (this - 1). */
#define DP_DEPOT_PERIODS 8
/* A pool's magazines: at most DP_MAG_CHUNKS chunks of DP_MAG_PER_CHUNK. */
#define DP_MAG_CHUNKS 128
#define DP_MAG_PER_CHUNK 64
/* A pool's page lists (partial, full, empty). */
DP_LIST_TYPE(dp_list, struct dp_page);
/* The registry's list of pools (registry.c). */
DP_LIST_TYPE(dp_pool_list, struct dp_pool);
/* The list of every thread's cache (cache.c). */
DP_LIST_TYPE(dp_tcache_list, struct dp_tcache);

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
    /* Debug pools only: bit per slot, set while the object is out.
     * Atomic because puts clear bits lock-free. */
    _Atomic uint64_t *outmap;

    /* Lock-free: written by putters on any thread. */
    _Alignas(DP_CACHELINE) _Atomic uint64_t state; /* put-stack top |
                                         count | DP_PG_QUEUED (glossary) */
    struct dp_page *_Atomic qnext;    /* pending-queue link; written by
                                         the putter that set QUEUED,
                                         read by the drainer          */

    /* Pool lock.  DP_LIST_REMOVE writes the neighbours' next/prev. */
    _Alignas(DP_CACHELINE) void *lfree; /* free list owned by the lock */
    uint32_t bump;        /* slots [0, bump) have been handed out once */
    uint8_t list;         /* enum dp_pglist                            */
    struct dp_page *next, *prev; /* list links (dead and release lists:
                                    next only)                         */
    uint64_t empty_since; /* clock when classified empty               */
};

/* An internal creation flag kept in dp_pool.flags, above the public
 * DP_POOL_* bits: for comparison only, a naive pool -- the put that empties
 * a page takes the pool lock and returns it (and any other empty page
 * beyond lowat) to the provider, counted in put_provider_calls; implies no
 * thread cache.  Reached by the benchmarks' private copy of the library
 * and by tests/test_immediate.c (dp_pool_create_ex). */
#define DP_IPOOL_IMMEDIATE 0x100
/* Also kept in dp_pool.flags: the pool's depot holds its minimum of
 * full magazines (DP_DEPOT_MIN_MAGS, depot.c), not DP_DEPOT_BYTES of
 * objects: enough for a steady hand-over between threads, while what a
 * burst of frees leaves goes back to the pages.  The malloc's class pools
 * are created so (docs/malloc.md, "Size classes"). */
#define DP_IPOOL_SMALLDEPOT 0x200

struct dp_pool {
    /* Hot: everything the get and put fast paths read, in the first cache
     * line, so that a put touches one line of the pool (a program using
     * many pools, as the malloc does, would otherwise miss on several).
     * Immutable after dp_pool_create, except `waiters`, written only by
     * getters that have to wait (rare), and tcoff/tcbin/tcidx, reset
     * by destroy under dp_tcg.lock. */
    _Alignas(DP_CACHELINE) _Atomic uint32_t tcoff; /* where the fast
                             paths' bin is in a thread's cache: the
                             byte offset of bins[tcbin] (dp_tc_bin,
                             cache.h); relaxed: a put racing a destroy
                             that saw the old value finds the bin
                             flushed, takes the slow path, and that
                             reads tcbin under the handshake            */
    _Atomic uint32_t waiters; /* getters asleep or about to be; while
                                  non-zero, puts bypass thread caches  */
    _Atomic uint32_t wake_seq; /* futex word getters sleep on (written
                                  by wakers, only while waiters != 0)  */
    size_t linkoff;       /* offset of the free-list link in a slot     */
    uintptr_t pagemask;   /* ~(pagesize - 1)                           */
    size_t objsize;
    int (*ctor)(void *, void *, int);
    int tcidx;            /* thread-cache bin index; -1: not cached     */
    unsigned flags;       /* DP_POOL_* of the attributes, and
                             DP_IPOOL_IMMEDIATE                        */
    uint32_t tc_soft;     /* a get from a bin holding more than this
                             returns its oldest objects first, so that
                             a put rarely has to (cache.c, "Soft
                             limit"); tc_max - tc_flush, 0 uncached    */
    bool debug;

    /* Immutable after dp_pool_create.  The first six: the slot test
     * (dp_slot_index, page.h), one line for the malloc's free(). */
    size_t hdrsize;       /* bytes before the first slot               */
    uint32_t cap;         /* slots per page                            */
    uint32_t slot_tz;     /* trailing zero bits of slotsize            */
    uint64_t slot_inv;    /* inverse of slotsize >> slot_tz, mod 2^64  */
    uintptr_t slot_offmask; /* pagesize - 1: an address's page offset  */
    uint64_t slot_cap;    /* cap, 64 bits wide: the test's one compare
                             reads it from memory                      */
    char name[32];
    size_t slotsize, align, pagesize;
    void (*dtor)(void *, void *);
    void *cbarg;
    dp_provider_t prov;
    size_t max_pages;     /* SIZE_MAX when unlimited                   */
    uint64_t (*clock)(void *);
    void *clock_arg;
    bool vg;              /* described to Valgrind (annotate.h): no
                             thread cache                              */
    bool leak_report;     /* ASan builds: objects still out at exit are
                             reported (annotate.c); not the malloc's   */
    bool pagemap;         /* pages registered in the page map (debug
                             pools, and pools created with
                             DP_IPOOL_PAGEMAP)                         */
    _Atomic uint32_t tcbin; /* the bin of tcoff: tcidx, or DP_TC_BINS (a
                             bin that is always empty, so an uncached
                             pool needs no test of its own); as tcoff  */
    uint32_t tc_max;      /* objects a bin may hold: a put to a full
                             bin returns its oldest objects first      */
    uint32_t tc_batch;    /* objects a refill takes                      */
    uint32_t tc_flush;    /* objects a full bin returns to the pages     */
    unsigned dbg;         /* debug pools: DP_POOL_REDZONE | DP_POOL_JUNK
                             | DP_POOL_AUDIT in effect (debug.h)       */
    size_t dbg_recoff;    /* debug pools: the audit record in a slot   */
    uint32_t mag_cap;     /* objects per depot magazine (tc_batch, or
                             twice it: depot.c, dp_depot_init); 0:
                             no depot (depot.c)                        */
    uint32_t depot_max;   /* full magazines the depot may hold         */

    /* Registry lock.  Written at every reclaim pass (reg_refs): not on
     * the hot line.  After destroy, reg_next links the pool's memory on
     * the stack of spare pools (create.c, pool_mem). */
    struct dp_pool *reg_next, *reg_prev;
    unsigned reg_refs;    /* reclaim passes currently using the pool   */
    bool reg_dead;        /* being destroyed: passes skip it           */

    /* Lock-free, written by putters on page edges: own cache line. */
    _Alignas(DP_CACHELINE) struct dp_page *_Atomic pending;
    _Atomic uint64_t put_provider_calls; /* must stay 0: see page.c      */
    _Atomic uint64_t tc_gets_folded; /* cache gets of bins since unbound */

    /* The depot (depot.c): lock-free stacks of magazines (top index and
     * version), their count, and the puts' request for magazines.  Own
     * cache line. */
    _Alignas(DP_CACHELINE) _Atomic uint64_t depot_full;
    _Atomic uint64_t depot_empty;
    _Atomic uint64_t depot_count; /* full magazines << 40 | their objects */
    _Atomic uint32_t depot_low;   /* fewest full magazines in the current
                                     period of the ageing window       */
    _Atomic uint32_t mag_short;   /* magazines bins went without: the
                                     next refills make some (cache.c)  */
    _Atomic uint64_t depot_since; /* reclaim passes: the pool clock when
                                     the current period began          */

    /* Pool lock: the fields from here on.  The mutex itself is a slot
     * of the lock table (create.c, "The lock table"), set before the
     * pool is published and kept with the pool's memory: the fork
     * handlers lock and unlock every pool, and the table keeps those
     * writes on a page or two instead of one page per pool. */
    _Alignas(DP_CACHELINE) pthread_mutex_t *lock;
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
    uint32_t mags;        /* magazines carved (depot.c)                */
    /* The depot's ageing window (depot.c): the last DP_DEPOT_PERIODS
     * closed periods, newest first: when each began and the fewest full
     * magazines the depot held during it. */
    uint32_t depot_nper;
    uint32_t depot_min[DP_DEPOT_PERIODS];
    uint64_t depot_t[DP_DEPOT_PERIODS];
    char **mag_dir;       /* the directory of magazine chunks: per
                             chunk, its first magazine (depot.c,
                             "Chunks"); NULL until the first chunk,
                             in whose head it lives.  Pool lock: it
                             and each entry are set before any
                             magazine they reach is handed out, and
                             stay until destroy                      */
};
/* The first slot of pg, hdrsize bytes in.  Computed rather than kept in
 * the header: a pointer to slot 0 there would make a leaked first object
 * "still reachable" to Valgrind's leak check (annotate.h). */
static inline char *dp_pg_slots(const struct dp_pool *p,
                                const struct dp_page *pg)
{
    return (char *)pg + p->hdrsize;
}

/* The fast paths' fields share the pool's first line. */
_Static_assert(offsetof(struct dp_pool, debug) < DP_CACHELINE,
               "struct dp_pool: the hot fields overflow their line");

#define DP_TC_BINS 256
#define DP_TC_REQ 1     /* a drainer asks: owner, keep off the bins  */
#define DP_TC_CLAIMED 2 /* a drainer owns the bins until it stores 0  */

/* One pool's objects in one thread: a stack of pointers, so a get or put
 * reads and writes no object memory.  slots, pool, n and the slot
 * contents are touched only by the owner with the bin's busy flag set
 * (cache.h, "The handshake"), or by a drainer that has claimed the
 * cache.  The counters are also read by
 * statistics and the GC, hence atomic, but whoever owns the bin updates
 * them with plain relaxed load+store pairs: no RMW.  Only gets are
 * counted; a put touches n and its slot and nothing else (puts are
 * derived: the pool's puts = gets - objects out). */
/* Slots per bin: a pool's tc_max is at most this (a soft limit of up to
 * 512 objects, plus one flush of 16). */
#define DP_TC_MAXCAP 528
struct dp_tbin {
    void **slots;          /* base of the stack, [0, n) in use; inside
                              the bin's young area (DP_TC_YOUNG slots)
                              or its own of 2 * DP_TC_MAXCAP, with
                              room for the bin's capacity above it;
                              NULL until the bin's first use in this
                              cache (cache.c, bin_start, "Young
                              bins")                                 */
    struct dp_pool *pool;  /* pool of the objects; NULL: bin unused.
                              Set by the slow paths: the put fast path
                              runs only on a non-empty bin, which is
                              bound already                          */
    /* n and busy share one 8-byte word, so that a fast path's last
     * store writes the new count and clears busy together (cache.h,
     * dp_tc_bin_publish).  Little-endian: n is nb's low half. */
    union {
        _Atomic uint64_t nb;
        struct {
            _Atomic uint32_t n;    /* objects in the bin's stack     */
            _Atomic uint32_t busy; /* owner: 1 while a get/put works
                                      on this bin (cache.h, "The
                                      handshake"); a drainer only
                                      reads it                       */
        };
    };
    uint32_t putlim;       /* owner, the fork handlers, a drainer that
                              unbinds the bin (0): a put to the bin
                              holding n takes the slow path when
                              n - 1 >= putlim (full, or empty);
                              the bin's capacity - 1 once bound
                              (cache.c, bin_cap), 0 in the first
                              puts after a fork (cache.c, "Faults") */
    _Atomic uint64_t gets; /* gets served by the bin                 */
    _Atomic int64_t net;   /* objects taken from pages minus objects
                              returned to pages through this bin     */
};

/* A bin's chain: a page's put stack, taken whole by a refill and linked
 * through the objects' link words; a get pops it when the bin's stack is
 * empty (cache.c, "Chains").  Kept apart from struct dp_tbin so that the
 * fast paths' bin stays 48 bytes.  Same rules as the bin. */
struct dp_tchain {
    void *head;
    _Atomic uint32_t n;    /* objects on the chain (statistics read it) */
    struct dp_mag *spare;  /* an empty magazine for the bin's next shed
                              to the depot (depot.h)                 */
    uint32_t touched;      /* slots at the start of the bin's area
                              that are faulted in (cache.c, "Faults",
                              bin_touch); owner only                 */
    _Atomic uint32_t ramp; /* objects the bin's last refill from the
                              pages asked for; 0: none since the bin
                              was bound (cache.c, "Slow start").  The
                              owner; 0 again when the bin is unbound
                              (its thread's exit, a pool destroy's
                              drain): relaxed, either value serves */
};

/* A list a layer above the pools keeps in each thread's cache (the
 * malloc's medium blocks, lib/malloc/tlist.c): its newest entries in a
 * ring here, older ones linked through the layer's own link word.  The
 * owner inside dp_tc_enter/dp_tc_leave (the cache's active flag), or a
 * drainer holding the claim; counters updated with DP_BUMP, read by
 * statistics and the GC. */
#define DP_TC_EXT 16
#define DP_TC_EXT_RING 8 /* a power of two */
struct dp_tclist {
    void *head;             /* the older entries, linked                */
    _Atomic uint32_t n;     /* entries, ring and linked                 */
    uint8_t rbeg, rn;       /* the ring's oldest entry's index; entries */
    _Atomic uint64_t pops;  /* entries taken by the owner, ever         */
    uintptr_t ring[DP_TC_EXT_RING]; /* the newest entries, as the layer
                                       encodes them                    */
};
/* A thread's cache.  Allocated by its thread's first cached get, on
 * dp_tcg's list until the thread exits (cache.c). */
struct dp_tcache {
    _Atomic uint32_t active; /* owner: 1 inside a slow path or an
                                ext-list operation (cache.h)         */
    _Atomic uint32_t drain;  /* drainer: 0, DP_TC_REQ, DP_TC_CLAIMED   */
    void *last;              /* owner: the block the malloc's hit paths
                                handed out last, a hint for free()
                                (lib/malloc/api.c, "The last block") */
    uint32_t last_off;       /* owner: that block's bin's offset here  */
    uint32_t cow;            /* owner (and the fork handlers): puts left
                                that skip the store of a slot holding
                                the object already (cache.c, "Faults");
                                the bins' putlim is 0 while it is not */
    bool adopted;            /* owner: adopted by a thread that has not
                                allocated since; its ext lists take no
                                entry, which only an allocation of its
                                own would take back (cache.c, "Adopted
                                caches")                              */
    uint64_t seen_sig;       /* dp_tcg.lock: the bins' signature (high
                                half) and the ext lists' (low half) at
                                the last GC (drain.c, dp_tcache_gc)  */
    struct dp_tcache *next, *prev; /* dp_tcg.lock                     */
    void **slotmem;          /* immutable: the bins' slot arrays       */
    _Atomic uint64_t bound[DP_TC_BINS / 64]; /* a bit per bin that may be
                                bound (its pool set): set by the owner
                                inside the bin, cleared where a bin is
                                unbound (dp_tc_flush_bin, forget); an
                                atomic OR, since a signal handler's put
                                may bind another bin in between.  Loops
                                over a cache's bins visit only these,
                                but for the handshake's test of the
                                busy flags (cache.c, "Bound bins")    */
    struct dp_tbin bins[DP_TC_BINS + 1]; /* [DP_TC_BINS]: never used,
                                            n stays 0 (dp_pool.tcbin)  */
    struct dp_tchain chains[DP_TC_BINS + 1]; /* bins[i]'s chain; the
                                               last stays empty        */
    struct dp_tclist ext[DP_TC_EXT]; /* the layer above's lists       */
    _Atomic uint64_t ext_units; /* the layer's tally of what its lists
                                   hold (its unit); same rules as ext[];
                                   a flush of the lists zeroes it      */
};

/* A page's put stack taken whole by a refill: `n` objects from `head`,
 * linked through their link words, NULL-terminated.  max: the longest
 * stack the refill may take this way. */
struct dp_chain {
    void *head;
    uint32_t n, max;
};

#endif /* DP_TYPES_H */
