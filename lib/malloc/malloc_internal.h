/*
 * malloc_internal.h -- the drop-in malloc's private interface: its types,
 * its constants, and how each of its globals is synchronised.  The top
 * layer (docs/design.md §1); docs/malloc.md is its theory of operation.
 * Included only by the files of lib/malloc/.
 *
 * Glossary
 *   small    a request of at most MC_SMALL_MAX bytes at most MC_ALIGN_MAX
 *            aligned: an object of a size-class pool (classes.c); free is
 *            dp_pool_put.
 *   block    everything else: a page range with a struct mc_block header
 *            at its start, registered in the page map under the frame of
 *            its user pointer (block.c).  A medium block (up to
 *            MC_CHUNK / 2) is cut from a chunk; a larger one is a mapping
 *            of its own.
 *   chunk    an MC_CHUNK mapping that medium blocks are cut from.
 *   queue    mc_lq: blocks freed and not yet in the heap; free() pushes,
 *            the allocating side takes the whole stack.
 *   heap     the free blocks, split and merged at page granularity,
 *            found by best fit, aged out by purging or unmapping
 *            (heap.c).  A block in it is "cached".
 *   thread list  a freed medium block kept by the freeing thread for its
 *            own next malloc of the same page count (tlist.c).
 *   boot     memory handed out before the environment exists or from
 *            inside the allocator, from a static arena; never reused
 *            (boot.c).
 *
 * Globals and how they are synchronised:
 *   mc_align[]  written once by mc_init under mc_init_lock, published
 *       by the release store of mc_inited.
 *   mc_hot[]    each entry &mc_nopool until the first allocation of its
 *       class stores the class's new pool, once, under mc_init_lock
 *       (mc_class_pool, release); every load is an acquire.
 *   mc_hit[]    0 until mc_class_pool stores the entries of its class
 *       once (relaxed), before it publishes mc_hot[c]; read relaxed: an
 *       entry names a bin of the reader's own cache, and the class
 *       pools' bins and limits never change.
 *   mc_age_ns   written once by mc_init, before mc_inited is published;
 *       read by the heap (any thread that reads mc_inited, or the reclaim
 *       pass, started after it).
 *   mc_inited   0 -> 1 once (release); readers acquire.
 *   mc_rt       reclaim-thread start state, CAS (0 none, 1 starting,
 *               2 done); reset 1 -> 0 in a fork child.
 *   mc_mapped   bytes the class pools' pages and the medium and large
 *               mappings ever took from the kernel: atomic adds (the
 *               slow paths that map), relaxed; read by the start test.
 *   mc_ready    set by the library constructor: the process is far enough
 *               in start-up to create a thread.
 *   mc_depth    thread-local: > 0 while this thread is inside the
 *               allocator (recursion guard).
 *   mc_lq       Treiber stack of freed blocks: pushed by free (release
 *               CAS), taken whole by an exchange (acquire) under
 *               mc_heap_lock.  Only whole-stack takes, so no ABA.
 *   mc_bs       block statistics, relaxed atomics; the heap's counters
 *               (cached, cached_bytes, purged_bytes) change only under
 *               mc_heap_lock.
 *   mc_tl_pops_folded  pops of exited threads' lists, atomic add.
 *   The heap (heap.c: bins, arrival list, the links a cached block keeps
 *               in its user area, the page-map tags of cached blocks):
 *               under mc_heap_lock, which is never held across a system
 *               call.
 *   Thread lists: in the core's struct dp_tcache (ext[], ext_units),
 *               under its rules (dp_internal.h).
 *   The bootstrap arena's bump pointer: CAS (boot.c).
 * Lock order: docs/design.md §8.  mc_init_lock is outermost; mc_heap_lock
 * is a leaf (taken under dp_tcg.lock only by heap_counters).
 */
#ifndef DP_MALLOC_INTERNAL_H
#define DP_MALLOC_INTERNAL_H

#include "annotate.h"
#include "dp_internal.h"

#include "deferpool-malloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MC_EXPORT __attribute__((visibility("default")))
#define MC_RLX memory_order_relaxed

/* ---- size classes (classes.c) -------------------------------------------- */

