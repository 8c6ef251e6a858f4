/*
 * stats.c -- statistics and the invariant checker.  Both take the pool
 * lock and first drain the pending queue, so what they report is what
 * the pool knows after every completed put; and the printer of every
 * live pool, text or JSON (docs/api.md, "dp_stats_print").
 * docs/design.md, "Statistics".
 */
#include "dp_internal.h"
#include "stats.h"
#include "debug.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t count_of(const struct dp_page *pg)
{
    return atomic_load_explicit(&((struct dp_page *)pg)->state,
                                memory_order_acquire) &
           DP_PG_COUNT;
}

int dp_pool_stats(dp_pool_t *p, dp_pool_stats_t *out)
{
    if (!p || !out) {
        errno = EINVAL;
        return -1;
    }
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(p->lock);
    uint64_t now = dp_pool_now(p);
    dp_drain_pending_locked(p, now);
    memcpy(out->name, p->name, sizeof(out->name));
    out->objsize = p->objsize;
    out->slotsize = p->slotsize;
    out->pagesize = p->pagesize;
    out->objs_per_page = p->cap;
    uint64_t inuse = 0;
    for (struct dp_page *pg = p->partial.head; pg; pg = pg->next)
        inuse += count_of(pg);
    for (struct dp_page *pg = p->full.head; pg; pg = pg->next)
        inuse += count_of(pg);
    size_t live = p->partial.n + p->full.n + p->empty.n;
    uint64_t cached, cgets;
    dp_tcache_sum(p, &cached, &cgets);
    inuse = inuse > cached ? inuse - cached : 0;
    out->objs_inuse = inuse;
    out->objs_cached = cached;
    out->objs_free = (uint64_t)live * p->cap > inuse
                         ? (uint64_t)live * p->cap - inuse
                         : 0;
    out->pages = p->npages - p->inflight;
    out->pages_empty = p->empty.n;
    out->pages_pending = p->inflight + p->freeing;
    if (p->empty.tail)
        out->empty_oldest_age_ns = now - p->empty.tail->empty_since;
    out->pages_alloc = p->st_pages_alloc;
    out->pages_freed = p->st_pages_freed;
    out->provider_alloc_failures = p->st_alloc_fail;
    out->gets = p->st_gets + cgets;
    out->puts = out->gets - inuse;
    out->gets_waited = p->st_gets_waited;
    out->gets_failed = p->st_gets_failed;
    out->waiting = atomic_load(&p->waiters);
    out->put_provider_calls = atomic_load(&p->put_provider_calls);
    out->reserve_objs = p->reserve_objs;
    out->max_pages = p->max_pages == SIZE_MAX ? 0 : p->max_pages;
    out->lowat = p->lowat;
    out->hiwat = p->hiwat;
    out->reclaim_age_ns = p->age_ns;
    pthread_mutex_unlock(p->lock);
    return 0;
}

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "deferpool: dp_pool_check('%s'): ", p->name);     \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            bad++;                                                            \
        }                                                                     \
    } while (0)

/* Walk a free chain, checking each link lands on a slot of this page. */
static uint64_t walk_free(struct dp_pool *p, struct dp_page *pg, void *o,
                          int *badp)
{
    int bad = 0;
    uint64_t n = 0;
    while (o && bad == 0) {
        size_t off = (size_t)((char *)o - dp_pg_slots(p, pg));
        CHECK((char *)o >= dp_pg_slots(p, pg) && off % p->slotsize == 0 &&
                  off / p->slotsize < pg->bump,
              "page %p: free object %p is not a handed-out slot", (void *)pg,
              o);
        if (bad)
            break;
        CHECK(++n <= pg->cap, "page %p: free list longer than the page",
              (void *)pg);
        o = dp_link_peek(p, o);
    }
    *badp += bad;
    return n;
}

