/*
 * glibc.c -- the drop-in malloc's trims (dp_malloc_trim, malloc_trim)
 * and the rest of glibc's malloc extras: mallinfo, mallinfo2,
 * malloc_stats, malloc_info, mallopt.  Top layer (docs/design.md §1);
 * docs/malloc.md, "API".
 */
#include "malloc_internal.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define U(x) ((unsigned long long)(x))

size_t mc_trim(enum mc_heap_mode mode)
{
    size_t n = 0;
    if (atomic_load_explicit(&mc_inited, memory_order_acquire)) {
        dp_thread_cache_flush();
        dp_tcache_ext_drain(false);
    }
    n = heap_trim(mode);
    if (!atomic_load_explicit(&mc_inited, memory_order_acquire))
        return n;
    for (unsigned c = 0; c < MC_NCLASS; c++) {
        dp_pool_t *p = mc_class_pool_if(c);
        if (p)
            n += dp_pool_reclaim(p);
    }
    return n;
}

size_t dp_malloc_trim(void) { return mc_trim(HEAP_TRIM_ALL); }

int dp_malloc_reclaim_sync(void)
{
    if (atomic_load_explicit(&mc_inited, memory_order_acquire))
        mc_maybe_start(true); /* a program below MC_RT_START has none yet */
    return dp_reclaim_sync();
}

void dp_malloc_thread_flush(void)
{
    if (atomic_load_explicit(&mc_inited, memory_order_acquire))
        dp_thread_cache_flush();
}

/* What programs call, maybe often: free blocks smaller than a chunk are
 * purged, not unmapped, so that no trim cuts a hole into a mapping
 * (docs/malloc.md, "Purged, not unmapped"). */
MC_EXPORT int malloc_trim(size_t pad)
{
    (void)pad;
    return mc_trim(HEAP_TRIM) > 0;
}

MC_EXPORT struct mallinfo2 mallinfo2(void)
{
    dp_malloc_stats_t t;
    dp_malloc_stats_get(&t);
    struct mallinfo2 m;
    memset(&m, 0, sizeof(m));
    m.arena = t.small_bytes_mapped + t.large_bytes_inuse +
              t.large_bytes_queued + t.large_bytes_cached;
    m.ordblks = 1;
    m.hblks = t.large_inuse;
    m.hblkhd = t.large_bytes_inuse;
    m.uordblks = t.small_bytes_inuse + t.large_bytes_inuse;
    m.fordblks = m.arena > m.uordblks ? m.arena - m.uordblks : 0;
    /* Releasable: resident free blocks (purged ones are not). */
    m.keepcost = t.large_bytes_queued + t.large_bytes_cached -
                 t.large_bytes_purged;
    return m;
}

MC_EXPORT struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m;
    memset(&m, 0, sizeof(m));
#define CLAMP(x) ((x) > INT_MAX ? INT_MAX : (int)(x))
    m.arena = CLAMP(m2.arena);
    m.ordblks = CLAMP(m2.ordblks);
    m.hblks = CLAMP(m2.hblks);
    m.hblkhd = CLAMP(m2.hblkhd);
    m.uordblks = CLAMP(m2.uordblks);
    m.fordblks = CLAMP(m2.fordblks);
    m.keepcost = CLAMP(m2.keepcost);
#undef CLAMP
    return m;
}

MC_EXPORT void malloc_stats(void) { dp_malloc_stats_print(stderr, 0); }

/*
 * glibc's malloc_info() describes glibc's arenas, which hold nothing
 * here.  This one writes deferpool's own numbers as XML: the root names
 * the allocator, version and pid; one <size> per class in use; the large
 * heap; the reclaim thread; and the bytes mapped (docs/malloc.md,
 * "malloc_info").  options must be 0, as in glibc.
 */
