/*
 * depot.h -- the thread-cache layer's depot (depot.c): per pool, a
 * lock-free stack of full magazines between the threads' bins and the
 * pages, and a stack of empty ones.  A bin that overflows hands the
 * depot a magazine of its oldest objects; an empty bin takes one back
 * before it goes to the pages.  docs/design.md, "Thread caches" (The
 * depot).
 */
#ifndef DP_DEPOT_H
#define DP_DEPOT_H

#include "types.h"

/*
 * A magazine: up to p->mag_cap object pointers.  Magazines live in
 * chunks of DP_MAG_PER_CHUNK carved by gets and unmapped only by destroy,
 * so a popper may read the link of a magazine another thread just took.
 * On a stack, `next` holds the index (plus one; 0: none) of the magazine
 * below, written by its pusher before the push's release CAS.
 */
struct dp_mag {
    _Atomic uint32_t next; /* index + 1 of the magazine below         */
    uint32_t idx;          /* immutable: this magazine's index         */
    uint32_t n;            /* objects in o[]                           */
    uint32_t pad;
    void *o[];
};

/* Sizes and an empty depot, at create (p->tc_batch set).  mag_cap 0:
 * no depot (an uncached pool). */
DP_HIDDEN void dp_depot_init(struct dp_pool *p);
/* Push a full magazine: one count RMW and one release CAS, no lock, no
 * system call (a put).  false: the depot is at its bound; m is not
 * pushed. */
DP_HIDDEN bool dp_depot_push(struct dp_pool *p, struct dp_mag *m);
/* Pop the newest full magazine, or NULL: lock-free, no system call. */
DP_HIDDEN struct dp_mag *dp_depot_pop(struct dp_pool *p);
/* An empty magazine, or NULL: one CAS, no lock (a put). */
DP_HIDDEN struct dp_mag *dp_depot_pop_empty(struct dp_pool *p);
/* Push an empty magazine: one CAS, no lock. */
DP_HIDDEN void dp_depot_give_empty(struct dp_pool *p, struct dp_mag *m);
/* Magazine idx (below p->mags) and its size in bytes: tests
 * (lib/testhooks.c). */
DP_HIDDEN struct dp_mag *dp_depot_mag(struct dp_pool *p, uint32_t idx,
                                      size_t *size);
/* Empty magazines for the caller (a get going to the pages) and for
 * puts: if mine, one is returned, popped from the empty stack if it
 * holds any, else new; and up to k new ones onto the empty stack.
 * Making new ones takes the pool lock and may map a chunk (not under
 * the lock). */
DP_HIDDEN struct dp_mag *dp_depot_stock(struct dp_pool *p, uint32_t k,
                                        bool mine);
/* Return the depot's objects to their pages: every magazine (all:
 * lock-free and no system call, safe wherever a put is), or (a reclaim
 * pass, now: the pool's clock; takes the pool lock briefly) the
 * magazines no get needed for the pool's age_ns (the ageing rule,
 * depot.c).  Returns the objects returned. */
DP_HIDDEN size_t dp_depot_drain(struct dp_pool *p, bool all, uint64_t now);
/* Objects in the depot's full magazines. */
DP_HIDDEN uint64_t dp_depot_objects(struct dp_pool *p);
/* Unmap every magazine (destroy, after dp_depot_drain(p, true), with no
 * magazine left in any thread). */
DP_HIDDEN void dp_depot_fini(struct dp_pool *p);

#endif /* DP_DEPOT_H */
