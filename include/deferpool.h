/*
 * deferpool.h -- object pools whose put never blocks.
 *
 * deferpool is a slab/object-pool allocator.  Its one promise: dp_pool_put()
 * never sleeps, never waits on a lock, never makes a system call and never
 * calls the page provider.  Pages that become empty are queued; they go back
 * to the provider only from a DP_WAITOK get, an explicit reclaim call or the
 * background reclaim thread.  See docs/design.md for the theory of operation
 * and docs/api.md for the reference.
 *
 * Conventions used in every comment below:
 *   Blocks:    whether the call may sleep (wait on a lock held across other
 *              work, wait for memory, or wait inside the provider).
 *   Provider:  which provider callbacks the call may invoke.
 *   Errors:    the failure return and errno.
 *   MT-Safe unless stated otherwise.
 */
#ifndef DEFERPOOL_H
#define DEFERPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

/* Strict C99's <time.h> need not declare struct timespec (C11 and POSIX
 * do); declared here, dp_pool_get_timed()'s parameter names the one
 * file-scope type in every language mode. */
struct timespec;

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DP_API __attribute__((visibility("default")))
#else
#define DP_API
#endif

/* ===================================================================== */
/* Version                                                               */
/* ===================================================================== */

/* DP_VERSION_MAJOR, DP_VERSION_MINOR, DP_VERSION_PATCH: the version of
 * this header, generated from the project version in meson.build. */
#include "deferpool_version.h"

/* "MAJOR.MINOR.PATCH" of the library actually linked. */
DP_API const char *dp_version(void);

/* ===================================================================== */
/* Flags                                                                 */
/* ===================================================================== */

/* Get flags: exactly one of DP_WAITOK / DP_NOWAIT, optionally DP_ZERO. */
#define DP_WAITOK 0x1 /* may sleep for memory; may return queued pages   */
#define DP_NOWAIT 0x2 /* never sleeps, never calls the provider's free   */
#define DP_ZERO   0x4 /* zero the object (not allowed with a constructor) */

/* ===================================================================== */
/* Page-provider interface                                               */
/* ===================================================================== */

/*
 * A page provider is where a pool gets its pages ("slabs") from, the
 * user-space stand-in for UVM/kmem.  Contract:
 *
 *  alloc(ctx, size, align, flags)
 *      Return `size` bytes aligned to `align`.  Both are powers of two,
 *      align == size (the pool finds a page from an object address by
 *      masking), size >= 4096.  The memory need not be zeroed.
 *      `flags` is DP_WAITOK or DP_NOWAIT: alloc may sleep only when it is
 *      DP_WAITOK.  Failure: return NULL (errno is not inspected).  A
 *      DP_WAITOK caller treats a failure as "try again later": it waits
 *      for a put or a reclaim, then retries.  A page that is not aligned
 *      to `align` is a provider bug: the process aborts with a message
 *      naming the pool, the provider and the address.
 *  free(ctx, page, size)
 *      Give back a page obtained from alloc with the same size.  May
 *      sleep.  Is only ever called from a DP_WAITOK get, an explicit
 *      reclaim/prime/destroy, or the reclaim thread, never from a put.
 *      Cannot fail.
 *
 *  Both callbacks are called with no pool lock held, from any thread,
 *  possibly concurrently: they must be thread-safe.  They may themselves
 *  get and put objects from *other* deferpool pools (the UVM map-entry
 *  situation).  The pool being served follows the rule for callbacks
 *  under dp_pool_get(): a get from it that would need a page or a wait
 *  fails with EDEADLK.
 */
typedef struct dp_provider {
    void *(*alloc)(void *ctx, size_t size, size_t align, int flags);
    void (*free)(void *ctx, void *page, size_t size);
    void *ctx;
    const char *name; /* for statistics and messages; may be NULL */
} dp_provider_t;

