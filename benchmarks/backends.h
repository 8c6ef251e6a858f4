/*
 * backends.h -- the allocators under comparison: a small vtable for set-up
 * and tear-down, and direct inline calls for get and put.
 *
 * Each benchmark executable is built for exactly one back-end (one of the
 * DPB_BACKEND_* macros, set by meson): bench-<name>, latency-<name> and
 * rss-<name>.  Separate processes keep the allocators from fighting over
 * the malloc symbols (Debian's jemalloc, tcmalloc and mimalloc all export
 * malloc/free), keep glibc's malloc really glibc's in bench-glibc, and keep
 * one allocator's cached memory out of another's RSS.  See
 * docs/benchmarks.md.
 *
 * get and put are not in the vtable: dpb_get()/dpb_put() below are static
 * inline functions that call the allocator's entry points directly, the
 * way a user's code does.  A per-operation indirect call would add the
 * same few nanoseconds to every allocator and compress every ratio.
 */
#ifndef DPB_BACKENDS_H
#define DPB_BACKENDS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dpb_backend_conf {
    size_t objsize;          /* every get returns an object this big      */
    uint64_t reclaim_age_ns; /* deferpool only; 0: the library default     */
} dpb_backend_conf_t;

typedef struct dpb_backend {
    const char *name;                               /* "jemalloc", ...     */
    int (*init)(const dpb_backend_conf_t *conf);    /* 0, or -1: message
                                                       already printed    */
    void (*fini)(void);
    const char *(*version)(void);                   /* static string      */
    const char *how;  /* one line: which entry points, which flags        */
} dpb_backend_t;

/* The object size every get asks for (set by dpb_backend_setup). */
extern size_t dpb_objsize;

/* dpb_get(): an object of dpb_objsize bytes, NULL only on OOM.
 * dpb_put(obj): give it back.  Direct calls into the one allocator this
 * executable is built for. */
#if defined(DPB_BACKEND_DEFERPOOL)
#include <deferpool.h>
extern dp_pool_t *dpb_dp_pool;
extern int dpb_dp_flags; /* DP_WAITOK, or DP_NOWAIT (DPB_DEFERPOOL_GET) */
static inline void *dpb_get(void) { return dp_pool_get(dpb_dp_pool, dpb_dp_flags); }
static inline void dpb_put(void *p) { dp_pool_put(dpb_dp_pool, p); }
#elif defined(DPB_BACKEND_GLIBC)
#include <stdlib.h>
static inline void *dpb_get(void) { return malloc(dpb_objsize); }
static inline void dpb_put(void *p) { free(p); }
#elif defined(DPB_BACKEND_JEMALLOC)
#include <jemalloc/jemalloc.h>
/* The sized, flag-taking API: the fastest jemalloc offers. */
static inline void *dpb_get(void) { return mallocx(dpb_objsize, 0); }
static inline void dpb_put(void *p) { sdallocx(p, dpb_objsize, 0); }
#elif defined(DPB_BACKEND_MIMALLOC)
#include <mimalloc.h>
static inline void *dpb_get(void) { return mi_malloc(dpb_objsize); }
static inline void dpb_put(void *p) { mi_free(p); }
#elif defined(DPB_BACKEND_TCMALLOC)
#include <gperftools/tcmalloc.h>
static inline void *dpb_get(void) { return tc_malloc(dpb_objsize); }
static inline void dpb_put(void *p) { tc_free(p); }
#elif defined(DPB_BACKEND_FLOOR)
/* Not an allocator: the floor (floor.c), 1-thread patterns only. */
void *dpb_floor_get(void);
void dpb_floor_put(void *p);
void dpb_floor_init(size_t size);
static inline void *dpb_get(void) { return dpb_floor_get(); }
static inline void dpb_put(void *p) { dpb_floor_put(p); }
#else
#error "define exactly one DPB_BACKEND_* (meson does)"
#endif

/* The one back-end compiled into this executable. */
extern const dpb_backend_t dpb_backend;

/*
 * Verify how this process is wired before measuring anything, and abort
 * with a message if it is not what the numbers will claim: LD_PRELOAD set;
 * a foreign allocator library loaded; the back-end's entry points not in
 * the back-end's library; for glibc, malloc/free not glibc's own (dladdr +
 * dlsym on the libc.so.6 handle).  Writes a one-line description of where
 * malloc and the back-end's get resolve into desc.
 */
void dpb_backend_check(char *desc, size_t len);

/* Init dpb_backend with objsize (and reclaim age), after the check;
 * exits on failure.  Fills desc as dpb_backend_check does. */
void dpb_backend_setup(size_t objsize, uint64_t reclaim_age_ns, char *desc,
                       size_t len);

/* The object could not be obtained: print and abort.  A get failing is a
 * benchmark bug or an exhausted machine, never something to time. */
_Noreturn void dpb_oom(void);

#ifdef __cplusplus
}
#endif
#endif /* DPB_BACKENDS_H */
