/*
 * immediate.c -- benchmarks only: built into libdeferpool-immediate.so, a
 * private copy of the library, so that the deferpool-immediate back-end
 * reaches the internal comparison mode (DP_IPOOL_IMMEDIATE) while paying
 * the same shared-library calls as the deferpool back-end.
 */
#include "dp_internal.h"
#include "immediate.h"

dp_pool_t *dpb_pool_create_immediate(const char *name, size_t objsize,
                                     const dp_pool_attr_t *attr)
{
    return dp_pool_create_ex(name, objsize, attr, DP_IPOOL_IMMEDIATE);
}