/* The default provider: anonymous mmap, aligned by over-mapping and
 * trimming; pages smaller than 2 MiB kept off transparent huge pages per
 * the thp option of DEFERPOOL_CONF (docs/tuning.md); free is munmap.
 * Thread-safe, ctx unused. */
DP_API const dp_provider_t *dp_provider_mmap(void);

/* ===================================================================== */
/* Pool life cycle                                                       */
/* ===================================================================== */

typedef struct dp_pool dp_pool_t; /* opaque */

/* Pool flags (dp_pool_attr_t.flags). */
#define DP_POOL_DEBUG     0x1 /* debug mode's default set: validate every
                                 put (foreign, interior and double puts
                                 abort with a message naming the pool and
                                 the pointer), plus DP_POOL_REDZONE and
                                 DP_POOL_JUNK; no thread cache.  Also set
                                 for every pool by DEFERPOOL_CONF "debug:1"
                                 or the meson option debug_checks
                                 (docs/api.md, "Debug mode") */
#define DP_POOL_NOTHREAD  0x2 /* do not auto-start the reclaim thread when
                                 this pool is created */
#define DP_POOL_NOCACHE   0x4 /* no per-thread caches: every put goes
                                 straight to its page (debug pools never
                                 use caches); a put of a pointer outside
                                 the pool's pages aborts with a message */
/* Finer debug flags; each implies DP_POOL_DEBUG's put validation. */
#define DP_POOL_REDZONE  0x10 /* canaries before and after each object,
                                 checked at put, at get and by
                                 dp_pool_check() */
#define DP_POOL_JUNK     0x20 /* DP_DEBUG_FREE_PATTERN written over an
                                 object at put and verified when it is
                                 handed out again (a write after put
                                 aborts), DP_DEBUG_UNINIT_PATTERN written
                                 at get; ignored for pools with a ctor */
#define DP_POOL_AUDIT    0x40 /* record the stacks (backtrace()) of each
                                 object's last get and put: printed with
                                 every debug report and grouped in the
                                 leak report */
/* The bytes of a junked object: the 32-bit word, little-endian, at every
 * 4-byte aligned address. */
#define DP_DEBUG_FREE_PATTERN   0xdeadbeefu /* free (put, or never out) */
#define DP_DEBUG_UNINIT_PATTERN 0xbaddcafeu /* got, not yet written    */

/*
 * Pool attributes.  Always initialise with dp_pool_attr_init() and then set
 * the fields you care about; fields added in later versions come from the
 * reserved space and default to zero = "library default".  The structs the
 * library fills (dp_pool_stats_t, dp_reclaim_info_t, dp_mock_counters_t)
 * grow the same way: their size never changes between versions with the
 * same soname (docs/api.md, "Compatibility").
 */
typedef struct dp_pool_attr {
    size_t align;    /* object alignment, power of two; 0: 8 for objects
                        smaller than 16 bytes, else 16                   */
    size_t pagesize; /* page (slab) size, power of two in [4096,
                        DP_PAGESIZE_MAX]; 0: the smallest power of two
                        >= 64 KiB that holds >= 8 objects (>= 1 object
                        past 1 MiB)                                     */
    /* Bonwick-style object caching: ctor runs once per object when its
     * page is obtained from the provider (outside any pool lock, with the
     * get's flags); the object stays constructed while it sits in the
     * pool, and dtor runs when its page is returned.  ctor returns 0 on
     * success, non-zero on failure (the page is then abandoned; a
     * DP_NOWAIT get fails, a DP_WAITOK get tries another page, at most
     * DP_CTOR_TRIES pages in a row).  Either may be NULL.  Both may put
     * objects of any pool; gets from their own pool: see dp_pool_get(). */
    int (*ctor)(void *obj, void *arg, int flags);
    void (*dtor)(void *obj, void *arg);
    void *cbarg;
    const dp_provider_t *provider; /* NULL: dp_provider_mmap(); copied */
    size_t max_pages; /* hard limit on pages held; 0: unlimited         */
    size_t lowat;     /* empty pages kept ready (never aged out; the
                         reclaim thread refills up to it); 0: none      */
    size_t hiwat;     /* empty pages above which reclaim is urged: pages
                         past it are returned at the next reclaim pass or
                         DP_WAITOK get without waiting for age; 0: every
                         empty page beyond lowat (and the prime
                         reserve) is urgent, whatever lowat is          */
    uint64_t reclaim_age_ns; /* an empty page unused this long is returned
                                (beyond lowat); 0: library default       */
    unsigned reclaim_budget; /* pages one DP_WAITOK get may hand back; 0:
                                default 4                                */
    unsigned flags;          /* DP_POOL_*                                */
    /* Time source for the reclaim policy, in nanoseconds.  NULL:
     * CLOCK_MONOTONIC_COARSE (ages are in milliseconds; it is the cheap
     * one).  Tests pass dp_mock_clock() to drive ageing by
     * hand.  Called with the pool lock held; must not block. */
    uint64_t (*clock)(void *arg);
    void *clock_arg;
    uint64_t reserved[8];
} dp_pool_attr_t;

