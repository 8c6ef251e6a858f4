/*
 * stats.c -- the drop-in malloc's statistics: dp_malloc_stats_get(), and
 * dp_malloc_stats_print() as text or JSON, also at exit (DEFERPOOL_CONF
 * stats_print).  Top layer (docs/design.md §1); docs/malloc.md.
 */
#include "malloc_internal.h"
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* stats_print: a private duplicate of stderr, taken by the constructor
 * or by mc_init when the constructor did not (start-up), read by the
 * destructor. */
static int mc_stats_fd = -1;

void mc_stats_keep_stderr(void)
{
    if (dp_options()->stats_print && mc_stats_fd < 0)
        mc_stats_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
}


int dp_malloc_stats_get(dp_malloc_stats_t *out)
{
    if (!out) {
        errno = EINVAL;
        return -1;
    }
    memset(out, 0, sizeof(*out));
    out->small_max = MC_SMALL_MAX;
    out->small_classes = MC_NCLASS;
    if (atomic_load_explicit(&mc_inited, memory_order_acquire)) {
        for (unsigned c = 0; c < MC_NCLASS; c++) {
            dp_pool_stats_t s;
            dp_pool_t *p = mc_class_pool_if(c);
            if (!p || dp_pool_stats(p, &s) != 0)
                continue;
            out->small_objs_inuse += s.objs_inuse;
            out->small_bytes_inuse += s.objs_inuse * s.objsize;
            out->small_objs_cached += s.objs_cached;
            out->small_pages += s.pages;
            out->small_pages_empty += s.pages_empty;
            out->small_bytes_mapped += s.pages * s.pagesize;
            out->small_pages_freed += s.pages_freed;
            out->put_provider_calls += s.put_provider_calls;
        }
    }
    /* Blocks on thread lists count as live in mc_bs: move them.  The
     * lists and the block counters in one snapshot: no drain of the
     * lists (to mc_lq) and no heap pass (mc_lq to the heap) in between,
     * which would count a block twice or not at all. */
    uint64_t tn[DP_TC_EXT], tpops, tl_n = 0, tl_bytes = 0;
    struct mc_bs_snap c;
    dp_tcache_ext_sum(tn, &tpops, heap_counters, &c);
    for (int i = 0; i < DP_TC_EXT; i++) {
        tl_n += tn[i];
        tl_bytes += tn[i] * tl_len(i);
    }
    out->large_inuse = c.live - tl_n;
    out->large_bytes_inuse = c.live_bytes - tl_bytes;
    out->large_queued = c.queued + tl_n;
    out->large_bytes_queued = c.queued_bytes + tl_bytes;
    out->large_cached = c.cached;
    out->large_bytes_cached = c.cached_bytes;
    out->large_trims = atomic_load_explicit(&mc_bs.splits, MC_RLX);
    out->large_bytes_trimmed = 0; /* a split's rest always goes to the heap */
    out->large_cache_max_bytes = MC_HEAP_MAX_BYTES;
    out->large_merges = atomic_load_explicit(&mc_bs.merges, MC_RLX);
    out->large_purges = atomic_load_explicit(&mc_bs.purges, MC_RLX);
    out->large_bytes_purged = atomic_load_explicit(&mc_bs.purged_bytes, MC_RLX);
    out->large_populates = atomic_load_explicit(&mc_bs.populates, MC_RLX);
    out->large_huge_chunks = atomic_load_explicit(&mc_bs.huge_chunks, MC_RLX);
    out->reclaim_age_ns = mc_age_ns;
    out->large_maps = atomic_load_explicit(&mc_bs.maps, MC_RLX);
    out->large_unmaps = atomic_load_explicit(&mc_bs.unmaps, MC_RLX);
    out->large_reused = atomic_load_explicit(&mc_bs.reused, MC_RLX) + tpops +
                        atomic_load(&mc_tl_pops_folded);
    out->bootstrap_bytes = boot_used();
    dp_reclaim_info_t ri;
    dp_reclaim_info(&ri);
    out->reclaim_running = ri.running;
    out->reclaim_passes = ri.passes;
    out->reclaim_pages_returned = ri.pages_returned;
    out->reclaim_interval_ns = ri.interval_ns;
    return 0;
}

/* The printers' snapshot: static, so no stack burst and no malloc;
 * under mc_snap_lock from mc_stats_snapshot() to mc_stats_release(). */
static pthread_mutex_t mc_snap_lock = PTHREAD_MUTEX_INITIALIZER;
static dp_malloc_stats_t mc_snap;
static dp_pool_stats_t mc_snap_cls[MC_NCLASS];

