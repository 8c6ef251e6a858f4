/*
 * boot.c -- the drop-in malloc's bootstrap arena: memory for allocations
 * made before the environment exists, or re-entering the allocator from
 * inside itself (pthread_atfork, pthread_*specific, ...).  Bump-allocated
 * from a static array, never reused; free recognises it by address and
 * does nothing.  Top layer (docs/design.md §1); docs/malloc.md.
 */
#include "malloc_internal.h"

#define MC_BOOT_SIZE ((size_t)1 << 20)
/* Aligned to 16 bytes only: a page's alignment would leave the rest of
 * the page before it empty, a page of its own for whatever .bss puts
 * there (crtstuff's exit flag: two faults at exit).  boot_alloc aligns
 * the addresses themselves. */
static _Alignas(16) char mc_boot[MC_BOOT_SIZE]; /* .bss: zeroed      */
static _Atomic size_t mc_boot_used;             /* bump pointer, CAS */

bool boot_owns(const void *p)
{
    return (const char *)p >= mc_boot && (const char *)p < mc_boot + MC_BOOT_SIZE;
}

/* The size is kept in the word before the block.  Zeroed (.bss, never
 * reused).  NULL when the arena is full. */
void *boot_alloc(size_t n, size_t align)
{
    if (align < 16)
        align = 16;
    if (n > MC_BOOT_SIZE || align > MC_BOOT_SIZE / 2)
        return NULL;
    /* The first CAS guesses an empty arena rather than loading the
     * word: the process's first boot allocation then faults the page in
     * with a write, once, where a load would map the zero page and the
     * CAS fault again to copy it. */
    uintptr_t base = (uintptr_t)mc_boot;
    size_t used = 0, start, end;
    do {
        start = ((base + used + sizeof(size_t) + align - 1) & ~(align - 1)) -
                base;
        end = start + ((n + 15) & ~(size_t)15);
        if (end > MC_BOOT_SIZE)
            return NULL;
    } while (!atomic_compare_exchange_weak_explicit(
        &mc_boot_used, &used, end, memory_order_relaxed, memory_order_relaxed));
    *(size_t *)(mc_boot + start - sizeof(size_t)) = n;
    return mc_boot + start;
}

size_t boot_size(const void *p)
{
    return *(const size_t *)((const char *)p - sizeof(size_t));
}

size_t boot_used(void)
{
    return atomic_load_explicit(&mc_boot_used, memory_order_relaxed);
}
