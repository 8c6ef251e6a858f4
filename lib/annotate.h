/*
 * annotate.h -- telling AddressSanitizer and Valgrind's memcheck which
 * bytes of pool memory the program may touch (docs/design.md,
 * "Sanitizers and Valgrind").  Beside the page layer: every hook is an
 * inline function that compiles to nothing unless the library is built
 * with ASan (DP_AN_ASAN) or with <valgrind/memcheck.h> (DP_AN_VG).
 *
 * An object is addressable from the get that hands it out (objsize
 * bytes, not the rest of its slot) to the put that returns it; a free
 * object, a slot tail and a page's uncarved slots are not.  The library's
 * own accesses to free objects open what they touch for as long as they
 * touch it: the link word (link.h) and the ctor/dtor runs (page.c).
 *
 * ASan: compile-time only; the hooks sit on the get/put fast paths of
 * an ASan build.  Valgrind: runtime, only while RUNNING_ON_VALGRIND at
 * pool create (p->vg); such pools have no thread cache (cache.c), so the
 * requests sit on the page-level paths only, and a pool outside Valgrind
 * pays one flag test there.
 *
 * Debug pools (DP_POOL_DEBUG and its finer flags) check their objects
 * themselves (debug.c): they write and read patterns and redzones in
 * free objects and slot tails, so neither tool is told about them.
 */
#ifndef DP_ANNOTATE_H
#define DP_ANNOTATE_H

#include "types.h"

#ifndef DP_ANNOTATE
#define DP_ANNOTATE 1 /* meson: -Dsanitizer_annotations=disabled sets 0 */
#endif

#if defined(__SANITIZE_ADDRESS__)
#define DP_AN_ASAN DP_ANNOTATE
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DP_AN_ASAN DP_ANNOTATE
#endif
#endif
#ifndef DP_AN_ASAN
#define DP_AN_ASAN 0
#endif

#if defined(DP_HAVE_VALGRIND) && DP_ANNOTATE
#define DP_AN_VG 1
#include <valgrind/memcheck.h>
#else
#define DP_AN_VG 0
#endif

#if DP_AN_ASAN
#include <sanitizer/asan_interface.h>
/* A put of an object that is not out: double put (annotate.c). */
DP_HIDDEN _Noreturn void dp_an_double_put(const struct dp_pool *p,
                                          const void *obj);
#endif

/* ASan annotates p: every pool but a debug pool. */
#define DP_AN_ON(p) (!(p)->debug)

/* The bytes of a slot the library keeps closed while its object is out,
 * and all of a free slot.  Poisoning works on 8-byte granules; a slot is
 * aligned to at least 8, so the slot is poisoned whole. */

/* pool create: decide whether this pool describes itself to Valgrind. */
static inline void dp_an_pool_create(struct dp_pool *p)
{
#if DP_AN_VG
    p->vg = RUNNING_ON_VALGRIND != 0 && !p->debug;
    if (p->vg)
        VALGRIND_CREATE_MEMPOOL(p, 0, 0);
#else
    (void)p;
#endif
}

static inline void dp_an_pool_destroy(struct dp_pool *p)
{
#if DP_AN_VG
    if (p->vg)
        VALGRIND_DESTROY_MEMPOOL(p);
#else
    (void)p;
#endif
}

/* A new page, constructed if the pool has a ctor: close every slot. */
static inline void dp_an_page_new(struct dp_pool *p, struct dp_page *pg)
{
#if DP_AN_ASAN
    if (DP_AN_ON(p))
        ASAN_POISON_MEMORY_REGION(dp_pg_slots(p, pg),
                                  (size_t)p->cap * p->slotsize);
#endif
#if DP_AN_VG
    if (p->vg)
        VALGRIND_MAKE_MEM_NOACCESS(dp_pg_slots(p, pg), (size_t)p->cap * p->slotsize);
#endif
    (void)p, (void)pg;
}

/* Before the dtors run over a page's free slots: open them. */
static inline void dp_an_page_open_slots(struct dp_pool *p, struct dp_page *pg)
{
#if DP_AN_ASAN
    ASAN_UNPOISON_MEMORY_REGION(dp_pg_slots(p, pg), (size_t)p->cap * p->slotsize);
#endif
#if DP_AN_VG
    if (p->vg)
        VALGRIND_MAKE_MEM_DEFINED(dp_pg_slots(p, pg), (size_t)p->cap * p->slotsize);
#endif
    (void)p, (void)pg;
}