/* Library defaults used by dp_pool_attr_init(). */
#define DP_DEFAULT_LOWAT 1
#define DP_DEFAULT_HIWAT 1024 /* a bound on deferral; age does the rest */
#define DP_DEFAULT_RECLAIM_AGE_NS 1000000000ull /* 1 s */
#define DP_DEFAULT_RECLAIM_BUDGET 4
/* A get gives up (NULL + ENOMEM) after this many pages in a row whose
 * constructor failed. */
#define DP_CTOR_TRIES 4
#define DP_PAGESIZE_DEFAULT_MIN ((size_t)1 << 16)
#define DP_PAGESIZE_MAX ((size_t)1 << 24)

/* Fill *attr with the defaults above.  Never fails.  No locks. */
DP_API void dp_pool_attr_init(dp_pool_attr_t *attr);

/*
 * Create a pool of objects of `objsize` bytes.  attr NULL: defaults.
 * `name` (may be NULL) is copied, truncated to 31 bytes.
 * Blocks: briefly (registry lock).  Provider: none (pages come lazily).
 * Starts the reclaim thread unless disabled (DP_POOL_NOTHREAD, or
 * DEFERPOOL_CONF "background_thread:0").
 * Errors: NULL + EINVAL for objsize 0, an object too large for the page,
 * an alignment or page size that is not a power of two, lowat > hiwat
 * (hiwat not 0), lowat > max_pages, or unknown flags; NULL + ENOMEM if the pool
 * structure cannot be allocated.
 */
DP_API dp_pool_t *dp_pool_create(const char *name, size_t objsize,
                                 const dp_pool_attr_t *attr);

/*
 * Return every page to the provider (running dtors) and free the pool.
 * Returns 0, or -1 with errno: EBUSY (objects still out: the pool is left
 * intact and usable, and a message goes to stderr; a DP_POOL_DEBUG pool
 * aborts instead), EINVAL (pool NULL).
 * Blocks: yes (provider free; waits for a reclaim pass touching the pool).
 * Puts may race it: an object whose put has not yet brought it back to
 * its page (or a thread cache) counts as out; once every object is back,
 * destroy succeeds even while the put of the last one is still returning
 * (pool memory is recycled for later pools, never unmapped).  A put
 * after a successful destroy is undefined.  No other call on the pool
 * may race it.
 */
DP_API int dp_pool_destroy(dp_pool_t *pool);

/* ===================================================================== */
/* Get and put                                                           */
/* ===================================================================== */

