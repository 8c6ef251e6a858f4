/*
 * malloc.c -- the malloc shim layer: the whole malloc family on top of
 * size-class pools, a page-granular heap of medium and large blocks, and
 * a static bootstrap arena.  docs/design.md §1 (the top
 * layer) and docs/malloc.md (theory of operation of this file).  Built only into
 * libdeferpool-malloc.so, which carries its own copy of the core.
 *
 * The promise carried over from dp_pool_put(): free() never blocks and
 * never makes a system call, whatever the size.
 *   small  (<= MC_SMALL_MAX, 8 KiB): a pool per size class; free is
 *          dp_pool_put.
 *   medium and large (the rest): a page range with a header at its start,
 *          registered in the page map under the frame of the user
 *          pointer; medium blocks (up to MC_CHUNK / 2) are cut from 2 MiB
 *          chunks, larger ones are mapped on their own.  free puts a
 *          medium block on its thread's list, or pushes the block on a
 *          lock-free stack (mc_lq), and returns.  The allocating side
 *          (such a malloc/realloc, the reclaim hook, trim) moves the stack
 *          into a page-granular heap of free blocks that splits and merges
 *          them, reuses them by best fit whatever size asks, and purges
 *          or unmaps those older than the reclaim age or past the
 *          retention limit.
 *   boot   allocations made before the environment exists, or re-entering
 *          the allocator from inside itself (pthread_atfork, pthread_*
 *          specific, ...): bump-allocated from a static arena, never
 *          reused; free recognises them by address and does nothing.
 *
 * Globals and how they are synchronised:
 *   mc_pool[], mc_align[], mc_age_ns  written once by mc_init
 *       under mc_init_lock, published by the release store of mc_inited
 *       (mc_age_ns also by the hook's registration).
 *   mc_inited   0 -> 1 once (release); readers acquire.
 *   mc_rt       reclaim-thread start state, CAS (0 none, 1 starting,
 *               2 done); reset 1 -> 0 in a fork child.
 *   mc_ready    set by the library constructor: the process is far
 *               enough in start-up to create a thread.
 *   mc_lq       Treiber stack of freed blocks: push by free
 *               (release CAS), taken whole by an exchange (acquire) under
 *               mc_heap_lock.  Only whole-stack takes, so no ABA.
 *   mc_bin[], mc_binmap[], mc_heap_old, mc_heap_new, mc_heap_last,
 *   mc_heap_trim_gen
 *               the cache of free blocks, under mc_heap_lock, and so are
 *               the links a cached block keeps in its user area (struct
 *               mc_hnode) and the page-map tags of cached blocks; its
 *               counters in mc_bs change only under it.
 *               No system call is made with the lock held (evicted blocks
 *               are unmapped or purged after it is dropped).
 *   mc_bs       statistics, relaxed atomics.
 *   mc_tl_pops_folded  pops of exited threads' lists, atomic add.
 *   Thread lists: in the core's struct dp_tcache (ext[], ext_units),
 *               under its rules (dp_internal.h); see "Thread lists".
 *   mc_boot_used  bump pointer of the bootstrap arena, CAS.
 *   mc_depth    thread-local: >0 while this thread is inside the
 *               allocator (recursion guard).
 * Lock order: mc_init_lock is outermost (held while creating pools, which
 * take the core's registry and cache locks); mc_heap_lock is a leaf, taken
 * with no other lock held except by the fork handlers, which take it
 * last (docs/design.md §8; the handlers' order: lib/reclaim.c, "Fork").
 */
#include "dp_internal.h"

#include "deferpool-malloc.h"
#include "probes.h"

#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MC_EXPORT __attribute__((visibility("default")))

/* ---- size classes -------------------------------------------------------- */

/* 8, 16, 32, 48, ..., 128, then four classes per doubling up to 8 KiB. */
#define MC_NCLASS 33
#define MC_SMALL_MAX ((size_t)8192)
#define MC_ALIGN_MAX ((size_t)4096) /* largest alignment a pool gives */

static dp_pool_t *mc_pool[MC_NCLASS];
static size_t mc_align[MC_NCLASS];
/* Sizes 0..128 by (n + 7) >> 3. */
static const uint8_t mc_tiny[17] = {0, 0, 1, 2, 2, 3, 3, 4, 4,
                                    5, 5, 6, 6, 7, 7, 8, 8};

static inline unsigned mc_class(size_t n)
{
    if (n <= 128)
        return mc_tiny[(n + 7) >> 3];
    size_t m = n - 1;
    unsigned lg = 63u - (unsigned)__builtin_clzl(m);
    return 9u + (lg - 7u) * 4u + (unsigned)((m >> (lg - 2)) & 3u);
}

static size_t class_size(unsigned c)
{
    static const size_t tiny[9] = {8, 16, 32, 48, 64, 80, 96, 112, 128};
    if (c < 9)
        return tiny[c];
    unsigned j = c - 9, lg = 7 + j / 4;
    return ((size_t)1 << lg) + ((size_t)(j % 4 + 1) << (lg - 2));
}

/* ---- globals --------------------------------------------------------------- */

static pthread_mutex_t mc_init_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int mc_inited;
static _Atomic int mc_rt;
static _Atomic int mc_ready;
static DP_TLS unsigned mc_depth;
static int mc_stats_fd = -1; /* stats_print: private dup of stderr */

extern char **environ;

/* ---- bootstrap arena ----------------------------------------------------- */

#define MC_BOOT_SIZE ((size_t)1 << 20)
static _Alignas(4096) char mc_boot[MC_BOOT_SIZE];
static _Atomic size_t mc_boot_used;

static bool is_boot(const void *p)
{
    return (const char *)p >= mc_boot && (const char *)p < mc_boot + MC_BOOT_SIZE;
}

/* The size is kept in the word before the block.  Zeroed (.bss, never
 * reused).  NULL when the arena is full. */
static void *boot_alloc(size_t n, size_t align)
{
    if (align < 16)
        align = 16;
    if (n > MC_BOOT_SIZE || align > MC_BOOT_SIZE / 2)
        return NULL;
    size_t used = atomic_load_explicit(&mc_boot_used, memory_order_relaxed);
    size_t start, end;
    do {
        start = (used + sizeof(size_t) + align - 1) & ~(align - 1);
        end = start + ((n + 15) & ~(size_t)15);
        if (end > MC_BOOT_SIZE)
            return NULL;
    } while (!atomic_compare_exchange_weak_explicit(
        &mc_boot_used, &used, end, memory_order_relaxed, memory_order_relaxed));
    *(size_t *)(mc_boot + start - sizeof(size_t)) = n;
    return mc_boot + start;
}

static size_t boot_size(const void *p)
{
    return *(const size_t *)((const char *)p - sizeof(size_t));
}

/* ---- large blocks -------------------------------------------------------- */

#define MC_BLOCK_MAGIC 0x64706c67u /* "dplg"; != DP_PAGE_MAGIC */
#define MC_BLOCK_HDR ((size_t)64)  /* user data offset without alignment */
#define MC_SYSPAGE ((size_t)4096)

/* mc_block.state: who has the block.  free() moves it from MC_LIVE to
 * MC_QUEUED with a CAS, so a second free() of the same block fails that
 * CAS and is caught instead of queueing the block twice. */
enum { MC_LIVE = 1, MC_QUEUED = 2, MC_CACHED = 3 };

/* At the start of each large block.  The first field must be the magic:
 * free tells it from a struct dp_page by that word. */
struct mc_block {
    uint32_t magic;
    _Atomic uint32_t state; /* MC_LIVE; MC_QUEUED (free's CAS); MC_CACHED
                               (under mc_heap_lock)                       */
    struct mc_block *next;  /* mc_lq link: written before the push CAS   */
    size_t maplen;          /* bytes of the block, a multiple of
                               MC_SYSPAGE (a mapping or part of one)    */
    size_t off;             /* user pointer = header + off                */
    size_t align;           /* alignment asked for (mremap keeps <= 4K)   */
    size_t req;             /* size last asked for (malloc, realloc)      */
};

/* A cached block's links, kept in its user area (the block is free):
 * under mc_heap_lock. */
struct mc_hnode {
    struct mc_block *fnext, *fprev; /* its size bin, newest first       */
    struct mc_block *anext, *aprev; /* arrival order, oldest first      */
    uint64_t stamp;                 /* when it arrived (heap_lock)        */
    unsigned bin;
    unsigned clean;                 /* 1: its pages but the first are not
                                       resident (purged, or never
                                       touched); not on the arrival list */
};

static struct mc_block *_Atomic mc_lq;

static struct {
    _Atomic uint64_t live, live_bytes, queued, queued_bytes;
    _Atomic uint64_t cached, cached_bytes;
    _Atomic uint64_t maps, unmaps, reused, splits, merges;
    _Atomic uint64_t purges, purged_bytes; /* purged_bytes: clean cached
                                              blocks' bytes (mc_heap_lock) */
} mc_bs;

#define MC_RLX memory_order_relaxed

