/*
 * page.c -- the page (slab) layer, above the provider: a page's life
 * (obtain, lay out, construct, destroy) and its state machine (take
 * objects under the pool lock, put runs lock-free, queue the page on
 * its pool's pending stack).  docs/design.md, "Pages" and "The put
 * path".  Provider calls and user callbacks run without the pool lock:
 * they may block or re-enter deferpool (other pools).
 */
#include "page.h"
#include "debug.h"
#include "lifo.h"
#include "os.h"
#include "pagemap.h"
#include "probes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Thread-local: non-zero while this thread is inside dp_pool_put().  The
 * provider wrappers below count any call made while it is set, so the
 * statistic put_provider_calls counts what would break the promise.
 * initial-exec TLS: reading it is a plain %fs-relative load, no call. */
DP_HIDDEN DP_TLS int dp_in_put;

/* ---- safe-linking (link.h) ------------------------------------------- */
_Atomic uintptr_t dp_link_key;

void dp_link_key_init(void)
{
    if (atomic_load_explicit(&dp_link_key, memory_order_acquire))
        return;
    uintptr_t k = dp_os_random() | 1, zero = 0;
    atomic_compare_exchange_strong_explicit(&dp_link_key, &zero, k,
                                            memory_order_acq_rel,
                                            memory_order_acquire);
}

void dp_link_corrupt(const struct dp_pool *p, const void *obj, uintptr_t next)
{
    fprintf(stderr,
            "deferpool: pool '%s': free object %p holds a corrupted link "
            "(decodes to %#lx, outside its page): written after put?\n",
            p->name, obj, (unsigned long)next);
    abort();
}

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
        p->dtor(dp_pg_slots(p, pg) + (size_t)i * p->slotsize, p->cbarg);
    cb_leave(&f);
}

void dp_page_layout(size_t pagesize, size_t slotsize, size_t align, bool debug,
                    size_t front, size_t *hdrsize, uint32_t *cap)
{
    size_t hdr = sizeof(struct dp_page);
    size_t c0 = pagesize > hdr ? (pagesize - hdr) / slotsize : 0;
    if (debug)
        hdr += ((c0 + 63) / 64) * sizeof(uint64_t);
    hdr += front;
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
        dp_debug_page_init(p, pg);
    }
}

static void page_free_raw(struct dp_pool *p, struct dp_page *pg)
{
    if (p->pagemap)
        dp_pagemap_set(pg, p->pagesize, NULL);
    pg->magic = 0;
    dp_an_page_free(p, pg);
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
               p->ctor(dp_pg_slots(p, pg) + (size_t)i * p->slotsize, p->cbarg,
                       flags) == 0)
            i++;
        cb_leave(&f);
        if (i < p->cap) {
            if (p->dtor)
                dtor_slots(p, pg, i);
            goto fail;
        }
    }
    dp_an_page_new(p, pg);
    *why = DP_PG_OK;
    return pg;
fail:
    if (flags & DP_WAITOK) {
        page_free_raw(p, pg);
        *why = DP_PG_CTOR_FREED;
        return NULL;
    }
    /* A DP_NOWAIT get must not call the provider's free: the pool parks
     * the page (its dead list) until a WAITOK get, reclaim or destroy
     * returns it. */
    pg->list = DP_L_DEAD;
    *why = DP_PG_CTOR_DEAD;
    return pg;
}

void dp_page_destroy(struct dp_pool *p, struct dp_page *pg)
{
    if (p->dtor && pg->list != DP_L_DEAD) {
        dp_an_page_open_slots(p, pg);
        dtor_slots(p, pg, p->cap);
    }
    page_free_raw(p, pg);
}

/* ---- the state machine ------------------------------------------------ */

/* Take up to `want` objects from one page into objs[], or, when ch is
 * given and holds no chain yet, the whole put stack as a chain (*ch) if
 * it is no longer than ch->max.  Returns how many went into objs[];
 * with the chain's, fewer than `want` only when every object of the
 * page is out, so the
 * page can go on the full list: any later put then sees the count drop
 * from full and queues the page again.  Order: the lock's free list, the
 * put stack (taken whole with one CAS), then the bump region, which
 * touches no object memory.
 *
 * The count is raised once per batch.  A put pushes its objects and
 * lowers the count in one CAS, so when the page looked exhausted but the
 * count after our add is below cap, puts have landed on the stack since
 * we took it: take them too rather than strand them on a full-listed
 * page. */