/*
 * Get one object.  Order of service: partially used pages, then queued
 * empty pages (newest first), then a new page from the provider.
 * DP_NOWAIT: never sleeps, never calls the provider's free (may call its
 *   alloc with DP_NOWAIT).  NULL + ENOMEM when nothing is available
 *   without waiting.  May briefly contend for the pool lock, which is
 *   never held across a provider call or a callback.
 * DP_WAITOK: never fails for lack of memory: at the hard limit, or when
 *   the provider fails, it sleeps until a put or a reclaim makes room.
 *   It fails (NULL + ENOMEM) only when the constructor failed on
 *   DP_CTOR_TRIES new pages in a row, sleeping 10 ms between tries.
 *   A get that reaches the pool (one the thread cache cannot serve) then
 *   hands at most reclaim_budget due empty pages back to the provider
 *   (outside the pool lock); a get served from the cache touches no page.
 * Callbacks: on a thread running one of the pool's own callbacks (its
 *   ctor or dtor, its provider's alloc or free), a get from that pool
 *   takes a free object if there is one; one that would need a new page
 *   (whose construction would run the callback again) or a wait (for
 *   room this thread holds) fails at once with NULL + EDEADLK.
 * Thread cache: the calling thread's first get that misses creates its
 *   cache (the cache lock, pthread_setspecific and, unless an exited
 *   thread left a spare cache, one mmap and a madvise); a DP_NOWAIT get
 *   does so only if the cache lock is free at once, and otherwise goes
 *   to the pages this time.  A get that misses also makes a cache ready,
 *   at the same cost, for a thread that only puts and asked for one.
 * Not async-signal-safe: a get that misses the thread cache takes the
 *   pool lock (a mutex), and may take the thread-cache lock; a get from a
 *   signal handler that interrupted a deferpool call holding one of them
 *   on the same thread (a get, prime, reclaim, stats or destroy of that
 *   pool, say) deadlocks.  Put from signal handlers, never get.
 * Errors: NULL + EINVAL for a NULL pool or bad flags (neither or both of
 * WAITOK/NOWAIT, unknown bits, DP_ZERO on a pool with a constructor);
 * NULL + ENOMEM as above; NULL + EDEADLK inside the pool's own callback.
 */
DP_API void *dp_pool_get(dp_pool_t *pool, int flags);

/*
 * As dp_pool_get(), but a DP_WAITOK wait ends at `deadline`, an absolute
 * CLOCK_MONOTONIC time: then NULL + ETIMEDOUT.  deadline NULL, or later
 * than 2^64 ns (the year 2554): no bound.  NULL + EINVAL for a negative
 * tv_sec or a tv_nsec outside [0, 1e9).  Ignored (not even checked) for
 * DP_NOWAIT.  A deadline already passed still gets an object if one is
 * available without sleeping.
 */
DP_API void *dp_pool_get_timed(dp_pool_t *pool, int flags,
                               const struct timespec *deadline);

/*
 * Return an object to its pool.  Lock-free; no system call, no provider
 * call, never sleeps; callable from any thread, including one that never
 * used the pool, and from signal handlers.  A page that becomes empty is
 * queued for the next get/reclaim to deal with.
 * The one exception: when a getter is already asleep on this pool waiting
 * for memory, the put that makes room wakes it with a FUTEX_WAKE system
 * call, which never blocks.
 * It writes only memory already faulted in (the object, and what a get's
 * slow path of this thread faulted in), except for a thread's first puts
 * to a pool it never got from (docs/design.md §9).
 * A thread without a cache adopts, at a put, the one a get's slow path or
 * the reclaim thread made ready for it (an atomic exchange and
 * pthread_setspecific: no lock, no system call); until then its puts go
 * to the pages.
 * obj NULL: no-op.  pool NULL: errno EINVAL, nothing else.
 * A foreign pointer or a double put is undefined behaviour, except on a
 * DP_POOL_DEBUG pool, where it aborts with a message naming the pool, and
 * in an AddressSanitizer build of the library, where a double put does
 * (docs/api.md, "Using deferpool with ASan and Valgrind").
 */
DP_API void dp_pool_put(dp_pool_t *pool, void *obj);

