/*
 * test_malloc_huge.c -- huge chunks (docs/malloc.md, "Huge chunks"; the
 * thp option, docs/tuning.md): once the heap holds MC_HUGE_AFTER bytes,
 * its new chunks are meant for huge pages (advised MADV_HUGEPAGE where
 * the system's policy is "madvise", left to the system where it is
 * "always"), its first chunks are not, and a freed block in a huge chunk
 * is unmapped when its pages go back, where one elsewhere is purged.
 * Each case runs tests/malloc/huge_probe.c under LD_PRELOAD with its own
 * DEFERPOOL_CONF (read once per process).  What the kernel then does
 * with the advice (a huge page, or small ones when none is free) is its
 * business, so the test reads the advice and the mappings, not
 * AnonHugePages.
 */
#include "preload_probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seen {
    char first[8], last[8];
    unsigned long long chunks;
    int small_mapped, huge_mapped;
    char err[512];
};

/* 100 blocks of 64 KiB: about 3.4 chunks of 2 MiB, the third and the
 * fourth mapped once the heap held 4 MiB. */
static struct seen probe(const char *conf)
{
    struct seen s = {"", "", 0, -1, -1, ""};
    char out[256];
    pp_run(conf, "DP_MALLOC_HUGE_PROBE", "100", out, sizeof(out), s.err,
           sizeof(s.err));
    int n = sscanf(out, "first=%7s last=%7s chunks=%llu small_mapped=%d "
                        "huge_mapped=%d",
                   s.first, s.last, &s.chunks, &s.small_mapped,
                   &s.huge_mapped);
    cr_assert_eq(n, 5, "conf '%s': no output (%s)", conf, out);
    return s;
}

/* The machine's THP policy: "always", "madvise" or "never". */
static const char *thp_policy(void)
{
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    char buf[128] = "";
    if (!f)
        return "never";
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = 0;
    fclose(f);
    return strstr(buf, "[always]")    ? "always"
           : strstr(buf, "[madvise]") ? "madvise"
                                      : "never";
}

Test(malloc_huge, later_chunks_are_huge_and_their_blocks_are_unmapped)
{
    const char *sys = thp_policy();
    struct seen s = probe("");
    cr_assert_str_empty(s.err);
    if (!strcmp(sys, "never")) {
        cr_assert_eq(s.chunks, 0, "no huge chunk where the system has none");
        cr_assert_eq(s.huge_mapped, 1, "purged, as any block");
        return;
    }
    cr_assert_eq(s.chunks, 2, "the third and the fourth chunk");
    cr_assert_str_eq(s.first, strcmp(sys, "always") ? "-" : "nh",
                     "the first chunk: the system's policy %s", sys);
    cr_assert_str_eq(s.last, strcmp(sys, "always") ? "hg" : "-",
                     "a huge chunk: the system's policy %s", sys);
    cr_assert_eq(s.small_mapped, 1, "a block of the first chunk is purged");
    cr_assert_eq(s.huge_mapped, 0, "a block of a huge chunk is unmapped");
}

/* thp:never and thp:default make no huge chunk: every chunk is as the
 * first, and every free block is purged. */
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
        cr_assert_eq(s.small_mapped, 1, "%s", c[i].conf);
        cr_assert_eq(s.huge_mapped, 1, "%s", c[i].conf);
    }
}
