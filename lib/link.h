/*
 * link.h -- the free-list link word: the one word of a free object the
 * library writes (at p->linkoff), read and written only through these
 * functions.  A link is stored "safe-linked" (glibc's scheme plus a
 * per-process secret): next ^ (address of the link >> 12) ^ dp_link_key.
 * A use-after-put write that overwrites a link therefore cannot steer a
 * later get to an address of the attacker's choosing: the decoded value
 * must lie in the same page as the object that held it and be aligned
 * to the pool's alignment, or the get aborts with a message naming the
 * object and the pool.  docs/design.md, "Hardening".
 */
#ifndef DP_LINK_H
#define DP_LINK_H

#include "annotate.h"
#include "types.h"

/* The per-process secret: set once, before the first pool exists
 * (dp_link_key_init, from dp_pool_create), never changed afterwards, and
 * inherited by a fork child.  Relaxed loads: the pool pointer's hand-off
 * orders it. */
extern DP_HIDDEN _Atomic uintptr_t dp_link_key;
DP_HIDDEN void dp_link_key_init(void);
/* Abort: the link in obj decoded to next, outside obj's page. */
DP_HIDDEN _Noreturn void dp_link_corrupt(const struct dp_pool *p,
                                         const void *obj, uintptr_t next);

static inline uintptr_t *dp_link_word(const struct dp_pool *p, void *obj)
{
    return (uintptr_t *)((char *)obj + p->linkoff);
}

static inline uintptr_t dp_link_mask(const uintptr_t *w)
{
    return ((uintptr_t)w >> 12) ^
           atomic_load_explicit(&dp_link_key, memory_order_relaxed);
}

/* The next object after obj, NULL at the end; no check (dp_pool_check's
 * walk, which reports a bad link itself). */
static inline void *dp_link_peek(const struct dp_pool *p, void *obj)
{
    uintptr_t *w = dp_link_word(p, obj);
    dp_an_link_open(p, w);
    uintptr_t v = *w;
    dp_an_link_close(p, w);
    return (void *)(v ^ dp_link_mask(w));
}

static inline void *dp_link_check(const struct dp_pool *p, void *obj,
                                  uintptr_t v)
{
    if (DP_UNLIKELY(v && (((v ^ (uintptr_t)obj) & p->pagemask) ||
                          (v & (p->align - 1)))))
        dp_link_corrupt(p, obj, v);
    return (void *)v;
}

/* The next object after obj, NULL at the end; aborts if the link was
 * overwritten (it does not point into obj's page at the pool's
 * alignment). */
static inline void *dp_link_get(const struct dp_pool *p, void *obj)
{
    uintptr_t *w = dp_link_word(p, obj);
    dp_an_link_open(p, w);
    uintptr_t v = *w;
    dp_an_link_close(p, w);
    return dp_link_check(p, obj, v ^ dp_link_mask(w));
}

/* dp_link_get and dp_link_set for the paths only cached pools take (the
 * bins' chains and flushes): Valgrind pools have no cache (annotate.h),
 * so these skip its flag test. */
static inline void *dp_link_get_cached(const struct dp_pool *p, void *obj)
{
    uintptr_t *w = dp_link_word(p, obj);
    dp_an_link_open_cached(w);
    uintptr_t v = *w;
    dp_an_link_close_cached(w);
    return dp_link_check(p, obj, v ^ dp_link_mask(w));
}

static inline void dp_link_set(const struct dp_pool *p, void *obj, void *next)
{
    uintptr_t *w = dp_link_word(p, obj);
    dp_an_link_open(p, w);
    *w = (uintptr_t)next ^ dp_link_mask(w);
    dp_an_link_close(p, w);
}

static inline void dp_link_set_cached(const struct dp_pool *p, void *obj,
                                      void *next)
{
    uintptr_t *w = dp_link_word(p, obj);
    dp_an_link_open_cached(w);
    *w = (uintptr_t)next ^ dp_link_mask(w);
    dp_an_link_close_cached(w);
}

#endif /* DP_LINK_H */