/*
 * The cache of free large blocks: a page-granular heap (docs/malloc.md,
 * "Large and medium blocks").  free() never sees it: it pushes on mc_lq.
 * The allocating side (a large or medium malloc, realloc, the reclaim
 * hook, trim) moves the queue into the cache under mc_heap_lock, stamping
 * each block with the time it arrived, and takes or evicts blocks there.
 * Evicted blocks are unmapped after the lock is dropped, so the lock is
 * never held across a system call.
 *
 * Memory comes in chunks: a request of at most MC_CHUNK / 2 maps
 * MC_CHUNK bytes, takes its block from the front and caches the rest
 * (untouched, so not resident).  Blocks split and merge at page
 * granularity, whatever size they were asked for, so memory one size
 * frees serves the next size at once -- what a class pool's slots cannot
 * do.  munmap and mremap work on any page range, so a block need not be
 * a whole mapping.
 *   - Best fit by size bins: one bin per page count up to 64 pages, then
 *     four per doubling; a bitmap finds the next non-empty bin.  A
 *     malloc takes the smallest block it finds that holds len bytes and
 *     splits off the rest (whole pages), which goes back to the cache.
 *   - Merging by the page map: a cached block's first and last frames map
 *     to its header tagged MC_TAG_CACHED, so a block arriving looks up
 *     the frame before it and the frame after it and merges with a cached
 *     neighbour in O(1).  The headers swallowed lose their magic and
 *     their map entry, so a stale pointer to one is a foreign pointer.
 *     The tag also makes free() of a cached block a foreign free (caught
 *     in debug mode), not a second queueing.  Every map node a block's
 *     frames need is created when the block is mapped (outside the lock),
 *     so the stores made under the lock never map memory.
 *   - Arrival order: a list, oldest first; what is older than the reclaim
 *     age, or past MC_HEAP_MAX_BYTES, is evicted from its head.
 *
 *   MC_CHUNK         the mapping a small request is cut from;
 *   MC_HEAP_MAX_BYTES  retention limit: blocks past it (oldest first) are
 *                    unmapped at once, by whoever fills the cache; age
 *                    returns the rest;
 *   MC_MERGE_MAX     blocks merge only up to this size, so that one merged
 *                    block never holds most of the retention limit;
 *   MC_GROW_ROOM     a block above MC_GROW_MIN that realloc is growing
 *                    tends to keep growing: it takes this many times the
 *                    size asked for, and then grows in place (no copy, no
 *                    page fault, no syscall).  On benchmarks/macro realloc
 *                    (strings grown by 1/8 to 1 MiB), 4 gave 0.21 s and
 *                    44 MiB peak, 8 0.26 s and 71 MiB, 16 0.11-0.13 s and
 *                    29 MiB, 32 0.12 s and 36 MiB.  Below MC_GROW_MIN
 *                    (medium blocks) a growing block takes what it needs.
 */
#define MC_CHUNK ((size_t)2 << 20)
#define MC_HEAP_MAX_BYTES ((size_t)1 << 30)
#define MC_MERGE_MAX (MC_HEAP_MAX_BYTES / 4)
#define MC_GROW_ROOM 16
#define MC_GROW_MIN ((size_t)64 << 10)
#define MC_DEFAULT_AGE_NS 500000000ull /* malloc's own default: 500 ms */
#define MC_NBINS 192
#define MC_BIN_SCAN 8 /* blocks a best-fit search looks at in a mixed bin */
#define MC_ALIGN_SCAN 64 /* blocks an aligned search looks at in all */
#define MC_TAG_CACHED ((uintptr_t)2)

static pthread_mutex_t mc_heap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mc_block *mc_bin[MC_NBINS];  /* under mc_heap_lock */
static uint64_t mc_binmap[MC_NBINS / 64];  /* under mc_heap_lock: non-empty */
static struct mc_block *mc_heap_old, *mc_heap_new; /* under mc_heap_lock */
static uint64_t mc_heap_last;                /* under mc_heap_lock: last stamp */
static uint64_t mc_heap_trim_gen; /* under mc_heap_lock: HEAP_TRIM_ALL passes begun */
static uint64_t mc_age_ns = MC_DEFAULT_AGE_NS; /* set once by mc_init */

/* Take mc_heap_lock and return the time to stamp arrivals with: the clock,
 * read before the lock is taken, and never earlier than the last stamp,
 * so that the arrival list stays in stamp order. */
static uint64_t heap_lock(void)
{
    uint64_t now = dp_mono_ns();
    pthread_mutex_lock(&mc_heap_lock);
    if (now < mc_heap_last)
        now = mc_heap_last;
    mc_heap_last = now;
    return now;
}

static void *frame_of(const void *p)
{
    return (void *)((uintptr_t)p & ~(uintptr_t)(MC_SYSPAGE - 1));
}

static inline char *block_user(struct mc_block *h) { return (char *)h + h->off; }
static inline size_t block_usable(struct mc_block *h) { return h->maplen - h->off; }
static inline struct mc_hnode *hnode(struct mc_block *h)
{
    return (struct mc_hnode *)((char *)h + MC_BLOCK_HDR);
}

/* The block a page-map value names when it is a live or queued block's
 * header (low bits clear), else NULL. */
static inline struct mc_block *as_block(void *v)
{
    struct mc_block *h = v;
    return h && !((uintptr_t)v & 3u) && h->magic == MC_BLOCK_MAGIC ? h : NULL;
}

/* The cached block a page-map value names, else NULL. */
static inline struct mc_block *as_cached(void *v)
{
    return ((uintptr_t)v & 3u) == MC_TAG_CACHED
               ? (struct mc_block *)((uintptr_t)v - MC_TAG_CACHED)
               : NULL;
}

/*
 * Where the user pointer sits in a block asked for at `align`
 * (docs/malloc.md, "Aligned blocks"): 64 bytes in, past the header; for
 * an alignment of 128 bytes to a page, `align` bytes in (the block starts
 * on a page); above a page, one page in, the block starting a page before
 * an aligned address, which block_place finds in a range that is
 * block_pad bytes longer than the block.
 */
static inline size_t block_off(size_t align)
{
    return align <= MC_BLOCK_HDR ? MC_BLOCK_HDR
           : align < MC_SYSPAGE  ? align
                                 : MC_SYSPAGE;
}

static inline size_t block_pad(size_t align)
{
    return align > MC_SYSPAGE ? align - MC_SYSPAGE : 0;
}

static inline char *block_place(char *m, size_t align)
{
    if (align <= MC_SYSPAGE)
        return m;
    uintptr_t a = align;
    return (char *)((((uintptr_t)m + MC_SYSPAGE + a - 1) & ~(a - 1)) -
                    MC_SYSPAGE);
}

/* Move the user pointer of h (live or freed, owned by the caller) to
 * `off`: the page map names h under the frame of its user pointer, and
 * under no other frame of the block. */
static void block_set_off(struct mc_block *h, size_t off)
{
    void *was = frame_of(block_user(h));
    h->off = off;
    void *now = frame_of(block_user(h));
    if (now != was) {
        dp_pagemap_store(now, h);
        dp_pagemap_store(was, NULL);
    }
}

static void block_unmap(struct mc_block *h)
{
    dp_pagemap_set(frame_of(block_user(h)), MC_SYSPAGE, NULL);
    atomic_fetch_add_explicit(&mc_bs.unmaps, 1, MC_RLX);
    size_t len = h->maplen;
    h->magic = 0;
    DP_PROBE(malloc_unmap, h, len);
    dp_provider_mmap()->free(NULL, h, len);
}

static unsigned heap_bin(size_t len)
{
    size_t np = len / MC_SYSPAGE;
    if (np <= 64)
        return (unsigned)np - 1;
    unsigned lg = 63u - (unsigned)__builtin_clzl(np);
    unsigned b = 64u + (lg - 6u) * 4u + (unsigned)((np >> (lg - 2)) & 3u);
    return b < MC_NBINS ? b : MC_NBINS - 1;
}

static inline void *heap_last_frame(struct mc_block *h)
{
    return (char *)h + h->maplen - MC_SYSPAGE;
}

/* Into the cache, newest: its bin, the arrival list's end, its tags. */
static void heap_link_locked(struct mc_block *h, uint64_t now, bool clean)
{
    struct mc_hnode *c = hnode(h);
    unsigned b = heap_bin(h->maplen);
    c->bin = b;
    c->stamp = now;
    c->clean = clean;
    c->fprev = NULL;
    c->fnext = mc_bin[b];
    if (c->fnext)
        hnode(c->fnext)->fprev = h;
    mc_bin[b] = h;
    mc_binmap[b / 64] |= (uint64_t)1 << (b % 64);
    c->anext = NULL;
    if (clean) {
        c->aprev = NULL;
        atomic_fetch_add_explicit(&mc_bs.purged_bytes, h->maplen, MC_RLX);
    } else {
        c->aprev = mc_heap_new;
        if (mc_heap_new)
            hnode(mc_heap_new)->anext = h;
        else
            mc_heap_old = h;
        mc_heap_new = h;
    }
    atomic_store_explicit(&h->state, MC_CACHED, MC_RLX);
    void *tag = (void *)((uintptr_t)h | MC_TAG_CACHED);
    dp_pagemap_store(h, tag);
    if (h->maplen > MC_SYSPAGE)
        dp_pagemap_store(heap_last_frame(h), tag);
    atomic_fetch_add_explicit(&mc_bs.cached, 1, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.cached_bytes, h->maplen, MC_RLX);
}

/* Out of the cache; its first frame then maps to `first` (the header,
 * for a block handed out; NULL for one merged away or evicted). */
static void heap_unlink_locked(struct mc_block *h, void *first)
{
    struct mc_hnode *c = hnode(h);
    if (c->fprev) {
        hnode(c->fprev)->fnext = c->fnext;
    } else {
        mc_bin[c->bin] = c->fnext;
        if (!c->fnext)
            mc_binmap[c->bin / 64] &= ~((uint64_t)1 << (c->bin % 64));
    }
    if (c->fnext)
        hnode(c->fnext)->fprev = c->fprev;
    if (c->clean) {
        atomic_fetch_sub_explicit(&mc_bs.purged_bytes, h->maplen, MC_RLX);
    } else {
        if (c->aprev)
            hnode(c->aprev)->anext = c->anext;
        else
            mc_heap_old = c->anext;
        if (c->anext)
            hnode(c->anext)->aprev = c->aprev;
        else
            mc_heap_new = c->aprev;
    }
    if (h->maplen > MC_SYSPAGE)
        dp_pagemap_store(heap_last_frame(h), NULL);
    dp_pagemap_store(h, first);
    atomic_fetch_sub_explicit(&mc_bs.cached, 1, MC_RLX);
    atomic_fetch_sub_explicit(&mc_bs.cached_bytes, h->maplen, MC_RLX);
}

