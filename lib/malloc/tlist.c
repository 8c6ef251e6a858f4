/*
 * tlist.c -- the drop-in malloc's thread lists (docs/malloc.md, "Thread
 * lists"); top layer, docs/design.md §1.  A freed medium block of
 * MC_TL_MINPG to MC_TL_MINPG + DP_TC_EXT - 1 pages goes onto a list of
 * its page count in the freeing thread's cache (struct dp_tcache.ext),
 * and a malloc of that many pages takes it back from there: no lock, no
 * shared line, and one CAS in the free, on the block's state (block_free)
 * or, once malloc took the block from a list, on its frame's tag, after
 * which its frees and mallocs touch nothing of its header ("The fast
 * free" below).  The global
 * counters do not see a block on a thread list: it still counts as live
 * there, and dp_malloc_stats_get() moves the lists' sums (kept per list by
 * its owner) from live to queued.  A thread's lists hold at most
 * their budget in all (tl_fits; tallied in dp_tcache.ext_units): a listed block
 * cannot merge, so the bound trades peak RSS for speed (docs/malloc.md,
 * "Thread lists"; docs/benchmarks.md).  The core's drains hand lists
 * back through tl_flush(): the reclaim GC, for lists that did not move
 * for a whole pass (a thread that sleeps forever, or goes on without
 * medium blocks, does not keep its blocks), thread exit, trim, and this
 * thread's own malloc when the heap has no fit and the blocks hold
 * MC_LISTS_KEPT (before mapping new memory, what the thread holds goes
 * back to be merged).
 */
#include "malloc_internal.h"

/* What all of a thread's lists may hold: MC_TL_SHARE split among the
 * threads that have a cache, but at least MC_TL_MIN and at most
 * MC_TL_MAX (docs/malloc.md, "Thread lists"). */
#define MC_TL_MIN ((size_t)512 << 10)
#define MC_TL_MAX ((size_t)4 << 20)
#define MC_TL_SHARE ((size_t)16 << 20)

/* Whether a thread's lists may hold `units` bytes: at most its budget,
 * MC_TL_SHARE / dp_tcache_count() within [MC_TL_MIN, MC_TL_MAX], tested
 * by a multiplication. */
static inline bool tl_fits(size_t units)
{
    if (units <= MC_TL_MIN)
        return true;
    if (units > MC_TL_MAX)
        return false;
    uint32_t n = dp_tcache_count();
    return n <= MC_TL_SHARE / MC_TL_MAX || units * n <= MC_TL_SHARE;
}

/* Pops of exited threads' lists: atomic add. */
_Atomic uint64_t mc_tl_pops_folded;

/* The list for blocks of len bytes, or -1. */
static inline int tl_index(size_t len)
{
    size_t i = len / MC_SYSPAGE - MC_TL_MINPG;
    return i < DP_TC_EXT ? (int)i : -1;
}

/*
 * A list's newest blocks sit in its ring (struct dp_tclist), older ones
 * on its linked list, so that a pop of a recent block reads nothing of
 * the block: the header's line is cold by then (the headers of a
 * thread's medium blocks share a few cache sets, each at the start of
 * its page), and malloc's hit would otherwise wait for it.  A ring
 * entry is the header's address, with TL_FIX set when the header is not
 * as malloc hands a block out (block_free queued it, or the user
 * pointer is not MC_BLOCK_HDR bytes in, or it was aligned); a list's
 * blocks are all of its page count, so their length is known too.  A
 * push into a full ring links its oldest entry onto the list, a write
 * to that block's header, and a pop takes from the ring first: the
 * newest block comes out first either way.
 */
#define TL_FIX ((uintptr_t)1)
#define TL_RMASK (DP_TC_EXT_RING - 1u)

static inline uintptr_t tl_enc(struct mc_block *h)
{
    bool fix = atomic_load_explicit(&h->state, MC_RLX) != MC_LIVE ||
               mc_off(h) != MC_BLOCK_HDR || h->align;
    return (uintptr_t)h | (fix ? TL_FIX : 0);
}

