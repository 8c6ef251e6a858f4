/*
 * resident.h -- mt_resident_pages, for the malloc's tests and for the
 * probe programs they run (tests/malloc/populate_probe.c), which link
 * nothing but libc.
 */
#ifndef DP_MALLOC_RESIDENT_H
#define DP_MALLOC_RESIDENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

/* How many 4 KiB pages of [p, p + n) are resident, by mincore(2): what
 * the kernel holds for the range, not what the allocator says.  A page
 * that is not mapped (mincore: ENOMEM) is not resident. */
static inline size_t mt_resident_pages(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095;
    uintptr_t end = ((uintptr_t)p + n + 4095) & ~(uintptr_t)4095;
    size_t r = 0;
    for (; a < end; a += 4096) {
        unsigned char v = 0;
        if (mincore((void *)a, 4096, &v) == 0 && (v & 1))
            r++;
    }
    return r;
}

#endif