/* 16, 32, 48, ..., 128, then four classes per doubling up to 8 KiB: every
 * small block is 16-byte aligned, as glibc's are (alignof(max_align_t)),
 * and has a word 1 for its free tag. */
#define MC_NCLASS 32
#define MC_SMALL_MAX ((size_t)8192)
#define MC_ALIGN_MAX ((size_t)4096) /* largest alignment a pool gives */

/* Class c's pool, made at the first call (takes mc_init_lock; after
 * mc_init); NULL: no memory for it. */
DP_HIDDEN dp_pool_t *mc_class_pool(unsigned c);
/* Class c's pool if it has been made, else NULL; any thread. */
DP_HIDDEN dp_pool_t *mc_class_pool_if(unsigned c);
extern DP_HIDDEN size_t mc_align[MC_NCLASS];
/* What the hit paths of calloc and of malloc above MC_TABLE_MAX pop:
 * class c's pool once mc_class_pool made it, before that mc_nopool, a
 * pool whose thread-cache bin is always empty, so the hit path misses
 * into mc_alloc without testing whether the pool exists. */
extern DP_HIDDEN dp_pool_t *_Atomic mc_hot[MC_NCLASS];
#define MC_TABLE_MAX ((size_t)1024) /* mc_small_class covers 0..this */
extern DP_HIDDEN const uint8_t mc_small_class[MC_TABLE_MAX / 8 + 1];
/* What malloc()'s hit path reads for a request of n <= MC_TABLE_MAX bytes,
 * at index (n + 7) / 8: its class pool's bin offset (dp_pool.tcoff) in the
 * low 32 bits and tc_soft in the high 32, so that the hit path reads
 * neither the class table nor the pool.  0 until the class's pool is
 * made (mc_class_pool): tc_soft 0, the pop misses. */
extern DP_HIDDEN _Atomic uint64_t mc_hit[MC_TABLE_MAX / 8 + 1];

/* Inline: the fast paths index mc_hot[] with it.  Up to
 * MC_TABLE_MAX a table load; above, four classes per doubling. */
static inline unsigned mc_class(size_t n)
{
    if (DP_LIKELY(n <= MC_TABLE_MAX))
        return mc_small_class[(n + 7) >> 3];
    size_t m = n - 1;
    unsigned lg = 63u - (unsigned)__builtin_clzl(m);
    return 8u + (lg - 7u) * 4u + (unsigned)((m >> (lg - 2)) & 3u);
}

DP_HIDDEN size_t mc_class_size(unsigned c);
DP_HIDDEN size_t mc_class_align(unsigned c);

/* ---- state (init.c) -------------------------------------------------------- */

extern DP_HIDDEN _Atomic int mc_inited;
extern DP_HIDDEN _Atomic int mc_rt;
extern DP_HIDDEN _Atomic uint64_t mc_mapped;
extern DP_HIDDEN DP_TLS unsigned mc_depth;
extern DP_HIDDEN uint64_t mc_age_ns;

DP_HIDDEN bool mc_init(void);
/* The reclaim thread starts once the malloc has mapped this much (init.c,
 * mc_maybe_start). */
#define MC_RT_START ((uint64_t)4 << 20)
/* From an allocation's slow path: start the reclaim thread, once, if the
 * malloc has mapped MC_RT_START bytes; force: whatever it has mapped
 * (dp_malloc_reclaim_sync). */
DP_HIDDEN void mc_maybe_start(bool force);

/* ---- bootstrap arena (boot.c) -------------------------------------------- */

DP_HIDDEN bool boot_owns(const void *p);
DP_HIDDEN void *boot_alloc(size_t n, size_t align);
DP_HIDDEN size_t boot_size(const void *p);
DP_HIDDEN size_t boot_used(void);

/* ---- blocks (block.c) ------------------------------------------------------ */

#define MC_BLOCK_MAGIC 0x64706c67u /* "dplg"; != DP_PAGE_MAGIC */
#define MC_BLOCK_HDR ((size_t)64)  /* user data offset without alignment */
#define MC_SYSPAGE ((size_t)4096)
/* A request of at most MC_CHUNK / 2 is cut from a chunk of MC_CHUNK. */
#define MC_CHUNK ((size_t)2 << 20)

