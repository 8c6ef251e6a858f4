/*
 * debug.h -- the debug layer (debug.c), beside the pages: the slot
 * layout of debug pools, the checks a put and a get of such a pool run
 * (foreign and double puts, redzones, junk), the audit records (stacks
 * of an object's last get and put) and the leak report.  Only pools with
 * p->debug reach any of it: every call sits behind that test, on paths
 * debug pools take because they have no thread cache.
 * docs/design.md, "Debug checks".
 */
#ifndef DP_DEBUG_H
#define DP_DEBUG_H

#include "types.h"

#include <stdio.h>

/* The debug features a pool has: DP_POOL_REDZONE | DP_POOL_JUNK |
 * DP_POOL_AUDIT, from its flags (DP_POOL_DEBUG: redzone and junk) and
 * DEFERPOOL_CONF debug; 0 for a pool with DP_POOL_DEBUG checks only, or
 * no debugging at all.  Junk is dropped for a pool with a ctor (its free
 * objects hold constructed state). */
DP_HIDDEN unsigned dp_debug_features(unsigned flags, unsigned conf,
                                     bool has_ctor);

/* A debug pool's slot: the object, its trailing redzone, the link word,
 * the audit record, and the leading redzone of the next slot's object
 * (docs/design.md, "Debug checks").  objsize and align as the pool's. */
struct dp_debug_layout {
    size_t linkoff; /* link word, after the object and its redzone */
    size_t recoff;  /* audit record (DP_POOL_AUDIT)                 */
    size_t front;   /* redzone bytes before each object             */
    size_t slot;    /* slot size, a multiple of align               */
};
DP_HIDDEN void dp_debug_layout(size_t objsize, size_t align, unsigned feat,
                               struct dp_debug_layout *l);

/* Create: make backtrace() ready (it loads libgcc_s, and may allocate,
 * on its first call) for an audit pool. */
DP_HIDDEN void dp_debug_pool_init(struct dp_pool *p);
/* A new page: every slot's redzones and free pattern written. */
DP_HIDDEN void dp_debug_page_init(struct dp_pool *p, struct dp_page *pg);
/* Under the pool lock, as the page hands obj out: mark it out. */
DP_HIDDEN void dp_debug_mark_out(struct dp_pool *p, struct dp_page *pg,
                                 void *obj);
/* A get's object, after the pool lock is released: the redzones and the
 * free pattern checked, the uninitialised pattern written, the stack
 * recorded. */
DP_HIDDEN void dp_debug_got(struct dp_pool *p, void *obj);
/* A put, before the object goes back to its page: foreign, interior and
 * double puts and redzones checked (aborting with a message), the stack
 * recorded, the free pattern written, the object marked free.
 * Lock-free and syscall-free unless it aborts. */
DP_HIDDEN void dp_debug_put(struct dp_pool *p, struct dp_page *pg, void *obj);
/* A put of obj to a pool whose page map says obj is not its: abort,
 * naming the pool, the pointer and its owner if it is another pool's. */
DP_HIDDEN _Noreturn void dp_debug_foreign(const struct dp_pool *p,
                                          const void *obj);
/* dp_pool_check: redzones of every slot and free pattern of every free
 * object of pg, reported on stderr.  Returns the damage found. */
DP_HIDDEN int dp_debug_check_page(struct dp_pool *p, struct dp_page *pg);
/* The leak report (include/deferpool.h, dp_pool_leaks), to f. */
DP_HIDDEN long dp_debug_leaks(struct dp_pool *p, FILE *f);

#endif /* DP_DEBUG_H */