MC_EXPORT int malloc_info(int options, FILE *fp)
{
    if (options != 0 || fp == NULL) {
        errno = EINVAL;
        return -1;
    }
    const dp_malloc_stats_t *tp;
    const dp_pool_stats_t *cls;
    unsigned nc = mc_stats_snapshot(&tp, &cls);
    const dp_malloc_stats_t t = *tp;
    fprintf(fp,
            "<malloc version=\"1\" allocator=\"deferpool-malloc\" "
            "deferpool=\"%s\" pid=\"%lld\">\n"
            "<small max=\"%llu\" classes=\"%llu\" inuse=\"%llu\" "
            "bytes-inuse=\"%llu\" cached=\"%llu\" pages=\"%llu\" "
            "pages-empty=\"%llu\" bytes-mapped=\"%llu\" "
            "pages-freed=\"%llu\" put-provider-calls=\"%llu\">\n<sizes>\n",
            dp_version(), (long long)getpid(), U(t.small_max),
            U(t.small_classes), U(t.small_objs_inuse),
            U(t.small_bytes_inuse), U(t.small_objs_cached), U(t.small_pages),
            U(t.small_pages_empty), U(t.small_bytes_mapped),
            U(t.small_pages_freed), U(t.put_provider_calls));
    for (unsigned i = 0; i < nc; i++) {
        const dp_pool_stats_t *c = &cls[i];
        fprintf(fp,
                "<size class=\"%zu\" page=\"%zu\" inuse=\"%llu\" "
                "cached=\"%llu\" pages=\"%llu\" pages-empty=\"%llu\" "
                "pages-alloc=\"%llu\" pages-freed=\"%llu\" gets=\"%llu\"/>\n",
                c->objsize, c->pagesize, U(c->objs_inuse), U(c->objs_cached),
                U(c->pages), U(c->pages_empty), U(c->pages_alloc),
                U(c->pages_freed), U(c->gets));
    }
    fprintf(fp,
            "</sizes>\n</small>\n"
            "<large inuse=\"%llu\" bytes-inuse=\"%llu\" queued=\"%llu\" "
            "bytes-queued=\"%llu\" cached=\"%llu\" bytes-cached=\"%llu\" "
            "bytes-purged=\"%llu\" maps=\"%llu\" unmaps=\"%llu\" "
            "reused=\"%llu\" merges=\"%llu\" purges=\"%llu\"/>\n"
            "<bootstrap bytes=\"%llu\"/>\n"
            "<reclaim running=\"%d\" passes=\"%llu\" pages-returned=\"%llu\" "
            "interval-ns=\"%llu\" age-ns=\"%llu\"/>\n"
            "<system type=\"mapped\" size=\"%llu\"/>\n"
            "</malloc>\n",
            U(t.large_inuse), U(t.large_bytes_inuse), U(t.large_queued),
            U(t.large_bytes_queued), U(t.large_cached),
            U(t.large_bytes_cached), U(t.large_bytes_purged), U(t.large_maps),
            U(t.large_unmaps), U(t.large_reused), U(t.large_merges),
            U(t.large_purges), U(t.bootstrap_bytes), t.reclaim_running,
            U(t.reclaim_passes), U(t.reclaim_pages_returned),
            U(t.reclaim_interval_ns), U(t.reclaim_age_ns),
            U(t.small_bytes_mapped + t.large_bytes_inuse +
              t.large_bytes_queued + t.large_bytes_cached));
    mc_stats_release();
    return ferror(fp) ? -1 : 0;
}

/* Every glibc parameter is accepted (1) and has no effect: the page-level
 * policy is set with DEFERPOOL_CONF.  Unknown parameters: 0. */
MC_EXPORT int mallopt(int param, int value)
{
    (void)value;
    switch (param) {
    case M_MXFAST:
    case M_TRIM_THRESHOLD:
    case M_TOP_PAD:
    case M_MMAP_THRESHOLD:
    case M_MMAP_MAX:
    case M_CHECK_ACTION:
    case M_PERTURB:
    case M_ARENA_TEST:
    case M_ARENA_MAX:
        return 1;
    default:
        return 0;
    }
}

