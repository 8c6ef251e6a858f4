/*
 * block.c -- the drop-in malloc's blocks: everything above the size
 * classes, a page range with a struct mc_block header at its start.
 * Allocation (a thread list, the heap, or a new mapping), free (no lock,
 * no system call: onto a thread list or mc_lq), and resize.  Top layer
 * (docs/design.md §1); docs/malloc.md, "Medium and large blocks".
 */
#include "malloc_internal.h"

#include "probes.h"

#include <string.h>
#include <sys/mman.h>

/* Block statistics: malloc_internal.h. */
struct mc_block_stats mc_bs;

/* Move the user pointer of h (live or freed, owned by the caller) to
 * `off`: the page map names h under the frame of its user pointer, and
 * under no other frame of the block. */
void block_set_off(struct mc_block *h, size_t off)
{
    void *was = frame_of(block_user(h));
    block_untag(h);
    mc_off_set(h, off);
    void *now = frame_of(block_user(h));
    if (now != was) {
        dp_pagemap_store(now, h);
        dp_pagemap_store(was, NULL);
    }
}

void block_unmap(struct mc_block *h)
{
    dp_pagemap_set(frame_of(block_user(h)), MC_SYSPAGE, NULL);
    atomic_fetch_add_explicit(&mc_bs.unmaps, 1, MC_RLX);
    size_t len = h->maplen;
    mc_magic_set(h, 0);
    DP_PROBE(malloc_unmap, h, len);
    dp_provider_mmap()->free(NULL, h, len);
}

/* Unmap a list of blocks linked by next; how many. */
size_t block_unmap_list(struct mc_block *l)
{
    size_t n = 0;
    while (l) {
        struct mc_block *next = mc_next_get(l);
        block_unmap(l);
        n++;
        l = next;
    }
    return n;
}

/*
 * Populated blocks (docs/malloc.md, "Populated blocks").  A new block of
 * n <= populate_kib bytes whose pages were never touched (a fresh
 * mapping, or a clean block of the heap) has the pages of its n bytes
 * faulted in with one madvise, where the program's writes would fault
 * each page on its own -- while the program is seen to write the blocks
 * it asks for.  Every MC_POP_EVERY-th such block is a probe instead: left
 * to fault in as it is written, and looked at (mincore) MC_POP_LAG such
 * blocks later.  Less than 3/4 of its pages written: stop; at least
 * 3/4, in two probes running: populate again.  Blocks a program writes
 * a little of each (a server's read buffers) so cost the memory of what
 * it writes, and a probe whose pages a later block wrote (freed and cut
 * up meanwhile) does not turn population back on alone.
 *
 * mc_pop_seq: such blocks so far.  mc_pop_probe: the probe's first page
 * | its page count (at most MC_POP_PAGES), 0: none.  mc_pop_score: 0
 * after a probe found unwritten, +1 (at most MC_POP_ON) for one found
 * written; populate at MC_POP_ON.  Relaxed atomics: a heuristic, whose
 * races cost a block's pages at most.
 */
#define MC_POP_EVERY 8u
#define MC_POP_LAG 4u
#define MC_POP_PAGES 64u
#define MC_POP_ON 2u
_Static_assert(MC_POP_PAGES < MC_SYSPAGE, "the count fits below the page");
static _Atomic uint64_t mc_pop_seq;
static _Atomic uintptr_t mc_pop_probe;
static _Atomic unsigned mc_pop_score = MC_POP_ON;

/* The probe's verdict, if there is a probe: how much of it was written. */
static void pop_judge(void)
{
    uintptr_t w = atomic_exchange_explicit(&mc_pop_probe, 0, MC_RLX);
    size_t np = w & (MC_SYSPAGE - 1);
    unsigned char vec[MC_POP_PAGES];
    /* -1: unmapped since (freed); no verdict. */
    if (!w || dp_os_resident((void *)(w - np), np * MC_SYSPAGE, vec) != 0)
        return;
    size_t k = 0;
    for (size_t i = 0; i < np; i++)
        k += vec[i] & 1u;
    unsigned s = atomic_load_explicit(&mc_pop_score, MC_RLX);
    atomic_store_explicit(&mc_pop_score,
                          4 * k < 3 * np ? 0 : s < MC_POP_ON ? s + 1 : s,
                          MC_RLX);
}

static void block_populate(struct mc_block *h, size_t n)
{
    if (n > dp_options()->populate_bytes)
        return;
    uintptr_t lo = (uintptr_t)h + MC_SYSPAGE; /* the header's is resident */
    uintptr_t hi = ((uintptr_t)block_user(h) + n + MC_SYSPAGE - 1) &
                   ~(uintptr_t)(MC_SYSPAGE - 1);
    if (hi <= lo)
        return;
    uint64_t s = atomic_fetch_add_explicit(&mc_pop_seq, 1, MC_RLX);
    if (s % MC_POP_EVERY == MC_POP_LAG)
        pop_judge();
    if (s % MC_POP_EVERY == 0) {
        size_t np = (hi - lo) / MC_SYSPAGE;
        uintptr_t none = 0;
        if (atomic_compare_exchange_strong_explicit(
                &mc_pop_probe, &none,
                lo | (np < MC_POP_PAGES ? np : MC_POP_PAGES), MC_RLX, MC_RLX))
            return;
    }
    if (atomic_load_explicit(&mc_pop_score, MC_RLX) == MC_POP_ON &&
        dp_os_populate((void *)lo, hi - lo))
        atomic_fetch_add_explicit(&mc_bs.populates, 1, MC_RLX);
}