/* A header swallowed by a merge: no longer a block. */
static void heap_forget_locked(struct mc_block *h)
{
    dp_pagemap_store(h, NULL);
    h->magic = 0;
    atomic_fetch_add_explicit(&mc_bs.merges, 1, MC_RLX);
}

/* Cache h (default offset, not cached), merged with the cached blocks
 * that end where it starts and start where it ends. */
static void heap_insert_locked(struct mc_block *h, uint64_t now, bool clean)
{
    struct mc_block *l = as_cached(dp_pagemap_get((char *)h - MC_SYSPAGE));
    if (l && (char *)l + l->maplen == (char *)h &&
        l->maplen + h->maplen <= MC_MERGE_MAX) {
        clean = clean && hnode(l)->clean;
        heap_unlink_locked(l, l);
        heap_forget_locked(h);
        l->maplen += h->maplen;
        h = l;
    }
    struct mc_block *r = as_cached(dp_pagemap_get((char *)h + h->maplen));
    if (r && (char *)r == (char *)h + h->maplen &&
        h->maplen + r->maplen <= MC_MERGE_MAX) {
        clean = clean && hnode(r)->clean;
        heap_unlink_locked(r, NULL);
        r->magic = 0;
        atomic_fetch_add_explicit(&mc_bs.merges, 1, MC_RLX);
        h->maplen += r->maplen;
    }
    heap_link_locked(h, now, clean);
}

/* The smallest block of at least len bytes the bins show, or NULL:
 * exact in the one-page-count bins; in a mixed bin, the best of its first
 * MC_BIN_SCAN blocks; else the newest block of the next non-empty bin. */
static struct mc_block *heap_fit_locked(size_t len)
{
    unsigned b = heap_bin(len);
    struct mc_block *best = NULL;
    unsigned k = 0;
    for (struct mc_block *e = mc_bin[b]; e && k < MC_BIN_SCAN;
         e = hnode(e)->fnext, k++) {
        if (e->maplen >= len && (!best || e->maplen < best->maplen)) {
            best = e;
            if (e->maplen == len)
                break;
        }
    }
    if (best)
        return best;
    for (unsigned w = (b + 1) / 64; w < MC_NBINS / 64; w++) {
        uint64_t m = mc_binmap[w];
        if (w == (b + 1) / 64)
            m &= ~(uint64_t)0 << ((b + 1) % 64);
        if (m)
            return mc_bin[w * 64 + (unsigned)__builtin_ctzll(m)];
    }
    return NULL;
}

/*
 * For an alignment above a page: the first cached block, by size from len
 * up, that holds len bytes from its aligned start (block_place), looking
 * at the first MC_BIN_SCAN blocks of each bin and MC_ALIGN_SCAN blocks in
 * all -- so that a freed aligned block serves the same request again --
 * else the best fit for len + block_pad(align) bytes, which always holds
 * them.
 */
static struct mc_block *heap_fit_aligned_locked(size_t len, size_t align)
{
    unsigned seen = 0;
    for (unsigned b = heap_bin(len); b < MC_NBINS && seen < MC_ALIGN_SCAN; b++) {
        unsigned k = 0;
        for (struct mc_block *e = mc_bin[b]; e && k < MC_BIN_SCAN;
             e = hnode(e)->fnext, k++, seen++)
            if (block_place((char *)e, align) + len <= (char *)e + e->maplen)
                return e;
    }
    return heap_fit_locked(len + block_pad(align));
}

/*
 * The single consumer of mc_lq besides the fork child:
 *  1. take the whole queue (acquire exchange: no ABA) into the cache,
 *     stamped `now`, each block merged with its cached neighbours; an
 *     aligned block's user pointer goes back to the default offset;
 *  2. evict, oldest first, the dirty blocks past MC_HEAP_MAX_BYTES or
 *     older than the age; `all` (trim): every block, clean ones too;
 *  3. want_len != 0: take the best fit for want_len at want_align
 *     (heap_take_locked).
 * After the lock is dropped, evicted blocks of MC_CHUNK or more (all of
 * them for a trim) are unmapped; smaller ones are purged and put back
 * clean -- unless a dp_malloc_trim() ran while they were being purged
 * (mc_heap_trim_gen moved): that trim promised every free block unmapped, and
 * could not take these, so they are unmapped instead.  *nreturned counts
 * both.  Runs from a reclaim pass, a medium or large malloc or realloc,
 * or a trim -- never from free.
 */
static void heap_rest_locked(struct mc_block *rest, size_t rest_len,
                           uint64_t now, bool clean);

/* heap_pass's trim argument. */
enum {
    HEAP_KEEP,     /* only what is due                                      */
    HEAP_TRIM,     /* every dirty block now: malloc_trim()                  */
    HEAP_TRIM_ALL, /* every free block unmapped, clean ones too:
                    dp_malloc_trim(), and an allocation that failed       */
};

/* Unmap a list of blocks linked by next; how many. */
static size_t block_unmap_list(struct mc_block *l)
{
    size_t n = 0;
    while (l) {
        struct mc_block *next = l->next;
        block_unmap(l);
        n++;
        l = next;
    }
    return n;
}

/*
 * Take the best fit for a block of len bytes at `align` out of the cache,
 * in use, its user pointer at block_off(align), or NULL.  An alignment
 * above a page asks for block_pad(align) bytes more and leaves the pages
 * before the aligned start in the cache.  What the block does not need
 * past len is split off and cached too (grow: it keeps up to MC_GROW_ROOM
 * x len).  Split here, under the lock: a rest kept out of the cache even
 * for a moment is memory another thread cannot find, and maps a chunk
 * for.  Writing a new header may fault its page in; it is never a system
 * call.
 */
static struct mc_block *heap_take_locked(size_t len, size_t align, bool grow,
                                       uint64_t now)
{
    struct mc_block *got = align > MC_SYSPAGE
                               ? heap_fit_aligned_locked(len, align)
                               : heap_fit_locked(len);
    if (!got)
        return NULL;
    bool clean = hnode(got)->clean;
    size_t have = got->maplen;
    heap_unlink_locked(got, NULL);
    char *at = block_place((char *)got, align);
    if (at != (char *)got) {
        got->maplen = (size_t)(at - (char *)got);
        heap_link_locked(got, now, clean);
        atomic_fetch_add_explicit(&mc_bs.splits, 1, MC_RLX);
        have -= got->maplen;
        got = (struct mc_block *)at;
        got->magic = MC_BLOCK_MAGIC;
    }
    if (grow && len > MC_GROW_MIN) /* whole pages, so is the room */
        len = len <= have / MC_GROW_ROOM ? len * MC_GROW_ROOM : have;
    got->maplen = have;
    if (have > len) {
        got->maplen = len;
        atomic_fetch_add_explicit(&mc_bs.splits, 1, MC_RLX);
        heap_rest_locked((struct mc_block *)((char *)got + len), have - len,
                       now, clean);
    }
    atomic_store_explicit(&got->state, MC_LIVE, MC_RLX);
    got->next = NULL;
    got->off = block_off(align);
    got->align = align;
    dp_pagemap_store(frame_of(block_user(got)), got);
    return got;
}

static struct mc_block *heap_pass(size_t want_len, size_t want_align,
                                    bool grow, int trim, size_t *nreturned)
{
    struct mc_block *evict = NULL, *purge = NULL, *got = NULL;
    uint64_t now = heap_lock();
    uint64_t trims = mc_heap_trim_gen;
    if (trim == HEAP_TRIM_ALL)
        mc_heap_trim_gen++;
    struct mc_block *l = atomic_exchange_explicit(&mc_lq, NULL,
                                                  memory_order_acquire);
    while (l) {
        struct mc_block *next = l->next;
        atomic_fetch_sub_explicit(&mc_bs.queued, 1, MC_RLX);
        atomic_fetch_sub_explicit(&mc_bs.queued_bytes, l->maplen, MC_RLX);
        block_set_off(l, MC_BLOCK_HDR);
        l->align = 0;
        heap_insert_locked(l, now, false);
        l = next;
    }
    /* Due blocks: unmapped if they span a chunk or more, else purged and
     * kept (clean), so that ageing never cuts a hole smaller than a chunk
     * into a mapping (docs/malloc.md, "Purged, not unmapped").  HEAP_TRIM
     * makes every dirty block due; HEAP_TRIM_ALL unmaps everything, clean
     * blocks included. */
    uint64_t dirty = atomic_load_explicit(&mc_bs.cached_bytes, MC_RLX) -
                     atomic_load_explicit(&mc_bs.purged_bytes, MC_RLX);
    while (mc_heap_old &&
           (trim || now - hnode(mc_heap_old)->stamp >= mc_age_ns ||
            dirty > MC_HEAP_MAX_BYTES)) {
        struct mc_block *h = mc_heap_old;
        dirty -= h->maplen;
        heap_unlink_locked(h, NULL);
        if (trim == HEAP_TRIM_ALL || h->maplen >= MC_CHUNK) {
            h->next = evict;
            evict = h;
        } else {
            h->next = purge;
            purge = h;
        }
    }
    if (trim == HEAP_TRIM_ALL) {
        for (unsigned b = 0; b < MC_NBINS; b++) {
            struct mc_block *h = mc_bin[b];
            while (h) {
                struct mc_block *next = hnode(h)->fnext;
                heap_unlink_locked(h, NULL);
                h->next = evict;
                evict = h;
                h = next;
            }
        }
    }
    if (want_len)
        got = heap_take_locked(want_len, want_align, grow, now);
    pthread_mutex_unlock(&mc_heap_lock);
    size_t n = block_unmap_list(evict);
    if (purge) {
        /* Out of the heap while the pages go (nobody can take them); the
         * header page stays, with the block's links. */
        for (struct mc_block *h = purge; h; h = h->next) {
            if (h->maplen > MC_SYSPAGE)
                madvise((char *)h + MC_SYSPAGE, h->maplen - MC_SYSPAGE,
                        MADV_DONTNEED);
            atomic_fetch_add_explicit(&mc_bs.purges, 1, MC_RLX);
            n++;
        }
        now = heap_lock(); /* a merge puts the block at the list's end */
        if (mc_heap_trim_gen != trims) {
            evict = purge; /* dp_malloc_trim() ran meanwhile */
        } else {
            evict = NULL;
            while (purge) {
                struct mc_block *next = purge->next;
                heap_insert_locked(purge, now, true);
                purge = next;
            }
        }
        pthread_mutex_unlock(&mc_heap_lock);
        block_unmap_list(evict);
    }
    if (nreturned)
        *nreturned = n;
    return got;
}

