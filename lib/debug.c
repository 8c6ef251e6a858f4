/*
 * debug.c -- the debug layer, beside the pages: what a DP_POOL_DEBUG
 * pool (or one with DP_POOL_REDZONE, DP_POOL_JUNK, DP_POOL_AUDIT, or
 * DEFERPOOL_CONF debug) adds to the page and pool layers: its slot
 * layout, the checks of every put and get, audit records and the leak
 * report.  Debug pools have no thread cache, so every get and put of
 * theirs passes here.  docs/design.md, "Debug checks".
 */
#include "debug.h"
#include "options.h"
#include "os.h"
#include "pagemap.h"
#include "pool.h"

#include <execinfo.h>
#include <stdlib.h>
#include <string.h>

/* Patterns, as 32-bit words at 4-byte aligned addresses (a byte at
 * address a holds byte a % 4 of the word, little-endian): the public
 * ones are in include/deferpool.h. */
#define RZ_PATTERN 0xfeedfaceu
#define FRONT_RZ 16 /* bytes of redzone before each object          */
#define BACK_RZ 8   /* at least this many after it (up to 15)       */

/* ---- the layout -------------------------------------------------------- */

unsigned dp_debug_features(unsigned flags, unsigned conf, bool has_ctor)
{
    unsigned f = (flags | conf) &
                 (DP_POOL_REDZONE | DP_POOL_JUNK | DP_POOL_AUDIT);
    if ((flags | conf) & DP_POOL_DEBUG)
        f |= DP_POOL_REDZONE | DP_POOL_JUNK;
    if (has_ctor)
        f &= ~(unsigned)DP_POOL_JUNK; /* free objects stay constructed */
    return f;
}

/* Audit record: the stacks of the object's last get and last put,
 * innermost frame first; written by whoever owns the object (the getter
 * after its get, the putter before its put). */
#define DEPTH 12
struct rec {
    uint32_t nget, nput;
    void *get[DEPTH];
    void *put[DEPTH];
};

/* Slot, from the object's start: the object, redzone up to the next
 * multiple of 8 plus BACK_RZ, the link word, the audit record, and
 * FRONT_RZ bytes of redzone for the next slot's object; rounded up to
 * the alignment.  The first object's leading redzone is in the page
 * header (dp_page_layout's `front`).  Without redzones the link word
 * still lives after the object, so that junk can cover all of it. */
void dp_debug_layout(size_t objsize, size_t align, unsigned feat,
                     struct dp_debug_layout *l)
{
    size_t end = (objsize + 7) & ~(size_t)7;
    bool rz = feat & DP_POOL_REDZONE;
    l->linkoff = end + (rz ? BACK_RZ : 0);
    l->recoff = l->linkoff + sizeof(void *);
    size_t tail = l->recoff + ((feat & DP_POOL_AUDIT) ? sizeof(struct rec) : 0);
    l->front = rz ? FRONT_RZ : 0;
    l->slot = (tail + l->front + align - 1) & ~(align - 1);
}

/* ---- patterns ---------------------------------------------------------- */

static inline uint8_t pat_byte(uint32_t pat, const char *a)
{
    return (uint8_t)(pat >> (8 * ((uintptr_t)a & 3)));
}

static void fill(uint32_t pat, char *s, size_t n)
{
    char *e = s + n;
    while (s < e && ((uintptr_t)s & 7))
        *s = (char)pat_byte(pat, s), s++;
    uint64_t w = (uint64_t)pat << 32 | pat;
    for (; e - s >= 8; s += 8)
        memcpy(s, &w, 8);
    while (s < e)
        *s = (char)pat_byte(pat, s), s++;
}

/* The offset of the first byte of [s, s + n) that differs from the
 * pattern, or n.  Eight bytes at a time where aligned. */
static size_t first_bad(uint32_t pat, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && ((uintptr_t)(s + i) & 7))
        if ((uint8_t)s[i] != pat_byte(pat, s + i))
            return i;
        else
            i++;
    uint64_t w = (uint64_t)pat << 32 | pat, v;
    for (; n - i >= 8; i += 8) {
        memcpy(&v, s + i, 8);
        if (v != w)
            break;
    }
    for (; i < n; i++)
        if ((uint8_t)s[i] != pat_byte(pat, s + i))
            return i;
    return n;
}

/* ---- reports ----------------------------------------------------------- */

static struct rec *rec_of(const struct dp_pool *p, void *obj)
{
    return (struct rec *)((char *)obj + p->dbg_recoff);
}

static void print_stack(FILE *f, const char *what, void *const *st,
                        uint32_t n)
{
    fprintf(f, "  %s:\n", what);
    int fd = fileno(f);
    fflush(f);
    if (fd >= 0) {
        backtrace_symbols_fd(st, (int)n, fd);
        return;
    }
    for (uint32_t i = 0; i < n; i++)
        fprintf(f, "    %p\n", st[i]);
}