uint32_t dp_page_take_locked(struct dp_pool *p, struct dp_page *pg,
                             uint32_t want, void **objs, struct dp_chain *ch)
{
    uint32_t k = 0, cn = 0; /* taken into objs[], and as a chain */
    for (;;) {
        uint32_t k0 = k, c = 0;
        void *o = pg->lfree;
        if (!o) {
            /* Take the whole put stack, leaving the count as it is. */
            uint64_t s = atomic_load_explicit(&pg->state, memory_order_relaxed);
            while ((s >> DP_PG_TOP_SHIFT) != 0 &&
                   !atomic_compare_exchange_weak_explicit(
                       &pg->state, &s, s & DP_PG_LOW, memory_order_acquire,
                       memory_order_relaxed))
                ;
            o = dp_pg_top(pg, s);
            /* With the lock's list empty, every carved object is either
             * out (the count this CAS read) or on the stack just taken:
             * its length is known, so it can go to the bin unwalked
             * (cache.c, "Chains"). */
            if (o && ch && !ch->head && k < want) {
                uint32_t len = pg->bump - ((uint32_t)s & DP_PG_COUNT);
                if (len <= ch->max) {
                    ch->head = o;
                    ch->n = c = len;
                    cn += len;
                    o = NULL;
                }
            }
        }
        uint32_t have = k + cn;
        while (o && have < want) {
            objs[k++] = o;
            have++;
            o = dp_link_get(p, o);
        }
        pg->lfree = o;
        if (have < want && pg->bump < pg->cap) {
            uint32_t n = pg->cap - pg->bump;
            if (n > want - have)
                n = want - have;
            char *s = dp_pg_slots(p, pg) + (size_t)pg->bump * p->slotsize;
            for (uint32_t i = 0; i < n; i++, s += p->slotsize)
                objs[k + i] = s;
            pg->bump += n;
            k += n;
            have += n;
        }
        if (p->debug)
            for (uint32_t i = k0; i < k; i++)
                dp_debug_mark_out(p, pg, objs[i]);
        /* Only lock holders increment; putters decrement.  Relaxed is
         * enough for the objects handed out: one reaches a putter only
         * through the user's own synchronisation, which orders this
         * increment before its put. */
        uint32_t add = k - k0 + c;
        uint32_t s = (uint32_t)atomic_fetch_add_explicit(
            &pg->state, add, memory_order_acquire);
        if (have >= want || (s & DP_PG_COUNT) + add >= pg->cap)
            return k;
    }
}

void dp_wake_getters(struct dp_pool *p)
{
    if (atomic_load_explicit(&p->waiters, memory_order_seq_cst)) {
        atomic_fetch_add_explicit(&p->wake_seq, 1, memory_order_seq_cst);
        dp_futex_wake_all(&p->wake_seq);
    }
}

/* The pool layer's DP_IPOOL_IMMEDIATE release (page.h); set once at load,
 * read by the rare put that empties a page of such a pool. */
static _Atomic(size_t (*)(struct dp_pool *)) emptied_cb;

void dp_page_set_emptied_cb(size_t (*cb)(struct dp_pool *p))
{
    atomic_store_explicit(&emptied_cb, cb, memory_order_release);
}

/*
 * Return a run of k objects of one page (first..last linked through their
 * link words).  Lock-free, no system call (but the one documented
 * wake-up), no provider call, no sleep.  Memory ordering
 * (docs/design.md, "The put path"):
 *  1. One release CAS on the page's state word pushes the run on the put
 *     stack (the top is stored as an offset in the high half) and
 *     subtracts k from the count in the low half; the link writes are
 *     visible to the lock holder that takes the stack with an acquire
 *     CAS.  In the same step it sets QUEUED if this put made the page
 *     empty or took it from full (count >= cap) to not full, and nobody
 *     has queued it yet.  Doing all of it in one RMW matters: after the
 *     count reaches 0 a page may be recycled, and only the QUEUED bit we
 *     own keeps it alive until it is drained.
 *  2. Only the putter that set QUEUED touches the page again: it links it
 *     on the pool's pending stack (seq_cst CAS), then loads `waiters`
 *     (seq_cst) and wakes sleeping getters if there are any.
 */
#define PENDING_LINK(pg, next)                                                 \
    atomic_store_explicit(&(pg)->qnext, (next), memory_order_relaxed)