/* The reclaim pass hook (reclaim thread or dp_reclaim_step). */
static size_t mc_reclaim_hook(void)
{
    size_t n = 0;
    heap_pass(0, 0, false, HEAP_KEEP, &n);
    return n;
}

/* Give the rest of a block, rest_len bytes at `rest`, to the cache. */
static void heap_rest_locked(struct mc_block *rest, size_t rest_len,
                           uint64_t now, bool clean)
{
    rest->magic = MC_BLOCK_MAGIC;
    atomic_store_explicit(&rest->state, MC_QUEUED, MC_RLX);
    rest->next = NULL;
    rest->maplen = rest_len;
    rest->off = MC_BLOCK_HDR;
    rest->align = 0;
    rest->req = 0;
    heap_insert_locked(rest, now, clean);
}

/* clean: the rest's pages (but the header's) were never touched. */
static void heap_give_rest(struct mc_block *rest, size_t rest_len, bool clean)
{
    uint64_t now = heap_lock();
    heap_rest_locked(rest, rest_len, now, clean);
    pthread_mutex_unlock(&mc_heap_lock);
}

/*
 * A cached block of at least len bytes for `align` (heap_take_locked),
 * counted in use, or NULL.  A growing block above MC_GROW_MIN (realloc)
 * keeps up to MC_GROW_ROOM times len, to grow into in place.
 */
static struct mc_block *heap_reuse(size_t len, size_t align, bool grow)
{
    if (!atomic_load_explicit(&mc_lq, MC_RLX) &&
        !atomic_load_explicit(&mc_bs.cached, MC_RLX))
        return NULL;
    struct mc_block *h = heap_pass(len, align, grow, HEAP_KEEP, NULL);
    if (!h)
        return NULL;
    atomic_fetch_add_explicit(&mc_bs.reused, 1, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.live, 1, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.live_bytes, h->maplen, MC_RLX);
    return h;
}

/*
 * Thread lists (docs/malloc.md, "Thread lists").  A freed medium block of
 * MC_TL_MINPG to MC_TL_MINPG + DP_TC_EXT - 1 pages goes onto a list of
 * its page count in the freeing thread's cache (struct dp_tcache.ext),
 * and a malloc of that many pages takes it back from there: no lock, no
 * atomic RMW but the block's state CAS, no shared line.  The global
 * counters do not see a block on a thread list: it still counts as live
 * there, and dp_malloc_stats_get() moves the lists' sums (kept per list by
 * its owner) from live to queued.  A thread's lists hold at most
 * MC_TL_BYTES in all (tallied in dp_tcache.ext_units): a listed block
 * cannot merge, and on gcc 512 KiB cost under 1 MiB of peak RSS against
 * no lists, while it made two threads churning 16-64 KiB blocks 2-3
 * times as fast (docs/malloc.md, "Thread lists").  The
 * core's drains hand lists back through tl_flush(): the reclaim GC for
 * idle threads (a thread that sleeps forever does not keep its blocks),
 * thread exit, trim, and this thread's own malloc when the heap has no
 * fit (before mapping new memory, what the thread holds goes back to be
 * merged).
 */
#define MC_TL_MINPG 3 /* a request just above MC_SMALL_MAX, plus header */
#define MC_TL_BYTES ((size_t)512 << 10) /* all of a thread's lists */

static _Atomic uint64_t mc_tl_pops_folded; /* pops of exited threads */

/* The list for blocks of len bytes, or -1. */
static inline int tl_index(size_t len)
{
    size_t i = len / MC_SYSPAGE - MC_TL_MINPG;
    return i < DP_TC_EXT ? (int)i : -1;
}

static struct mc_block *tl_pop(size_t len)
{
    int i = tl_index(len);
    if (i < 0)
        return NULL;
    /* The malloc side creates the cache (an mmap): free() only uses it. */
    struct dp_tcache *tc = dp_tcache_self();
    if (!tc || !dp_tc_enter(tc))
        return NULL;
    /* Only the exact page count: a bigger block would bring pages the
     * caller does not need, resident from their last use (gcc's peak RSS
     * grew by 1 MiB when a miss could take up to two pages more). */
    struct dp_tclist *l = &tc->ext[i];
    struct mc_block *h = l->head;
    if (h) {
        l->head = h->next;
        DP_BUMP(&l->n, -1);
        DP_BUMP(&l->pops, 1);
        DP_BUMP(&tc->ext_units, -h->maplen);
    }
    dp_tc_leave(tc);
    if (h)
        atomic_store_explicit(&h->state, MC_LIVE, MC_RLX);
    return h;
}

/* A block whose free() won the state CAS: onto this thread's list. */
static bool tl_push(struct mc_block *h)
{
    int i = tl_index(h->maplen);
    struct dp_tcache *tc = dp_tc;
    /* Before mc_init no one would ever flush the list.  A block aligned
     * above a page goes to the heap, where the next such request finds it
     * (a list serves only requests of the default placement). */
    if (i < 0 || h->align > MC_SYSPAGE || !tc ||
        !atomic_load_explicit(&mc_inited, memory_order_acquire) ||
        !dp_tc_enter(tc))
        return false;
    struct dp_tclist *l = &tc->ext[i];
    bool ok = atomic_load_explicit(&tc->ext_units, DP_RLX) + h->maplen <=
              MC_TL_BYTES;
    if (ok) {
        h->next = l->head;
        l->head = h;
        DP_BUMP(&l->n, 1);
        DP_BUMP(&tc->ext_units, h->maplen);
    }
    dp_tc_leave(tc);
    return ok;
}

/* dp_tc_ext_flush: a list's blocks onto mc_lq, as a free() would have
 * queued them (one push for the whole list). */
static void tl_flush(struct dp_tclist *l, bool forget)
{
    struct mc_block *h = l->head, *tail = NULL;
    uint64_t n = 0, bytes = 0;
    for (struct mc_block *e = h; e; e = e->next) {
        n++;
        bytes += e->maplen;
        tail = e;
    }
    l->head = NULL;
    atomic_store_explicit(&l->n, 0, DP_RLX);
    if (forget) {
        atomic_fetch_add(&mc_tl_pops_folded,
                         atomic_load_explicit(&l->pops, DP_RLX));
        atomic_store_explicit(&l->pops, 0, DP_RLX);
    }
    if (!h)
        return;
    atomic_fetch_sub_explicit(&mc_bs.live, n, MC_RLX);
    atomic_fetch_sub_explicit(&mc_bs.live_bytes, bytes, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.queued, n, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.queued_bytes, bytes, MC_RLX);
    struct mc_block *top = atomic_load_explicit(&mc_lq, MC_RLX);
    do {
        tail->next = top;
    } while (!atomic_compare_exchange_weak_explicit(
        &mc_lq, &top, h, memory_order_release, MC_RLX));
}

/* Bytes a block needs for n user bytes at offset off (a multiple of
 * MC_SYSPAGE), or 0 on overflow.  A request of 0 bytes gets one: at an
 * offset of whole pages its pointer would otherwise be its block's end,
 * the first frame of whatever is mapped after it, and registering that
 * frame as the block's would take it from its owner. */
static size_t block_len(size_t off, size_t n)
{
    if (n > SIZE_MAX / 2 - off - MC_SYSPAGE)
        return 0;
    return (off + (n ? n : 1) + MC_SYSPAGE - 1) & ~(MC_SYSPAGE - 1);
}

/*
 * A medium or large block of n bytes at `align` (0: none), its user
 * pointer at block_off(align): from this thread's list, else the heap
 * (after handing this thread's lists back, if need be), else a new
 * mapping -- a chunk when the block and what its alignment may skip fit
 * in half of one, the rest of the chunk cached; else a mapping of its
 * own, the pages its alignment skipped unmapped at once (freed, the block
 * still serves the same request: heap_fit_aligned_locked).  grow: for
 * realloc, which moves a growing block here (heap_reuse).
 */