static inline struct mc_block *tl_dec(uintptr_t e)
{
    return (struct mc_block *)(e & ~TL_FIX);
}

/* Link list l's oldest ring entry onto its list (l->rn > 0). */
static inline void tl_spill(struct dp_tclist *l)
{
    struct mc_block *o = tl_dec(l->ring[l->rbeg]);
    mc_next_set(o, l->head);
    l->head = o;
    l->rbeg = (uint8_t)((l->rbeg + 1) & TL_RMASK);
    l->rn--;
}

/* Pop the newest block of list i of tc, or, if that list is empty, of
 * the next one (a block one page longer: a bigger block would bring more
 * pages the caller does not need, resident from their last use, and
 * cannot be cut here; docs/malloc.md, "Thread lists").  Inside tc's
 * handshake.  0: both empty; else the ring's encoding of the block. */
static inline uintptr_t tl_take(struct dp_tcache *tc, int *ip)
{
    int i = *ip;
    struct dp_tclist *l = &tc->ext[i];
    if (!atomic_load_explicit(&l->n, DP_RLX) && i + 1 < DP_TC_EXT) {
        l++;
        *ip = ++i;
    }
    uintptr_t e;
    if (l->rn) {
        l->rn--;
        e = l->ring[(l->rbeg + l->rn) & TL_RMASK];
    } else if (l->head) {
        struct mc_block *h = l->head;
        l->head = mc_next_queued(h);
        e = tl_enc(h);
    } else {
        return 0;
    }
    DP_BUMP(&l->n, -1);
    DP_BUMP(&l->pops, 1);
    DP_BUMP(&tc->ext_units, -tl_len(i));
    return e;
}

struct mc_block *tl_pop(size_t len)
{
    int i = tl_index(len);
    if (i < 0)
        return NULL;
    /* The malloc side creates the cache (an mmap): free() only uses it. */
    struct dp_tcache *tc = dp_tcache_self();
    if (!tc || !dp_tc_enter(tc))
        return NULL;
    struct mc_block *h = tl_dec(tl_take(tc, &i));
    dp_tc_leave(tc);
    /* block_alloc's block_set_off takes a listed tag off its frame. */
    if (h)
        atomic_store_explicit(&h->state, MC_LIVE, MC_RLX);
    return h;
}

void *tl_malloc(size_t n)
{
    /* Inside the allocator, mc_alloc serves it from bootstrap memory. */
    if (mc_depth)
        return NULL;
    int i = tl_index(block_len(MC_BLOCK_HDR, n)); /* 0 (overflow): -1 */
    if (i < 0)
        return NULL;
    /* dp_tc_none (no cache yet) fails the enter: block_alloc's tl_pop
     * makes the cache. */
    struct dp_tcache *tc = dp_tc;
    if (!dp_tc_enter(tc))
        return NULL;
    uintptr_t e = tl_take(tc, &i);
    dp_tc_leave(tc);
    if (!e)
        return NULL;
    struct mc_block *h = tl_dec(e);
    /* What block_alloc sets for malloc's request (align 0).  A block the
     * fast free listed has it already, and its header stays untouched
     * ("The fast free"; req, which only realloc's choice to stay in
     * place reads, is then that of the block's last handout from the
     * heap or resize: on a list's block of at least 8 KiB + 1 that
     * choice comes out the same). */
    if (DP_UNLIKELY(e & TL_FIX)) {
        atomic_store_explicit(&h->state, MC_LIVE, MC_RLX);
        block_set_off(h, MC_BLOCK_HDR);
        h->align = 0;
        h->req = n;
    }
    /* The fast tag under its frame, last. */
    atomic_store_explicit(dp_pagemap_slot(h), mc_tagged(h, MC_TAG_FAST, i),
                          memory_order_release);
    /* As mc_alloc after each allocation. */
    if (DP_UNLIKELY(atomic_load_explicit(&mc_rt, MC_RLX) != 2))
        mc_maybe_start(false);
    return (char *)h + MC_BLOCK_HDR;
}

