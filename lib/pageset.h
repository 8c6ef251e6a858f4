/*
 * pageset.h -- a set of pages keyed by address, with each page's size:
 * open addressing with linear probing, for the mock provider's table of
 * outstanding pages (provider_mock.c).  Not synchronised: the owner's lock
 * guards every call.
 */
#ifndef DP_PAGESET_H
#define DP_PAGESET_H

#include "util.h"

#include <stddef.h>

/* One outstanding page in the open-addressing table. */
struct page_slot {
    void *page;  /* NULL: empty slot */
    size_t size; /* size the page was allocated with */
};

/* Outstanding pages: linear probing, power-of-two capacity, kept at most
 * half full; deletion shifts entries back, so there are no tombstones.
 * Every field is guarded by the owning mock's lock. */
struct page_set {
    struct page_slot *slots; /* cap entries, or NULL before the first insert */
    size_t cap;              /* 0 or a power of two */
    size_t len;              /* occupied slots */
};

/* The slot holding page, or NULL. */
DP_HIDDEN struct page_slot *dp_ps_find(struct page_set *s, const void *page);
/* Add page (not in the set).  -1: no memory to grow (the set unchanged). */
DP_HIDDEN int dp_ps_insert(struct page_set *s, void *page, size_t size);
/* Remove the member at slot (from dp_ps_find). */
DP_HIDDEN void dp_ps_remove(struct page_set *s, struct page_slot *slot);

#endif /* DP_PAGESET_H */
