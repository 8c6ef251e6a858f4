/*
 * stats.c -- the drop-in malloc's statistics: dp_malloc_stats_get(), and
 * dp_malloc_stats_print() as text or JSON, also at exit (DEFERPOOL_CONF
 * stats_print).  Top layer (docs/design.md §1); docs/malloc.md.
 */
#include "malloc_internal.h"

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
            if (dp_pool_stats(mc_pool[c], &s) != 0)
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
    /* Blocks on thread lists count as live in mc_bs: move them. */
    uint64_t tn[DP_TC_EXT], tpops, tl_n = 0, tl_bytes = 0;
    dp_tcache_ext_sum(tn, &tpops);
    for (int i = 0; i < DP_TC_EXT; i++) {
        tl_n += tn[i];
        tl_bytes += tn[i] * (MC_TL_MINPG + (uint64_t)i) * MC_SYSPAGE;
    }
    out->large_inuse = atomic_load_explicit(&mc_bs.live, MC_RLX) - tl_n;
    out->large_bytes_inuse =
        atomic_load_explicit(&mc_bs.live_bytes, MC_RLX) - tl_bytes;
    out->large_queued = atomic_load_explicit(&mc_bs.queued, MC_RLX) + tl_n;
    out->large_bytes_queued =
        atomic_load_explicit(&mc_bs.queued_bytes, MC_RLX) + tl_bytes;
    out->large_cached = atomic_load_explicit(&mc_bs.cached, MC_RLX);
    out->large_bytes_cached = atomic_load_explicit(&mc_bs.cached_bytes, MC_RLX);
    out->large_trims = atomic_load_explicit(&mc_bs.splits, MC_RLX);
    out->large_bytes_trimmed = 0; /* rests are always cached now */
    out->large_cache_max_bytes = MC_HEAP_MAX_BYTES;
    out->large_merges = atomic_load_explicit(&mc_bs.merges, MC_RLX);
    out->large_purges = atomic_load_explicit(&mc_bs.purges, MC_RLX);
    out->large_bytes_purged = atomic_load_explicit(&mc_bs.purged_bytes, MC_RLX);
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

#define U(x) ((unsigned long long)(x))

/* The program's name as a JSON string (quotes, backslashes and control
 * bytes escaped), so that output from several processes can be told
 * apart. */