/* A pointer kept where a use after free or an overflow of the block
 * before may write: a freed block's header (next) or its user area (the
 * heap's links).  Stored safe-linked, as link.h stores a pool's links and
 * with its secret: v ^ (address of the word >> 12) ^ dp_link_key. */
typedef uintptr_t mc_link_t;

/* mc_block.state: who has the block.  free() moves it from MC_LIVE to
 * MC_QUEUED with a CAS, so a second free() of the same block fails that
 * CAS and is caught instead of queueing the block twice. */
enum { MC_LIVE = 1, MC_QUEUED = 2, MC_CACHED = 3 };

/* At the start of each block.  The first field must be the magic: free
 * tells it from a struct dp_page by that word.  Fields other than state
 * belong to whoever has the block: its user while live, the pusher until
 * the push, the heap (mc_heap_lock) once queued or cached.  magic and off
 * are relaxed atomics (mc_magic, mc_off and their setters) because a
 * free() or malloc_usable_size() of a freed pointer reads them while a
 * heap pass may be rewriting them: that read must be a wrong pointer
 * caught, not a data race. */
struct mc_block {
    _Atomic uint32_t magic; /* MC_BLOCK_MAGIC, 0 once merged or unmapped */
    _Atomic uint32_t state; /* MC_LIVE; MC_QUEUED (free's CAS); MC_CACHED
                               (under mc_heap_lock).  Stale while the
                               page map tags the block listed (MC_LIVE,
                               MC_TAG_LISTED)                            */
    mc_link_t next;         /* mc_lq, thread-list or eviction link,
                               safe-linked (mc_next_*): written before
                               the push                                  */
    size_t maplen;          /* bytes of the block, a multiple of
                               MC_SYSPAGE (a mapping or part of one)     */
    _Atomic size_t off;     /* user pointer = header + off               */
    size_t align;           /* alignment asked for (mremap keeps <= 4K)  */
    size_t req;             /* size last asked for (malloc, realloc)     */
    uint32_t huge;          /* 1: some of its pages lie in a huge chunk
                               (block.c, "Huge chunks"); its owner's (the
                               thread holding it, the heap under
                               mc_heap_lock)                             */
};
_Static_assert(sizeof(struct mc_block) <= MC_BLOCK_HDR,
               "the header fits before the user data");

/* Block statistics (mc_bs): relaxed atomics, read relaxed by anyone.
 * Those marked (mc_heap_lock) are written only with the lock held, by
 * mc_bs_locked_add: a load and a store, no atomic read-modify-write (a
 * locked instruction waits for the store buffer to drain, and a heap
 * pass writes a dozen such counters among its stores to cold block
 * headers).  The rest take atomic adds. */
struct mc_block_stats {
    _Atomic uint64_t live, live_bytes;     /* handed out (thread lists too) */
    _Atomic uint64_t queued, queued_bytes; /* on mc_lq                      */
    _Atomic uint64_t cached, cached_bytes; /* in the heap (mc_heap_lock)    */
    _Atomic uint64_t maps, unmaps;         /* mappings made, blocks unmapped */
    _Atomic uint64_t reused;               /* handed out from the heap
                                              (mc_heap_lock)                */
    _Atomic uint64_t splits;               /* a block cut in two
                                              (mc_heap_lock)                */
    _Atomic uint64_t merges;               /* a block merged into another
                                              (mc_heap_lock)                */
    _Atomic uint64_t purges;               /* due blocks purged             */
    _Atomic uint64_t purged_bytes;         /* clean cached blocks' bytes
                                              (mc_heap_lock)                */
    _Atomic uint64_t populates;            /* blocks faulted in by one
                                              madvise (block.c)             */
    _Atomic uint64_t huge_chunks;          /* huge chunks mapped (block.c) */
};
extern DP_HIDDEN struct mc_block_stats mc_bs;

/* Add d to a counter of mc_bs marked (mc_heap_lock), the lock held. */
static inline void mc_bs_locked_add(_Atomic uint64_t *c, uint64_t d)
{
    atomic_store_explicit(c, atomic_load_explicit(c, MC_RLX) + d, MC_RLX);
}