/* Gather first, print after (stdio may allocate): the totals and the
 * classes ever used, which stay valid, and locked, until
 * mc_stats_release().  Returns how many classes *cls holds. */
unsigned mc_stats_snapshot(const dp_malloc_stats_t **t,
                           const dp_pool_stats_t **cls)
{
    dp_malloc_stats_t now;
    dp_malloc_stats_get(&now);
    pthread_mutex_lock(&mc_snap_lock);
    mc_snap = now;
    unsigned nc = 0;
    if (atomic_load_explicit(&mc_inited, memory_order_acquire))
        for (unsigned c = 0; c < MC_NCLASS; c++) {
            dp_pool_t *p = mc_class_pool_if(c);
            if (p && dp_pool_stats(p, &mc_snap_cls[nc]) == 0 &&
                (mc_snap_cls[nc].gets || mc_snap_cls[nc].pages))
                nc++;
        }
    *t = &mc_snap;
    *cls = mc_snap_cls;
    return nc;
}

void mc_stats_release(void) { pthread_mutex_unlock(&mc_snap_lock); }

/* The fields of dp_malloc_stats_t, in JSON order, each named once: JSON
 * key, text label (NULL: JSON only), and where it is.  docs/malloc.md
 * explains each; include/deferpool-malloc.h says what each counts. */
static const struct dp_sf_section sec_small = {"small", "small"};
static const struct dp_sf_section sec_large = {"large", "large"};
static const struct dp_sf_section sec_reclaim = {"reclaim", "reclaim thread"};
#define M(field) offsetof(dp_malloc_stats_t, field)
static const struct dp_sfield malloc_fields[] = {
    {&sec_small, "max", "max", DP_SF_U64, 0, 0, M(small_max)},
    {&sec_small, "classes", "classes", DP_SF_U64, 0, 0, M(small_classes)},
    {&sec_small, "objs_inuse", "objects in use", DP_SF_U64, 0, 0,
     M(small_objs_inuse)},
    {&sec_small, "bytes_inuse", "bytes in use", DP_SF_U64, 0, 0,
     M(small_bytes_inuse)},
    {&sec_small, "objs_cached", "cached", DP_SF_U64, 0, 0,
     M(small_objs_cached)},
    {&sec_small, "pages", "pages", DP_SF_U64, 0, 0, M(small_pages)},
    {&sec_small, "pages_empty", "empty", DP_SF_U64, 0, 0,
     M(small_pages_empty)},
    {&sec_small, "bytes_mapped", "bytes mapped", DP_SF_U64, 0, 0,
     M(small_bytes_mapped)},
    {&sec_small, "pages_freed", "pages returned", DP_SF_U64, 0, 0,
     M(small_pages_freed)},
    {&sec_small, "put_provider_calls", "provider calls from free:",
     DP_SF_U64, 0, 0, M(put_provider_calls)},
    {&sec_large, "inuse", "in use", DP_SF_U64, 0, 0, M(large_inuse)},
    {&sec_large, "bytes_inuse", "bytes in use", DP_SF_U64, 0, 0,
     M(large_bytes_inuse)},
    {&sec_large, "queued", "queued", DP_SF_U64, 0, 0, M(large_queued)},
    {&sec_large, "bytes_queued", "bytes queued", DP_SF_U64, 0, 0,
     M(large_bytes_queued)},
    {&sec_large, "cached", "cached", DP_SF_U64, 0, 0, M(large_cached)},
    {&sec_large, "bytes_cached", "bytes cached", DP_SF_U64, 0, 0,
     M(large_bytes_cached)},
    {&sec_large, "cache_max_bytes", "limit", DP_SF_U64, 0, 0,
     M(large_cache_max_bytes)},
    {&sec_large, "maps", "mapped", DP_SF_U64, 0, 0, M(large_maps)},
    {&sec_large, "unmaps", "unmapped", DP_SF_U64, 0, 0, M(large_unmaps)},
    {&sec_large, "reused", "reused", DP_SF_U64, 0, 0, M(large_reused)},
    {&sec_large, "splits", "split", DP_SF_U64, 0, 0, M(large_trims)},
    {&sec_large, "bytes_trimmed", NULL, DP_SF_U64, 0, 0,
     M(large_bytes_trimmed)},
    {&sec_large, "merges", "merged", DP_SF_U64, 0, 0, M(large_merges)},
    {&sec_large, "purges", "purged", DP_SF_U64, 0, 0, M(large_purges)},
    {&sec_large, "bytes_purged", "bytes purged now", DP_SF_U64, 0, 0,
     M(large_bytes_purged)},
    {&sec_large, "populates", "populated", DP_SF_U64, 0, 0,
     M(large_populates)},
    {&sec_large, "huge_chunks", "huge chunks", DP_SF_U64, 0, 0,
     M(large_huge_chunks)},
    {NULL, "bootstrap_bytes", "bootstrap arena bytes", DP_SF_U64, 0, 0,
     M(bootstrap_bytes)},
    {&sec_reclaim, "running", "running", DP_SF_RUNNING, 0, 0,
     M(reclaim_running)},
    {&sec_reclaim, "passes", "passes", DP_SF_U64, 0, 0, M(reclaim_passes)},
    {&sec_reclaim, "pages_returned", "pages returned", DP_SF_U64, 0, 0,
     M(reclaim_pages_returned)},
    {&sec_reclaim, "interval_ns", "interval ms", DP_SF_U64, 0, 1000000,
     M(reclaim_interval_ns)},
    {&sec_reclaim, "age_ns", "age ms", DP_SF_U64, 0, 1000000,
     M(reclaim_age_ns)},
};
#undef M