static void *block_alloc(size_t n, size_t align, bool zero, bool grow)
{
    size_t off = block_off(align), pad = block_pad(align);
    size_t len = block_len(off, n);
    if (!len || pad > SIZE_MAX / 2 - len)
        return NULL;
    struct mc_block *h = NULL;
    if (!grow && !pad && (h = tl_pop(len)) != NULL) {
        block_set_off(h, off);
        h->align = align;
    } else if ((h = heap_reuse(len, align, grow)) == NULL &&
               dp_tcache_ext_drain(true)) {
        h = heap_reuse(len, align, grow);
    }
    if (h) {
        h->req = n;
        if (zero)
            memset(block_user(h), 0, n);
        return block_user(h);
    }
    size_t need = len + pad;
    size_t maplen = need <= MC_CHUNK / 2 ? MC_CHUNK : need;
    char *m = dp_provider_mmap()->alloc(NULL, maplen, MC_SYSPAGE, DP_WAITOK);
    if (!m)
        return NULL;
    char *at = block_place(m, align);
    if (maplen == need && pad) {
        size_t lead = (size_t)(at - m), tail = maplen - lead - len;
        if (lead)
            dp_provider_mmap()->free(NULL, m, lead);
        if (tail)
            dp_provider_mmap()->free(NULL, at + len, tail);
        m = at;
        maplen = len;
    }
    /* A chunk's untouched rest must stay untouched, and a purged block
     * purged: no huge page may fill them in (docs/tuning.md, `thp`).  A
     * mapping smaller than a huge page got the same advice from the
     * provider; a bigger block of its own keeps the system's policy. */
    if (maplen == MC_CHUNK)
        dp_map_nohuge(m, maplen);
    /* Every map node the block's frames may need, now, outside any lock
     * (a node is an mmap); then the user pointer's frame. */
    if (dp_pagemap_reserve(m, maplen) != 0 ||
        dp_pagemap_set(frame_of(at + off), MC_SYSPAGE, at) != 0) {
        dp_provider_mmap()->free(NULL, m, maplen);
        return NULL;
    }
    h = (struct mc_block *)at;
    h->magic = MC_BLOCK_MAGIC;
    atomic_store_explicit(&h->state, MC_LIVE, MC_RLX);
    h->next = NULL;
    h->maplen = len;
    h->off = off;
    h->align = align;
    h->req = n;
    DP_PROBE(malloc_map, h, maplen, n);
    atomic_fetch_add_explicit(&mc_bs.maps, 1, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.live, 1, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.live_bytes, len, MC_RLX);
    /* The chunk's pages before and after the block: untouched, clean. */
    if (at > m)
        heap_give_rest((struct mc_block *)m, (size_t)(at - m), true);
    if (m + maplen > at + len)
        heap_give_rest((struct mc_block *)(at + len),
                   (size_t)(m + maplen - (at + len)), true);
    return block_user(h);
}

/* free() of a large block: no system call, no lock.  false: the block is
 * not live (a second free).  The header must not be touched after the
 * push: the block may be unmapped at once. */
static bool block_free(struct mc_block *h)
{
    uint32_t live = MC_LIVE;
    if (!atomic_compare_exchange_strong_explicit(&h->state, &live, MC_QUEUED,
                                                 MC_RLX, MC_RLX))
        return false;
    if (tl_push(h))
        return true;
    atomic_fetch_sub_explicit(&mc_bs.live, 1, MC_RLX);
    atomic_fetch_sub_explicit(&mc_bs.live_bytes, h->maplen, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.queued, 1, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.queued_bytes, h->maplen, MC_RLX);
    struct mc_block *top = atomic_load_explicit(&mc_lq, MC_RLX);
    do {
        h->next = top;
    } while (!atomic_compare_exchange_weak_explicit(
        &mc_lq, &top, h, memory_order_release, MC_RLX));
    return true;
}

/*
 * Resize a large block to hold n bytes; NULL when it cannot (the block is
 * then unchanged; realloc then copies).  Growth asks for half again the
 * current size, so that a string grown step by step is moved once every
 * few steps, not at each:
 *   1. into a cached block (pages already faulted): copy, then free the
 *      old block (it joins the cache);
 *   2. else, for a block of more than MC_CHUNK / 2, mremap(MREMAP_MAYMOVE)
 *      of the block itself, no copy.  A smaller block is left to realloc,
 *      whose new block is cut from a chunk: an mremap would move it into
 *      a mapping of its own.
 * Shrinking (below half) a block of more than MC_CHUNK / 2 is an mremap
 * in place; a smaller one splits its tail off into the cache (no copy, no
 * system call).
 */
static void *block_resize(struct mc_block *h, size_t n)
{
    if (h->align > MC_SYSPAGE)
        return NULL; /* a move would lose the alignment */
    size_t len = block_len(h->off, n);
    size_t old = h->maplen;
    if (!len)
        return NULL;
    if (len > old) {
        size_t slack = block_len(h->off, old - h->off + (old - h->off) / 2);
        if (slack > len)
            len = slack;
        struct mc_block *nh = heap_reuse(len, h->align, true);
        if (nh) {
            nh->req = n;
            memcpy(block_user(nh), block_user(h), block_usable(h));
            block_free(h);
            return block_user(nh);
        }
    }
    if (len < old && old <= MC_CHUNK / 2) {
        /* A medium block shrinks in place: its tail goes to the cache. */
        h->req = n;
        h->maplen = len;
        atomic_fetch_sub_explicit(&mc_bs.live_bytes, old - len, MC_RLX);
        atomic_fetch_add_explicit(&mc_bs.splits, 1, MC_RLX);
        heap_give_rest((struct mc_block *)((char *)h + len), old - len, false);
        return block_user(h);
    }
    if (old <= MC_CHUNK / 2 && len != old)
        return NULL;
    h->req = n;
    if (len == old)
        return block_user(h);
    void *frame = frame_of(block_user(h));
    dp_pagemap_set(frame, MC_SYSPAGE, NULL);
    struct mc_block *nh = mremap(h, old, len, MREMAP_MAYMOVE);
    if (nh == MAP_FAILED) {
        dp_pagemap_set(frame, MC_SYSPAGE, h);
        return NULL;
    }
    nh->maplen = len;
    /* Cannot fail for the frame we cleared; for a new one it can (no
     * memory for a map node): the block then stays valid but unknown to
     * free(), which ignores it -- a leak, not a crash.  A missing node for
     * a later frame only costs a missed merge (dp_pagemap_store). */
    (void)dp_pagemap_reserve(nh, len);
    dp_pagemap_set(frame_of(block_user(nh)), MC_SYSPAGE, nh);
    if (len > old)
        atomic_fetch_add_explicit(&mc_bs.live_bytes, len - old, MC_RLX);
    else
        atomic_fetch_sub_explicit(&mc_bs.live_bytes, old - len, MC_RLX);
    return block_user(nh);
}

/* ---- initialisation, the reclaim thread, fork ---------------------------- */

/*
 * Fork: this layer's part of the core's handlers, whose order
 * lib/reclaim.c ("Fork") lists.  mc_init_lock is taken after the core has
 * claimed the thread caches (an owner inside its cache may be flushing
 * its lists here) and before the core's locks; mc_heap_lock, a leaf, last.
 * Registered from the library constructor, so that a fork while another
 * thread is inside mc_init, or a program handler registered in main()
 * that allocates, finds them in place.
 */
static void mc_lock_init(void) { pthread_mutex_lock(&mc_init_lock); }
static void mc_unlock_init(void) { pthread_mutex_unlock(&mc_init_lock); }
static void mc_lock_heap(void) { pthread_mutex_lock(&mc_heap_lock); }
static void mc_unlock_heap(void) { pthread_mutex_unlock(&mc_heap_lock); }

/* In the child, every lock held, after the core handed the other
 * threads' lists to mc_lq. */
static void mc_atfork_child(void)
{
    /* A thread that was starting the reclaim thread is gone: let the
     * next allocation try (the core restarts a thread that was running). */
    int one = 1;
    atomic_compare_exchange_strong(&mc_rt, &one, 0);
    /* A thread caught between its counter update and its push (free), or
     * holding a drained list (evicted blocks being unmapped), left the
     * queue counters off; the blocks it held stay mapped, unowned.
     * Recount.  The cache itself is whole: we hold mc_heap_lock, and its
     * counters only change under it. */
    uint64_t n = 0, bytes = 0;
    for (struct mc_block *h = atomic_load(&mc_lq); h; h = h->next) {
        n++;
        bytes += h->maplen;
    }
    atomic_store(&mc_bs.queued, n);
    atomic_store(&mc_bs.queued_bytes, bytes);
}

static const struct dp_fork_layer mc_fork_layer = {
    .lock_outer = mc_lock_init,
    .unlock_outer = mc_unlock_init,
    .lock_leaf = mc_lock_heap,
    .unlock_leaf = mc_unlock_heap,
    .child = mc_atfork_child,
};

/*
 * The malloc's reclaim age: DEFERPOOL_CONF reclaim_age_ms when it is
 * given (with a value the core accepted), else MC_DEFAULT_AGE_NS, half
 * the core's default, so that RSS is back within about 0.6 s of the last
 * free (docs/malloc.md).  The core parses and validates the value; here we
 * only look whether the key was set, since its default cannot tell.
 */
static uint64_t mc_conf_age(void)
{
    static const char key[] = "reclaim_age_ms:";
    uint64_t age = dp_options()->reclaim_age_ns; /* parses, warns */
    int saved = errno;
    const char *s = getenv("DEFERPOOL_CONF");
    while (s && *s) {
        size_t n = strcspn(s, ",");
        if (n > sizeof(key) - 1 && !memcmp(s, key, sizeof(key) - 1) &&
            s[sizeof(key) - 1] >= '0' && s[sizeof(key) - 1] <= '9') {
            char *end;
            errno = 0;
            unsigned long long ms = strtoull(s + sizeof(key) - 1, &end, 10);
            bool set = !errno && ms && (*end == ',' || !*end);
            errno = saved;
            if (set)
                return age;
        }
        s += n;
        if (*s == ',')
            s++;
    }
    errno = saved;
    return MC_DEFAULT_AGE_NS;
}

/* Create the pools.  Called inside the recursion guard: allocations made
 * on the way (pthread_atfork, ...) come from the bootstrap arena.  false:
 * too early (no environment yet, so DEFERPOOL_CONF cannot be read) or no
 * memory; the caller serves the request another way. */