/* Push a freed block, ring entry e, onto list i of this thread. */
static inline bool tl_push_at(int i, uintptr_t e)
{
    struct dp_tcache *tc = dp_tc;
    /* Before mc_init no one would ever flush the list.  A thread that
     * adopted its cache and has not allocated since would never take a
     * block back (cache.c, "Adopted caches"): the heap's queue. */
    if (!tc || tc->adopted ||
        !atomic_load_explicit(&mc_inited, memory_order_acquire) ||
        !dp_tc_enter(tc))
        return false;
    struct dp_tclist *l = &tc->ext[i];
    size_t len = tl_len(i);
    bool ok = tl_fits(atomic_load_explicit(&tc->ext_units, DP_RLX) + len);
    if (ok) {
        if (l->rn == DP_TC_EXT_RING)
            tl_spill(l);
        l->ring[(l->rbeg + l->rn) & TL_RMASK] = e;
        l->rn++;
        DP_BUMP(&l->n, 1);
        DP_BUMP(&tc->ext_units, len);
    }
    dp_tc_leave(tc);
    return ok;
}

/* A block whose free() won the state CAS: onto this thread's list. */
bool tl_push(struct mc_block *h)
{
    int i = tl_index(h->maplen);
    /* A block aligned above a page goes to the heap, where the next such
     * request finds it (a list serves only requests of the default
     * placement). */
    if (i < 0 || h->align > MC_SYSPAGE)
        return false;
    return tl_push_at(i, tl_enc(h));
}

/*
 * The fast free.  A block tl_malloc handed out is named by its header
 * tagged MC_TAG_FAST (malloc_internal.h), which says what block_free
 * and tl_push would read in the header: a live block, at the default
 * offset and alignment, of list i's length.  free() of it retags its
 * frame MC_TAG_LISTED with a CAS and pushes it, and touches nothing of
 * the header, whose line is cold by then; the header's state stays
 * MC_LIVE while the tag says listed.  The CAS is on the page map's line,
 * which this thread's frees and mallocs keep in its cache; a free that
 * loses it to a second free on another thread, and a second free that
 * comes after and finds the listed tag (no fast tag, and no block to
 * as_block), abort naming the block (mc_bad_free).
 */
void tl_free(void *p, uintptr_t v)
{
    struct mc_block *h = (struct mc_block *)(v & ~MC_TAGS);
    int i = mc_tag_index(v);
    dp_pm_slot *s = dp_pagemap_slot(p); /* free() has just read it */
    void *was = (void *)v;
    if (!atomic_compare_exchange_strong_explicit(
            s, &was, mc_tagged(h, MC_TAG_LISTED, i), memory_order_acq_rel,
            memory_order_acquire)) {
        mc_bad_free(p, was, "free"); /* another free listed it: aborts */
        return;
    }
    if (tl_push_at(i, (uintptr_t)h))
        return;
    /* Queued as block_free would: state, frame, counters. */
    atomic_store_explicit(&h->state, MC_QUEUED, MC_RLX);
    atomic_store_explicit(s, (void *)h, memory_order_release);
    mc_bs_live_to_queued(1, tl_len(i));
    mc_lq_push(h, h);
}

/* mc_tl_ext_ops.flush: a list's blocks onto mc_lq, as a free() would have
 * queued them (one push for the whole list). */
static void tl_flush(struct dp_tclist *l, bool forget)
{
    while (l->rn) /* the ring's blocks onto the list, oldest first */
        tl_spill(l);
    struct mc_block *h = l->head, *tail = NULL;
    uint64_t n = 0, bytes = 0;
    for (struct mc_block *e = h, *next; e; e = next) {
        next = mc_next_queued(e);
        /* A block the fast free listed: queued as block_free queues. */
        atomic_store_explicit(&e->state, MC_QUEUED, MC_RLX);
        block_untag(e);
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
    mc_bs_live_to_queued(n, bytes);
    mc_lq_push(h, tail);
}

/* The thread cache hands the lists back through these (cache.h). */
const struct dp_tcache_ext_ops mc_tl_ext_ops = {.flush = tl_flush};