/* A size class's fields, in JSON order; text columns. */
#define C(field) offsetof(dp_pool_stats_t, field)
static const struct dp_sfield class_fields[] = {
    {NULL, "size", "class", DP_SF_SIZE, 8, 0, C(objsize)},
    {NULL, "pagesize", "page", DP_SF_SIZE, 8, 0, C(pagesize)},
    {NULL, "objs_inuse", "in use", DP_SF_U64, 10, 0, C(objs_inuse)},
    {NULL, "objs_cached", "cached", DP_SF_U64, 8, 0, C(objs_cached)},
    {NULL, "pages", "pages", DP_SF_U64, 7, 0, C(pages)},
    {NULL, "pages_empty", "empty", DP_SF_U64, 6, 0, C(pages_empty)},
    {NULL, "pages_alloc", "allocd", DP_SF_U64, 9, 0, C(pages_alloc)},
    {NULL, "pages_freed", "freed", DP_SF_U64, 9, 0, C(pages_freed)},
    {NULL, "gets", "gets", DP_SF_U64, 12, 0, C(gets)},
};
#undef C

void dp_malloc_stats_print(FILE *f, int json)
{
    if (!f)
        f = stderr;
    const dp_malloc_stats_t *t;
    const dp_pool_stats_t *cls;
    unsigned nc = mc_stats_snapshot(&t, &cls);
    if (json) {
        fprintf(f, "{\"allocator\":\"deferpool-malloc\",\"version\":\"%s\","
                   "\"pid\":%lld,\"program\":",
                dp_version(), (long long)getpid());
        dp_json_str(f, program_invocation_name ? program_invocation_name : "");
        dp_sf_json(f, malloc_fields, DP_SF_COUNT(malloc_fields), t, 0);
        fputs(",\"classes\":[", f);
        for (unsigned i = 0; i < nc; i++) {
            fputs(i ? ",{" : "{", f);
            dp_sf_json(f, class_fields, DP_SF_COUNT(class_fields), &cls[i], 1);
            fputc('}', f);
        }
        fprintf(f, "]}\n");
    } else {
        fprintf(f, "deferpool-malloc %s statistics: pid %lld, program %s\n",
                dp_version(), (long long)getpid(),
                program_invocation_name ? program_invocation_name : "?");
        dp_sf_text_lines(f, malloc_fields, DP_SF_COUNT(malloc_fields), t);
        if (nc) {
            fputc(' ', f);
            dp_sf_text_head(f, class_fields, DP_SF_COUNT(class_fields));
        }
        for (unsigned i = 0; i < nc; i++) {
            fputc(' ', f);
            dp_sf_text_row(f, class_fields, DP_SF_COUNT(class_fields), &cls[i]);
        }
    }
    fflush(f);
    mc_stats_release();
}

/* stats_print:1 -- on a private duplicate of stderr taken at start-up:
 * programs such as coreutils close stderr in an atexit handler, which
 * runs before library destructors. */
void mc_stats_print_at_exit(void)
{
    FILE *f = mc_stats_fd >= 0 ? fdopen(mc_stats_fd, "w") : NULL;
    dp_malloc_stats_print(f ? f : stderr,
                          dp_options()->stats_print == DP_SP_JSON);
    if (f)
        fclose(f);
}
