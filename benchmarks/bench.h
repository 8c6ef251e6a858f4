/*
 * bench.h -- shared by the C benchmark bodies.
 */
#ifndef DPB_BENCH_H
#define DPB_BENCH_H

#include "backends.h"
#include "shim.h"

#include <stdint.h>
#include <string.h>

#define DPB_OBJSIZE 64

/* Get an object and write its first word, as any user would: the store
 * makes the object's cache line part of the cost for every allocator. */
static inline void *dpb_get_touch(void) {
    void *p = dpb_get();
    if (__builtin_expect(p == NULL, 0))
        dpb_oom();
    *(volatile uint64_t *)p = (uint64_t)(uintptr_t)p;
    return p;
}

void dpb_register_single(void);
void dpb_register_threads(void);

#endif /* DPB_BENCH_H */