/* Bytes of the heap's blocks, live (thread lists included), queued and
 * cached. */
static uint64_t blocks_held(void)
{
    return atomic_load_explicit(&mc_bs.live_bytes, MC_RLX) +
           atomic_load_explicit(&mc_bs.queued_bytes, MC_RLX) +
           atomic_load_explicit(&mc_bs.cached_bytes, MC_RLX);
}

/*
 * Huge chunks (docs/malloc.md, "Huge chunks").  Once the heap's blocks
 * hold MC_HUGE_AFTER bytes, a new chunk is mapped aligned to its size
 * and, where the system's THP policy is "madvise", advised
 * MADV_HUGEPAGE: its first touch faults in one huge page, where the
 * blocks cut from it would fault a page at a time as they are written,
 * and the TLB holds it in one entry.  Its rest is then resident, so it
 * goes to the heap dirty and ages like a freed block.  Its blocks carry
 * a huge bit, which splits and merges keep.  A huge chunk is mapped whole
 * until it goes whole, as one free block of MC_CHUNK:
 *   - no block merges across its edge (heap.c, heap_may_merge), so each
 *     of its blocks lies inside it;
 *   - a due block of it smaller than the chunk is purged, whatever asks
 *     (dp_malloc_trim() too), and a purge advises the whole chunk
 *     MADV_NOHUGEPAGE, so that khugepaged does not collapse the purged
 *     range back in, without cutting the chunk into one mapping per
 *     fragment (heap.c, heap_release);
 *   - a block of it is never moved by mremap (block_resize).
 * A purge splits the huge page's mapping: RSS drops by the purged pages,
 * and the kernel may keep the huge page allocated until it splits it.
 * Such a block is not populated unless purged since: its pages are
 * resident already.
 */
static bool huge_due(void)
{
    if (dp_options()->huge_chunks == DP_HUGE_NONE)
        return false;
    return blocks_held() >= MC_HUGE_AFTER;
}

/*
 * A medium or large block of n bytes at `align` (0: none), its user
 * pointer at block_off(align): from this thread's list, else the heap
 * (after handing this thread's lists back, if need be and the blocks hold
 * MC_LISTS_KEPT bytes), else a new
 * mapping -- a chunk when the block and what its alignment may skip fit
 * in half of one, the rest of the chunk cached; else a mapping of its
 * own, the pages its alignment skipped unmapped at once (freed, the block
 * still serves the same request: heap_fit_aligned_locked).  grow: for
 * realloc, which moves a growing block here (heap_reuse).
 */