extern DP_HIDDEN struct mc_block *_Atomic mc_lq;

/* ---- safe-linked pointers (harden.c) --------------------------------- */

/* Abort: the link `what` in block h decoded to v, which is not what such
 * a link may point to (written after free?). */
DP_HIDDEN _Noreturn void mc_link_corrupt(const void *h, const char *what,
                                         uintptr_t v);

static inline void mc_link_set(mc_link_t *w, const void *v)
{
    *w = (uintptr_t)v ^ dp_link_mask(w);
}

static inline uintptr_t mc_link_peek(const mc_link_t *w)
{
    return *w ^ dp_link_mask(w);
}

/* A block header: page-aligned, in the 47-bit user address space. */
static inline bool mc_link_plausible(uintptr_t v)
{
    return !(v & (MC_SYSPAGE - 1)) && !(v >> 47);
}

static inline void mc_next_set(struct mc_block *h, const struct mc_block *n)
{
    mc_link_set(&h->next, n);
}

/* The next block on a list of blocks out of the heap (the eviction
 * lists): a block header, or NULL. */
static inline struct mc_block *mc_next_get(struct mc_block *h)
{
    uintptr_t v = mc_link_peek(&h->next);
    if (DP_UNLIKELY(v && !mc_link_plausible(v)))
        mc_link_corrupt(h, "next", v);
    return (struct mc_block *)v;
}

/*
 * The page map's tags for the blocks of the thread lists (tlist.c, "The
 * fast free").  A block tl_malloc handed out, at the default offset and
 * alignment and of list i's length, is named under its first frame by
 * its header tagged MC_TAG_FAST and i; once free() put it on a thread
 * list, by its header tagged MC_TAG_LISTED and i.  Neither free() nor
 * the malloc that takes it back then touches the header, whose state
 * stays MC_LIVE: the tag is what tells a live block from a listed one.
 * Headers start a page, so the tags' bits are free.  Every other store
 * of a block's frame names the header alone; a block whose header
 * changes (block_free, block_resize, block_set_off) has its tag taken
 * off first, and a listed block leaving the lists by another way than
 * tl_malloc has its frame untagged and its state written (tl_pop with
 * block_alloc's block_set_off, tl_flush).
 */
#define MC_TAG_FAST ((uintptr_t)4)
#define MC_TAG_LISTED ((uintptr_t)0x80)
#define MC_TAG_SHIFT 3
#define MC_TAG_INDEX ((uintptr_t)(DP_TC_EXT - 1) << MC_TAG_SHIFT)
#define MC_TAGS (MC_TAG_FAST | MC_TAG_LISTED | MC_TAG_INDEX)
_Static_assert(MC_TAGS < MC_SYSPAGE && MC_TAG_INDEX < MC_TAG_LISTED,
               "the tags fit a header's frame");

/* The next block on mc_lq or a thread list: NULL, or a freed block that
 * the page map names under the frame of its user pointer (the header's,
 * tagged MC_TAG_LISTED or not, or the next one for an alignment above a
 * page: block_off). */
static inline struct mc_block *mc_next_queued(struct mc_block *h)
{
    uintptr_t v = mc_link_peek(&h->next);
    if (DP_UNLIKELY(v && (!mc_link_plausible(v) ||
                          (((uintptr_t)dp_pagemap_get((void *)v) &
                            ~MC_TAG_INDEX & ~MC_TAG_LISTED) != v &&
                           dp_pagemap_get((void *)(v + MC_SYSPAGE)) !=
                               (void *)v))))
        mc_link_corrupt(h, "next", v);
    return (struct mc_block *)v;
}

/* Push the list h..tail (linked by next) on mc_lq: a Treiber push
 * (release, so the links and headers are seen by the heap's acquire
 * exchange).  The stack is only ever taken whole, so there is no ABA. */
