/*
 * deferpool-malloc.h -- extras of libdeferpool-malloc.so, the drop-in
 * malloc built on deferpool (docs/malloc.md).
 *
 * The library replaces the whole malloc family (malloc, free, calloc,
 * realloc, reallocarray, posix_memalign, aligned_alloc, memalign, valloc,
 * pvalloc, malloc_usable_size, free_sized, free_aligned_sized and the glibc
 * extras malloc_trim, mallinfo2, malloc_stats, malloc_info, mallopt), by
 * LD_PRELOAD or by linking with -ldeferpool-malloc (shared or static).
 * free() never blocks and never makes
 * a system call, for any size; free() and realloc() of a pointer the
 * library did not hand out, of an interior pointer or of a freed block
 * abort with a message naming it (docs/malloc.md, "Hardening").  This
 * header declares what the library
 * offers on top of that.  It carries its own private copy of the deferpool
 * core: its pools and reclaim thread are not those of libdeferpool.
 *
 * Conventions as in deferpool.h: Blocks / Errors per function; MT-Safe.
 */
#ifndef DEFERPOOL_MALLOC_H
#define DEFERPOOL_MALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DP_MALLOC_API __attribute__((visibility("default")))
#else
#define DP_MALLOC_API
#endif

/* ===================================================================== */
/* Statistics                                                            */
/* ===================================================================== */

/*
 * A snapshot of the allocator.  "small" is everything served by the
 * size-class pools (requests up to dp_malloc_stats_t.small_max bytes);
 * "large" (the field names keep the word for the ABI) is every other
 * block: medium ones cut from 2 MiB chunks, larger ones mapped one by
 * one, all split and merged at page granularity in a heap of free
 * blocks.  Each field is consistent on its own; the set is exact only
 * when no thread is allocating.  Fields are never removed or reordered:
 * new ones are added at the end.
 */
typedef struct dp_malloc_stats {
    uint64_t small_max;          /* largest size served by a pool        */
    uint64_t small_classes;      /* number of size classes               */
    uint64_t small_objs_inuse;   /* objects handed out, not freed        */
    uint64_t small_bytes_inuse;  /* the same, in class-size bytes        */
    uint64_t small_objs_cached;  /* free objects in thread caches        */
    uint64_t small_pages;        /* pages held by the pools              */
    uint64_t small_pages_empty;  /* of which empty, queued for return    */
    uint64_t small_bytes_mapped; /* bytes of those pages                 */
    uint64_t small_pages_freed;  /* pages given back to the kernel, ever */
    uint64_t large_inuse;        /* blocks allocated, not freed          */
    uint64_t large_bytes_inuse;  /* their mapped bytes                   */
    uint64_t large_queued;       /* freed, not yet moved into the heap
                                    (queued, or on a thread list)        */
    uint64_t large_bytes_queued; /* their mapped bytes                   */
    uint64_t large_maps;         /* mappings made (chunks and blocks of
                                    their own), ever                     */
    uint64_t large_unmaps;       /* blocks unmapped, ever                */
    uint64_t large_reused;       /* free blocks handed out again (from
                                    the heap or a thread list), ever     */
    uint64_t bootstrap_bytes;    /* static arena used for allocations
                                    made before start-up or from inside
                                    the allocator (never reused)         */
    uint64_t put_provider_calls; /* provider calls made from a free():
                                    always 0, measured                   */
    int reclaim_running;         /* the reclaim thread is alive          */
    uint64_t reclaim_passes;     /* passes it has completed              */
    uint64_t reclaim_pages_returned; /* by passes, incl. large blocks
                                        unmapped or purged              */
    uint64_t reclaim_interval_ns;
    uint64_t large_cached;       /* free blocks in the heap              */
    uint64_t large_bytes_cached; /* their mapped bytes                   */
    uint64_t large_cache_max_bytes; /* retention limit of the heap: dirty
                                    bytes past it are returned at once  */
    uint64_t large_trims;        /* splits, ever: a block cut in two when
                                    a reuse or a new chunk needed less,
                                    when an alignment skipped its first
                                    pages, or when a medium block shrank
                                    (the rest went to the heap); printed
                                    as "splits"                          */
    uint64_t large_bytes_trimmed; /* always 0: a split's rest always
                                    goes to the heap; kept for the ABI   */
    uint64_t reclaim_age_ns;     /* age after which empty pages and
                                    cached blocks go back                */
    uint64_t large_merges;       /* free blocks merged with a neighbour
                                    in the heap, ever                    */
    uint64_t large_purges;       /* due free blocks purged (MADV_DONTNEED
                                    of all pages but the header's) and
                                    kept, ever                           */
    uint64_t large_bytes_purged; /* of large_bytes_cached: blocks whose
                                    pages but the first are not resident
                                    (purged, or never touched)           */
    uint64_t large_populates;    /* new blocks whose pages were faulted
                                    in by one madvise, ever
                                    (docs/malloc.md, "Populated blocks") */
    uint64_t large_huge_chunks;  /* chunks mapped to be backed by a huge
                                    page, ever (docs/malloc.md, "Huge
                                    chunks")                             */
    uint64_t reserved[6];        /* zeroed; later fields come from here,
                                    so the size never changes (ABI:
                                    docs/api.md, "Compatibility")        */
} dp_malloc_stats_t;

