/*
 * api.c -- the drop-in malloc's malloc family: malloc, free, calloc,
 * realloc and the aligned and sized variants, each a size-class pool's
 * inline fast path or a block's.  Top layer (docs/design.md §1);
 * docs/malloc.md, "Allocation", "free", "realloc".
 */
#include "malloc_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The class serving n bytes at `align` (a power of two), or -1: a block. */
static int small_class(size_t n, size_t align)
{
    if (n > MC_SMALL_MAX || align > MC_ALIGN_MAX)
        return -1;
    unsigned c = mc_class(n);
    if (align > 8)
        while (c < MC_NCLASS && mc_align[c] < align)
            c++;
    return c < MC_NCLASS ? (int)c : -1;
}

static const struct timespec mc_past = {0, 1};

/* A pool get that may take locks and call the provider but never sleeps
 * waiting for memory: a deadline in the past fails at once instead. */
static void *small_get(dp_pool_t *p)
{
    void *o = dp_pool_get_timed(p, DP_WAITOK, &mc_past);
    if (DP_UNLIKELY(!o)) {
        dp_malloc_trim(); /* queued blocks may be what is missing */
        o = dp_pool_get_timed(p, DP_WAITOK, &mc_past);
    }
    if (o)
        mc_untag(o);
    return o;
}

/* Every allocation that the thread cache did not serve. */
static void *mc_alloc(size_t n, size_t align, bool zero, bool grow)
{
    void *r;
    if (DP_UNLIKELY(mc_depth)) {
        /* Re-entered from inside the allocator: bootstrap memory. */
        r = boot_alloc(n, align);
        if (!r)
            r = block_alloc(n, align, zero, grow);
        if (!r)
            errno = ENOMEM;
        return r;
    }
    mc_depth++;
    int c;
    dp_pool_t *p;
    if (DP_UNLIKELY(!mc_init())) {
        r = boot_alloc(n, align);
        if (!r)
            r = block_alloc(n, align, zero, grow);
    } else if ((c = small_class(n, align)) >= 0 &&
               /* A class's first allocation makes its pool, but not from
                * inside a walk of the registry, whose lock the pool's
                * creation takes (a debug leak report sorts with qsort,
                * which allocates): a block serves that request. */
               (p = dp_registry_depth ? mc_class_pool_if((unsigned)c)
                                      : mc_class_pool((unsigned)c)) != NULL) {
        r = small_get(p);
        if (r && zero)
            memset(r, 0, n);
    } else {
        r = block_alloc(n, align, zero, grow);
        if (!r) {
            dp_malloc_trim();
            r = block_alloc(n, align, zero, grow);
        }
    }
    mc_depth--;
    if (DP_UNLIKELY(atomic_load_explicit(&mc_rt, MC_RLX) != 2))
        mc_maybe_start(false);
    if (!r)
        errno = ENOMEM;
    return r;
}

/* What kind of block p is, and its usable size. */
enum mc_kind { MC_FOREIGN, MC_SMALL, MC_BLOCK, MC_BOOT };

/* fn: the caller, "realloc", which aborts on a pointer free() would
 * abort on (mc_small_abort, mc_bad_free); NULL: a query
 * (malloc_usable_size), which calls such a pointer foreign. */
static enum mc_kind mc_lookup(void *p, size_t *usable, void **hdr,
                              const char *fn)
{
    void *o = dp_pagemap_get(p);
    struct dp_pool *pool = dp_pm_as_pool(o);
    if (pool && (!mc_small_bad(pool, p, mc_tag_word(p), mc_tag(p)) ||
                 pool->debug)) {
        *usable = pool->objsize;
        *hdr = pool;
        return MC_SMALL;
    }
    if (pool && fn)
        mc_small_abort(pool, p, fn); /* returns for a debug pool */
    struct mc_block *h = as_block(o);
    /* A freed block (queued, or on a thread list) is not a block any
     * more. */
    if (h && block_user(h) == p &&
        atomic_load_explicit(&h->state, MC_RLX) == MC_LIVE) {
        *usable = block_usable(h);
        *hdr = h;
        return MC_BLOCK;
    }
    if (boot_owns(p)) {
        *usable = boot_size(p);
        *hdr = NULL;
        return MC_BOOT;
    }
    if (!pool && fn)
        mc_bad_free(p, o, fn); /* returns before mc_init */
    *usable = 0;
    *hdr = NULL;
    return MC_FOREIGN;
}

