/*
 * backends.h -- the allocators under comparison, behind one small vtable.
 *
 * Each benchmark executable is built for exactly one back-end (one of the
 * DPB_BACKEND_* macros, set by meson): bench-<name>, latency-<name> and
 * rss-<name>.  Separate processes keep the allocators from fighting over
 * the malloc symbols (Debian's jemalloc, tcmalloc and mimalloc all export
 * malloc/free), keep glibc's malloc really glibc's in bench-glibc, and keep
 * one allocator's cached memory out of another's RSS.  See
 * docs/benchmarks.md.
 *
 * Every back-end pays the same indirect call per get and per put.
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
    void *(*get)(void);                             /* NULL only on OOM   */
    void (*put)(void *obj);
    void (*fini)(void);
    const char *(*version)(void);                   /* static string      */
    const char *how;  /* one line: which entry points, which flags        */
} dpb_backend_t;

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