/* With audit: the stacks of obj's last get and put, if it has had them. */
static void print_audit(const struct dp_pool *p, void *obj)
{
    if (!(p->dbg & DP_POOL_AUDIT))
        return;
    struct rec *r = rec_of(p, obj);
    if (r->nget)
        print_stack(stderr, "last get", r->get, r->nget);
    if (r->nput)
        print_stack(stderr, "last put", r->put, r->nput);
    if (!r->nget && !r->nput)
        fprintf(stderr, "  (no get or put recorded)\n");
}

/* The first damaged redzone byte of obj, as an offset from its start
 * (negative: before it); 0 if intact (offset 0 is never a redzone). */
static ptrdiff_t redzone_damage(const struct dp_pool *p, char *obj)
{
    size_t b = first_bad(RZ_PATTERN, obj - FRONT_RZ, FRONT_RZ);
    if (b < FRONT_RZ)
        return -(ptrdiff_t)(FRONT_RZ - b);
    size_t n = p->linkoff - p->objsize;
    b = first_bad(RZ_PATTERN, obj + p->objsize, n);
    return b < n ? (ptrdiff_t)(p->objsize + b) : 0;
}

static void report_redzone(const struct dp_pool *p, void *obj, ptrdiff_t at,
                           const char *when)
{
    if (at < 0)
        fprintf(stderr,
                "deferpool: pool '%s': object %p: redzone overwritten at "
                "offset %td (%td byte(s) before the start), found at %s\n",
                p->name, obj, at, -at, when);
    else
        fprintf(stderr,
                "deferpool: pool '%s': object %p: redzone overwritten at "
                "offset +%td (%td byte(s) past the end of its %zu), found "
                "at %s\n",
                p->name, obj, at, at - (ptrdiff_t)p->objsize + 1,
                p->objsize, when);
}

static void check_redzones(const struct dp_pool *p, void *obj,
                           const char *when)
{
    ptrdiff_t at = redzone_damage(p, obj);
    if (DP_UNLIKELY(at)) {
        report_redzone(p, obj, at, when);
        print_audit(p, obj);
        abort();
    }
}

static void report_junk(const struct dp_pool *p, void *obj, size_t at)
{
    char *b = (char *)obj + at;
    fprintf(stderr,
            "deferpool: pool '%s': object %p: written after put at offset "
            "+%zu (0x%02x where the free pattern has 0x%02x)\n",
            p->name, obj, at, (uint8_t)*b, pat_byte(DP_DEBUG_FREE_PATTERN, b));
}

void dp_debug_foreign(const struct dp_pool *p, const void *obj)
{
    struct dp_pool *q = dp_pm_as_pool(dp_pagemap_get(obj));
    if (q)
        fprintf(stderr,
                "deferpool: pool '%s': put of %p, an object of pool '%s', "
                "not of this pool\n",
                p->name, obj, q->name);
    else
        fprintf(stderr,
                "deferpool: pool '%s': put of foreign pointer %p (not in "
                "any page of this pool)\n",
                p->name, obj);
    abort();
}

/* ---- the hooks ----------------------------------------------------------- */

/* The caller's stack, without this function's frame. */
static DP_NOINLINE uint32_t capture(void **to)
{
    void *buf[DEPTH + 1];
    int k = backtrace(buf, DEPTH + 1);
    uint32_t n = k > 1 ? (uint32_t)k - 1 : 0;
    memcpy(to, buf + 1, n * sizeof(void *));
    return n;
}

void dp_debug_pool_init(struct dp_pool *p)
{
    /* backtrace()'s first call loads libgcc_s (dlopen, malloc): here,
     * not inside a get or put, where the drop-in malloc's pools may be
     * in the middle of an allocation. */
    static _Atomic bool warm;
    if ((p->dbg & DP_POOL_AUDIT) && !atomic_load(&warm)) {
        void *b[2];
        backtrace(b, 2);
        atomic_store(&warm, true);
    }
}

void dp_debug_page_init(struct dp_pool *p, struct dp_page *pg)
{
    for (uint32_t i = 0; i < p->cap; i++) {
        char *o = dp_pg_slots(p, pg) + (size_t)i * p->slotsize;
        if (p->dbg & DP_POOL_REDZONE) {
            fill(RZ_PATTERN, o - FRONT_RZ, FRONT_RZ);
            fill(RZ_PATTERN, o + p->objsize, p->linkoff - p->objsize);
        }
        if (p->dbg & DP_POOL_JUNK)
            fill(DP_DEBUG_FREE_PATTERN, o, p->objsize);
        if (p->dbg & DP_POOL_AUDIT)
            memset(rec_of(p, o), 0, sizeof(struct rec));
    }
}

