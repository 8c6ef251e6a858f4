/*
 * page.h -- the page (slab) layer (page.c): a page's life (create,
 * layout, destroy) and its state machine (take objects under the pool
 * lock, put runs lock-free, queue the page on its pool's pending stack).
 * docs/design.md, "Pages" and "The put path".
 */
#ifndef DP_PAGE_H
#define DP_PAGE_H

#include "link.h"
#include "types.h"

/* The top of the put stack recorded in state word s, or NULL. */
static inline void *dp_pg_top(struct dp_page *pg, uint64_t s)
{
    uint32_t off = (uint32_t)(s >> DP_PG_TOP_SHIFT);
    return off ? (char *)pg + off : NULL;
}

/*
 * The slot test: the index of the slot that starts at addr, an address in
 * one of p's pages, or a value >= p->cap when no slot starts there (addr
 * lies inside a slot, in the page header, or past the last slot).  No
 * division: for slotsize d = d0 * 2^k (d0 odd) and the offset x from the
 * first slot (wrapping below it), x is a multiple of d exactly when
 * rotr(x * inverse(d0), k) <= (2^64 - 1) / d, and then it equals x / d
 * (Granlund and Montgomery, "Division by invariant integers using
 * multiplication", §9); every index below cap passes that bound, so one
 * compare with cap (slot_cap: a 64-bit operand) tests divisibility and
 * range at once.
 */
static inline uint64_t dp_slot_index(const struct dp_pool *p, const void *addr)
{
    uint64_t x = ((uintptr_t)addr & p->slot_offmask) - p->hdrsize;
    uint64_t q = x * p->slot_inv;
    unsigned k = p->slot_tz;
    return (q >> k) | (q << ((64 - k) & 63));
}

extern DP_HIDDEN DP_TLS int dp_in_put;
/* Obtain and construct a page.  Called without the pool lock.  Returns
 * the page (DP_PG_OK, DP_PG_CTOR_DEAD), or NULL, with *why saying what
 * happened (and so what the caller must account): */
enum dp_pg_why {
    DP_PG_OK,        /* page returned                                    */
    DP_PG_NOMEM,     /* the provider failed                              */
    DP_PG_CTOR_FREED,/* obtained, ctor failed, given back (WAITOK)       */
    DP_PG_CTOR_DEAD, /* obtained, ctor failed, marked DP_L_DEAD: a
                        DP_NOWAIT caller may not call the provider's free,
                        so the pool parks it on p->dead, still counted in
                        npages                                           */
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
/* Header size and slots per page.  debug: room for the out bitmap;
 * front: bytes the first object needs before it (its redzone). */
DP_HIDDEN void dp_page_layout(size_t pagesize, size_t slotsize, size_t align,
                              bool debug, size_t front, size_t *hdrsize,
                              uint32_t *cap);

/* Take up to `want` objects from pg into objs[], or, when ch is given
 * and holds no chain yet, pg's whole put stack as a chain (page.c).
 * Pool lock held. */
DP_HIDDEN uint32_t dp_page_take_locked(struct dp_pool *p, struct dp_page *pg,
                                       uint32_t want, void **objs,
                                       struct dp_chain *ch);
/* Put one object straight to its page (no thread cache), from a put:
 * provider calls made meanwhile count as put_provider_calls. */
DP_HIDDEN void dp_page_put(struct dp_pool *p, void *obj);
/* Give a chain's objects back to their page (no cache). */
DP_HIDDEN void dp_page_put_chain(struct dp_pool *p, void *head, uint32_t n);
DP_HIDDEN void dp_page_put_array(struct dp_pool *p, void *const *objs,
                                 uint32_t n);
DP_HIDDEN uint32_t dp_page_put_runs(struct dp_pool *p, void *const *objs,
                                    uint32_t n, uint32_t max_runs);
/* Wake p's sleeping getters, if any: one load when there are none, one
 * non-blocking futex wake when there are.  Safe from a put. */
DP_HIDDEN void dp_wake_getters(struct dp_pool *p);
/* Callback registered by the pool layer (pool.c, at load): a put on a
 * DP_IPOOL_IMMEDIATE pool that emptied a page calls it to give the pool's
 * empty pages back at once (the benchmarks' naive baseline). */
DP_HIDDEN void dp_page_set_emptied_cb(size_t (*cb)(struct dp_pool *p));

#endif /* DP_PAGE_H */
