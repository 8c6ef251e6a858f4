/*
 * immediate.h -- benchmarks only: the one extra entry point of the
 * private library copy that the deferpool-immediate back-end links
 * (benchmarks/immediate.c, benchmarks/meson.build).
 */
#ifndef DPB_IMMEDIATE_H
#define DPB_IMMEDIATE_H

#include <deferpool.h>

/* dp_pool_create() with the internal creation flag DP_IPOOL_IMMEDIATE: a
 * naive pool whose emptying put returns the page to the provider. */
DP_API dp_pool_t *dpb_pool_create_immediate(const char *name, size_t objsize,
                                            const dp_pool_attr_t *attr);

#endif /* DPB_IMMEDIATE_H */