static void page_put_run(struct dp_pool *p, struct dp_page *pg, void *first,
                         void *last, uint32_t k)
{
    uint64_t top = (uint64_t)((char *)first - (char *)pg) << DP_PG_TOP_SHIFT;
    uint64_t s = atomic_load_explicit(&pg->state, memory_order_relaxed), ns;
    bool queue;
    do {
        dp_link_set(p, last, dp_pg_top(pg, s));
        uint32_t lo = (uint32_t)s;
        uint32_t c = lo & DP_PG_COUNT;
        if (DP_UNLIKELY(c < k)) {
            fprintf(stderr,
                    "deferpool: pool '%s': put of %p to a page with fewer "
                    "objects out (double put or foreign pointer)\n",
                    p->name, first);
            abort();
        }
        uint32_t nc = c - k;
        queue = !(lo & DP_PG_QUEUED) &&
                (nc == 0 || (c >= pg->cap && nc < pg->cap));
        ns = top | (lo & DP_PG_QUEUED) | nc | (queue ? DP_PG_QUEUED : 0);
    } while (!atomic_compare_exchange_weak_explicit(
        &pg->state, &s, ns, memory_order_release, memory_order_relaxed));

    if (queue) {
        DP_LIFO_PUSH(&p->pending, pg, pg, PENDING_LINK, memory_order_seq_cst);
        /* A nop unless traced: no syscall, no lock. */
        DP_PROBE(put_queue, p, p->name, pg, (ns & DP_PG_COUNT) == 0);
        dp_wake_getters(p);
    }
    /* DP_IPOOL_IMMEDIATE: what a naive pool does when a put empties a page
     * -- take the pool lock and give the page back to the provider right
     * here, inside the put.  It breaks deferpool's promise on purpose, so
     * the benchmarks can show what deferral buys; put_provider_calls counts
     * it.  Whoever queued it, an emptied page is on the pending queue now. */
    if (DP_UNLIKELY(p->flags & DP_IPOOL_IMMEDIATE) && (ns & DP_PG_COUNT) == 0) {
        size_t (*cb)(struct dp_pool *) =
            atomic_load_explicit(&emptied_cb, memory_order_acquire);
        if (cb)
            cb(p);
    }
}

/* Put one object straight to its page (no thread cache), from a put:
 * provider calls made meanwhile count as put_provider_calls. */
void dp_page_put(struct dp_pool *p, void *obj)
{
    struct dp_page *pg = (struct dp_page *)((uintptr_t)obj & p->pagemask);
    dp_an_put_vg(p, obj);
    if (DP_UNLIKELY(p->debug))
        dp_debug_put(p, pg, obj);
    else if (DP_UNLIKELY(p->flags & DP_POOL_NOCACHE) &&
             dp_pagemap_get(obj) != dp_pm_pool(p))
        dp_debug_foreign(p, obj); /* before pg, maybe unmapped, is read */
    dp_in_put++;
    page_put_run(p, pg, obj, obj, 1);
    dp_in_put--;
}

/* Put objs[0..n) (a flushed cache) to their pages, one CAS per run of
 * objects from the same page, but no more than max_runs runs: returns
 * how many objects went back (all n unless the run limit stopped it,
 * and at least one).  The run is linked through the objects' link words
 * here, the only object memory a flush writes. */
uint32_t dp_page_put_runs(struct dp_pool *p, void *const *objs, uint32_t n,
                          uint32_t max_runs)
{
    uint32_t i = 0, runs = 0;
    while (i < n && runs++ < max_runs) {
        struct dp_page *pg =
            (struct dp_page *)((uintptr_t)objs[i] & p->pagemask);
        uint32_t j = i + 1;
        while (j < n &&
               (struct dp_page *)((uintptr_t)objs[j] & p->pagemask) == pg) {
            dp_link_set_cached(p, objs[j - 1], objs[j]);
            j++;
        }
        page_put_run(p, pg, objs[i], objs[j - 1], j - i);
        i = j;
    }
    return i;
}

void dp_page_put_array(struct dp_pool *p, void *const *objs, uint32_t n)
{
    dp_page_put_runs(p, objs, n, UINT32_MAX);
}

/* A chain is one page's put stack, still linked: one run, once its last
 * object is found. */
void dp_page_put_chain(struct dp_pool *p, void *head, uint32_t n)
{
    if (!n)
        return;
    void *last = head;
    for (uint32_t i = 1; i < n; i++)
        last = dp_link_get_cached(p, last);
    page_put_run(p, (struct dp_page *)((uintptr_t)head & p->pagemask), head,
                 last, n);
}

