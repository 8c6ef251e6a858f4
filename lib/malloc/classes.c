/*
 * classes.c -- the drop-in malloc's size classes: which pool serves a
 * small request, and each class's size and alignment.  Top layer
 * (docs/design.md §1); docs/malloc.md, "Size classes".
 */
#include "malloc_internal.h"

/* Sizes 0..MC_TABLE_MAX by (n + 7) >> 3: the smallest class that holds
 * n (every class up to MC_TABLE_MAX is a multiple of 8).  Constant, so
 * that malloc()'s hit path needs no initialisation test. */
const uint8_t mc_small_class[MC_TABLE_MAX / 8 + 1] = {
    0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7,
    7, 8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11,
    11, 12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13,
    13, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15,
    15, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    16, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17,
    17, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18,
    18, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19,
    19,
};

size_t mc_class_size(unsigned c)
{
    static const size_t tiny[8] = {16, 32, 48, 64, 80, 96, 112, 128};
    if (c < 8)
        return tiny[c];
    unsigned j = c - 8, lg = 7 + j / 4;
    return ((size_t)1 << lg) + ((size_t)(j % 4 + 1) << (lg - 2));
}

/* The largest power of two dividing the class size, between 16 and
 * MC_ALIGN_MAX: what its pool guarantees. */
size_t mc_class_align(unsigned c)
{
    size_t sz = mc_class_size(c);
    size_t al = sz & -sz;
    return al < 16 ? 16 : al > MC_ALIGN_MAX ? MC_ALIGN_MAX : al;
}