/* Fill *out.  0, or -1 + EINVAL for NULL.  Blocks: briefly (pool locks,
 * the thread-cache lock, the heap lock).  Does not allocate. */
DP_MALLOC_API int dp_malloc_stats_get(dp_malloc_stats_t *out);

/* Print the statistics, with one line (or JSON object) per size class in
 * use, to f (NULL: stderr).  json non-zero: one JSON object.  Blocks:
 * briefly (pool locks), plus whatever stdio does with f.  Also printed at
 * exit with DEFERPOOL_CONF=stats_print:1. */
DP_MALLOC_API void dp_malloc_stats_print(FILE *f, int json);

/* ===================================================================== */
/* Reclaim control                                                       */
/* ===================================================================== */

/*
 * Give back everything that can go now, regardless of age: queued and
 * free medium and large blocks, the calling thread's cached objects, the
 * medium blocks on every thread's lists (of threads not inside an
 * allocator call at that moment) and every empty page.  Every free block
 * is unmapped, address space too, which may cut holes into mappings --
 * but in a huge chunk partly in use, whose free blocks are purged
 * (MADV_DONTNEED), since a huge chunk goes back only whole
 * (docs/malloc.md, "Huge chunks").  malloc_trim() does the same but
 * purges the free blocks smaller than a chunk everywhere, as ageing does.
 * What it promises: when it returns, none of those blocks is left queued
 * or in the heap of free blocks, but purged ones of huge chunks.  A block
 * that a reclaim pass or another thread's allocation is purging at that
 * moment is out of the heap, where the trim cannot take it; that purge
 * unmaps it when it ends instead of putting it back (purges it, in a huge
 * chunk).  Blocks freed during the call, and those on the lists of a
 * thread inside an allocator call, may stay.
 * Returns the number of pages and blocks returned.  Blocks:
 * yes (munmap, locks).
 */
DP_MALLOC_API size_t dp_malloc_trim(void);

/*
 * Hand the calling thread's cached small objects back to their pages and
 * its listed medium blocks back to the shared heap (where they merge with
 * their free neighbours and serve any size), without returning anything
 * to the kernel.  Blocks: no (lock-free, no system call).  A thread about
 * to idle for long can call it; the reclaim thread does the same for
 * threads it finds idle.
 */
DP_MALLOC_API void dp_malloc_thread_flush(void);

/*
 * Wait until the malloc's reclaim thread has completed a whole pass that
 * began after this call.  The thread starts lazily, once the malloc has
 * mapped 4 MiB; this call starts it if it has not started yet.  0, or
 * -1 + ESRCH when there is no thread (background_thread:0).  Blocks:
 * yes.  For tests and tools: a program never needs it.
 */
DP_MALLOC_API int dp_malloc_reclaim_sync(void);

#ifdef __cplusplus
}
#endif
#endif /* DEFERPOOL_MALLOC_H */
