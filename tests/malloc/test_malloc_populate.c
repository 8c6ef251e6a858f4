/*
 * test_malloc_populate.c -- populated blocks (docs/malloc.md, "Populated
 * blocks"; the populate_kib option, docs/tuning.md): the malloc faults in
 * a new block's pages with one call while the program writes what it
 * asks for, stops when it writes little of it, and never above
 * populate_kib.  Each case runs tests/malloc/populate_probe.c under
 * LD_PRELOAD with its own DEFERPOOL_CONF (read once per process).
 */
#include "preload_probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct seen {
    int populated, late;
    unsigned long long stats;
    char err[512];
};

static struct seen probe(const char *conf, const char *how, int kib,
                         int count)
{
    struct seen s = {-1, -1, 0, ""};
    char args[64], out[256];
    snprintf(args, sizeof(args), "%s %d %d", how, kib, count);
    pp_run(conf, "DP_MALLOC_POPULATE_PROBE", args, out, sizeof(out), s.err,
           sizeof(s.err));
    int n = sscanf(out, "populated=%d late=%d stats=%llu", &s.populated,
                   &s.late, &s.stats);
    cr_assert_eq(n, 3, "conf '%s', %s: no output", conf, args);
    return s;
}

/* 64 blocks of 32 KiB, each written whole: all but the probes (one in
 * eight) come back resident, and the statistics count exactly those. */
Test(malloc_populate, blocks_the_program_writes_come_back_resident)
{
    struct seen s = probe("", "write", 32, 64);
    cr_assert_geq(s.populated, 64 - 64 / 8, "populated %d of 64",
                  s.populated);
    cr_assert_eq(s.stats, (unsigned long long)s.populated,
                 "large_populates %llu, resident %d", s.stats, s.populated);
    cr_assert_str_empty(s.err);
}

/* The same blocks with their first byte written only: the first probe's
 * verdict (the fifth block) stops population for good. */
Test(malloc_populate, blocks_the_program_barely_writes_are_left_to_fault)
{
    struct seen s = probe("", "sparse", 32, 64);
    cr_assert_eq(s.late, 0, "%d blocks after the 16th populated", s.late);
    cr_assert_leq(s.populated, 3, "populated %d", s.populated);
    cr_assert_eq(s.stats, (unsigned long long)s.populated);
}

Test(malloc_populate, populate_kib_0_turns_it_off)
{
    struct seen s = probe("populate_kib:0", "write", 32, 64);
    cr_assert_eq(s.populated, 0);
    cr_assert_eq(s.stats, 0);
    cr_assert_str_empty(s.err);
}

/* A block above populate_kib is never populated; one at it is. */
Test(malloc_populate, only_blocks_up_to_populate_kib)
{
    struct seen big = probe("populate_kib:16", "write", 32, 64);
    cr_assert_eq(big.populated, 0);
    cr_assert_eq(big.stats, 0);
    struct seen at = probe("populate_kib:16", "write", 16, 64);
    cr_assert_geq(at.populated, 64 - 64 / 8, "populated %d of 64",
                  at.populated);
    cr_assert_eq(at.stats, (unsigned long long)at.populated);
}

Test(malloc_populate, a_bad_value_is_reported_and_the_default_kept)
{
    struct seen s = probe("populate_kib:lots", "write", 32, 64);
    cr_assert_not_null(strstr(s.err, "bad number of KiB"), "stderr: %s",
                       s.err);
    cr_assert_geq(s.populated, 64 - 64 / 8);
}