static inline void mc_lq_push(struct mc_block *h, struct mc_block *tail)
{
    struct mc_block *top = atomic_load_explicit(&mc_lq, MC_RLX);
    do {
        mc_next_set(tail, top);
    } while (!atomic_compare_exchange_weak_explicit(
        &mc_lq, &top, h, memory_order_release, MC_RLX));
}

/* n freed blocks of `bytes` in all leave the live counts for the queue. */
static inline void mc_bs_live_to_queued(uint64_t n, uint64_t bytes)
{
    atomic_fetch_sub_explicit(&mc_bs.live, n, MC_RLX);
    atomic_fetch_sub_explicit(&mc_bs.live_bytes, bytes, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.queued, n, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.queued_bytes, bytes, MC_RLX);
}

static inline void *frame_of(const void *p)
{
    return (void *)((uintptr_t)p & ~(uintptr_t)(MC_SYSPAGE - 1));
}

static inline uint32_t mc_magic(const struct mc_block *h)
{
    return atomic_load_explicit(&h->magic, MC_RLX);
}
static inline void mc_magic_set(struct mc_block *h, uint32_t m)
{
    atomic_store_explicit(&h->magic, m, MC_RLX);
}
static inline size_t mc_off(const struct mc_block *h)
{
    return atomic_load_explicit(&h->off, MC_RLX);
}
static inline void mc_off_set(struct mc_block *h, size_t off)
{
    atomic_store_explicit(&h->off, off, MC_RLX);
}

static inline char *block_user(struct mc_block *h) { return (char *)h + mc_off(h); }
static inline size_t block_usable(struct mc_block *h) { return h->maplen - mc_off(h); }

static inline void *mc_tagged(struct mc_block *h, uintptr_t tag, int i)
{
    return (void *)((uintptr_t)h | tag | (uintptr_t)i << MC_TAG_SHIFT);
}

static inline int mc_tag_index(uintptr_t v)
{
    return (int)((v & MC_TAG_INDEX) >> MC_TAG_SHIFT);
}

/* The header a page-map value names (bits 0 and 1 clear, the tags taken
 * off) if it is a block's, live or freed, else NULL. */
static inline struct mc_block *pm_header(void *v)
{
    struct mc_block *h = (struct mc_block *)((uintptr_t)v & ~MC_TAGS);
    return h && !((uintptr_t)v & 3u) && mc_magic(h) == MC_BLOCK_MAGIC ? h : NULL;
}

/* The block a page-map value names when it is a live or queued block's
 * header (a listed one's is NULL: its header's state is stale), else
 * NULL.  Inline: free() asks it. */
static inline struct mc_block *as_block(void *v)
{
    return (uintptr_t)v & MC_TAG_LISTED ? NULL : pm_header(v);
}

/* Name block h by its header alone under its user pointer's frame (its
 * tag off): a live block before anything of its header changes, a
 * listed one leaving the lists but by tl_malloc. */
