/*
 * page.c -- the page (slab) layer: obtaining a page from the provider,
 * laying out its header and slots, running constructors, and giving it
 * back.  docs/design.md, "Pages".  Every function here runs without the
 * pool lock: provider calls and user callbacks may block or re-enter
 * deferpool (other pools).
 */
#include "page.h"
#include "pagemap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Thread-local: non-zero while this thread is inside dp_pool_put().  The
 * provider wrappers below count any call made while it is set, so the
 * statistic put_provider_calls is measured rather than assumed.
 * initial-exec TLS: reading it is a plain %fs-relative load, no call. */
DP_HIDDEN DP_TLS int dp_in_put;

/* Thread-local: the pools whose callbacks (provider alloc/free, ctor,
 * dtor) this thread is running now, innermost first.  Frames live on the
 * stack of the function that runs the callbacks.  A get from one of those
 * pools that would need a new page or a wait fails with EDEADLK
 * (dp_in_callback_of) instead of recursing into the same callback or
 * waiting for room that this thread itself holds. */
struct cb_frame {
    const struct dp_pool *pool;
    struct cb_frame *prev;
};
static DP_TLS struct cb_frame *cb_top;

static void cb_enter(struct cb_frame *f, const struct dp_pool *p)
{
    f->pool = p;
    f->prev = cb_top;
    cb_top = f;
}

static void cb_leave(struct cb_frame *f) { cb_top = f->prev; }

bool dp_in_callback_of(const struct dp_pool *p)
{
    for (const struct cb_frame *f = cb_top; f; f = f->prev)
        if (f->pool == p)
            return true;
    return false;
}

static void *prov_alloc(struct dp_pool *p, int flags)
{
    if (DP_UNLIKELY(dp_in_put))
        atomic_fetch_add_explicit(&p->put_provider_calls, 1,
                                  memory_order_relaxed);
    struct cb_frame f;
    cb_enter(&f, p);
    void *pg = p->prov.alloc(p->prov.ctx, p->pagesize, p->pagesize, flags);
    cb_leave(&f);
    return pg;
}

static void prov_free(struct dp_pool *p, void *page)
{
    if (DP_UNLIKELY(dp_in_put))
        atomic_fetch_add_explicit(&p->put_provider_calls, 1,
                                  memory_order_relaxed);
    struct cb_frame f;
    cb_enter(&f, p);
    p->prov.free(p->prov.ctx, page, p->pagesize);
    cb_leave(&f);
}

/* Run the dtor on slots [0, n) of pg, as one callback frame. */
static void dtor_slots(struct dp_pool *p, struct dp_page *pg, uint32_t n)
{
    struct cb_frame f;
    cb_enter(&f, p);
    for (uint32_t i = 0; i < n; i++)
        p->dtor(pg->slots + (size_t)i * p->slotsize, p->cbarg);
    cb_leave(&f);
}

void dp_page_layout(size_t pagesize, size_t slotsize, size_t align, bool debug,
                    size_t *hdrsize, uint32_t *cap)
{
    size_t hdr = sizeof(struct dp_page);
    size_t c0 = pagesize > hdr ? (pagesize - hdr) / slotsize : 0;
    if (debug)
        hdr += ((c0 + 63) / 64) * sizeof(uint64_t);
    hdr = (hdr + align - 1) & ~(align - 1);
    *hdrsize = hdr;
    size_t c = hdr < pagesize ? (pagesize - hdr) / slotsize : 0;
    *cap = c > DP_PG_COUNT / 4 ? DP_PG_COUNT / 4 : (uint32_t)c;
}

static void page_init(struct dp_pool *p, struct dp_page *pg)
{
    pg->magic = DP_PAGE_MAGIC;
    pg->cap = p->cap;
    pg->pool = p;
    pg->slots = (char *)pg + p->hdrsize;
    atomic_init(&pg->state, 0);
    atomic_init(&pg->qnext, NULL);
    pg->lfree = NULL;
    pg->bump = 0;
    pg->list = DP_L_NONE;
    pg->next = pg->prev = NULL;
    pg->empty_since = 0;
    pg->outmap = NULL;
    if (p->debug) {
        pg->outmap = (_Atomic uint64_t *)(pg + 1);
        for (uint32_t i = 0; i < (p->cap + 63) / 64; i++)
            atomic_init(&pg->outmap[i], 0);
    }
}

static void page_free_raw(struct dp_pool *p, struct dp_page *pg)
{
    if (p->pagemap)
        dp_pagemap_set(pg, p->pagesize, NULL);
    pg->magic = 0;
    prov_free(p, pg);
}

struct dp_page *dp_page_create(struct dp_pool *p, int flags,
                               enum dp_pg_why *why)
{
    *why = DP_PG_NOMEM;
    struct dp_page *pg = prov_alloc(p, flags);
    if (!pg)
        return NULL;
    /* The pool finds an object's page by masking its address: a page
     * off its alignment would send puts to the wrong header.  A provider
     * bug, so abort, naming who did what (include/deferpool.h). */
    if (DP_UNLIKELY((uintptr_t)pg & (p->pagesize - 1))) {
        fprintf(stderr,
                "deferpool: pool '%s': provider '%s' returned page %p, "
                "not aligned to the page size %zu\n",
                p->name, p->prov.name ? p->prov.name : "?", (void *)pg,
                p->pagesize);
        abort();
    }
    page_init(p, pg);
    if (p->pagemap && dp_pagemap_set(pg, p->pagesize, dp_pm_pool(p)) != 0)
        goto fail;
    if (p->ctor) {
        /* Bonwick: construct every object now, once; they stay
         * constructed while cached and are destroyed with the page. */
        struct cb_frame f;
        cb_enter(&f, p);
        uint32_t i = 0;
        while (i < p->cap &&
               p->ctor(pg->slots + (size_t)i * p->slotsize, p->cbarg,
                       flags) == 0)
            i++;
        cb_leave(&f);
        if (i < p->cap) {
            if (p->dtor)
                dtor_slots(p, pg, i);
            goto fail;
        }
    }
    *why = DP_PG_OK;
    return pg;
fail:
    if (flags & DP_WAITOK) {
        page_free_raw(p, pg);
        *why = DP_PG_CTOR_FREED;
        return NULL;
    }
    /* A DP_NOWAIT get must not call the provider's free: park the page on
     * the dead list; a WAITOK get, reclaim or destroy returns it. */
    pthread_mutex_lock(&p->lock);
    pg->list = DP_L_DEAD;
    pg->next = p->dead;
    p->dead = pg;
    pthread_mutex_unlock(&p->lock);
    *why = DP_PG_CTOR_DEAD;
    return NULL;
}

void dp_page_destroy(struct dp_pool *p, struct dp_page *pg)
{
    if (p->dtor && pg->list != DP_L_DEAD)
        dtor_slots(p, pg, p->cap);
    page_free_raw(p, pg);
}
