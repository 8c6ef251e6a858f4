/*
 * heap.c -- the drop-in malloc's heap of free blocks: page-granular, best
 * fit by size bins, merged through the page map, aged out by purging or
 * unmapping.  Top layer (docs/design.md §1); docs/malloc.md, "Medium and
 * large blocks".
 *
 * free() never sees the heap: it pushes on mc_lq.  The allocating side
 * (a medium or large malloc, realloc, the reclaim hook, trim) moves the
 * queue into the heap under mc_heap_lock, stamping each block with the
 * time it arrived, and takes or evicts blocks there.
 * Evicted blocks are unmapped after the lock is dropped, so the lock is
 * never held across a system call.
 *
 * Memory comes in chunks: a request of at most MC_CHUNK / 2 maps
 * MC_CHUNK bytes, takes its block from the front and gives the heap the
 * rest (untouched, so not resident).  Blocks split and merge at page
 * granularity, whatever size they were asked for, so memory one size
 * frees serves the next size at once -- what a class pool's slots cannot
 * do.  munmap and mremap work on any page range, so a block need not be
 * a whole mapping.
 *   - Best fit by size bins: one bin per page count up to 64 pages, then
 *     four per doubling; a bitmap finds the next non-empty bin.  A
 *     malloc takes the smallest block it finds that holds len bytes and
 *     splits off the rest (whole pages), which goes back to the heap.
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
 *   MC_MERGE_MAX     blocks merge only up to this size, so that one merged
 *                    block never holds most of the retention limit
 *                    (MC_HEAP_MAX_BYTES).
 */
#include "malloc_internal.h"

#include <sys/mman.h>

#define MC_MERGE_MAX (MC_HEAP_MAX_BYTES / 4)
#define MC_NBINS 192
#define MC_BIN_SCAN 8 /* blocks a best-fit search looks at in a mixed bin */
#define MC_ALIGN_SCAN 64 /* blocks an aligned search looks at in all */
#define MC_TAG_CACHED ((uintptr_t)2)

/* The heap: every field below is under mc_heap_lock.  Adaptive: a pass
 * holds it for a few hundred nanoseconds, so a thread that finds it taken
 * spins a little before it sleeps in the kernel. */
static DP_FORK_DATA pthread_mutex_t mc_heap_lock =
    PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
static struct mc_block *mc_bin[MC_NBINS];  /* by size, newest first    */
static uint64_t mc_binmap[MC_NBINS / 64];  /* bins that are non-empty  */
static struct mc_block *mc_heap_old, *mc_heap_new; /* arrival order    */
static uint64_t mc_heap_last;              /* the last arrival stamp   */
static uint64_t mc_heap_trim_gen;          /* HEAP_TRIM_ALL passes begun */

/* Freed blocks not yet in the heap: malloc_internal.h. */
struct mc_block *_Atomic mc_lq;
/* Written once by mc_init before mc_inited is published. */
uint64_t mc_age_ns = MC_DEFAULT_AGE_NS;

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

/* A cached block's links, kept in its user area (the block is free):
 * under mc_heap_lock.  Safe-linked (mc_link_t), read through hn_get. */
struct mc_hnode {
    mc_link_t fnext, fprev;         /* its size bin, newest first       */
    mc_link_t anext, aprev;         /* arrival order, oldest first      */
    uint64_t stamp;                 /* when it arrived                  */
    unsigned bin;
    unsigned clean;                 /* 1: its pages but the first are not
                                       resident (purged, or never
                                       touched); not on the arrival list */
};

static inline struct mc_hnode *hnode(struct mc_block *h)
{
    return (struct mc_hnode *)((char *)h + MC_BLOCK_HDR);
}

/* The cached block a page-map value names, else NULL. */
static inline struct mc_block *as_cached(void *v)
{
    return ((uintptr_t)v & 3u) == MC_TAG_CACHED
               ? (struct mc_block *)((uintptr_t)v - MC_TAG_CACHED)
               : NULL;
}

/* A cached block's link `what` (at w): NULL or a cached block, whose
 * first frame the page map names tagged; anything else was written over
 * (a use after free) and aborts, so a heap walk never follows it. */