static size_t slot_index(const struct dp_pool *p, const struct dp_page *pg,
                         const void *obj)
{
    return (size_t)((const char *)obj - dp_pg_slots(p, pg)) / p->slotsize;
}

void dp_debug_mark_out(struct dp_pool *p, struct dp_page *pg, void *obj)
{
    size_t i = slot_index(p, pg, obj);
    uint64_t bit = 1ull << (i % 64);
    uint64_t old = atomic_fetch_or_explicit(&pg->outmap[i / 64], bit,
                                            memory_order_acquire);
    if (old & bit) {
        fprintf(stderr,
                "deferpool: pool '%s': object %p handed out twice "
                "(free list corrupted: use after put?)\n",
                p->name, obj);
        print_audit(p, obj);
        abort();
    }
}

void dp_debug_got(struct dp_pool *p, void *obj)
{
    if (p->dbg & DP_POOL_REDZONE)
        check_redzones(p, obj, "get (written while free)");
    if (p->dbg & DP_POOL_JUNK) {
        size_t at = first_bad(DP_DEBUG_FREE_PATTERN, obj, p->objsize);
        if (DP_UNLIKELY(at < p->objsize)) {
            report_junk(p, obj, at);
            print_audit(p, obj);
            abort();
        }
        fill(DP_DEBUG_UNINIT_PATTERN, obj, p->objsize);
    }
    if (p->dbg & DP_POOL_AUDIT) {
        struct rec *r = rec_of(p, obj);
        r->nget = capture(r->get);
    }
}

static _Noreturn void double_put(const struct dp_pool *p, void *obj)
{
    fprintf(stderr, "deferpool: pool '%s': double put of %p\n", p->name,
            obj);
    print_audit(p, obj);
    abort();
}

void dp_debug_put(struct dp_pool *p, struct dp_page *pg, void *obj)
{
    /* The page map first: obj's page header may not be mapped. */
    if (dp_pagemap_get(obj) != dp_pm_pool(p) || pg->magic != DP_PAGE_MAGIC ||
        pg->pool != p)
        dp_debug_foreign(p, obj);
    size_t off = (size_t)((char *)obj - dp_pg_slots(p, pg));
    if ((char *)obj < dp_pg_slots(p, pg) || off / p->slotsize >= pg->cap) {
        fprintf(stderr,
                "deferpool: pool '%s': put of %p, which is not an object "
                "(page header)\n",
                p->name, obj);
        abort();
    }
    if (off % p->slotsize != 0) {
        void *start = dp_pg_slots(p, pg) + off / p->slotsize * p->slotsize;
        fprintf(stderr,
                "deferpool: pool '%s': put of %p, which is not the start "
                "of an object: offset +%zu in object %p\n",
                p->name, obj, off % p->slotsize, start);
        abort();
    }
    size_t i = off / p->slotsize;
    uint64_t bit = 1ull << (i % 64);
    /* A load first, so that the report of a double put still has the
     * stacks of the object's last get and put. */
    if (!(atomic_load_explicit(&pg->outmap[i / 64], memory_order_relaxed) &
          bit))
        double_put(p, obj);
    if (p->dbg & DP_POOL_REDZONE)
        check_redzones(p, obj, "put");
    if (p->dbg & DP_POOL_AUDIT) {
        struct rec *r = rec_of(p, obj);
        r->nput = capture(r->put);
    }
    if (p->dbg & DP_POOL_JUNK)
        fill(DP_DEBUG_FREE_PATTERN, obj, p->objsize);
    /* Release: dp_pool_check reads a free object's pattern after it sees
     * its bit clear.  Two racing puts of one object: one of them sees
     * the bit already clear. */
    uint64_t old = atomic_fetch_and_explicit(&pg->outmap[i / 64], ~bit,
                                             memory_order_release);
    if (!(old & bit))
        double_put(p, obj);
}

/* ---- dp_pool_check ------------------------------------------------------- */

int dp_debug_check_page(struct dp_pool *p, struct dp_page *pg)
{
    int bad = 0;
    for (uint32_t i = 0; i < p->cap; i++) {
        char *o = dp_pg_slots(p, pg) + (size_t)i * p->slotsize;
        if (p->dbg & DP_POOL_REDZONE) {
            ptrdiff_t at = redzone_damage(p, o);
            if (at) {
                report_redzone(p, o, at, "dp_pool_check");
                bad++;
            }
        }
        uint64_t bits = atomic_load_explicit(&pg->outmap[i / 64],
                                             memory_order_acquire);
        if ((p->dbg & DP_POOL_JUNK) && !(bits & (1ull << (i % 64)))) {
            size_t at = first_bad(DP_DEBUG_FREE_PATTERN, o, p->objsize);
            if (at < p->objsize) {
                report_junk(p, o, at);
                bad++;
            }
        }
    }
    return bad;
}

/* ---- the leak report ----------------------------------------------------- */