static void json_program(FILE *f)
{
    const char *s = program_invocation_name ? program_invocation_name : "";
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

void dp_malloc_stats_print(FILE *f, int json)
{
    if (!f)
        f = stderr;
    /* Gather first, print after: stdio may allocate. */
    dp_malloc_stats_t t;
    dp_malloc_stats_get(&t);
    static dp_pool_stats_t cls[MC_NCLASS]; /* no stack burst, no malloc */
    static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&print_lock);
    unsigned nc = 0;
    if (atomic_load_explicit(&mc_inited, memory_order_acquire))
        for (unsigned c = 0; c < MC_NCLASS; c++)
            if (dp_pool_stats(mc_pool[c], &cls[nc]) == 0 &&
                (cls[nc].gets || cls[nc].pages))
                nc++;
    if (json) {
        fprintf(f, "{\"allocator\":\"deferpool-malloc\",\"version\":\"%s\","
                   "\"pid\":%lld,\"program\":",
                dp_version(), (long long)getpid());
        json_program(f);
        fprintf(f,
                ","
                "\"small\":{\"max\":%llu,\"classes\":%llu,\"objs_inuse\":%llu,"
                "\"bytes_inuse\":%llu,\"objs_cached\":%llu,\"pages\":%llu,"
                "\"pages_empty\":%llu,\"bytes_mapped\":%llu,"
                "\"pages_freed\":%llu,\"put_provider_calls\":%llu},",
                U(t.small_max), U(t.small_classes),
                U(t.small_objs_inuse), U(t.small_bytes_inuse),
                U(t.small_objs_cached), U(t.small_pages),
                U(t.small_pages_empty), U(t.small_bytes_mapped),
                U(t.small_pages_freed), U(t.put_provider_calls));
        fprintf(f,
                "\"large\":{\"inuse\":%llu,\"bytes_inuse\":%llu,\"queued\":%llu,"
                "\"bytes_queued\":%llu,\"cached\":%llu,\"bytes_cached\":%llu,"
                "\"cache_max_bytes\":%llu,\"maps\":%llu,\"unmaps\":%llu,"
                "\"reused\":%llu,\"splits\":%llu,\"bytes_trimmed\":%llu,"
                "\"merges\":%llu,\"purges\":%llu,\"bytes_purged\":%llu},"
                "\"bootstrap_bytes\":%llu,",
                U(t.large_inuse), U(t.large_bytes_inuse), U(t.large_queued),
                U(t.large_bytes_queued), U(t.large_cached),
                U(t.large_bytes_cached), U(t.large_cache_max_bytes),
                U(t.large_maps), U(t.large_unmaps), U(t.large_reused),
                U(t.large_trims), U(t.large_bytes_trimmed),
                U(t.large_merges), U(t.large_purges), U(t.large_bytes_purged),
                U(t.bootstrap_bytes));
        fprintf(f,
                "\"reclaim\":{\"running\":%d,\"passes\":%llu,"
                "\"pages_returned\":%llu,\"interval_ns\":%llu,"
                "\"age_ns\":%llu},\"classes\":[",
                t.reclaim_running, U(t.reclaim_passes),
                U(t.reclaim_pages_returned), U(t.reclaim_interval_ns),
                U(t.reclaim_age_ns));
        for (unsigned i = 0; i < nc; i++) {
            const dp_pool_stats_t *s = &cls[i];
            fprintf(f,
                    "%s{\"size\":%zu,\"pagesize\":%zu,\"objs_inuse\":%llu,"
                    "\"objs_cached\":%llu,\"pages\":%llu,\"pages_empty\":%llu,"
                    "\"pages_alloc\":%llu,\"pages_freed\":%llu,\"gets\":%llu}",
                    i ? "," : "", s->objsize, s->pagesize, U(s->objs_inuse),
                    U(s->objs_cached), U(s->pages), U(s->pages_empty),
                    U(s->pages_alloc), U(s->pages_freed), U(s->gets));
        }
        fprintf(f, "]}\n");
    } else {
        fprintf(f,
                "deferpool-malloc %s statistics: pid %lld, program %s\n"
                "  small (<= %llu bytes, %llu classes): %llu objects in use "
                "(%llu bytes), %llu cached\n"
                "    pages: %llu held (%llu bytes), %llu empty, %llu returned; "
                "provider calls from free: %llu\n"
                "  large: %llu in use (%llu bytes), %llu queued (%llu bytes), "
                "%llu cached (%llu bytes, limit %llu)\n"
                "    %llu mapped, %llu unmapped, %llu reused, "
                "%llu split, %llu merged, %llu purged (%llu bytes purged "
                "now)\n"
                "  bootstrap arena: %llu bytes\n"
                "  reclaim thread: %s, %llu passes, %llu pages returned, "
                "interval %llu ms, age %llu ms\n",
                dp_version(), (long long)getpid(),
                program_invocation_name ? program_invocation_name : "?",
                U(t.small_max), U(t.small_classes),
                U(t.small_objs_inuse), U(t.small_bytes_inuse),
                U(t.small_objs_cached), U(t.small_pages),
                U(t.small_bytes_mapped), U(t.small_pages_empty),
                U(t.small_pages_freed), U(t.put_provider_calls),
                U(t.large_inuse), U(t.large_bytes_inuse), U(t.large_queued),
                U(t.large_bytes_queued), U(t.large_cached),
                U(t.large_bytes_cached), U(t.large_cache_max_bytes),
                U(t.large_maps), U(t.large_unmaps), U(t.large_reused),
                U(t.large_trims), U(t.large_merges), U(t.large_purges),
                U(t.large_bytes_purged), U(t.bootstrap_bytes),
                t.reclaim_running ? "running" : "stopped", U(t.reclaim_passes),
                U(t.reclaim_pages_returned), U(t.reclaim_interval_ns / 1000000),
                U(t.reclaim_age_ns / 1000000));
        if (nc)
            fprintf(f, "  %8s %8s %10s %8s %7s %6s %9s %9s %12s\n", "class",
                    "page", "in use", "cached", "pages", "empty", "allocd",
                    "freed", "gets");
        for (unsigned i = 0; i < nc; i++) {
            const dp_pool_stats_t *s = &cls[i];
            fprintf(f, "  %8zu %8zu %10llu %8llu %7llu %6llu %9llu %9llu %12llu\n",
                    s->objsize, s->pagesize, U(s->objs_inuse),
                    U(s->objs_cached), U(s->pages), U(s->pages_empty),
                    U(s->pages_alloc), U(s->pages_freed), U(s->gets));
        }
    }
    fflush(f);
    pthread_mutex_unlock(&print_lock);
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