/* ---- the malloc family ----------------------------------------------------- */

/* The class pool's thread-cache hit into *o, its free tag cleared
 * (harden.c) and the block noted for free() ("The last block" below);
 * false: a miss.  Before mc_init, mc_hot[] names mc_nopool,
 * whose pop misses: no test of mc_inited here. */
static inline bool hot_pop(unsigned c, void **o)
{
    dp_pool_t *p = atomic_load_explicit(&mc_hot[c], memory_order_acquire);
    if (!dp_tcache_pop_hit(p, o, true))
        return false;
    mc_untag(*o);
    return true;
}

/* malloc()'s miss, out of line and cold: the bin's chain first (an empty
 * stack after a refill, cache.c "Chains"), then everything else.  The
 * chain's pop is here, not in hot_pop, so that the hit path saves no
 * register (docs/malloc.md, "The hit paths"). */
static DP_NOINLINE void *malloc_miss(size_t n)
{
    if (n <= MC_SMALL_MAX) {
        dp_pool_t *p =
            atomic_load_explicit(&mc_hot[mc_class(n)], memory_order_acquire);
        void *o = dp_tcache_pop_chain(p);
        if (o) {
            mc_untag(o);
            return o;
        }
    } else {
        void *o = tl_malloc(n);
        if (o)
            return o;
    }
    return mc_alloc(n, 0, false, false);
}

/* The table's sizes first: one compare before the table load; their
 * hit reads mc_hit[], not the pool.  malloc and free each start a
 * 64-byte line (DP_HOT_ALIGN, util.h). */
MC_EXPORT DP_HOT_ALIGN void *malloc(size_t n)
{
    void *o;
    if (DP_LIKELY(n <= MC_TABLE_MAX)) {
        size_t i = (n + 7) >> 3;
        uint64_t e = atomic_load_explicit(&mc_hit[i], MC_RLX);
        if (DP_LIKELY(dp_tcache_pop_at((uint32_t)e, (uint32_t)(e >> 32),
                                       &o, true))) {
#if DP_AN_ASAN /* an atomic load the compiler would keep, unused */
            dp_an_get_asan(atomic_load_explicit(&mc_hot[mc_small_class[i]],
                                                memory_order_acquire),
                           o);
#endif
            mc_untag(o);
            return o;
        }
    } else if (n <= MC_SMALL_MAX && hot_pop(mc_class(n), &o)) {
        return o;
    }
    return malloc_miss(n);
}

/* free() of anything but a small block: a block, bootstrap memory, or
 * a pointer the malloc never handed out.  Out of line, so that free()'s
 * small-block path needs no stack frame. */
static DP_NOINLINE void free_other(void *p, void *o)
{
    if (!p)
        return;
    /* A block tl_malloc handed out, freed at its user pointer: the fast
     * free (tlist.c), which touches nothing of the header. */
    uintptr_t v = (uintptr_t)o;
    if ((v & (MC_TAG_FAST | 3u)) == MC_TAG_FAST &&
        (uintptr_t)p == (v & ~MC_TAGS) + MC_BLOCK_HDR) {
        tl_free(p, v);
        return;
    }
    struct mc_block *h = as_block(o);
    if (DP_LIKELY(h && block_user(h) == p && block_free(h, true)))
        return;
    mc_bad_free(p, o, "free");
}

