/*
 * test_malloc_huge.c -- huge chunks (docs/malloc.md, "Huge chunks"; the
 * thp option, docs/tuning.md): once the heap holds MC_HUGE_AFTER bytes,
 * its new chunks are meant for huge pages (advised MADV_HUGEPAGE where
 * the system's policy is "madvise", left to the system where it is
 * "always") and its first chunks are not; a free block of a huge chunk
 * is purged, even by dp_malloc_trim(), and the purge advises the chunk
 * MADV_NOHUGEPAGE; blocks do not merge across a huge chunk's edge, none
 * of its blocks is moved out by mremap, and a chunk all free is unmapped
 * whole.  Each case runs
 * tests/malloc/huge_probe.c under LD_PRELOAD with its own DEFERPOOL_CONF
 * (read once per process).  What the kernel then does with the advice (a
 * huge page, or small ones when none is free) is its business, so the
 * test reads the advice and the mappings, not AnonHugePages.
 */
#include "preload_probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seen {
    char first[8], last[8], after[8];
    unsigned long long chunks;
    int moved_mapped, purged, trimmed_small, trimmed_huge, whole, edge,
        extend;
    char err[512];
};

/* 200 blocks of 64 KiB: about 6.7 chunks of 2 MiB, those from the third
 * on mapped once the heap held 4 MiB. */
static struct seen probe(const char *conf)
{
    struct seen s = {"", "", "", 0, -9, -9, -9, -9, -9, -9, -9, ""};
    char out[512];
    pp_run(conf, "DP_MALLOC_HUGE_PROBE", "200", out, sizeof(out), s.err,
           sizeof(s.err));
    int n = sscanf(out,
                   "first=%7s last=%7s chunks=%llu moved_mapped=%d "
                   "purged=%d after=%7s trimmed_small=%d trimmed_huge=%d "
                   "whole=%d edge=%d extend=%d",
                   s.first, s.last, &s.chunks, &s.moved_mapped, &s.purged,
                   s.after, &s.trimmed_small, &s.trimmed_huge, &s.whole,
                   &s.edge, &s.extend);
    cr_assert_eq(n, 11, "conf '%s': output '%s'", conf, out);
    return s;
}

Test(malloc_huge, later_chunks_are_huge_and_go_back_whole)
{
    const char *sys = pp_thp_policy();
    struct seen s = probe("");
    cr_assert_str_empty(s.err);
    cr_assert_eq(s.purged, 2, "a free block smaller than a chunk is purged");
    cr_assert_eq(s.trimmed_small, 0, "dp_malloc_trim unmaps a block of a "
                                     "chunk that is not huge");
    if (!strcmp(sys, "never")) {
        cr_assert_eq(s.chunks, 0, "no huge chunk where the system has none");
        return;
    }
    cr_assert_eq(s.chunks, 5, "the third chunk and those after it");
    cr_assert_str_eq(s.first, strcmp(sys, "always") ? "-" : "nh",
                     "the first chunk: the system's policy %s", sys);
    cr_assert_str_eq(s.last, strcmp(sys, "always") ? "hg" : "-",
                     "a huge chunk: the system's policy %s", sys);
    cr_assert_eq(s.moved_mapped, 1, "a huge chunk's block grown by realloc "
                                    "is copied, not moved out");
    cr_assert_str_eq(s.after, "nh", "a purge advises its huge chunk");
    cr_assert_eq(s.trimmed_huge, 2, "dp_malloc_trim purges a huge chunk's "
                                    "blocks: the chunk goes back whole");
    cr_assert_eq(s.whole, 0, "a huge chunk all free is unmapped");
    cr_assert_neq(s.edge, -1, "no chunk of ours next to the last one");
    cr_assert_eq(s.edge, 1, "a free block next to a huge chunk's edge did "
                            "not merge across it");
    cr_assert_eq(s.extend, 0, "realloc did not grow a block across a huge "
                              "chunk's edge");
}

/* thp:never and thp:default make no huge chunk: every chunk is as the
 * first, and dp_malloc_trim unmaps every free block. */
Test(malloc_huge, never_and_default_make_none)
{
    static const struct {
        const char *conf, *advice;
    } c[] = {{"thp:never", "nh"}, {"thp:default", "-"}};
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        struct seen s = probe(c[i].conf);
        cr_assert_eq(s.chunks, 0, "%s", c[i].conf);
        cr_assert_str_eq(s.first, c[i].advice, "%s", c[i].conf);
        cr_assert_str_eq(s.last, c[i].advice, "%s", c[i].conf);
        cr_assert_eq(s.purged, 2, "%s", c[i].conf);
        cr_assert_eq(s.trimmed_small, 0, "%s", c[i].conf);
        cr_assert_eq(s.trimmed_huge, 0, "%s", c[i].conf);
    }
}
