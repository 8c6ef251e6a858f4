/*
 * harden.c -- the drop-in malloc's answers to misuse in its default
 * build: the messages and aborts for an invalid free or realloc, a double
 * free and a corrupted link in a freed block.  The checks themselves are
 * inline (malloc_internal.h, "hardening"), on free()'s path.  Top layer
 * (docs/design.md §1, "Hardening"); docs/malloc.md, "Hardening".
 */
#include "malloc_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Print "deferpool-malloc: <message>" and abort.  snprintf into the stack
 * and one write: no stdio lock, no allocation, whatever state the heap
 * is in. */
static _Noreturn __attribute__((format(printf, 1, 2))) void
mc_die(const char *fmt, ...)
{
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "deferpool-malloc: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(buf) - 2)
        len = sizeof(buf) - 2;
    buf[len++] = '\n';
    (void)!write(2, buf, len);
    abort();
}

void mc_link_corrupt(const void *h, const char *what, uintptr_t v)
{
    mc_die("free block %p holds a corrupted link '%s' (decodes to %#lx): "
           "written after free?",
           h, what, (unsigned long)v);
}

void mc_small_abort(const struct dp_pool *pool, void *p, const char *fn)
{
    if (pool->debug)
        return;
    uint64_t i = dp_slot_index(pool, p);
    if (i < pool->cap)
        mc_die("%s(): %s %p (pool '%s')", fn,
               fn[0] == 'f' ? "double free of" : "pointer already freed:", p,
               pool->name);
    uintptr_t page = (uintptr_t)p & pool->pagemask;
    uintptr_t first = page + pool->hdrsize;
    if ((uintptr_t)p >= first &&
        (uintptr_t)p < first + (uintptr_t)pool->cap * pool->slotsize) {
        uintptr_t at = first + ((uintptr_t)p - first) / pool->slotsize *
                                   pool->slotsize;
        mc_die("%s(): invalid pointer %p (inside block %p of pool '%s', "
               "offset %lu)",
               fn, p, (void *)at, pool->name,
               (unsigned long)((uintptr_t)p - at));
    }
    mc_die("%s(): invalid pointer %p (in a page of pool '%s', at no block)",
           fn, p, pool->name);
}

void mc_small_free_bad(struct dp_pool *pool, void *p)
{
    mc_small_abort(pool, p, "free");
    *mc_tag_word(p) = mc_tag(p);
    dp_pool_put(pool, p);
}

void mc_bad_free(void *p, void *o, const char *fn)
{
    if (boot_owns(p) || !atomic_load_explicit(&mc_inited, memory_order_acquire))
        return;
    struct mc_block *h = pm_header(o); /* a listed block's too */
    if (h && block_user(h) == p)
        mc_die("%s(): %s %p (block of %zu bytes)", fn,
               fn[0] == 'f' ? "double free of" : "pointer already freed:", p,
               block_usable(h));
    if (h)
        mc_die("%s(): invalid pointer %p (inside block %p)", fn, p,
               (void *)block_user(h));
    if (((uintptr_t)o & 3u) == 2u) {
        /* A cached block's first or last frame (heap.c, MC_TAG_CACHED):
         * the address says which; its header belongs to the heap. */
        char *c = (char *)((uintptr_t)o - 2u);
        if ((char *)p == c + MC_BLOCK_HDR)
            mc_die("%s(): %s %p (a freed block)", fn,
                   fn[0] == 'f' ? "double free of" : "pointer already freed:",
                   p);
        mc_die("%s(): invalid pointer %p (inside freed block %p)", fn, p,
               (void *)(c + MC_BLOCK_HDR));
    }
    mc_die("%s(): invalid pointer %p (not allocated by deferpool-malloc)", fn,
           p);
}