static int check_list(struct dp_pool *p, struct dp_list *l, uint8_t which,
                      uint64_t *inuse)
{
    int bad = 0;
    size_t n = 0;
    struct dp_page *prev = NULL;
    for (struct dp_page *pg = l->head; pg; prev = pg, pg = pg->next) {
        n++;
        CHECK(pg->magic == DP_PAGE_MAGIC && pg->pool == p,
              "page %p: bad magic or owner", (void *)pg);
        CHECK(pg->list == which, "page %p: on list %d, marked %d", (void *)pg,
              which, pg->list);
        CHECK(pg->prev == prev, "page %p: broken back link", (void *)pg);
        CHECK(((uintptr_t)pg & ~p->pagemask) == 0, "page %p: misaligned",
              (void *)pg);
        uint64_t sw = atomic_load(&pg->state);
        uint32_t s = (uint32_t)sw;
        uint64_t c = s & DP_PG_COUNT;
        CHECK(!(s & DP_PG_QUEUED), "page %p: still queued after a drain",
              (void *)pg);
        uint64_t nfree = walk_free(p, pg, pg->lfree, &bad) +
                         walk_free(p, pg, dp_pg_top(pg, sw), &bad);
        CHECK(pg->bump <= pg->cap, "page %p: bump past the end", (void *)pg);
        CHECK(c + nfree == pg->bump,
              "page %p: %llu out + %llu free != %u carved", (void *)pg,
              (unsigned long long)c, (unsigned long long)nfree, pg->bump);
        if (which == DP_L_EMPTY)
            CHECK(c == 0, "page %p: on the empty list with %llu out",
                  (void *)pg, (unsigned long long)c);
        if (p->debug) {
            uint64_t bits = 0;
            for (uint32_t i = 0; i < (pg->cap + 63) / 64; i++)
                bits += (uint64_t)__builtin_popcountll(
                    atomic_load(&pg->outmap[i]));
            CHECK(bits == c, "page %p: %llu objects marked out, count %llu",
                  (void *)pg, (unsigned long long)bits,
                  (unsigned long long)c);
            bad += dp_debug_check_page(p, pg);
        }
        *inuse += c;
        if (n > (size_t)1 << 40)
            break;
    }
    CHECK(n == l->n, "list %d: %zu pages linked, %zu counted", which, n,
          l->n);
    CHECK(l->tail == prev, "list %d: tail does not match", which);
    return bad;
}

int dp_pool_check(dp_pool_t *p)
{
    if (!p) {
        errno = EINVAL;
        return -1;
    }
    int bad = 0;
    uint64_t inuse = 0;
    pthread_mutex_lock(p->lock);
    dp_drain_pending_locked(p, 0);
    bad += check_list(p, &p->partial, DP_L_PARTIAL, &inuse);
    bad += check_list(p, &p->full, DP_L_FULL, &inuse);
    bad += check_list(p, &p->empty, DP_L_EMPTY, &inuse);
    size_t dead = 0;
    for (struct dp_page *pg = p->dead; pg; pg = pg->next)
        dead++;
    CHECK(p->npages == p->partial.n + p->full.n + p->empty.n + dead +
                           p->inflight + p->freeing,
          "npages %zu does not add up", p->npages);
    CHECK(p->npages - p->inflight == p->st_pages_alloc - p->st_pages_freed,
          "pages held %zu != allocated %llu - freed %llu",
          p->npages - p->inflight, (unsigned long long)p->st_pages_alloc,
          (unsigned long long)p->st_pages_freed);
    CHECK(p->npages <= p->max_pages, "npages %zu above the limit",
          p->npages);
    uint64_t cached, cgets;
    dp_tcache_sum(p, &cached, &cgets);
    CHECK(inuse <= p->st_gets + cgets + cached,
          "%llu objects out but only %llu gets", (unsigned long long)inuse,
          (unsigned long long)(p->st_gets + cgets));
    pthread_mutex_unlock(p->lock);
    if (bad) {
        errno = EIO;
        return -1;
    }
    return 0;
}