static inline void block_untag(struct mc_block *h)
{
    dp_pm_slot *s = dp_pagemap_slot(frame_of(block_user(h)));
    if (s)
        atomic_store_explicit(s, (void *)h, memory_order_release);
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

/* Bytes a block needs for n user bytes at offset off (a multiple of
 * MC_SYSPAGE), or 0 on overflow.  A request of 0 bytes gets one: at an
 * offset of whole pages its pointer would otherwise be its block's end,
 * the first frame of whatever is mapped after it, and registering that
 * frame as the block's would take it from its owner. */
static inline size_t block_len(size_t off, size_t n)
{
    if (n > SIZE_MAX / 2 - off - MC_SYSPAGE)
        return 0;
    return (off + (n ? n : 1) + MC_SYSPAGE - 1) & ~(MC_SYSPAGE - 1);
}

DP_HIDDEN void block_set_off(struct mc_block *h, size_t off);
DP_HIDDEN void block_unmap(struct mc_block *h);
DP_HIDDEN size_t block_unmap_list(struct mc_block *l);
DP_HIDDEN void *block_alloc(size_t n, size_t align, bool zero, bool grow);
/* free() of block h: false if it is not live (a second free).  list:
 * it may wait on this thread's lists; a block realloc moved out of
 * goes to the heap instead, where it can merge (tlist.c). */
DP_HIDDEN bool block_free(struct mc_block *h, bool list);
DP_HIDDEN void *block_resize(struct mc_block *h, size_t n);

/* ---- the heap of free blocks (heap.c) ------------------------------------ */

/*
 *   MC_HEAP_MAX_BYTES  retention limit: blocks past it (oldest first) are
 *                      evicted at once, by whoever fills the heap; age
 *                      returns the rest;
 *   MC_GROW_ROOM       a block above MC_GROW_MIN that realloc is growing
 *                      tends to keep growing: it takes this many times
 *                      the size asked for, and then grows in place (no
 *                      copy, no page fault, no syscall).  The factor is
 *                      the best of those tried on benchmarks/macro
 *                      realloc and realloc_mix (docs/benchmarks.md);
 *                      growth in place into a free neighbour
 *                      (heap_extend) does the rest.  Below MC_GROW_MIN
 *                      (medium blocks) a growing block takes what it
 *                      needs.
 *   MC_DEFAULT_AGE_NS  the malloc's reclaim age when DEFERPOOL_CONF sets
 *                      none: half the core's default, so that RSS comes
 *                      back soon after the last free (docs/malloc.md).
 *   MC_HUGE_AFTER      a new chunk is a huge chunk (block.c) once the
 *                      heap's blocks, live, queued and cached, hold this
 *                      many bytes: a program that lives a few
 *                      milliseconds, or keeps a few medium blocks, never
 *                      has a whole chunk made resident at its first
 *                      touch.
 *   MC_LISTS_KEPT      below this many bytes of blocks (counted as for
 *                      MC_HUGE_AFTER) a malloc the heap cannot serve maps
 *                      a chunk without handing its thread's lists back
 *                      first (block.c, block_alloc): in a small heap a
 *                      hand-back empties the lists whenever the heap runs
 *                      dry, and each of the misses that follow is a heap
 *                      pass (docs/malloc.md, "Thread lists").
 */
#define MC_HEAP_MAX_BYTES ((size_t)1 << 30)
#define MC_GROW_ROOM 2
#define MC_GROW_MIN ((size_t)64 << 10)
#define MC_DEFAULT_AGE_NS 500000000ull
#define MC_HUGE_AFTER ((uint64_t)4 << 20)
#define MC_LISTS_KEPT ((uint64_t)8 << 20)

/* What a heap pass evicts besides what is due. */
enum mc_heap_mode {
    HEAP_KEEP,     /* only what is due                                     */
    HEAP_TRIM,     /* every dirty block now: malloc_trim()                 */
    HEAP_TRIM_ALL, /* every free block unmapped, clean ones too:
                      dp_malloc_trim(), and an allocation that failed      */
};

DP_HIDDEN struct mc_block *heap_reuse(size_t len, size_t align, bool grow,
                                      bool *clean);
DP_HIDDEN bool heap_extend(struct mc_block *h, size_t len, size_t want);
DP_HIDDEN void heap_give_rest(struct mc_block *rest, size_t rest_len,
                              bool clean, bool huge, bool split);
DP_HIDDEN size_t heap_trim(enum mc_heap_mode mode);
DP_HIDDEN size_t heap_reclaim_hook(void);
/* The block counters where blocks move between the heap pass and the
 * thread lists' drains: one snapshot of them (heap_counters). */
struct mc_bs_snap {
    uint64_t live, live_bytes, queued, queued_bytes, cached, cached_bytes;
};
/* Fill the struct mc_bs_snap v under mc_heap_lock, so that no heap pass
 * moves a block from queued to cached meanwhile.  The statistics call it
 * under dp_tcg.lock (dp_tcache_ext_sum's callback). */
DP_HIDDEN void heap_counters(void *v);
DP_HIDDEN void heap_fork_lock(void);
DP_HIDDEN void heap_fork_unlock(void);

/* ---- thread lists (tlist.c) ---------------------------------------------- */

#define MC_TL_MINPG 3 /* a request just above MC_SMALL_MAX, plus header */

/* The length of every block on thread list i. */
static inline size_t tl_len(int i)
{
    return (size_t)(i + MC_TL_MINPG) * MC_SYSPAGE;
}
extern DP_HIDDEN _Atomic uint64_t mc_tl_pops_folded;

DP_HIDDEN struct mc_block *tl_pop(size_t len);
/* malloc's medium hit (api.c, malloc_miss): n bytes at the default
 * alignment in a block from this thread's lists, as mc_alloc would hand
 * it out through block_alloc and tl_pop, without that way's calls; NULL:
 * anything else (no list for n, inside the allocator, no cache, a
 * drainer at work, no block), for mc_alloc. */
DP_HIDDEN void *tl_malloc(size_t n);
DP_HIDDEN bool tl_push(struct mc_block *h);
/* free() of p, whose frame the page map names by v, a header tagged
 * MC_TAG_FAST, p at the default offset: onto this thread's list (or
 * mc_lq) without touching the header. */
DP_HIDDEN void tl_free(void *p, uintptr_t v);
extern DP_HIDDEN const struct dp_tcache_ext_ops mc_tl_ext_ops; /* tl_flush */

/* ---- hardening (harden.c) ------------------------------------------------ */
/*
 * free() of a small block checks that it starts a slot of its pool's page
 * (dp_slot_index) and is not tagged free: free() writes mc_tag(p) into
 * the block's tag word before the put, and every path that hands a
 * small block out clears it (mc_untag).  The tag word is word 1, which no
 * pool writes (the class pools have no ctor: their link is word 0; the
 * smallest class is 16 bytes).  docs/malloc.md, "Hardening".
 */
static inline uintptr_t mc_tag(const void *p)
{
    return (uintptr_t)p ^
           atomic_load_explicit(&dp_link_key, memory_order_relaxed);
}

static inline uintptr_t *mc_tag_word(void *p)
{
    return (uintptr_t *)p + 1;
}

/* Small block o is being handed out. */
static inline void mc_untag(void *o)
{
    *mc_tag_word(o) = 0;
}

/* In an ASan build a free block is poisoned (annotate.h): a poisoned tag
 * word is a freed block's, and reading it would be ASan's report, not
 * ours.  Always false in other builds. */
static inline bool mc_poisoned(const struct dp_pool *pool, const void *w)
{
#if DP_AN_ASAN
    return DP_AN_ON(pool) && __asan_address_is_poisoned(w);
#else
    (void)pool, (void)w;
    return false;
#endif
}

/* p, in a page of pool, is not a live block's start.  The pool's check
 * and tag word as free() reads them. */
static inline bool mc_small_bad(const struct dp_pool *pool, void *p,
                                const uintptr_t *w, uintptr_t tag)
{
    return dp_slot_index(pool, p) >= pool->slot_cap ||
           mc_poisoned(pool, w) || *w == tag;
}

/* free() or realloc() (fn) of p, in a page of pool, that mc_small_bad
 * flagged: aborts with a message, unless pool is a debug pool (debug:1),
 * which reports bad puts itself and may place objects differently. */
DP_HIDDEN void mc_small_abort(const struct dp_pool *pool, void *p,
                              const char *fn);
/* free() of such a p: mc_small_abort, then, for a debug pool, the put. */
DP_HIDDEN void mc_small_free_bad(struct dp_pool *pool, void *p);
/* free() or realloc() (fn) of p, which is no small block and no live
 * block's start, page-map value o: aborts with a message naming p and,
 * when p lies in one, the block, unless p is bootstrap memory or the
 * malloc is not initialised yet (then it returns). */
DP_HIDDEN void mc_bad_free(void *p, void *o, const char *fn);

/* ---- statistics (stats.c) -------------------------------------------------- */

DP_HIDDEN void mc_stats_keep_stderr(void);
DP_HIDDEN unsigned mc_stats_snapshot(const dp_malloc_stats_t **t,
                                     const dp_pool_stats_t **cls);
DP_HIDDEN void mc_stats_release(void);
DP_HIDDEN void mc_stats_print_at_exit(void);

/* ---- trim (glibc.c) -------------------------------------------------------- */

DP_HIDDEN size_t mc_trim(enum mc_heap_mode mode);

#endif /* DP_MALLOC_INTERNAL_H */