static inline struct mc_block *hn_get(struct mc_block *h, const mc_link_t *w,
                                      const char *what)
{
    uintptr_t v = mc_link_peek(w);
    if (DP_UNLIKELY(v && (!mc_link_plausible(v) ||
                          dp_pagemap_get((void *)v) !=
                              (void *)(v | MC_TAG_CACHED))))
        mc_link_corrupt(h, what, v);
    return (struct mc_block *)v;
}
#define HN_GET(h, f) hn_get((h), &hnode(h)->f, #f)
#define HN_SET(h, f, v) mc_link_set(&hnode(h)->f, (v))

/* The bin of blocks of len bytes: one per page count up to 64 pages,
 * then four per doubling. */
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
    HN_SET(h, fprev, NULL);
    HN_SET(h, fnext, mc_bin[b]);
    if (mc_bin[b])
        HN_SET(mc_bin[b], fprev, h);
    mc_bin[b] = h;
    mc_binmap[b / 64] |= (uint64_t)1 << (b % 64);
    HN_SET(h, anext, NULL);
    if (clean) {
        HN_SET(h, aprev, NULL);
        mc_bs_locked_add(&mc_bs.purged_bytes, h->maplen);
    } else {
        HN_SET(h, aprev, mc_heap_new);
        if (mc_heap_new)
            HN_SET(mc_heap_new, anext, h);
        else
            mc_heap_old = h;
        mc_heap_new = h;
    }
    atomic_store_explicit(&h->state, MC_CACHED, MC_RLX);
    void *tag = (void *)((uintptr_t)h | MC_TAG_CACHED);
    dp_pagemap_store(h, tag);
    if (h->maplen > MC_SYSPAGE)
        dp_pagemap_store(heap_last_frame(h), tag);
    mc_bs_locked_add(&mc_bs.cached, 1);
    mc_bs_locked_add(&mc_bs.cached_bytes, h->maplen);
}

/* Out of the cache; its first frame then maps to `first` (the header,
 * for a block handed out; NULL for one merged away or evicted). */
static void heap_unlink_locked(struct mc_block *h, void *first)
{
    struct mc_hnode *c = hnode(h);
    struct mc_block *fprev = HN_GET(h, fprev), *fnext = HN_GET(h, fnext);
    if (fprev) {
        HN_SET(fprev, fnext, fnext);
    } else {
        mc_bin[c->bin] = fnext;
        if (!fnext)
            mc_binmap[c->bin / 64] &= ~((uint64_t)1 << (c->bin % 64));
    }
    if (fnext)
        HN_SET(fnext, fprev, fprev);
    if (c->clean) {
        mc_bs_locked_add(&mc_bs.purged_bytes, -(uint64_t)h->maplen);
    } else {
        struct mc_block *aprev = HN_GET(h, aprev), *anext = HN_GET(h, anext);
        if (aprev)
            HN_SET(aprev, anext, anext);
        else
            mc_heap_old = anext;
        if (anext)
            HN_SET(anext, aprev, aprev);
        else
            mc_heap_new = aprev;
    }
    if (h->maplen > MC_SYSPAGE)
        dp_pagemap_store(heap_last_frame(h), NULL);
    dp_pagemap_store(h, first);
    mc_bs_locked_add(&mc_bs.cached, -(uint64_t)1);
    mc_bs_locked_add(&mc_bs.cached_bytes, -(uint64_t)h->maplen);
}

/* A header swallowed by a merge: no longer a block. */
static void heap_forget_locked(struct mc_block *h)
{
    dp_pagemap_store(h, NULL);
    mc_magic_set(h, 0);
    mc_bs_locked_add(&mc_bs.merges, 1);
}

/* Blocks a and b, b starting where a ends, lie on either side of a huge
 * chunk's edge: they may not become one block (a merge, a growth in
 * place), so that a huge chunk is mapped whole until it goes whole
 * (block.c, "Huge chunks"). */
static inline bool heap_huge_edge(const struct mc_block *a,
                                  const struct mc_block *b)
{
    return (a->huge || b->huge) && ((uintptr_t)b & (MC_CHUNK - 1)) == 0;
}