/*
 * Per-thread caches.  A pool keeps, per thread, a small stack of free
 * objects in front of its pages, so a get and a put on the same thread
 * touch no shared cache line.  Objects put by a thread go to *its* cache,
 * whichever thread got them.  A thread's caches are flushed when it
 * exits, drained by the reclaim thread once the thread has been idle for
 * a whole pass, by dp_pool_reclaim(), by dp_pool_destroy() and by a
 * getter about to sleep.  A thread's cache is created by its first get
 * that misses (a DP_NOWAIT get only if the cache lock is free at once),
 * never by a put: a thread that only puts adopts one made ready for it
 * (dp_pool_put).  At most
 * 256 pools have caches at a time; later ones run uncached until a cached
 * pool is destroyed.  An exited thread's emptied cache is kept (up to 16)
 * for the next thread to start, so a thread's first get maps nothing
 * once others have ended.  Requires membarrier(2) (Linux >= 4.14); without it
 * pools run uncached.
 *
 * Objects a thread's cache overflows with go to its pool's depot, whole
 * magazines any thread's cache may take; the reclaim thread returns
 * what stayed unused there for the pool's reclaim age to the pages, and
 * the pages that empties to the provider in the same pass.
 *
 * dp_thread_cache_flush: return the calling thread's cached objects of
 * every pool to their pages now, and the depots of those pools.
 * Lock-free, no system call, no provider call: safe wherever a put is.
 */
DP_API void dp_thread_cache_flush(void);

/* ===================================================================== */
/* Reclaim control                                                       */
/* ===================================================================== */

/*
 * Return the pool's queued empty pages to the provider now, regardless of
 * age, keeping lowat (and the primed reserve).  Returns the number of
 * pages returned.  Blocks: yes (provider free, outside the pool lock).
 * pool NULL: 0 + EINVAL.
 */
DP_API size_t dp_pool_reclaim(dp_pool_t *pool);

/*
 * Make at least `nobjs` objects available to DP_NOWAIT gets, allocating
 * pages now (DP_WAITOK provider calls), and keep pages enough for them out
 * of reach of the ageing policy from now on (the reserve only grows).
 * The request is checked before any provider call: the pages `nobjs`
 * objects need must fit under max_pages and in the machine's physical
 * memory (sysconf _SC_PHYS_PAGES).  A prime that fails leaves the pool as
 * it was: the reserve unchanged, and as many empty pages given back as it
 * obtained.
 * Returns 0, or -1 with errno: EINVAL (NULL pool), ENOMEM (the hard limit
 * or the machine cannot hold that many objects, the provider failed, or
 * the ctor did), EDEADLK (called from the pool's own callback, and it
 * needed a page).
 * Blocks: yes.  The guarantee holds against this thread's own gets; other
 * threads may of course take objects in between.
 */
DP_API int dp_pool_prime(dp_pool_t *pool, size_t nobjs);

/*
 * The reclaim thread.  One per process, started with the first pool
 * (unless disabled) or by dp_reclaim_start().  Each pass it: queues and
 * classifies pages emptied by puts, returns pages past hiwat, returns
 * pages older than reclaim_age_ns beyond lowat, and refills each pool up
 * to lowat.  It sleeps `interval` between passes and is woken early by a
 * getter that has to wait and when a pool passes hiwat.  Fork: if it was
 * running in the parent, the child starts its own at its first
 * DP_WAITOK get that misses the thread cache, its first large malloc,
 * or its first reclaim call (dp_reclaim_sync, dp_reclaim_step,
 * dp_pool_reclaim, dp_reclaim_start), whichever comes first; until then
 * dp_reclaim_info() reports it running.  A child that execs or exits
 * first never creates one.
 */
/* 0 (also when already running), or -1 with errno set to the error
 * pthread_create returned.  Blocks: briefly (thread creation). */
DP_API int dp_reclaim_start(void);
/* Stop and join the thread.  Blocks: yes.  Where the drop-in malloc
 * shares this library's core (a static link), its lazy start then leaves
 * the thread stopped until dp_reclaim_start(). */
