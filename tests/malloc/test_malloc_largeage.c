/*
 * test_malloc_largeage.c -- the reclaim thread gives free blocks back
 * once they are older than the age, and not before: a block of a chunk
 * (2 MiB) or more is unmapped, a smaller one purged and kept.  Small
 * blocks freed in a burst, parked in the class pools' depots, go back
 * with their pages one age after the frees (plus a period of the
 * depot's window), not two.  Runs with
 * reclaim_age_ms:300,reclaim_interval_ms:5 (see meson.build).
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "malloc_testutil.h"

#define AGE_NS 300000000ull /* reclaim_age_ms:300 in meson.build */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The reclaim policy's own clock (lib/os.h, dp_coarse_ns), which lags
 * CLOCK_MONOTONIC by up to a tick. */
static uint64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Start from an empty cache, with the reclaim thread running. */
static void empty_cache(void)
{
    free(malloc(100 * KiB)); /* starts the reclaim thread if need be */
    dp_malloc_trim();
    dp_malloc_stats_t s = mt_stats();
    cr_assert_eq(s.large_queued + s.large_cached, 0);
}

Test(malloc_largeage, reclaim_thread_empties_the_cache_after_the_age)
{
    /* Four blocks with live blocks between them (freed neighbours would
     * merge), cut from one mapping. */
    void *v[7], *b[4];
    const size_t sz[7] = {1 * MiB, 200 * KiB, 2 * MiB, 200 * KiB,
                          3 * MiB, 200 * KiB, 4 * MiB};
    dp_malloc_stats_t s0, s;
    uint64_t t0;
    /* Not before the age: the first pass after the frees moves the blocks
     * into the cache, and every reading of the statistics made less than
     * the age after the frees must find all four there; the test reads
     * them after each pass until the age is reached.  A round in which
     * not even the first reading came that soon (a slow host) proves
     * nothing: it is done again with new blocks, and the test fails if no
     * round could be read in time. */
    for (int round = 0;; round++) {
        cr_assert_lt(round, 10, "no round of frees was observed within the "
                     "age (%llu ms) of the frees: the host is too slow",
                     (unsigned long long)(AGE_NS / 1000000));
        empty_cache();
        cr_assert(mt_layout(v, sz, 7));
        for (int i = 0; i < 4; i++) {
            b[i] = v[2 * i];
            memset(b[i], 0x5a, sz[2 * i]); /* resident, and not zero */
        }
        s0 = mt_stats();
        t0 = now_ns();
        for (int i = 0; i < 4; i++)
            free(b[i]);
        int readings = 0;
        for (;;) {
            cr_assert_eq(dp_malloc_reclaim_sync(), 0);
            s = mt_stats();
            uint64_t seen = now_ns() - t0;
            cr_assert_eq(s.large_queued, 0, "a pass moves them into the cache");
            if (seen >= AGE_NS)
                break;
            readings++;
            cr_assert_eq(s.large_cached, 4, "freed blocks given back after "
                         "%llu ms, before the age",
                         (unsigned long long)(seen / 1000000));
            cr_assert_eq(s.large_unmaps, s0.large_unmaps);
            cr_assert_eq(s.large_purges, s0.large_purges);
        }
        if (readings)
            break;
        for (int i = 1; i < 7; i += 2)
            free(v[i]);
    }
    /* Wait for passes (dp_malloc_reclaim_sync wakes the thread, so they
     * come faster than the interval), for up to 10 s. */
    while ((s.large_queued || s.large_cached != 1 ||
            s.large_bytes_purged != mt_blk_len(1 * MiB)) &&
           now_ns() - t0 < 10000000000ull) {
        cr_assert_eq(dp_malloc_reclaim_sync(), 0);
        s = mt_stats();
    }
    uint64_t took = now_ns() - t0;
    /* The blocks of 2, 3 and 4 MiB are unmapped; the 1 MiB one, smaller
     * than a chunk, is purged: still cached, not resident. */
    cr_assert_eq(s.large_queued, 0);
    cr_assert_eq(s.large_cached, 1, "still cached");
    cr_assert_eq(s.large_bytes_cached, mt_blk_len(1 * MiB));
    cr_assert_eq(s.large_bytes_purged, mt_blk_len(1 * MiB));
    cr_assert_eq(s.large_unmaps, s0.large_unmaps + 3);
    cr_assert_eq(s.large_purges, s0.large_purges + 1);
    cr_assert_geq(took, AGE_NS, "gone after %llu ms, before the age",
                  (unsigned long long)(took / 1000000));
    /* The purged block serves the next malloc that fits, zero-filled
     * past its first page, with no new mapping. */
    char *p = malloc(1 * MiB);
    cr_assert_eq(p, (char *)b[0]);
    for (size_t k = 4096; k < 1 * MiB; k += 4096)
        cr_assert_eq(p[k], 0, "byte %zu", k);
    dp_malloc_stats_t s2 = mt_stats();
    cr_assert_eq(s2.large_maps, s.large_maps);
    cr_assert_eq(s2.large_bytes_purged, 0);
    free(p);
    for (int i = 1; i < 7; i += 2)
        free(v[i]);
}

/* A burst of small blocks, far more than a thread's bins hold, twice:
 * the frees leave them in the bin, in the class pool's small depot and
 * on their pages, which stay held, empty, until they age out. */
#define BURST 20000
#define BURST_SIZE 256

Test(malloc_largeage, a_burst_of_small_blocks_goes_back_one_age_after_the_frees)
{
    static void *v[BURST];
    free(malloc(100 * KiB)); /* starts the reclaim thread if need be */
    dp_malloc_trim();
    dp_malloc_stats_t s0 = mt_stats(), s;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < BURST; i++) {
            v[i] = malloc(BURST_SIZE);
            cr_assert_not_null(v[i]);
            memset(v[i], 0x5a, BURST_SIZE);
        }
        for (int i = 0; i < BURST; i++)
            free(v[i]);
    }
    uint64_t t0 = coarse_ns();
    s = mt_stats();
    cr_assert_gt(s.small_pages, s0.small_pages + 40, "the burst's pages "
                 "are held after the frees");

    /* The depot's window closes the period of the frees at the first pass
     * a period (age / 7) after them; two passes in a row also let the
     * idle-cache GC hand this thread's bins back.  t1 is after that
     * pass.  A pass that starts an age after t1 finds the depot unused
     * for an age: it trims it, and returns the pages that empties in the
     * same pass.  Every wait is for reclaim passes, whatever the host's
     * speed: no sleep, no bound on how long a pass takes; times are read
     * on the policy's clock. */
    for (int n = 0; n < 2 || coarse_ns() - t0 < AGE_NS / 7 + 1; n++)
        cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    uint64_t t1 = coarse_ns();
    while (coarse_ns() - t1 < AGE_NS)
        cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    s = mt_stats();
    cr_assert_eq(s.small_objs_cached, 0, "%llu blocks still cached",
                 (unsigned long long)s.small_objs_cached);
    cr_assert_eq(s.small_pages_empty, 0, "%llu empty pages kept an age "
                 "after the depot let them go",
                 (unsigned long long)s.small_pages_empty);
    cr_assert_leq(s.small_pages, s0.small_pages, "%llu pages, %llu before "
                  "the burst", (unsigned long long)s.small_pages,
                  (unsigned long long)s0.small_pages);
}