/* A page goes back to its provider: the provider owns all of it again
 * (an unmapped range must not stay poisoned for the next mapping). */
static inline void dp_an_page_free(struct dp_pool *p, struct dp_page *pg)
{
#if DP_AN_ASAN
    ASAN_UNPOISON_MEMORY_REGION(pg, p->pagesize);
#endif
#if DP_AN_VG
    if (p->vg)
        VALGRIND_MAKE_MEM_UNDEFINED(pg, p->pagesize);
#endif
    (void)p, (void)pg;
}

/* Around the library's access to the link word w of a free object.
 * ASan: the thread that reads or writes a link owns the object then
 * (link.h), so no other thread changes its shadow meanwhile. */
static inline void dp_an_link_open(const struct dp_pool *p, uintptr_t *w)
{
#if DP_AN_ASAN
    if (DP_AN_ON(p))
        ASAN_UNPOISON_MEMORY_REGION(w, sizeof(*w));
#endif
#if DP_AN_VG
    if (DP_UNLIKELY(p->vg))
        VALGRIND_MAKE_MEM_DEFINED(w, sizeof(*w));
#endif
    (void)p, (void)w;
}

static inline void dp_an_link_close(const struct dp_pool *p, uintptr_t *w)
{
#if DP_AN_ASAN
    if (DP_AN_ON(p))
        ASAN_POISON_MEMORY_REGION(w, sizeof(*w));
#endif
#if DP_AN_VG
    if (DP_UNLIKELY(p->vg))
        VALGRIND_MAKE_MEM_NOACCESS(w, sizeof(*w));
#endif
    (void)p, (void)w;
}

/* The same, on the thread-cache hit path, which a Valgrind pool never
 * takes (it has no cache): ASan only. */
static inline void dp_an_link_open_cached(uintptr_t *w)
{
#if DP_AN_ASAN
    ASAN_UNPOISON_MEMORY_REGION(w, sizeof(*w));
#endif
    (void)w;
}

static inline void dp_an_link_close_cached(uintptr_t *w)
{
#if DP_AN_ASAN
    ASAN_POISON_MEMORY_REGION(w, sizeof(*w));
#endif
    (void)w;
}

/* ASan: a get hands obj out (every path: cache hits and the slow path).
 * Opens objsize bytes; the slot tail, and so the next slot, stay
 * poisoned.  Without a ctor, fills the object with 0xbe up to 4 KiB, as
 * ASan's own malloc does (malloc_fill_byte, max_malloc_fill_size), so an
 * uninitialised read sees junk, not the last user's data. */
static inline void dp_an_get_asan(const struct dp_pool *p, void *obj)
{
#if DP_AN_ASAN
    if (!DP_AN_ON(p))
        return;
    ASAN_UNPOISON_MEMORY_REGION(obj, p->objsize);
    if (!p->ctor)
        __builtin_memset(obj, 0xbe, p->objsize < 4096 ? p->objsize : 4096);
#endif
    (void)p, (void)obj;
}

/* ASan: the put of obj, before anything else touches it.  An object
 * already poisoned is not out: a double put (or a put of a slot never
 * handed out), reported with the pool and the address. */
static inline void dp_an_put_asan(const struct dp_pool *p, void *obj)
{
#if DP_AN_ASAN
    if (!DP_AN_ON(p))
        return;
    if (DP_UNLIKELY(__asan_address_is_poisoned(obj)))
        dp_an_double_put(p, obj);
    ASAN_POISON_MEMORY_REGION(obj, p->slotsize);
#endif
    (void)p, (void)obj;
}

/* Valgrind: the slow-path get of obj (every get of a Valgrind pool). */
static inline void dp_an_get_vg(const struct dp_pool *p, void *obj)
{
#if DP_AN_VG
    if (DP_UNLIKELY(p->vg)) {
        VALGRIND_MEMPOOL_ALLOC(p, obj, p->objsize);
        /* A constructed object is defined: the ctor wrote it. */
        if (p->ctor)
            VALGRIND_MAKE_MEM_DEFINED(obj, p->objsize);
    }
#endif
    (void)p, (void)obj;
}

/* Valgrind: the page-level put of obj (every put of a Valgrind pool).
 * memcheck reports a put of an object that is not out. */
static inline void dp_an_put_vg(const struct dp_pool *p, void *obj)
{
#if DP_AN_VG
    if (DP_UNLIKELY(p->vg))
        VALGRIND_MEMPOOL_FREE(p, obj);
#endif
    (void)p, (void)obj;
}

#endif /* DP_ANNOTATE_H */
