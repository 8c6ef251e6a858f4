/*
 * pageset.c -- the address-keyed page set of pageset.h: linear probing,
 * power-of-two capacity kept at most half full, backward-shift deletion
 * (no tombstones).
 */
#include "pageset.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

static size_t ps_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x;
}

struct page_slot *dp_ps_find(struct page_set *s, const void *page)
{
    if (s->cap == 0)
        return NULL;
    size_t mask = s->cap - 1;
    for (size_t i = ps_hash(page) & mask;; i = (i + 1) & mask) {
        if (s->slots[i].page == page)
            return &s->slots[i];
        if (s->slots[i].page == NULL)
            return NULL;
    }
}

static void ps_put(struct page_set *s, void *page, size_t size)
{
    size_t mask = s->cap - 1;
    size_t i = ps_hash(page) & mask;
    while (s->slots[i].page != NULL)
        i = (i + 1) & mask;
    s->slots[i].page = page;
    s->slots[i].size = size;
    s->len++;
}

int dp_ps_insert(struct page_set *s, void *page, size_t size)
{
    if ((s->len + 1) * 2 > s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 64;
        struct page_slot *old = s->slots;
        size_t ocap = s->cap;
        s->slots = calloc(ncap, sizeof(*s->slots));
        if (s->slots == NULL) {
            s->slots = old;
            return -1;
        }
        s->cap = ncap;
        s->len = 0;
        for (size_t i = 0; i < ocap; i++)
            if (old[i].page != NULL)
                ps_put(s, old[i].page, old[i].size);
        free(old);
    }
    ps_put(s, page, size);
    return 0;
}

/* Backward-shift deletion: move later members of the probe run into the
 * hole unless their home slot lies cyclically in (hole, j]. */
void dp_ps_remove(struct page_set *s, struct page_slot *slot)
{
    size_t mask = s->cap - 1;
    size_t i = (size_t)(slot - s->slots);
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (s->slots[j].page == NULL)
            break;
        size_t k = ps_hash(s->slots[j].page) & mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        s->slots[i] = s->slots[j];
        i = j;
    }
    s->slots[i].page = NULL;
    s->slots[i].size = 0;
    s->len--;
}