/* One pool as dp_stats_print reads it: a dp_pool_stats() snapshot plus
 * what only the library sees (the provider's name, pages by list). */
struct dp_srow {
    dp_pool_stats_t st;
    char provider[32];
    size_t partial, full;
};

struct dp_scollect {
    struct dp_srow *rows;
    size_t n, cap;
};

/* dp_registry_each callback: registry lock held, pool lock free. */
static void collect_one(struct dp_pool *p, void *arg)
{
    struct dp_scollect *c = arg;
    if (c->n == c->cap || p->reg_dead) /* reg_dead: being destroyed */
        return;
    struct dp_srow *r = &c->rows[c->n];
    if (dp_pool_stats(p, &r->st) != 0)
        return;
    snprintf(r->provider, sizeof(r->provider), "%s",
             p->prov.name ? p->prov.name : "");
    pthread_mutex_lock(p->lock);
    r->partial = p->partial.n;
    r->full = p->full.n;
    pthread_mutex_unlock(p->lock);
    c->n++;
}

static void count_one(struct dp_pool *p, void *arg)
{
    (void)p;
    (void)arg;
}

/* ---- field tables (stats.h) --------------------------------------------- */

/* Other bytes go out as they are (names are the caller's, expected
 * UTF-8). */
void dp_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (*u == '"' || *u == '\\')
            fprintf(f, "\\%c", *u);
        else if (*u < 0x20 || *u == 0x7f)
            fprintf(f, "\\u%04x", *u);
        else
            fputc(*u, f);
    }
    fputc('"', f);
}

static unsigned long long sf_value(const struct dp_sfield *fd,
                                   const void *row)
{
    const char *at = (const char *)row + fd->off;
    switch (fd->kind) {
    case DP_SF_SIZE:
        return *(const size_t *)at;
    case DP_SF_INT:
    case DP_SF_RUNNING:
        return (unsigned long long)*(const int *)at;
    default:
        return *(const uint64_t *)at;
    }
}

void dp_sf_json(FILE *f, const struct dp_sfield *t, size_t n, const void *row,
                int first)
{
    const struct dp_sf_section *sec = NULL;
    for (size_t i = 0; i < n; i++) {
        if (t[i].sec != sec) {
            if (sec)
                fputc('}', f);
            sec = t[i].sec;
            if (sec) {
                fprintf(f, "%s\"%s\":{", first ? "" : ",", sec->key);
                first = 1;
            }
        }
        fprintf(f, "%s\"%s\":", first ? "" : ",", t[i].key);
        if (t[i].kind == DP_SF_INT || t[i].kind == DP_SF_RUNNING)
            fprintf(f, "%d", *(const int *)((const char *)row + t[i].off));
        else
            fprintf(f, "%llu", sf_value(&t[i], row));
        first = 0;
    }
    if (sec)
        fputc('}', f);
}

static unsigned long long sf_text_value(const struct dp_sfield *fd,
                                        const void *row)
{
    unsigned long long v = sf_value(fd, row);
    return fd->div ? v / fd->div : v;
}

void dp_sf_text_head(FILE *f, const struct dp_sfield *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].text && t[i].width)
            fprintf(f, " %*s", t[i].width, t[i].text);
    fputc('\n', f);
}

void dp_sf_text_row(FILE *f, const struct dp_sfield *t, size_t n,
                    const void *row)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].text && t[i].width)
            fprintf(f, " %*llu", t[i].width, sf_text_value(&t[i], row));
    fputc('\n', f);
}