/* A free block a trim may unmap: any block but a part of a huge chunk
 * smaller than the chunk, which is purged instead, since a huge chunk is
 * mapped whole until it goes whole (block.c, "Huge chunks"). */
static inline bool heap_may_unmap(const struct mc_block *h)
{
    return !h->huge || h->maplen >= MC_CHUNK;
}

/* Blocks a and b, b starting where a ends, may merge: not past
 * MC_MERGE_MAX, and not across a huge chunk's edge. */
static inline bool heap_may_merge(const struct mc_block *a,
                                  const struct mc_block *b)
{
    return a->maplen + b->maplen <= MC_MERGE_MAX && !heap_huge_edge(a, b);
}

/* Cache h (default offset, not cached), merged with the cached blocks
 * that end where it starts and start where it ends. */
static void heap_insert_locked(struct mc_block *h, uint64_t now, bool clean)
{
    struct mc_block *l = as_cached(dp_pagemap_get((char *)h - MC_SYSPAGE));
    if (l && (char *)l + l->maplen == (char *)h && heap_may_merge(l, h)) {
        clean = clean && hnode(l)->clean;
        heap_unlink_locked(l, l);
        heap_forget_locked(h);
        l->maplen += h->maplen;
        l->huge |= h->huge;
        h = l;
    }
    struct mc_block *r = as_cached(dp_pagemap_get((char *)h + h->maplen));
    if (r && (char *)r == (char *)h + h->maplen && heap_may_merge(h, r)) {
        clean = clean && hnode(r)->clean;
        heap_unlink_locked(r, NULL);
        mc_magic_set(r, 0);
        mc_bs_locked_add(&mc_bs.merges, 1);
        h->maplen += r->maplen;
        h->huge |= r->huge;
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
         e = HN_GET(e, fnext), k++) {
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
             e = HN_GET(e, fnext), k++, seen++)
            if (block_place((char *)e, align) + len <= (char *)e + e->maplen)
                return e;
    }
    return heap_fit_locked(len + block_pad(align));
}

/* Give the rest of a block, rest_len bytes at `rest`, to the heap. */
static void heap_rest_locked(struct mc_block *rest, size_t rest_len,
                             uint64_t now, bool clean, uint32_t huge)
{
    mc_magic_set(rest, MC_BLOCK_MAGIC);
    atomic_store_explicit(&rest->state, MC_QUEUED, MC_RLX);
    mc_next_set(rest, NULL);
    rest->maplen = rest_len;
    mc_off_set(rest, MC_BLOCK_HDR);
    rest->align = 0;
    rest->req = 0;
    rest->huge = huge;
    heap_insert_locked(rest, now, clean);
}

/*
 * Take the best fit for a block of len bytes at `align` out of the heap,
 * in use, its user pointer at block_off(align), or NULL.  An alignment
 * above a page asks for block_pad(align) bytes more and leaves the pages
 * before the aligned start in the heap.  What the block does not need
 * past len is split off and given to the heap too (grow: it keeps up to MC_GROW_ROOM
 * x len).  Split here, under the lock: a rest kept out of the heap even
 * for a moment is memory another thread cannot find, and maps a chunk
 * for.  Writing a new header may fault its page in; it is never a system
 * call.  *clean (clean_out not NULL): the block's pages but the
 * header's were never touched (or were purged since).
 */