static bool mc_init(void)
{
    if (DP_LIKELY(atomic_load_explicit(&mc_inited, memory_order_acquire)))
        return true;
    if (!environ)
        return false;
    pthread_mutex_lock(&mc_init_lock);
    bool ok = atomic_load_explicit(&mc_inited, MC_RLX);
    if (!ok) {
        ok = true;
        mc_age_ns = mc_conf_age();
        for (unsigned c = 0; c < MC_NCLASS && ok; c++) {
            if (mc_pool[c])
                continue;
            size_t sz = class_size(c);
            size_t al = sz & -sz;
            al = c == 0 ? 8 : al < 16 ? 16 : al > MC_ALIGN_MAX ? MC_ALIGN_MAX : al;
            dp_pool_attr_t a;
            dp_pool_attr_init(&a);
            a.align = al;
            a.lowat = 0;  /* everything may age out: RSS comes back */
            a.reclaim_age_ns = mc_age_ns;
            a.flags = DP_POOL_NOTHREAD; /* started lazily, below */
            char name[32];
            snprintf(name, sizeof(name), "malloc-%zu", sz);
            mc_align[c] = al;
            mc_pool[c] = dp_pool_create_ex(name, sz, &a, DP_IPOOL_PAGEMAP);
            ok = mc_pool[c] != NULL;
        }
        if (ok) {
            dp_reclaim_set_hook(mc_reclaim_hook);
            atomic_store(&dp_tc_ext_flush, tl_flush);
            if (dp_options()->stats_print && mc_stats_fd < 0)
                mc_stats_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
            atomic_store_explicit(&mc_inited, 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&mc_init_lock);
    return ok;
}

/*
 * Start the reclaim thread, once, from an allocation made outside the
 * recursion guard, after the library constructor ran (so never from the
 * loader's first allocations, before libc is set up).  pthread_create
 * allocates (the new thread's DTV): those calls find mc_rt == 1 and go
 * on normally; no lock of ours is held.  The library is linked with
 * -z now, so the thread never enters the lazy binder.
 */
static void mc_maybe_start(void)
{
    int zero = 0;
    if (!atomic_load_explicit(&mc_ready, MC_RLX) ||
        !atomic_compare_exchange_strong(&mc_rt, &zero, 1))
        return;
    if (dp_options()->background_thread)
        dp_reclaim_autostart();
    atomic_store(&mc_rt, 2);
}

static void mc_print_at_exit(void);

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
    if (dp_options()->stats_print && mc_stats_fd < 0)
        mc_stats_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
}

__attribute__((destructor)) static void mc_dtor(void)
{
    if (dp_options()->stats_print)
        mc_print_at_exit();
}

/* ---- allocation ------------------------------------------------------------ */

/* The class serving n bytes at `align` (a power of two), or -1: large. */
static int small_class(size_t n, size_t align)
{
    if (n > MC_SMALL_MAX || align > MC_ALIGN_MAX)
        return -1;
    unsigned c = mc_class(n);
    if (align > 8)
        while (c < MC_NCLASS && mc_align[c] < align)
            c++;
    return c < MC_NCLASS ? (int)c : -1;
}

static const struct timespec mc_past = {0, 1};

/* A pool get that may take locks and call the provider but never sleeps
 * waiting for memory: a deadline in the past fails at once instead. */
static void *small_get(unsigned c)
{
    void *o = dp_pool_get_timed(mc_pool[c], DP_WAITOK, &mc_past);
    if (DP_UNLIKELY(!o)) {
        dp_malloc_trim(); /* queued large blocks may be what is missing */
        o = dp_pool_get_timed(mc_pool[c], DP_WAITOK, &mc_past);
    }
    return o;
}

/* Every allocation that the thread cache did not serve. */
static void *mc_alloc(size_t n, size_t align, bool zero, bool grow)
{
    void *r;
    if (DP_UNLIKELY(mc_depth)) {
        /* Re-entered from inside the allocator: bootstrap memory. */
        r = boot_alloc(n, align);
        if (!r)
            r = block_alloc(n, align, zero, grow);
        if (!r)
            errno = ENOMEM;
        return r;
    }
    mc_depth++;
    int c;
    if (DP_UNLIKELY(!mc_init())) {
        r = boot_alloc(n, align);
        if (!r)
            r = block_alloc(n, align, zero, grow);
    } else if ((c = small_class(n, align)) >= 0) {
        r = small_get((unsigned)c);
        if (r && zero)
            memset(r, 0, n);
    } else {
        r = block_alloc(n, align, zero, grow);
        if (!r) {
            dp_malloc_trim();
            r = block_alloc(n, align, zero, grow);
        }
    }
    mc_depth--;
    if (DP_UNLIKELY(atomic_load_explicit(&mc_rt, MC_RLX) != 2))
        mc_maybe_start();
    if (!r)
        errno = ENOMEM;
    return r;
}

/* What kind of block p is, and its usable size. */
enum mc_kind { MC_FOREIGN, MC_SMALL, MC_BLOCK, MC_BOOT };

static enum mc_kind mc_lookup(const void *p, size_t *usable, void **hdr)
{
    void *o = dp_pagemap_get(p);
    struct dp_pool *pool = dp_pm_as_pool(o);
    if (pool) {
        *usable = pool->objsize;
        *hdr = pool;
        return MC_SMALL;
    }
    struct mc_block *h = as_block(o);
    /* A freed block (queued, or on a thread list) is not a block any
     * more: realloc of it says EINVAL instead of resizing freed memory. */
    if (h && block_user(h) == p &&
        atomic_load_explicit(&h->state, MC_RLX) == MC_LIVE) {
        *usable = block_usable(h);
        *hdr = h;
        return MC_BLOCK;
    }
    if (is_boot(p)) {
        *usable = boot_size(p);
        *hdr = NULL;
        return MC_BOOT;
    }
    *usable = 0;
    *hdr = NULL;
    return MC_FOREIGN;
}

/* ---- the malloc family ----------------------------------------------------- */

MC_EXPORT void *malloc(size_t n)
{
    if (DP_LIKELY(n <= MC_SMALL_MAX &&
                  atomic_load_explicit(&mc_inited, memory_order_acquire))) {
        void *o = dp_tcache_get(mc_pool[mc_class(n)]);
        if (DP_LIKELY(o != NULL))
            return o;
    }
    return mc_alloc(n, 0, false, false);
}

/*
 * free: a page-map lookup (lock-free loads), which names the pool of a
 * small block without reading its page header, then either dp_pool_put's
 * fast path (this thread's bin) or its lock-free page put, or a push of a
 * large block on mc_lq.  No lock, no system call, no provider call.
 */
MC_EXPORT void free(void *p)
{
    if (DP_UNLIKELY(!p))
        return;
    void *o = dp_pagemap_get(p);
    struct dp_pool *pool = dp_pm_as_pool(o);
    if (DP_LIKELY(pool != NULL)) {
        dp_pool_put(pool, p);
        return;
    }
    struct mc_block *h = as_block(o);
    if (h && block_user(h) == p && block_free(h))
        return;
    /* Bootstrap memory is never reused.  A foreign pointer, a pointer
     * into a large block but not its start, and a second free of a large
     * block (its state CAS fails, or the block is cached and its frame
     * tagged) are ignored, except in debug mode (DEFERPOOL_CONF debug:1),
     * where they abort, as interior pointers and double frees of small
     * blocks do there (the class pools are then DP_POOL_DEBUG pools). */
    if (DP_UNLIKELY(!is_boot(p) &&
                    atomic_load_explicit(&mc_inited, memory_order_acquire) &&
                    dp_options()->debug)) {
        static const char msg[] =
            "deferpool-malloc: free() of a pointer it never handed out\n";
        (void)!write(2, msg, sizeof(msg) - 1);
        abort();
    }
}

MC_EXPORT void *calloc(size_t nmemb, size_t size)
{
    size_t n;
    if (DP_UNLIKELY(__builtin_mul_overflow(nmemb, size, &n))) {
        errno = ENOMEM;
        return NULL;
    }
    if (DP_LIKELY(n <= MC_SMALL_MAX &&
                  atomic_load_explicit(&mc_inited, memory_order_acquire))) {
        void *o = dp_tcache_get(mc_pool[mc_class(n)]);
        if (DP_LIKELY(o != NULL))
            return memset(o, 0, n);
    }
    return mc_alloc(n, 0, true, false);
}

MC_EXPORT void *realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    if (n == 0) { /* glibc: frees and returns NULL */
        free(p);
        return NULL;
    }
    size_t have;
    void *hdr;
    enum mc_kind k = mc_lookup(p, &have, &hdr);
    if (k == MC_FOREIGN) {
        errno = EINVAL;
        return NULL;
    }
    /* In place when it fits and would not waste more than half, or, for
     * a large block, when it grows (a roomy block taken from the cache
     * for growth, MC_GROW_ROOM, is not shrunk on the way up). */
    if (k == MC_BLOCK && n <= have &&
        (n >= have / 2 || n >= ((struct mc_block *)hdr)->req)) {
        ((struct mc_block *)hdr)->req = n;
        return p;
    }
    if (n <= have && (n >= have / 2 || k == MC_BOOT || have <= 16))
        return p;
    if (k == MC_BLOCK && n > MC_SMALL_MAX) {
        void *q = block_resize(hdr, n);
        if (q)
            return q;
    }
    /* A block growing past the small classes is likely to keep growing:
     * let it take a roomy cached block (MC_GROW_ROOM). */
    void *q = n > MC_SMALL_MAX && n > have ? mc_alloc(n, 0, false, true)
                                           : malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, n < have ? n : have);
    free(p);
    return q;
}

MC_EXPORT void *reallocarray(void *p, size_t nmemb, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, n);
}

static bool is_pow2(size_t x) { return x && !(x & (x - 1)); }

static void *aligned(size_t align, size_t n)
{
    if (align <= 8)
        return malloc(n);
    return mc_alloc(n, align, false, false);
}

MC_EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
    if (!is_pow2(align) || align % sizeof(void *) != 0)
        return EINVAL;
    int saved = errno;
    void *p = aligned(align, n);
    errno = saved;
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

/* As glibc >= 2.38: an alignment that is not a power of two is EINVAL. */
MC_EXPORT void *aligned_alloc(size_t align, size_t n)
{
    if (!is_pow2(align)) {
        errno = EINVAL;
        return NULL;
    }
    return aligned(align, n);
}