void dp_sf_text_lines(FILE *f, const struct dp_sfield *t, size_t n,
                      const void *row)
{
    const struct dp_sf_section *sec = NULL;
    int open = 0, first = 1;
    for (size_t i = 0; i < n; i++) {
        if (!t[i].text)
            continue;
        if (!open || t[i].sec != sec) {
            if (open)
                fputc('\n', f);
            sec = t[i].sec;
            fprintf(f, "  %s:", sec ? sec->text : t[i].text);
            open = 1;
            first = 1;
        }
        fputs(first ? " " : ", ", f);
        first = 0;
        if (t[i].kind == DP_SF_RUNNING) {
            fputs(*(const int *)((const char *)row + t[i].off) ? "running"
                                                               : "stopped",
                  f);
        } else if (sec) {
            fprintf(f, "%s %llu", t[i].text, sf_text_value(&t[i], row));
        } else {
            fprintf(f, "%llu", sf_text_value(&t[i], row)); /* own line */
            fputc('\n', f);
            open = 0;
        }
    }
    if (open)
        fputc('\n', f);
}

/* The same for text: one token, printable ASCII, spaces shown as '_'. */
static void text_str(FILE *f, const char *s, int width)
{
    int n = 0;
    for (const unsigned char *u = (const unsigned char *)s; *u; u++, n++)
        fputc(*u > 0x20 && *u < 0x7f ? *u : '_', f);
    if (n == 0) {
        fputc('-', f);
        n = 1;
    }
    for (; n < width; n++)
        fputc(' ', f);
}

/* A pool's fields, in JSON order; those with a width are text columns. */
#define P(field) offsetof(struct dp_srow, field)
static const struct dp_sfield pool_fields[] = {
    {NULL, "objsize", "objsize", DP_SF_SIZE, 7, 0, P(st.objsize)},
    {NULL, "slotsize", NULL, DP_SF_SIZE, 0, 0, P(st.slotsize)},
    {NULL, "pagesize", "pagesize", DP_SF_SIZE, 8, 0, P(st.pagesize)},
    {NULL, "objs_per_page", NULL, DP_SF_SIZE, 0, 0, P(st.objs_per_page)},
    {NULL, "objs_inuse", "inuse", DP_SF_U64, 10, 0, P(st.objs_inuse)},
    {NULL, "objs_free", "free", DP_SF_U64, 10, 0, P(st.objs_free)},
    {NULL, "objs_cached", "cached", DP_SF_U64, 8, 0, P(st.objs_cached)},
    {NULL, "pages", "pages", DP_SF_U64, 7, 0, P(st.pages)},
    {NULL, "pages_partial", "partial", DP_SF_SIZE, 7, 0, P(partial)},
    {NULL, "pages_full", "full", DP_SF_SIZE, 7, 0, P(full)},
    {NULL, "pages_empty", "empty", DP_SF_U64, 7, 0, P(st.pages_empty)},
    {NULL, "pages_pending", "pending", DP_SF_U64, 7, 0, P(st.pages_pending)},
    {NULL, "empty_oldest_age_ns", "oldest_ms", DP_SF_U64, 9, 1000000,
     P(st.empty_oldest_age_ns)},
    {NULL, "pages_alloc", "allocs", DP_SF_U64, 8, 0, P(st.pages_alloc)},
    {NULL, "pages_freed", "frees", DP_SF_U64, 8, 0, P(st.pages_freed)},
    {NULL, "provider_alloc_failures", "fails", DP_SF_U64, 5, 0,
     P(st.provider_alloc_failures)},
    {NULL, "gets", "gets", DP_SF_U64, 12, 0, P(st.gets)},
    {NULL, "puts", "puts", DP_SF_U64, 12, 0, P(st.puts)},
    {NULL, "gets_waited", "waited", DP_SF_U64, 7, 0, P(st.gets_waited)},
    {NULL, "gets_failed", "failed", DP_SF_U64, 6, 0, P(st.gets_failed)},
    {NULL, "waiting", "wait", DP_SF_U64, 4, 0, P(st.waiting)},
    {NULL, "put_provider_calls", NULL, DP_SF_U64, 0, 0,
     P(st.put_provider_calls)},
    {NULL, "reserve_objs", NULL, DP_SF_U64, 0, 0, P(st.reserve_objs)},
    {NULL, "max_pages", NULL, DP_SF_SIZE, 0, 0, P(st.max_pages)},
    {NULL, "lowat", NULL, DP_SF_SIZE, 0, 0, P(st.lowat)},
    {NULL, "hiwat", NULL, DP_SF_SIZE, 0, 0, P(st.hiwat)},
    {NULL, "reclaim_age_ns", NULL, DP_SF_U64, 0, 0, P(st.reclaim_age_ns)},
};
#undef P