static struct mc_block *heap_take_locked(size_t len, size_t align, bool grow,
                                         uint64_t now, bool *clean_out)
{
    struct mc_block *got = align > MC_SYSPAGE
                               ? heap_fit_aligned_locked(len, align)
                               : heap_fit_locked(len);
    if (!got)
        return NULL;
    bool clean = hnode(got)->clean;
    if (clean_out)
        *clean_out = clean;
    size_t have = got->maplen;
    heap_unlink_locked(got, NULL);
    char *at = block_place((char *)got, align);
    if (at != (char *)got) {
        got->maplen = (size_t)(at - (char *)got);
        heap_link_locked(got, now, clean);
        mc_bs_locked_add(&mc_bs.splits, 1);
        have -= got->maplen;
        uint32_t huge = got->huge;
        got = (struct mc_block *)at;
        mc_magic_set(got, MC_BLOCK_MAGIC);
        got->huge = huge;
    }
    if (grow && len > MC_GROW_MIN) /* whole pages, so is the room */
        len = len <= have / MC_GROW_ROOM ? len * MC_GROW_ROOM : have;
    got->maplen = have;
    if (have > len) {
        got->maplen = len;
        mc_bs_locked_add(&mc_bs.splits, 1);
        heap_rest_locked((struct mc_block *)((char *)got + len), have - len,
                         now, clean, got->huge);
    }
    atomic_store_explicit(&got->state, MC_LIVE, MC_RLX);
    mc_next_set(got, NULL);
    mc_off_set(got, block_off(align));
    got->align = align;
    dp_pagemap_store(frame_of(block_user(got)), got);
    return got;
}

/*
 * A heap pass is the single consumer of mc_lq besides the fork child.
 * It runs from a reclaim pass, a medium or large malloc or realloc, or a
 * trim -- never from free -- in three steps, each a function below:
 *   drain    take the whole queue into the heap;
 *   evict    unlink what is due (and, for a trim, more);
 *   take     (a malloc) the best fit, split (heap_take_locked);
 * and, after the lock is dropped, release: unmap or purge what was
 * evicted.  The lock is never held across a system call.
 */

/* Drain: the whole queue (acquire exchange: no ABA) into the heap,
 * stamped `now`, each block merged with its cached neighbours; an
 * aligned block's user pointer goes back to the default offset. */
static void heap_drain_locked(uint64_t now)
{
    struct mc_block *l = atomic_exchange_explicit(&mc_lq, NULL,
                                                  memory_order_acquire);
    uint64_t n = 0, bytes = 0;
    while (l) {
        struct mc_block *next = mc_next_queued(l);
        n++;
        bytes += l->maplen;
        block_set_off(l, MC_BLOCK_HDR);
        l->align = 0;
        heap_insert_locked(l, now, false);
        l = next;
    }
    if (n) {
        atomic_fetch_sub_explicit(&mc_bs.queued, n, MC_RLX);
        atomic_fetch_sub_explicit(&mc_bs.queued_bytes, bytes, MC_RLX);
    }
}

/* Evict: unlink, oldest first, the dirty blocks past MC_HEAP_MAX_BYTES
 * or older than the age onto *unmap if they span a chunk or more, else
 * onto *purge, so that ageing never cuts a hole smaller than a chunk
 * into a mapping (docs/malloc.md, "Purged, not unmapped").  HEAP_TRIM
 * makes every dirty block due; HEAP_TRIM_ALL unmaps everything, clean
 * blocks included -- but the free blocks of a huge chunk partly in use,
 * which it purges, since a huge chunk is unmapped only whole (block.c,
 * "Huge chunks"). */
static void heap_evict_locked(uint64_t now, enum mc_heap_mode mode,
                              struct mc_block **unmap,
                              struct mc_block **purge)
{
    uint64_t dirty = atomic_load_explicit(&mc_bs.cached_bytes, MC_RLX) -
                     atomic_load_explicit(&mc_bs.purged_bytes, MC_RLX);
    while (mc_heap_old &&
           (mode != HEAP_KEEP || now - hnode(mc_heap_old)->stamp >= mc_age_ns ||
            dirty > MC_HEAP_MAX_BYTES)) {
        struct mc_block *h = mc_heap_old;
        dirty -= h->maplen;
        heap_unlink_locked(h, NULL);
        if (h->maplen >= MC_CHUNK ||
            (mode == HEAP_TRIM_ALL && heap_may_unmap(h))) {
            mc_next_set(h, *unmap);
            *unmap = h;
        } else {
            mc_next_set(h, *purge);
            *purge = h;
        }
    }
    if (mode != HEAP_TRIM_ALL)
        return;
    for (unsigned b = 0; b < MC_NBINS; b++) {
        struct mc_block *h = mc_bin[b];
        while (h) {
            struct mc_block *next = HN_GET(h, fnext);
            if (heap_may_unmap(h)) {
                heap_unlink_locked(h, NULL);
                mc_next_set(h, *unmap);
                *unmap = h;
            }
            h = next;
        }
    }
}