/*
 * free: a page-map lookup (lock-free loads), which names the pool of a
 * small block without reading its page header, then either the thread
 * cache's put (inline: this thread's bin) or dp_tcache_put_miss (a
 * thread without a cache adopts one, else the lock-free page put), or,
 * out of line, a push of a block on its thread list or mc_lq.  No lock,
 * no system call, no provider call.
 *
 * A small block must start a slot and not carry the free tag
 * (mc_small_bad: a multiply, a rotate, two compares and the tag word's
 * load); the tag is written before the put, after which the block is the
 * pool's.  A block must be named by its user pointer's frame and win its
 * state CAS, or, tagged by tl_malloc, the CAS on its frame's tag
 * (tlist.c, "The fast free").  Anything else aborts with a message
 * (harden.c), except
 * bootstrap memory, which is never reused, and anything before mc_init.
 * An ASan build puts through dp_pool_put, which poisons the block.
 *
 * The last block.  The hit paths of malloc and calloc note the block
 * they hand out and its bin's offset (tc->last, tc->last_off).  free()
 * of that block puts it to the bin at the noted offset if the bin's pool
 * is the one the page map names and the block has no free tag.  The
 * bin's address then comes from the thread's cache, not from the end of
 * four dependent loads (page-map root, leaf, pool, tcoff), so that a
 * malloc of the same class right after does not wait for them to read
 * the count the free wrote (docs/malloc.md, "free").  The slot test is
 * skipped: the block was a slot start of that pool when it was handed
 * out, and a pool's slots sit at the same offsets in every page, so it
 * still is one if the page map names that pool.  The note is a hint: a
 * stale one (a spare cache's, or one a signal handler's malloc half
 * wrote) fails the pool test or names a bin of the right pool.
 */
MC_EXPORT DP_HOT_ALIGN void free(void *p)
{
    void *o = dp_pagemap_get(p);
    /* A pool's pages map to the pool tagged with the low bit (never to
     * the tag alone): the tag test is the pool test. */
    if (DP_LIKELY((uintptr_t)o & 1u)) {
        struct dp_pool *pool = (struct dp_pool *)((uintptr_t)o - 1u);
        uintptr_t *w = mc_tag_word(p), tag = mc_tag(p);
        /* The block handed out last ("The last block" above):
         * its bin from the note, an address that does not wait for the
         * page map's loads (the empty asm keeps the compiler from
         * taking it from the pool instead); no slot test. */
        struct dp_tcache *tc = dp_tc;
        if (!DP_AN_ASAN && p == tc->last) {
            uint32_t off = tc->last_off;
            __asm__("" : "+r"(off));
            struct dp_tbin *b = (struct dp_tbin *)(void *)((char *)tc + off);
            if (DP_LIKELY(b->pool == pool) && DP_LIKELY(*w != tag)) {
                *w = tag;
                if (DP_LIKELY(dp_tcache_put_to(tc, b, pool, p)))
                    return;
                dp_tcache_put_miss(pool, p);
                return;
            }
        }
        if (DP_UNLIKELY(mc_small_bad(pool, p, w, tag))) {
            mc_small_free_bad(pool, p); /* a tail call: no stack frame */
            return;
        }
        *w = tag;
        if (DP_AN_ASAN) {
            dp_pool_put(pool, p);
            return;
        }
        if (DP_LIKELY(dp_tcache_put(pool, p)))
            return;
        dp_tcache_put_miss(pool, p); /* what dp_pool_put would do now */
        return;
    }
    free_other(p, o);
}

MC_EXPORT void *calloc(size_t nmemb, size_t size)
{
    size_t n;
    if (DP_UNLIKELY(__builtin_mul_overflow(nmemb, size, &n))) {
        errno = ENOMEM;
        return NULL;
    }
    void *o;
    if (DP_LIKELY(n <= MC_SMALL_MAX) && DP_LIKELY(hot_pop(mc_class(n), &o)))
        return memset(o, 0, n);
    return mc_alloc(n, 0, true, false);
}