#define U(x) ((unsigned long long)(x))

static void print_json(FILE *f, const struct dp_srow *rows, size_t n,
                       const dp_reclaim_info_t *ri)
{
    fprintf(f, "{\"deferpool\":{\"version\":\"%s\",\"pid\":%lld,\"program\":",
            dp_version(), (long long)getpid());
    dp_json_str(f, program_invocation_name ? program_invocation_name : "");
    fprintf(f,
            ",\"reclaim\":{\"running\":%s,\"passes\":%llu,"
            "\"pages_returned\":%llu,\"pages_filled\":%llu,"
            "\"interval_ns\":%llu},\"pools\":[",
            ri->running ? "true" : "false", U(ri->passes),
            U(ri->pages_returned), U(ri->pages_filled), U(ri->interval_ns));
    for (size_t i = 0; i < n; i++) {
        const dp_pool_stats_t *s = &rows[i].st;
        fputs(i ? ",{\"name\":" : "{\"name\":", f);
        dp_json_str(f, s->name);
        fputs(",\"provider\":", f);
        dp_json_str(f, rows[i].provider);
        dp_sf_json(f, pool_fields, DP_SF_COUNT(pool_fields), &rows[i], 0);
        fputc('}', f);
    }
    fputs("]}}\n", f);
}

static void print_text(FILE *f, const struct dp_srow *rows, size_t n,
                       const dp_reclaim_info_t *ri)
{
    fprintf(f, "deferpool %s: pid %lld, program ", dp_version(),
            (long long)getpid());
    text_str(f, program_invocation_name ? program_invocation_name : "", 0);
    fprintf(f,
            ", %zu pools; reclaim thread %s, %llu passes, %llu pages "
            "returned, %llu filled, interval %llu ms\n",
            n, ri->running ? "running" : "stopped", U(ri->passes),
            U(ri->pages_returned), U(ri->pages_filled),
            U(ri->interval_ns / 1000000));
    if (n == 0)
        return;
    fprintf(f, "%-20s %-8s", "pool", "provider");
    dp_sf_text_head(f, pool_fields, DP_SF_COUNT(pool_fields));
    for (size_t i = 0; i < n; i++) {
        text_str(f, rows[i].st.name, 20);
        fputc(' ', f);
        text_str(f, rows[i].provider, 8);
        dp_sf_text_row(f, pool_fields, DP_SF_COUNT(pool_fields), &rows[i]);
    }
}

int dp_stats_print(FILE *f, int flags)
{
    if (flags & ~DP_STATS_JSON) {
        errno = EINVAL;
        return -1;
    }
    if (!f)
        f = stderr;
    /* Count, allocate outside the registry lock, then read; pools created
     * in between are left out (cap), not overrun. */
    struct dp_scollect c = {NULL, 0, 0};
    c.cap = dp_registry_each(count_one, NULL) + 16;
    c.rows = calloc(c.cap, sizeof(*c.rows));
    if (!c.rows) {
        errno = ENOMEM;
        return -1;
    }
    dp_registry_each(collect_one, &c);
    dp_reclaim_info_t ri;
    dp_reclaim_info(&ri);
    if (flags & DP_STATS_JSON)
        print_json(f, c.rows, c.n, &ri);
    else
        print_text(f, c.rows, c.n, &ri);
    free(c.rows);
    if (fflush(f) != 0 || ferror(f)) {
        errno = EIO;
        return -1;
    }
    return (int)c.n;
}