/* Release, with mc_heap_lock not held: unmap `unmap`; purge `purge` and
 * put it back clean -- unless a dp_malloc_trim() ran while it was being
 * purged (mc_heap_trim_gen moved from trim_gen): that trim promised every
 * free block unmapped, and could not take these, so they are unmapped
 * instead, but in a huge chunk.  A purge in a huge chunk also advises
 * the whole chunk MADV_NOHUGEPAGE: the purge split its huge page, and
 * khugepaged must not collapse the range back in.  The chunk is mapped
 * whole while one of its blocks is out of the heap (block.c, "Huge
 * chunks"), so the advice touches only our pages, and the chunk stays
 * one mapping.  Returns how many blocks were unmapped or purged. */
static size_t heap_release(struct mc_block *unmap, struct mc_block *purge,
                           uint64_t trim_gen)
{
    size_t n = block_unmap_list(unmap);
    if (!purge)
        return n;
    /* Out of the heap while the pages go (nobody can take them); the
     * header page stays, with the block's links. */
    for (struct mc_block *h = purge; h; h = mc_next_get(h)) {
        if (h->maplen > MC_SYSPAGE)
            madvise((char *)h + MC_SYSPAGE, h->maplen - MC_SYSPAGE,
                    MADV_DONTNEED);
        if (h->huge)
            madvise((void *)((uintptr_t)h & ~(uintptr_t)(MC_CHUNK - 1)),
                    MC_CHUNK, MADV_NOHUGEPAGE);
        atomic_fetch_add_explicit(&mc_bs.purges, 1, MC_RLX);
        n++;
    }
    uint64_t now = heap_lock(); /* a merge puts the block at the list's end */
    bool trimmed = mc_heap_trim_gen != trim_gen; /* a dp_malloc_trim() ran */
    unmap = NULL;
    while (purge) {
        struct mc_block *next = mc_next_get(purge);
        if (trimmed && heap_may_unmap(purge)) {
            mc_next_set(purge, unmap);
            unmap = purge;
        } else {
            heap_insert_locked(purge, now, true);
        }
        purge = next;
    }
    pthread_mutex_unlock(&mc_heap_lock);
    block_unmap_list(unmap);
    return n;
}

/* One pass: drain, evict by `mode`, and, when want_len is not 0, take
 * the best fit for want_len at want_align (*clean: heap_take_locked's);
 * then release.  *nreturned (if not NULL): blocks unmapped or purged. */
static struct mc_block *heap_pass(size_t want_len, size_t want_align,
                                  bool grow, enum mc_heap_mode mode,
                                  size_t *nreturned, bool *clean)
{
    struct mc_block *unmap = NULL, *purge = NULL, *got = NULL;
    uint64_t now = heap_lock();
    uint64_t trim_gen = mc_heap_trim_gen;
    if (mode == HEAP_TRIM_ALL)
        mc_heap_trim_gen++;
    heap_drain_locked(now);
    heap_evict_locked(now, mode, &unmap, &purge);
    if (want_len && (got = heap_take_locked(want_len, want_align, grow, now,
                                            clean)) != NULL)
        mc_bs_locked_add(&mc_bs.reused, 1);
    pthread_mutex_unlock(&mc_heap_lock);
    size_t n = heap_release(unmap, purge, trim_gen);
    if (nreturned)
        *nreturned = n;
    return got;
}

/* The reclaim pass hook (reclaim thread or dp_reclaim_step). */
size_t heap_reclaim_hook(void)
{
    size_t n = 0;
    heap_pass(0, 0, false, HEAP_KEEP, &n, NULL);
    return n;
}

/* A trim's heap pass (glibc.c): blocks unmapped or purged. */
size_t heap_trim(enum mc_heap_mode mode)
{
    size_t n = 0;
    heap_pass(0, 0, false, mode, &n, NULL);
    return n;
}