DP_API void dp_reclaim_stop(void);
DP_API void dp_reclaim_wake(void);  /* non-blocking nudge                 */
/* Wake the thread and wait until it has completed a whole pass that began
 * after this call.  0, or -1 + ESRCH when the thread is not running. */
DP_API int dp_reclaim_sync(void);
/* Run one reclaim pass over every pool in the calling thread: for
 * programs that drive reclamation from their own event loop instead of
 * the thread.  Returns pages returned.  Blocks: yes. */
DP_API size_t dp_reclaim_step(void);
/* 0: the default (reclaim_interval_ms, 100 ms).  An interval that ends
 * past the end of the 64-bit nanosecond clock (UINT64_MAX, say) means:
 * sleep until woken. */
DP_API void dp_reclaim_set_interval(uint64_t ns);

typedef struct dp_reclaim_info {
    int running;             /* thread alive                              */
    uint64_t passes;         /* passes completed by the thread            */
    uint64_t pages_returned; /* by the thread and by dp_reclaim_step()    */
    uint64_t pages_filled;   /* allocated to keep lowat                   */
    uint64_t interval_ns;
    uint64_t reserved[8];    /* zeroed; later fields come from here (ABI:
                                docs/api.md, "Compatibility")             */
} dp_reclaim_info_t;
DP_API void dp_reclaim_info(dp_reclaim_info_t *out);

/* ===================================================================== */
/* Statistics and checking                                               */
/* ===================================================================== */

/*
 * Exact when the pool is quiescent (no get/put in flight); while threads
 * are running each field is a consistent snapshot under the pool lock,
 * except objs_inuse, which may count an object whose put is mid-flight.
 */
typedef struct dp_pool_stats {
    char name[32];
    size_t objsize, slotsize, pagesize, objs_per_page;
    uint64_t objs_inuse;          /* handed out and not yet put back      */
    uint64_t objs_free;           /* free objects held in pages, including
                                     objs_cached                          */
    uint64_t objs_cached;         /* free objects in per-thread caches
                                     and the pool's depot                 */
    uint64_t pages;               /* pages held from the provider         */
    uint64_t pages_empty;         /* empty pages queued for reuse/return  */
    uint64_t pages_pending;       /* pages being returned/allocated now   */
    uint64_t empty_oldest_age_ns; /* age of the oldest queued empty page  */
    uint64_t pages_alloc;         /* provider allocs that succeeded       */
    uint64_t pages_freed;         /* pages given back to the provider     */
    uint64_t provider_alloc_failures;
    uint64_t gets;                /* successful gets                      */
    uint64_t puts;                /* = gets - objs_inuse                  */
    uint64_t gets_waited;         /* gets that slept at least once        */
    uint64_t gets_failed;         /* gets that returned NULL              */
    uint64_t waiting;             /* getters asleep right now             */
    uint64_t put_provider_calls;  /* provider calls made from inside a put:
                                     always 0, and measured, not assumed  */
    uint64_t reserve_objs;        /* dp_pool_prime() reserve              */
    size_t max_pages, lowat, hiwat;
    uint64_t reclaim_age_ns;
    uint64_t reserved[8];         /* zeroed; later fields come from here
                                     (ABI: docs/api.md, "Compatibility")  */
} dp_pool_stats_t;

/* Fill *out.  0, or -1 + EINVAL.  Blocks: briefly (pool lock). */
DP_API int dp_pool_stats(dp_pool_t *pool, dp_pool_stats_t *out);

/* Check the pool's internal invariants (lists, counts, free lists; on a
 * debug pool also every redzone and every free object's junk pattern).
 * 0 when consistent; otherwise -1 + EIO after printing what is wrong to
 * stderr.  Blocks: briefly (pool lock).  Walks every free object: slow. */
DP_API int dp_pool_check(dp_pool_t *pool);