/* As glibc: a non-power-of-two alignment is rounded up. */
MC_EXPORT void *memalign(size_t align, size_t n)
{
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!is_pow2(align)) {
        size_t a = 1;
        while (a < align)
            a <<= 1;
        align = a;
    }
    return aligned(align, n);
}

MC_EXPORT void *valloc(size_t n) { return aligned(MC_SYSPAGE, n); }

MC_EXPORT void *pvalloc(size_t n)
{
    if (n > SIZE_MAX - MC_SYSPAGE) {
        errno = ENOMEM;
        return NULL;
    }
    n = n ? (n + MC_SYSPAGE - 1) & ~(MC_SYSPAGE - 1) : MC_SYSPAGE;
    return aligned(MC_SYSPAGE, n);
}

MC_EXPORT size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    size_t have;
    void *hdr;
    mc_lookup(p, &have, &hdr);
    return have;
}

/* C23. */
MC_EXPORT void free_sized(void *p, size_t n);
MC_EXPORT void free_aligned_sized(void *p, size_t align, size_t n);
MC_EXPORT void free_sized(void *p, size_t n)
{
    (void)n;
    free(p);
}
MC_EXPORT void free_aligned_sized(void *p, size_t align, size_t n)
{
    (void)align;
    (void)n;
    free(p);
}

/* ---- statistics ------------------------------------------------------------ */

int dp_malloc_stats_get(dp_malloc_stats_t *out)
{
    if (!out) {
        errno = EINVAL;
        return -1;
    }
    memset(out, 0, sizeof(*out));
    out->small_max = MC_SMALL_MAX;
    out->small_classes = MC_NCLASS;
    if (atomic_load_explicit(&mc_inited, memory_order_acquire)) {
        for (unsigned c = 0; c < MC_NCLASS; c++) {
            dp_pool_stats_t s;
            if (dp_pool_stats(mc_pool[c], &s) != 0)
                continue;
            out->small_objs_inuse += s.objs_inuse;
            out->small_bytes_inuse += s.objs_inuse * s.objsize;
            out->small_objs_cached += s.objs_cached;
            out->small_pages += s.pages;
            out->small_pages_empty += s.pages_empty;
            out->small_bytes_mapped += s.pages * s.pagesize;
            out->small_pages_freed += s.pages_freed;
            out->put_provider_calls += s.put_provider_calls;
        }
    }
    /* Blocks on thread lists count as live in mc_bs: move them. */
    uint64_t tn[DP_TC_EXT], tpops, tl_n = 0, tl_bytes = 0;
    dp_tcache_ext_sum(tn, &tpops);
    for (int i = 0; i < DP_TC_EXT; i++) {
        tl_n += tn[i];
        tl_bytes += tn[i] * (MC_TL_MINPG + (uint64_t)i) * MC_SYSPAGE;
    }
    out->large_inuse = atomic_load_explicit(&mc_bs.live, MC_RLX) - tl_n;
    out->large_bytes_inuse =
        atomic_load_explicit(&mc_bs.live_bytes, MC_RLX) - tl_bytes;
    out->large_queued = atomic_load_explicit(&mc_bs.queued, MC_RLX) + tl_n;
    out->large_bytes_queued =
        atomic_load_explicit(&mc_bs.queued_bytes, MC_RLX) + tl_bytes;
    out->large_cached = atomic_load_explicit(&mc_bs.cached, MC_RLX);
    out->large_bytes_cached = atomic_load_explicit(&mc_bs.cached_bytes, MC_RLX);
    out->large_trims = atomic_load_explicit(&mc_bs.splits, MC_RLX);
    out->large_bytes_trimmed = 0; /* rests are always cached now */
    out->large_cache_max_bytes = MC_HEAP_MAX_BYTES;
    out->large_merges = atomic_load_explicit(&mc_bs.merges, MC_RLX);
    out->large_purges = atomic_load_explicit(&mc_bs.purges, MC_RLX);
    out->large_bytes_purged = atomic_load_explicit(&mc_bs.purged_bytes, MC_RLX);
    out->reclaim_age_ns = mc_age_ns;
    out->large_maps = atomic_load_explicit(&mc_bs.maps, MC_RLX);
    out->large_unmaps = atomic_load_explicit(&mc_bs.unmaps, MC_RLX);
    out->large_reused = atomic_load_explicit(&mc_bs.reused, MC_RLX) + tpops +
                        atomic_load(&mc_tl_pops_folded);
    out->bootstrap_bytes = atomic_load_explicit(&mc_boot_used, MC_RLX);
    dp_reclaim_info_t ri;
    dp_reclaim_info(&ri);
    out->reclaim_running = ri.running;
    out->reclaim_passes = ri.passes;
    out->reclaim_pages_returned = ri.pages_returned;
    out->reclaim_interval_ns = ri.interval_ns;
    return 0;
}

#define U(x) ((unsigned long long)(x))

/* The program's name as a JSON string (quotes, backslashes and control
 * bytes escaped), so that output from several processes can be told
 * apart. */
static void json_program(FILE *f)
{
    const char *s = program_invocation_name ? program_invocation_name : "";
    fputc('"', f);
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (*u == '"' || *u == '\\')
            fprintf(f, "\\%c", *u);
        else if (*u < 0x20 || *u == 0x7f)
            fprintf(f, "\\u%04x", *u);
        else
            fputc(*u, f);
    }
    fputc('"', f);
}

void dp_malloc_stats_print(FILE *f, int json)
{
    if (!f)
        f = stderr;
    /* Gather first, print after: stdio may allocate. */
    dp_malloc_stats_t t;
    dp_malloc_stats_get(&t);
    static dp_pool_stats_t cls[MC_NCLASS]; /* no stack burst, no malloc */
    static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&print_lock);
    unsigned nc = 0;
    if (atomic_load_explicit(&mc_inited, memory_order_acquire))
        for (unsigned c = 0; c < MC_NCLASS; c++)
            if (dp_pool_stats(mc_pool[c], &cls[nc]) == 0 &&
                (cls[nc].gets || cls[nc].pages))
                nc++;
    if (json) {
        fprintf(f, "{\"allocator\":\"deferpool-malloc\",\"version\":\"%s\","
                   "\"pid\":%lld,\"program\":",
                dp_version(), (long long)getpid());
        json_program(f);
        fprintf(f,
                ","
                "\"small\":{\"max\":%llu,\"classes\":%llu,\"objs_inuse\":%llu,"
                "\"bytes_inuse\":%llu,\"objs_cached\":%llu,\"pages\":%llu,"
                "\"pages_empty\":%llu,\"bytes_mapped\":%llu,"
                "\"pages_freed\":%llu,\"put_provider_calls\":%llu},",
                U(t.small_max), U(t.small_classes),
                U(t.small_objs_inuse), U(t.small_bytes_inuse),
                U(t.small_objs_cached), U(t.small_pages),
                U(t.small_pages_empty), U(t.small_bytes_mapped),
                U(t.small_pages_freed), U(t.put_provider_calls));
        fprintf(f,
                "\"large\":{\"inuse\":%llu,\"bytes_inuse\":%llu,\"queued\":%llu,"
                "\"bytes_queued\":%llu,\"cached\":%llu,\"bytes_cached\":%llu,"
                "\"cache_max_bytes\":%llu,\"maps\":%llu,\"unmaps\":%llu,"
                "\"reused\":%llu,\"splits\":%llu,\"bytes_trimmed\":%llu,"
                "\"merges\":%llu,\"purges\":%llu,\"bytes_purged\":%llu},"
                "\"bootstrap_bytes\":%llu,",
                U(t.large_inuse), U(t.large_bytes_inuse), U(t.large_queued),
                U(t.large_bytes_queued), U(t.large_cached),
                U(t.large_bytes_cached), U(t.large_cache_max_bytes),
                U(t.large_maps), U(t.large_unmaps), U(t.large_reused),
                U(t.large_trims), U(t.large_bytes_trimmed),
                U(t.large_merges), U(t.large_purges), U(t.large_bytes_purged),
                U(t.bootstrap_bytes));
        fprintf(f,
                "\"reclaim\":{\"running\":%d,\"passes\":%llu,"
                "\"pages_returned\":%llu,\"interval_ns\":%llu,"
                "\"age_ns\":%llu},\"classes\":[",
                t.reclaim_running, U(t.reclaim_passes),
                U(t.reclaim_pages_returned), U(t.reclaim_interval_ns),
                U(t.reclaim_age_ns));
        for (unsigned i = 0; i < nc; i++) {
            const dp_pool_stats_t *s = &cls[i];
            fprintf(f,
                    "%s{\"size\":%zu,\"pagesize\":%zu,\"objs_inuse\":%llu,"
                    "\"objs_cached\":%llu,\"pages\":%llu,\"pages_empty\":%llu,"
                    "\"pages_alloc\":%llu,\"pages_freed\":%llu,\"gets\":%llu}",
                    i ? "," : "", s->objsize, s->pagesize, U(s->objs_inuse),
                    U(s->objs_cached), U(s->pages), U(s->pages_empty),
                    U(s->pages_alloc), U(s->pages_freed), U(s->gets));
        }
        fprintf(f, "]}\n");
    } else {
        fprintf(f,
                "deferpool-malloc %s statistics: pid %lld, program %s\n"
                "  small (<= %llu bytes, %llu classes): %llu objects in use "
                "(%llu bytes), %llu cached\n"
                "    pages: %llu held (%llu bytes), %llu empty, %llu returned; "
                "provider calls from free: %llu\n"
                "  large: %llu in use (%llu bytes), %llu queued (%llu bytes), "
                "%llu cached (%llu bytes, limit %llu)\n"
                "    %llu mapped, %llu unmapped, %llu reused, "
                "%llu split, %llu merged, %llu purged (%llu bytes purged "
                "now)\n"
                "  bootstrap arena: %llu bytes\n"
                "  reclaim thread: %s, %llu passes, %llu pages returned, "
                "interval %llu ms, age %llu ms\n",
                dp_version(), (long long)getpid(),
                program_invocation_name ? program_invocation_name : "?",
                U(t.small_max), U(t.small_classes),
                U(t.small_objs_inuse), U(t.small_bytes_inuse),
                U(t.small_objs_cached), U(t.small_pages),
                U(t.small_bytes_mapped), U(t.small_pages_empty),
                U(t.small_pages_freed), U(t.put_provider_calls),
                U(t.large_inuse), U(t.large_bytes_inuse), U(t.large_queued),
                U(t.large_bytes_queued), U(t.large_cached),
                U(t.large_bytes_cached), U(t.large_cache_max_bytes),
                U(t.large_maps), U(t.large_unmaps), U(t.large_reused),
                U(t.large_trims), U(t.large_merges), U(t.large_purges),
                U(t.large_bytes_purged), U(t.bootstrap_bytes),
                t.reclaim_running ? "running" : "stopped", U(t.reclaim_passes),
                U(t.reclaim_pages_returned), U(t.reclaim_interval_ns / 1000000),
                U(t.reclaim_age_ns / 1000000));
        if (nc)
            fprintf(f, "  %8s %8s %10s %8s %7s %6s %9s %9s %12s\n", "class",
                    "page", "in use", "cached", "pages", "empty", "allocd",
                    "freed", "gets");
        for (unsigned i = 0; i < nc; i++) {
            const dp_pool_stats_t *s = &cls[i];
            fprintf(f, "  %8zu %8zu %10llu %8llu %7llu %6llu %9llu %9llu %12llu\n",
                    s->objsize, s->pagesize, U(s->objs_inuse),
                    U(s->objs_cached), U(s->pages), U(s->pages_empty),
                    U(s->pages_alloc), U(s->pages_freed), U(s->gets));
        }
    }
    fflush(f);
    pthread_mutex_unlock(&print_lock);
}