MC_EXPORT void *realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    if (n == 0) { /* glibc: frees and returns NULL */
        free(p);
        return NULL;
    }
    size_t have;
    void *hdr;
    enum mc_kind k = mc_lookup(p, &have, &hdr, "realloc");
    if (k == MC_FOREIGN) { /* before mc_init only */
        errno = EINVAL;
        return NULL;
    }
    /* In place when it fits and would not waste more than half, or, for
     * a block, when it grows (a roomy block taken from the cache
     * for growth, MC_GROW_ROOM, is not shrunk on the way up). */
    if (k == MC_BLOCK && n <= have &&
        (n >= have / 2 || n >= ((struct mc_block *)hdr)->req)) {
        ((struct mc_block *)hdr)->req = n;
        return p;
    }
    if (n <= have && (n >= have / 2 || k == MC_BOOT || have <= 16))
        return p;
    if (k == MC_BLOCK && n > MC_SMALL_MAX) {
        void *q = block_resize(hdr, n);
        if (q)
            return q;
    }
    /* A block growing past the small classes is likely to keep growing:
     * let it take a roomy cached block (MC_GROW_ROOM). */
    void *q = n > MC_SMALL_MAX && n > have ? mc_alloc(n, 0, false, true)
                                           : malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, n < have ? n : have);
    /* A block moved out of goes to the heap, not this thread's lists: a
     * growing block will not ask for its size again, and in the heap it
     * merges with its neighbours, which growth in place can then take. */
    if (k == MC_BLOCK) {
        if (!block_free((struct mc_block *)hdr, false))
            mc_bad_free(p, dp_pagemap_get(p), "realloc");
    } else {
        free(p);
    }
    return q;
}

MC_EXPORT void *reallocarray(void *p, size_t nmemb, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, n);
}


static void *aligned(size_t align, size_t n)
{
    if (align <= 8)
        return malloc(n);
    return mc_alloc(n, align, false, false);
}

MC_EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
    if (!dp_is_pow2(align) || align % sizeof(void *) != 0)
        return EINVAL;
    int saved = errno;
    void *p = aligned(align, n);
    errno = saved;
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

/* As glibc >= 2.38: an alignment that is not a power of two is EINVAL. */
MC_EXPORT void *aligned_alloc(size_t align, size_t n)
{
    if (!dp_is_pow2(align)) {
        errno = EINVAL;
        return NULL;
    }
    return aligned(align, n);
}

/* As glibc: a non-power-of-two alignment is rounded up. */
MC_EXPORT void *memalign(size_t align, size_t n)
{
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!dp_is_pow2(align)) {
        size_t a = 1;
        while (a < align)
            a <<= 1;
        align = a;
    }
    return aligned(align, n);
}

MC_EXPORT void *valloc(size_t n) { return aligned(MC_SYSPAGE, n); }

MC_EXPORT void *pvalloc(size_t n)
{
    if (n > SIZE_MAX - MC_SYSPAGE) {
        errno = ENOMEM;
        return NULL;
    }
    n = n ? (n + MC_SYSPAGE - 1) & ~(MC_SYSPAGE - 1) : MC_SYSPAGE;
    return aligned(MC_SYSPAGE, n);
}

MC_EXPORT size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    size_t have;
    void *hdr;
    mc_lookup(p, &have, &hdr, NULL);
    return have;
}

/* C23. */
MC_EXPORT void free_sized(void *p, size_t n);
MC_EXPORT void free_aligned_sized(void *p, size_t align, size_t n);
MC_EXPORT void free_sized(void *p, size_t n)
{
    (void)n;
    free(p);
}
MC_EXPORT void free_aligned_sized(void *p, size_t align, size_t n)
{
    (void)align;
    (void)n;
    free(p);
}