/*
 * Leak report of a debug pool (DP_POOL_DEBUG or a finer debug flag): the
 * objects out now, printed to f (NULL: stderr) -- with DP_POOL_AUDIT
 * grouped by the stack of their get, with a count and the first
 * addresses of each group, as libumem's findleaks; without it, the count
 * and the first addresses.  Prints nothing when no object is out.
 * dp_pool_destroy() prints it before refusing a pool with objects out,
 * and DEFERPOOL_CONF "leaks:1" prints it for every live debug pool at
 * exit.  A snapshot: gets and puts may run meanwhile.
 * Returns the number of objects out, or -1 + EINVAL (NULL pool, or not a
 * debug pool).  Blocks: briefly (pool lock, twice); maps and unmaps a
 * buffer; may allocate (qsort, stdio).  Never from a signal handler.
 */
DP_API long dp_pool_leaks(dp_pool_t *pool, FILE *f);

/* ===================================================================== */
/* Statistics printer                                                    */
/* ===================================================================== */

#define DP_STATS_JSON 0x1 /* dp_stats_print: one JSON object, not text   */

/*
 * Print the statistics of every live pool to f (NULL: stderr): the
 * process (pid, program name), the reclaim thread, and per pool its name,
 * provider, sizes, objects out, free and cached, pages held and by state
 * (partial, full, empty queued for return, pending) with the age of the
 * oldest empty one, provider calls, gets, puts, waits and limits.
 * flags 0: text, a header line and one line per pool; DP_STATS_JSON: one
 * JSON object on one line (schema: docs/api.md, "dp_stats_print").
 * Each pool's numbers are one dp_pool_stats() snapshot; the pools are
 * read first, then printed, so no lock is held while f is written.
 * Returns the number of pools printed, or -1 with errno: EINVAL (unknown
 * flags), ENOMEM, EIO (writing to f failed).
 * Blocks: briefly (registry and pool locks), plus whatever stdio does
 * with f.  Allocates.  Also printed to stderr at exit with DEFERPOOL_CONF
 * stats_print:1 (text) or stats_print:json.
 */
DP_API int dp_stats_print(FILE *f, int flags);

/* ===================================================================== */
/* Testing: the mock provider                                            */
/* ===================================================================== */

/*
 * A page provider for tests: the stand-in for UVM.  Memory comes from
 * aligned_alloc (so sanitizers see pages after they are returned).
 * All functions are MT-Safe.  The counters are exact.  Fork: the mock has
 * no fork handlers; fork only while no thread is inside a mock call,
 * except waiting at a closed gate (it holds no mock lock there; the
 * child sees the call as never made and may open the gate).
 */
typedef struct dp_mock dp_mock_t;

/* capacity_pages 0: unlimited.  NULL + ENOMEM on failure. */
DP_API dp_mock_t *dp_mock_create(size_t capacity_pages);
/* Aborts if pages are still out (a leak the test should see). */
DP_API void dp_mock_destroy(dp_mock_t *m);
DP_API const dp_provider_t *dp_mock_provider(dp_mock_t *m);
DP_API void dp_mock_set_capacity(dp_mock_t *m, size_t capacity_pages);

/* Failure injection on alloc calls, counted from 1 over the mock's life.
 * They combine: a call fails if any rule says so.  clear removes all. */
DP_API void dp_mock_fail_nth(dp_mock_t *m, uint64_t n);   /* call n only  */
DP_API void dp_mock_fail_every(dp_mock_t *m, uint64_t n); /* n, 2n, 3n... */
DP_API void dp_mock_fail_after(dp_mock_t *m, uint64_t n); /* every call > n */
/* Fail each call with probability ppm/1e6, from a seeded PRNG. */
DP_API void dp_mock_fail_random(dp_mock_t *m, uint32_t ppm, uint64_t seed);
DP_API void dp_mock_fail_clear(dp_mock_t *m);

/* Gates: while closed, alloc (or free) calls block inside the provider
 * until the gate opens; a DP_NOWAIT alloc at a closed gate fails at once
 * instead (it may not sleep), counted as a failure.  gate_wait blocks until at least n calls are
 * blocked at the gate (for tests to know the state they set up). */