/* stats_print:1 -- on a private duplicate of stderr taken at start-up:
 * programs such as coreutils close stderr in an atexit handler, which
 * runs before library destructors. */
static void mc_print_at_exit(void)
{
    FILE *f = mc_stats_fd >= 0 ? fdopen(mc_stats_fd, "w") : NULL;
    dp_malloc_stats_print(f ? f : stderr,
                          dp_options()->stats_print == DP_SP_JSON);
    if (f)
        fclose(f);
}

static size_t mc_trim(int how)
{
    size_t n = 0;
    if (atomic_load_explicit(&mc_inited, memory_order_acquire)) {
        dp_thread_cache_flush();
        dp_tcache_ext_drain(false);
    }
    heap_pass(0, 0, false, how, &n);
    if (!atomic_load_explicit(&mc_inited, memory_order_acquire))
        return n;
    for (unsigned c = 0; c < MC_NCLASS; c++)
        n += dp_pool_reclaim(mc_pool[c]);
    return n;
}

size_t dp_malloc_trim(void) { return mc_trim(HEAP_TRIM_ALL); }

int dp_malloc_reclaim_sync(void) { return dp_reclaim_sync(); }

void dp_malloc_thread_flush(void)
{
    if (atomic_load_explicit(&mc_inited, memory_order_acquire))
        dp_thread_cache_flush();
}

/* ---- glibc extras ---------------------------------------------------------- */

/* What programs call, maybe often: free blocks smaller than a chunk are
 * purged, not unmapped, so that no trim cuts a hole into a mapping
 * (docs/malloc.md, "Purged, not unmapped"). */
MC_EXPORT int malloc_trim(size_t pad)
{
    (void)pad;
    return mc_trim(HEAP_TRIM) > 0;
}

MC_EXPORT struct mallinfo2 mallinfo2(void)
{
    dp_malloc_stats_t t;
    dp_malloc_stats_get(&t);
    struct mallinfo2 m;
    memset(&m, 0, sizeof(m));
    m.arena = t.small_bytes_mapped + t.large_bytes_inuse +
              t.large_bytes_queued + t.large_bytes_cached;
    m.ordblks = 1;
    m.hblks = t.large_inuse;
    m.hblkhd = t.large_bytes_inuse;
    m.uordblks = t.small_bytes_inuse + t.large_bytes_inuse;
    m.fordblks = m.arena > m.uordblks ? m.arena - m.uordblks : 0;
    /* Releasable: resident free blocks (purged ones are not). */
    m.keepcost = t.large_bytes_queued + t.large_bytes_cached -
                 t.large_bytes_purged;
    return m;
}

MC_EXPORT struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m;
    memset(&m, 0, sizeof(m));
#define CLAMP(x) ((x) > INT_MAX ? INT_MAX : (int)(x))
    m.arena = CLAMP(m2.arena);
    m.ordblks = CLAMP(m2.ordblks);
    m.hblks = CLAMP(m2.hblks);
    m.hblkhd = CLAMP(m2.hblkhd);
    m.uordblks = CLAMP(m2.uordblks);
    m.fordblks = CLAMP(m2.fordblks);
    m.keepcost = CLAMP(m2.keepcost);
#undef CLAMP
    return m;
}

MC_EXPORT void malloc_stats(void) { dp_malloc_stats_print(stderr, 0); }

/*
 * glibc's malloc_info() describes glibc's arenas, which hold nothing
 * here.  This one writes deferpool's own numbers as XML: the root names
 * the allocator, version and pid; one <size> per class in use; the large
 * heap; the reclaim thread; and the bytes mapped (docs/malloc.md,
 * "malloc_info").  options must be 0, as in glibc.
 */
MC_EXPORT int malloc_info(int options, FILE *fp)
{
    if (options != 0 || fp == NULL) {
        errno = EINVAL;
        return -1;
    }
    dp_malloc_stats_t t;
    dp_malloc_stats_get(&t);
    static dp_pool_stats_t cls[MC_NCLASS]; /* no stack burst, no malloc */
    static pthread_mutex_t info_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&info_lock);
    unsigned nc = 0;
    if (atomic_load_explicit(&mc_inited, memory_order_acquire))
        for (unsigned c = 0; c < MC_NCLASS; c++)
            if (dp_pool_stats(mc_pool[c], &cls[nc]) == 0 &&
                (cls[nc].gets || cls[nc].pages))
                nc++;
    fprintf(fp,
            "<malloc version=\"1\" allocator=\"deferpool-malloc\" "
            "deferpool=\"%s\" pid=\"%lld\">\n"
            "<small max=\"%llu\" classes=\"%llu\" inuse=\"%llu\" "
            "bytes-inuse=\"%llu\" cached=\"%llu\" pages=\"%llu\" "
            "pages-empty=\"%llu\" bytes-mapped=\"%llu\" "
            "pages-freed=\"%llu\" put-provider-calls=\"%llu\">\n<sizes>\n",
            dp_version(), (long long)getpid(), U(t.small_max),
            U(t.small_classes), U(t.small_objs_inuse),
            U(t.small_bytes_inuse), U(t.small_objs_cached), U(t.small_pages),
            U(t.small_pages_empty), U(t.small_bytes_mapped),
            U(t.small_pages_freed), U(t.put_provider_calls));
    for (unsigned i = 0; i < nc; i++) {
        const dp_pool_stats_t *c = &cls[i];
        fprintf(fp,
                "<size class=\"%zu\" page=\"%zu\" inuse=\"%llu\" "
                "cached=\"%llu\" pages=\"%llu\" pages-empty=\"%llu\" "
                "pages-alloc=\"%llu\" pages-freed=\"%llu\" gets=\"%llu\"/>\n",
                c->objsize, c->pagesize, U(c->objs_inuse), U(c->objs_cached),
                U(c->pages), U(c->pages_empty), U(c->pages_alloc),
                U(c->pages_freed), U(c->gets));
    }
    fprintf(fp,
            "</sizes>\n</small>\n"
            "<large inuse=\"%llu\" bytes-inuse=\"%llu\" queued=\"%llu\" "
            "bytes-queued=\"%llu\" cached=\"%llu\" bytes-cached=\"%llu\" "
            "bytes-purged=\"%llu\" maps=\"%llu\" unmaps=\"%llu\" "
            "reused=\"%llu\" merges=\"%llu\" purges=\"%llu\"/>\n"
            "<bootstrap bytes=\"%llu\"/>\n"
            "<reclaim running=\"%d\" passes=\"%llu\" pages-returned=\"%llu\" "
            "interval-ns=\"%llu\" age-ns=\"%llu\"/>\n"
            "<system type=\"mapped\" size=\"%llu\"/>\n"
            "</malloc>\n",
            U(t.large_inuse), U(t.large_bytes_inuse), U(t.large_queued),
            U(t.large_bytes_queued), U(t.large_cached),
            U(t.large_bytes_cached), U(t.large_bytes_purged), U(t.large_maps),
            U(t.large_unmaps), U(t.large_reused), U(t.large_merges),
            U(t.large_purges), U(t.bootstrap_bytes), t.reclaim_running,
            U(t.reclaim_passes), U(t.reclaim_pages_returned),
            U(t.reclaim_interval_ns), U(t.reclaim_age_ns),
            U(t.small_bytes_mapped + t.large_bytes_inuse +
              t.large_bytes_queued + t.large_bytes_cached));
    pthread_mutex_unlock(&info_lock);
    return ferror(fp) ? -1 : 0;
}

/* Every glibc parameter is accepted (1) and has no effect: the page-level
 * policy is set with DEFERPOOL_CONF.  Unknown parameters: 0. */
MC_EXPORT int mallopt(int param, int value)
{
    (void)value;
    switch (param) {
    case M_MXFAST:
    case M_TRIM_THRESHOLD:
    case M_TOP_PAD:
    case M_MMAP_THRESHOLD:
    case M_MMAP_MAX:
    case M_CHECK_ACTION:
    case M_PERTURB:
    case M_ARENA_TEST:
    case M_ARENA_MAX:
        return 1;
    default:
        return 0;
    }
}