/*
 * Grow the live block h (its caller's) in place to at least len bytes,
 * to `want` if there is room, by taking the front of the cached block
 * that starts where h ends; the rest of that block stays cached.  false:
 * no such neighbour, or it is too small (h is unchanged).  The queue is
 * drained first, so a neighbour freed a moment ago counts.  No copy, no
 * system call; pages already resident stay so.
 */
bool heap_extend(struct mc_block *h, size_t len, size_t want)
{
    char *end = (char *)h + h->maplen;
    if (!atomic_load_explicit(&mc_lq, MC_RLX) &&
        !atomic_load_explicit(&mc_bs.cached, MC_RLX))
        return false;
    uint64_t now = heap_lock();
    heap_drain_locked(now);
    struct mc_block *r = as_cached(dp_pagemap_get(end));
    if (!r || (char *)r != end || h->maplen + r->maplen < len ||
        heap_huge_edge(h, r)) {
        pthread_mutex_unlock(&mc_heap_lock);
        return false;
    }
    bool clean = hnode(r)->clean;
    uint32_t huge = r->huge;
    size_t old = h->maplen, total = old + r->maplen;
    heap_unlink_locked(r, NULL);
    mc_magic_set(r, 0);
    mc_bs_locked_add(&mc_bs.merges, 1);
    if (want < len)
        want = len;
    h->maplen = total;
    h->huge |= huge;
    if (total > want) {
        h->maplen = want;
        mc_bs_locked_add(&mc_bs.splits, 1);
        heap_rest_locked((struct mc_block *)((char *)h + want), total - want,
                         now, clean, huge);
    }
    atomic_fetch_add_explicit(&mc_bs.live_bytes, h->maplen - old, MC_RLX);
    pthread_mutex_unlock(&mc_heap_lock);
    return true;
}

/* clean: the rest's pages (but the header's) were never touched; huge:
 * they lie in a huge chunk; split: it was cut off a live block (counted
 * in mc_bs.splits, which only the lock's holder writes). */
void heap_give_rest(struct mc_block *rest, size_t rest_len, bool clean,
                    bool huge, bool split)
{
    uint64_t now = heap_lock();
    if (split)
        mc_bs_locked_add(&mc_bs.splits, 1);
    heap_rest_locked(rest, rest_len, now, clean, huge);
    pthread_mutex_unlock(&mc_heap_lock);
}

/*
 * A cached block of at least len bytes for `align` (heap_take_locked),
 * counted in use, or NULL; *clean (clean not NULL): heap_take_locked's.
 * A growing block above MC_GROW_MIN (realloc) keeps up to MC_GROW_ROOM
 * times len, to grow into in place.
 */
struct mc_block *heap_reuse(size_t len, size_t align, bool grow,
                            bool *clean)
{
    if (!atomic_load_explicit(&mc_lq, MC_RLX) &&
        !atomic_load_explicit(&mc_bs.cached, MC_RLX))
        return NULL;
    struct mc_block *h = heap_pass(len, align, grow, HEAP_KEEP, NULL, clean);
    if (!h)
        return NULL;
    atomic_fetch_add_explicit(&mc_bs.live, 1, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.live_bytes, h->maplen, MC_RLX);
    return h;
}

void heap_counters(void *v)
{
    struct mc_bs_snap *c = v;
    pthread_mutex_lock(&mc_heap_lock);
    c->live = atomic_load_explicit(&mc_bs.live, MC_RLX);
    c->live_bytes = atomic_load_explicit(&mc_bs.live_bytes, MC_RLX);
    c->queued = atomic_load_explicit(&mc_bs.queued, MC_RLX);
    c->queued_bytes = atomic_load_explicit(&mc_bs.queued_bytes, MC_RLX);
    c->cached = atomic_load_explicit(&mc_bs.cached, MC_RLX);
    c->cached_bytes = atomic_load_explicit(&mc_bs.cached_bytes, MC_RLX);
    pthread_mutex_unlock(&mc_heap_lock);
}

/* The fork handlers' leaf lock (init.c, docs/design.md §8). */
void heap_fork_lock(void) { pthread_mutex_lock(&mc_heap_lock); }
void heap_fork_unlock(void) { pthread_mutex_unlock(&mc_heap_lock); }