#define DP_MOCK_ALLOC 0x1
#define DP_MOCK_FREE  0x2
DP_API void dp_mock_gate_close(dp_mock_t *m, int which);
DP_API void dp_mock_gate_open(dp_mock_t *m, int which);
DP_API void dp_mock_gate_wait(dp_mock_t *m, int which, unsigned n);

typedef struct dp_mock_counters {
    uint64_t alloc_calls, free_calls; /* every call                     */
    uint64_t allocs, frees;           /* successful allocs / frees      */
    uint64_t alloc_failures;          /* injected, capacity, closed gate
                                         for DP_NOWAIT, failed hook     */
    uint64_t pages_out, max_pages_out;
    uint64_t bytes_out;
    uint64_t blocked_alloc, blocked_free; /* callers at a gate now      */
    uint64_t nowait_allocs;           /* alloc calls with DP_NOWAIT     */
    uint64_t reserved[8];             /* zeroed; later fields come from
                                         here (docs/api.md,
                                         "Compatibility")               */
} dp_mock_counters_t;
DP_API void dp_mock_counters(dp_mock_t *m, dp_mock_counters_t *out);

/* The call log: one entry per call, in the order calls completed. */
typedef struct dp_mock_log_entry {
    uint64_t seq;
    int op;            /* DP_MOCK_ALLOC or DP_MOCK_FREE */
    int flags;         /* alloc flags                   */
    int ok;            /* alloc succeeded               */
    uint64_t thread;   /* pthread_self() of the caller  */
    int tid;           /* kernel thread id              */
    void *page;
    size_t size;
} dp_mock_log_entry_t;
/* Copy up to max entries starting at index `from`; returns how many. */
DP_API size_t dp_mock_log(dp_mock_t *m, size_t from, dp_mock_log_entry_t *out,
                          size_t max);
DP_API size_t dp_mock_log_length(dp_mock_t *m);

/* A hook called inside alloc (after the page is obtained) and free
 * (before it is released), with no mock lock held.  It may get and put
 * objects from other deferpool pools: the UVM map-entry situation.  On
 * alloc, a non-zero return makes the alloc fail (the page is released). */
typedef int (*dp_mock_hook_t)(void *arg, int op, void *page, size_t size,
                              int flags);
DP_API void dp_mock_set_hook(dp_mock_t *m, dp_mock_hook_t hook, void *arg);

/* A controllable clock for dp_pool_attr_t.clock (clock_arg = the mock).
 * Starts at 1 s; only dp_mock_clock_advance() moves it. */
DP_API uint64_t dp_mock_clock(void *mock);
DP_API void dp_mock_clock_advance(dp_mock_t *m, uint64_t ns);

/* ===================================================================== */
/* Testing: hooks                                                        */
/* ===================================================================== */

/*
 * A hook the library calls at the points below, so that a test can stop
 * a thread exactly there (at a gate) and prove what another thread, a
 * signal handler or fork() does meanwhile.  The points are on slow paths
 * only: no get/put fast path reads the hook.  One hook for the process;
 * NULL removes it.  fn runs on the thread that reached the point, with
 * the state said below; it must not call into the library except where
 * noted.  For tests only.
 */
/* A thread cache's owner has returned a flush's objects to the pages, or
 * pushed a magazine of them to the depot, and not yet taken them off its
 * bin (a put into a full bin, or a get above the soft limit).  The owner
 * is inside its get/put. */
#define DP_TEST_TC_FLUSH 1
/* Thread exit: the exiting thread's cache is flushed and not yet freed.
 * A signal handler may put here (the put must not use the cache). */
#define DP_TEST_TC_EXIT 2
/* fork() prepare handler: another thread is inside a get/put on its
 * cache; the handler, holding no lock, yields and looks again. */
#define DP_TEST_FORK_WAIT 3
typedef void (*dp_test_hook_t)(int where, void *arg);
DP_API void dp_test_set_hook(dp_test_hook_t fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif /* DEFERPOOL_H */