struct leak {
    void *obj;
    uint32_t n;      /* frames in st          */
    uint32_t group;  /* objects with st: the report prints the biggest
                        group first         */
    void *st[DEPTH];
};

static int leak_cmp(const void *a, const void *b)
{
    const struct leak *x = a, *y = b;
    if (x->group != y->group)
        return x->group > y->group ? -1 : 1;
    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    int c = memcmp(x->st, y->st, x->n * sizeof(void *));
    if (c)
        return c;
    return x->obj < y->obj ? -1 : x->obj > y->obj;
}

/* Objects marked out in the pool's pages, into out[0..cap) (NULL: count
 * only).  Pool lock held.  Returns how many there are. */
static size_t collect_locked(struct dp_pool *p, struct leak *out, size_t cap)
{
    struct dp_list *lists[3] = {&p->partial, &p->full, &p->empty};
    size_t n = 0;
    for (int l = 0; l < 3; l++)
        for (struct dp_page *pg = lists[l]->head; pg; pg = pg->next)
            for (uint32_t w = 0; w < (pg->cap + 63) / 64; w++) {
                uint64_t bits = atomic_load_explicit(&pg->outmap[w],
                                                     memory_order_acquire);
                while (bits) {
                    uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(bits);
                    bits &= bits - 1;
                    if (out && n < cap) {
                        struct leak *e = &out[n];
                        memset(e, 0, sizeof(*e));
                        e->obj = dp_pg_slots(p, pg) + (size_t)i * p->slotsize;
                        if (p->dbg & DP_POOL_AUDIT) {
                            struct rec *r = rec_of(p, e->obj);
                            e->n = r->nget <= DEPTH ? r->nget : DEPTH;
                            memcpy(e->st, r->get, e->n * sizeof(void *));
                        }
                    }
                    n++;
                }
            }
    return n;
}

static bool same_stack(const struct leak *a, const struct leak *b)
{
    return a->n == b->n && !memcmp(a->st, b->st, a->n * sizeof(void *));
}

#define LEAK_ADDRS 8 /* addresses listed per group */

long dp_debug_leaks(struct dp_pool *p, FILE *f)
{
    /* Counted, then copied, under the lock; mapped and printed without
     * it: printing may allocate, and the drop-in malloc's pools are
     * debug pools too. */
    pthread_mutex_lock(p->lock);
    dp_drain_pending_locked(p, 0);
    size_t n = collect_locked(p, NULL, 0);
    pthread_mutex_unlock(p->lock);
    if (!n)
        return 0;
    size_t cap = n + n / 4 + 16, len = cap * sizeof(struct leak);
    struct leak *v = dp_os_map(len);
    if (!v) {
        fprintf(f, "deferpool: pool '%s': %zu object(s) still out (no "
                   "memory for the leak report)\n", p->name, n);
        return (long)n;
    }
    pthread_mutex_lock(p->lock);
    n = collect_locked(p, v, cap);
    pthread_mutex_unlock(p->lock);
    size_t have = n < cap ? n : cap;
    qsort(v, have, sizeof(*v), leak_cmp); /* by stack */
    size_t groups = 0;
    for (size_t i = 0, j; i < have; i = j, groups++) {
        for (j = i + 1; j < have && same_stack(&v[j], &v[i]); j++)
            ;
        for (size_t k = i; k < j; k++)
            v[k].group = (uint32_t)(j - i);
    }
    qsort(v, have, sizeof(*v), leak_cmp); /* biggest group first */
    bool audit = p->dbg & DP_POOL_AUDIT;
    fprintf(f, "deferpool: pool '%s': %zu object(s) still out", p->name, n);
    if (audit)
        fprintf(f, ", from %zu allocation stack(s)", groups);
    fprintf(f, ":\n");
    for (size_t i = 0; i < have;) {
        size_t j = i + 1;
        while (audit && j < have && same_stack(&v[j], &v[i]))
            j++;
        if (!audit)
            j = have;
        fprintf(f, "  %zu object(s):", j - i);
        for (size_t k = i; k < j && k < i + LEAK_ADDRS; k++)
            fprintf(f, " %p", v[k].obj);
        fprintf(f, j - i > LEAK_ADDRS ? " ...\n" : "\n");
        if (audit)
            print_stack(f, "got at", v[i].st, v[i].n);
        i = j;
    }
    fflush(f);
    dp_os_unmap(v, len);
    return (long)n;
}

/* DEFERPOOL_CONF leaks: every live debug pool's report at exit. */
static void leaks_one(struct dp_pool *p, void *arg)
{
    (void)arg;
    if (p->debug)
        dp_debug_leaks(p, stderr);
}

__attribute__((destructor)) static void dp_debug_atexit(void)
{
    if (dp_options()->leaks)
        dp_registry_each(leaks_one, NULL);
}