void *block_alloc(size_t n, size_t align, bool zero, bool grow)
{
    size_t off = block_off(align), pad = block_pad(align);
    size_t len = block_len(off, n);
    if (!len || pad > SIZE_MAX / 2 - len)
        return NULL;
    struct mc_block *h = NULL;
    bool clean = false;
    if (!grow && !pad && (h = tl_pop(len)) != NULL) {
        block_set_off(h, off);
        h->align = align;
    } else {
        dp_reclaim_start_due(); /* a fork child's (pool.h) */
        if ((h = heap_reuse(len, align, grow, &clean)) == NULL &&
            blocks_held() >= MC_LISTS_KEPT && dp_tcache_ext_drain(true))
            h = heap_reuse(len, align, grow, &clean);
    }
    if (h) {
        h->req = n;
        if (clean)
            block_populate(h, n);
        if (zero)
            memset(block_user(h), 0, n);
        return block_user(h);
    }
    /* Before the first link is written into a block (mc_link_set): a
     * block may be made before the first pool is. */
    dp_link_key_init();
    size_t need = len + pad;
    size_t maplen = need <= MC_CHUNK / 2 ? MC_CHUNK : need;
    bool huge = maplen == MC_CHUNK && huge_due();
    char *m = dp_provider_mmap()->alloc(NULL, maplen,
                                        huge ? MC_CHUNK : MC_SYSPAGE,
                                        DP_WAITOK);
    if (!m)
        return NULL;
    atomic_fetch_add_explicit(&mc_mapped, maplen, MC_RLX); /* init.c */
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
     * purged: no huge page may fill them in (docs/tuning.md, `thp`) --
     * unless it is a huge chunk.  A mapping smaller than a huge page got
     * the same advice from the provider; a bigger block of its own keeps
     * the system's policy. */
    if (huge) {
        dp_map_huge(m, maplen);
        atomic_fetch_add_explicit(&mc_bs.huge_chunks, 1, MC_RLX);
    } else if (maplen == MC_CHUNK) {
        dp_map_nohuge(m, maplen);
    }
    /* Every map node the block's frames may need, now, outside any lock
     * (a node is an mmap); then the user pointer's frame. */
    if (dp_pagemap_reserve(m, maplen) != 0 ||
        dp_pagemap_set(frame_of(at + off), MC_SYSPAGE, at) != 0) {
        dp_provider_mmap()->free(NULL, m, maplen);
        return NULL;
    }
    h = (struct mc_block *)at;
    mc_magic_set(h, MC_BLOCK_MAGIC);
    atomic_store_explicit(&h->state, MC_LIVE, MC_RLX);
    mc_next_set(h, NULL);
    h->maplen = len;
    mc_off_set(h, off);
    h->align = align;
    h->req = n;
    h->huge = huge;
    DP_PROBE(malloc_map, h, maplen, n);
    if (!huge)
        block_populate(h, n);
    atomic_fetch_add_explicit(&mc_bs.maps, 1, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.live, 1, MC_RLX);
    atomic_fetch_add_explicit(&mc_bs.live_bytes, len, MC_RLX);
    /* The chunk's pages before and after the block: untouched, clean --
     * but in a huge chunk resident since the header's first store, so
     * dirty: the return policy purges what is not used. */
    if (at > m)
        heap_give_rest((struct mc_block *)m, (size_t)(at - m), !huge, huge,
                       false);
    if (m + maplen > at + len)
        heap_give_rest((struct mc_block *)(at + len),
                       (size_t)(m + maplen - (at + len)), !huge, huge,
                       false);
    return block_user(h);
}

/* free() of a block: no system call, no lock.  The header must not be
 * touched after the push: the block may be unmapped at once. */
bool block_free(struct mc_block *h, bool list)
{
    uint32_t live = MC_LIVE;
    if (!atomic_compare_exchange_strong_explicit(&h->state, &live, MC_QUEUED,
                                                 MC_RLX, MC_RLX))
        return false;
    /* realloc's free of a block tl_malloc handed out; before the push,
     * after which the heap may tag its frames. */
    block_untag(h);
    if (list && tl_push(h))
        return true;
    mc_bs_live_to_queued(1, h->maplen);
    mc_lq_push(h, h);
    return true;
}

/*
 * Resize a block to hold n bytes; NULL when it cannot (the block is
 * then unchanged; realloc then copies).  Growth asks for half again the
 * current size, so that a string grown step by step is moved once every
 * few steps, not at each:
 *   1. in place, into the cached block that starts where this one ends
 *      (heap_extend): no copy, no system call;
 *   2. into a cached block (pages already faulted): copy, then free the
 *      old block (it joins the cache);
 *   3. else, for a block of more than MC_CHUNK / 2 not in a huge chunk,
 *      mremap(MREMAP_MAYMOVE) of the block itself, no copy.  A smaller
 *      block is left to realloc, whose new block is cut from a chunk: an
 *      mremap would move it into a mapping of its own.
 * Shrinking splits the tail off into the cache, in place, whatever the
 * block's size: no copy, no system call, and the pages stay for the next
 * growth until the return policy purges or unmaps them (heap.c).
 */
void *block_resize(struct mc_block *h, size_t n)
{
    if (h->align > MC_SYSPAGE)
        return NULL; /* a move would lose the alignment */
    block_untag(h); /* its length may change */
    size_t off = mc_off(h);
    size_t len = block_len(off, n);
    size_t old = h->maplen;
    if (!len)
        return NULL;
    if (len > old) {
        size_t slack = block_len(off, old - off + (old - off) / 2);
        if (slack > len)
            len = slack;
        if (heap_extend(h, block_len(off, n), len)) {
            h->req = n;
            return block_user(h);
        }
        /* No *clean: realloc does not populate (docs/malloc.md,
         * "Populated blocks"). */
        struct mc_block *nh = heap_reuse(len, h->align, true, NULL);
        if (nh) {
            nh->req = n;
            memcpy(block_user(nh), block_user(h), block_usable(h));
            block_free(h, false);
            return block_user(nh);
        }
    }
    if (len < old) {
        /* In place: the tail goes to the cache. */
        h->req = n;
        h->maplen = len;
        atomic_fetch_sub_explicit(&mc_bs.live_bytes, old - len, MC_RLX);
        heap_give_rest((struct mc_block *)((char *)h + len), old - len, false,
                       h->huge, true);
        return block_user(h);
    }
    if ((old <= MC_CHUNK / 2 || h->huge) && len != old)
        return NULL; /* a huge chunk's block stays in it (Huge chunks) */
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
    atomic_fetch_add_explicit(&mc_bs.live_bytes, len - old, MC_RLX);
    return block_user(nh);
}
