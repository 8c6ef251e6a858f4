/*
 * test_malloc_large.c -- the page-granular heap of medium and large
 * blocks (docs/malloc.md, "Large and medium blocks"): medium blocks are
 * cut from one chunk; a freed block is reused by a later malloc or
 * realloc of any size without a new mapping, split at page granularity,
 * and merges with its freed neighbours; the cache respects its byte
 * limit; a second free of a block is ignored.  Runs with reclaim_age_ms:60000,reclaim_interval_ms:5 (see
 * meson.build): the reclaim thread runs often, so the tests see blocks in
 * the queue or already in the cache, but no block ages out while a test
 * runs, however slow the machine.  The ageing itself is in
 * test_malloc_largeage.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <deferpool-malloc.h>

#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "malloc_testutil.h"

#define AGE_NS 60000000000ull /* reclaim_age_ms:60000 in meson.build */

/* Start from an empty cache, with the reclaim thread running. */
static void empty_cache(void)
{
    free(malloc(100 * KiB)); /* starts the reclaim thread if need be */
    dp_malloc_trim();
    dp_malloc_stats_t s = mt_stats();
    cr_assert_eq(s.large_queued + s.large_cached, 0);
}

Test(malloc_large, the_age_comes_from_DEFERPOOL_CONF)
{
    empty_cache();
    cr_assert_eq(mt_stats().reclaim_age_ns, AGE_NS);
}

Test(malloc_large, freed_block_is_reused_by_a_similar_or_smaller_malloc)
{
    empty_cache();
    /* More than half a chunk: a mapping of its own. */
    char *a = malloc(1 * MiB);
    mt_fill(a, 1 * MiB, 1);
    dp_malloc_stats_t s0 = mt_stats();
    cr_assert_eq(s0.large_cached, 0);
    free(a);
    /* The same size: the very block, no mapping. */
    char *b = malloc(1 * MiB);
    cr_assert_eq(b, a);
    /* Smaller: the same block, its whole pages past 700 KiB split off
     * and cached. */
    free(b);
    char *c = malloc(700 * KiB);
    cr_assert_eq(c, a);
    cr_assert_geq(malloc_usable_size(c), 700 * KiB);
    cr_assert_lt(malloc_usable_size(c), 700 * KiB + 4 * KiB);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_maps, s0.large_maps, "no new mapping");
    cr_assert_eq(s1.large_unmaps, s0.large_unmaps);
    cr_assert_eq(s1.large_reused, s0.large_reused + 2);
    cr_assert_eq(s1.large_trims, s0.large_trims + 1);
    cr_assert_eq(s1.large_inuse, s0.large_inuse);
    cr_assert_eq(s1.large_cached, 1);
    cr_assert_eq(s1.large_bytes_cached, mt_blk_len(1 * MiB) - mt_blk_len(700 * KiB));
    cr_assert_eq(s1.large_bytes_inuse + s1.large_bytes_cached, s0.large_bytes_inuse,
                 "every byte of the mapping is accounted for");
    /* The rest serves the next malloc that fits, right after c. */
    char *d = malloc(300 * KiB);
    cr_assert_eq(d, c + mt_blk_len(700 * KiB));
    free(c);
    free(d);
}

Test(malloc_large, medium_blocks_are_cut_from_one_chunk)
{
    empty_cache();
    dp_malloc_stats_t s0 = mt_stats();
    cr_assert_eq(s0.small_max, 8 * KiB);
    /* Above small_max and up to half a chunk: cut side by side from one
     * 2 MiB mapping, whatever their sizes. */
    const size_t sz[] = {8 * KiB + 1, 20 * KiB, 40 * KiB, 64 * KiB, 100 * KiB, 512 * KiB};
    enum { N = sizeof sz / sizeof sz[0] };
    char *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = malloc(sz[i]);
        cr_assert_not_null(b[i]);
        cr_assert_geq(malloc_usable_size(b[i]), sz[i]);
        mt_fill(b[i], sz[i], i);
        if (i)
            cr_assert_eq(b[i], b[i - 1] + mt_blk_len(sz[i - 1]), "block %d", i);
    }
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_maps, s0.large_maps + 1, "one chunk");
    cr_assert_eq(s1.large_inuse, s0.large_inuse + N);
    cr_assert_eq(s1.large_cached, 1, "the chunk's rest");
    cr_assert_eq(s1.large_bytes_inuse - s0.large_bytes_inuse + s1.large_bytes_cached,
                 2 * MiB);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(mt_check(b[i], sz[i], i), sz[i]);
        free(b[i]);
    }
}

Test(malloc_large, memory_one_size_frees_serves_another_size_at_once)
{
    empty_cache();
    /* Eight 48 KiB blocks, written (resident), freed. */
    enum { N = 8 };
    char *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = malloc(48 * KiB);
        mt_fill(b[i], 48 * KiB, i);
    }
    for (int i = 0; i < N; i++)
        free(b[i]);
    /* Some of them wait on this thread's list of 48 KiB blocks: hand them
     * back (an idle thread's lists go back at a reclaim pass, and a
     * malloc the heap cannot serve hands back its own thread's first). */
    dp_malloc_thread_flush();
    dp_malloc_stats_t s0 = mt_stats();
    /* 20 KiB blocks then take the same pages, from the first one on: the
     * freed blocks merged with each other and with the chunk's rest, and
     * the merged block is split at page granularity. */
    size_t span = N * mt_blk_len(48 * KiB), k = span / mt_blk_len(20 * KiB);
    char *c[32];
    cr_assert_leq(k, 32);
    for (size_t i = 0; i < k; i++) {
        c[i] = malloc(20 * KiB);
        cr_assert_eq(c[i], b[0] + i * mt_blk_len(20 * KiB), "block %zu", i);
        mt_fill(c[i], 20 * KiB, 100 + i);
    }
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_maps, s0.large_maps, "no new mapping");
    cr_assert_eq(s1.large_unmaps, s0.large_unmaps);
    cr_assert_eq(s1.large_merges - s0.large_merges, N, "eight blocks into the rest");
    for (size_t i = 0; i < k; i++) {
        cr_assert_eq(mt_check(c[i], 20 * KiB, 100 + i), 20 * KiB);
        free(c[i]);
    }
}

Test(malloc_large, a_medium_block_shrinks_in_place_and_its_tail_is_reused)
{
    empty_cache();
    char *p = malloc(200 * KiB);
    mt_fill(p, 200 * KiB, 5);
    dp_malloc_stats_t s0 = mt_stats();
    char *r = realloc(p, 50 * KiB);
    cr_assert_eq(r, p, "shrunk in place, no copy");
    cr_assert_eq(mt_check(r, 50 * KiB, 5), 50 * KiB);
    cr_assert_geq(malloc_usable_size(r), 50 * KiB);
    cr_assert_lt(malloc_usable_size(r), 50 * KiB + 4 * KiB);
    dp_malloc_stats_t s1 = mt_stats();
    size_t tail = mt_blk_len(200 * KiB) - mt_blk_len(50 * KiB);
    cr_assert_eq(s1.large_maps, s0.large_maps);
    cr_assert_eq(s1.large_unmaps, s0.large_unmaps, "no system call");
    cr_assert_eq(s1.large_bytes_inuse, s0.large_bytes_inuse - tail);
    cr_assert_eq(s1.large_bytes_cached, s0.large_bytes_cached + tail);
    /* The tail merged with the chunk's rest and serves the next malloc. */
    cr_assert_eq(s1.large_cached, s0.large_cached);
    char *q = malloc(100 * KiB);
    cr_assert_eq(q, p + mt_blk_len(50 * KiB));
    free(q);
    free(r);
}

/* A freed block is no block to measure any more, and is handed out once.
 * (A second free, or a realloc, of it aborts: test_malloc_hardening.) */
Test(malloc_large, a_freed_block_is_handed_out_once)
{
    empty_cache();
    char *p = malloc(100 * KiB);
    char *q = malloc(100 * KiB);
    cr_assert_eq(q, p + mt_blk_len(100 * KiB));
    dp_malloc_stats_t s0 = mt_stats();
    free(p);
    cr_assert_eq(malloc_usable_size(p), 0);
    cr_assert_eq(malloc_usable_size(p + 64), 0);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_queued + s1.large_cached, s0.large_cached + 1);
    cr_assert_eq(s1.large_inuse, s0.large_inuse - 1);
    /* Into the cache (tagged there). */
    cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    cr_assert_eq(malloc_usable_size(p), 0);
    s1 = mt_stats();
    cr_assert_eq(s1.large_queued, 0);
    cr_assert_eq(s1.large_cached, s0.large_cached + 1);
    cr_assert_eq(s1.large_inuse, s0.large_inuse - 1);
    /* The block is handed out once, not twice. */
    char *x = malloc(100 * KiB), *y = malloc(100 * KiB);
    cr_assert_eq(x, p);
    cr_assert_neq(y, p);
    free(x);
    free(y);
    free(q);
}

/* A heap pass on another thread, started and seen finished through
 * relaxed flags only: nothing orders it with the main thread's queries,
 * so ThreadSanitizer sees any plain access they share. */
static atomic_int hp_go, hp_done;

static void *heap_pass_on_go(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&hp_go, memory_order_relaxed))
        sched_yield();
    cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    atomic_store_explicit(&hp_done, 1, memory_order_relaxed);
    return NULL;
}

/* malloc_usable_size() of a freed block reads its header while a heap
 * pass takes the block from the queue, moves an aligned block's pointer
 * back to the default offset and merges neighbours (clearing the magic
 * of the header merged away): each answer is 0, and under TSan no such
 * read is a data race. */
Test(malloc_large, a_freed_block_queried_during_a_heap_pass_is_not_a_block)
{
    empty_cache();
    char *p = malloc(100 * KiB), *q = malloc(100 * KiB);
    cr_assert_eq(q, p + mt_blk_len(100 * KiB));
    char *a = aligned_alloc(8 * KiB, 100 * KiB);
    cr_assert_eq((uintptr_t)a % (8 * KiB), 0);
    atomic_store(&hp_go, 0);
    atomic_store(&hp_done, 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, heap_pass_on_go, NULL), 0);
    free(p);
    free(q);
    free(a);
    unsigned n = 0;
    do {
        cr_assert_eq(malloc_usable_size(p), 0, "query %u", n);
        cr_assert_eq(malloc_usable_size(q), 0, "query %u", n);
        cr_assert_eq(malloc_usable_size(a), 0, "query %u", n);
        if (n++ == 0)
            atomic_store_explicit(&hp_go, 1, memory_order_relaxed);
    } while (!atomic_load_explicit(&hp_done, memory_order_relaxed));
    cr_assert_eq(pthread_join(t, NULL), 0);
    /* The pass cached the blocks, p and q as one. */
    dp_malloc_stats_t s = mt_stats();
    cr_assert_eq(s.large_queued, 0);
    char *x = malloc(2 * mt_blk_len(100 * KiB) - 64);
    cr_assert_eq(x, p, "p and q merged serve one malloc of both");
    free(x);
}

Test(malloc_large, much_bigger_block_is_split_and_its_pieces_merge_again)
{
    empty_cache();
    char *big = malloc(8 * MiB);
    free(big);
    dp_malloc_stats_t s0 = mt_stats();
    /* 8 MiB serves 1.5 MiB: split, the rest goes back to the cache. */
    char *p = malloc(3 * MiB / 2);
    cr_assert_eq(p, big);
    mt_fill(p, 3 * MiB / 2, 7);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_maps, s0.large_maps);
    cr_assert_eq(s1.large_trims, s0.large_trims + 1);
    cr_assert_eq(s1.large_unmaps, s0.large_unmaps, "nothing unmapped");
    cr_assert_lt(malloc_usable_size(p), 3 * MiB / 2 + 4 * KiB);
    cr_assert_eq(s1.large_cached, 1);
    cr_assert_geq(s1.large_bytes_cached, 13 * MiB / 2 - 8 * KiB);
    cr_assert_leq(s1.large_bytes_cached, 13 * MiB / 2);
    /* The rest serves smaller blocks, from the same mapping: split
     * again, and again. */
    char *q = malloc(150 * KiB);
    cr_assert(q > p && q < big + 8 * MiB, "%p from the rest of %p", q, big);
    mt_fill(q, 150 * KiB, 8);
    char *r = malloc(6 * MiB);
    cr_assert(r > q && r < big + 8 * MiB, "%p from the rest of %p", r, big);
    mt_fill(r, 6 * MiB, 9);
    dp_malloc_stats_t s2 = mt_stats();
    cr_assert_eq(s2.large_maps, s0.large_maps);
    cr_assert_eq(s2.large_cached, 1, "what r did not need");
    cr_assert_eq(s2.large_bytes_cached, mt_blk_len(8 * MiB) - mt_blk_len(3 * MiB / 2) -
                                            mt_blk_len(150 * KiB) - mt_blk_len(6 * MiB));
    cr_assert_eq(mt_check(p, 3 * MiB / 2, 7), 3 * MiB / 2);
    cr_assert_eq(mt_check(q, 150 * KiB, 8), 150 * KiB);
    cr_assert_eq(mt_check(r, 6 * MiB, 9), 6 * MiB);
    /* Freed, the three pieces merge back with the cached rest into one
     * block, which serves an 8 MiB malloc with no new mapping. */
    free(q);
    free(p);
    free(r);
    char *x = malloc(8 * MiB - 8 * KiB);
    cr_assert_eq(x, big);
    dp_malloc_stats_t s3 = mt_stats();
    cr_assert_eq(s3.large_maps, s0.large_maps);
    cr_assert_eq(s3.large_merges, s2.large_merges + 3);
    cr_assert_eq(s3.large_cached, 1, "the 8 KiB x does not need");
    mt_fill(x, 8 * MiB - 8 * KiB, 10);
    cr_assert_eq(mt_check(x, 8 * MiB - 8 * KiB, 10), 8 * MiB - 8 * KiB);
    /* A pointer to a swallowed header is foreign now. */
    cr_assert_eq(malloc_usable_size(q), 0);
    free(x);
}

Test(malloc_large, realloc_growth_moves_into_a_cached_block)
{
    empty_cache();
    /* A live guard after p: p cannot grow in place. */
    void *b[3];
    const size_t sz[3] = {200 * KiB, 16 * KiB, 400 * KiB};
    cr_assert(mt_layout(b, sz, 3));
    char *p = b[0], *spare = b[2];
    mt_fill(p, 200 * KiB, 3);
    free(spare);
    dp_malloc_stats_t s0 = mt_stats();
    /* Growth asks for half again the size (300 KiB): the 400 KiB block. */
    char *q = realloc(p, 220 * KiB);
    cr_assert_eq(q, spare);
    cr_assert_eq(mt_check(q, 200 * KiB, 3), 200 * KiB);
    /* Further growth within the block stays in place. */
    char *r = realloc(q, 290 * KiB);
    cr_assert_eq(r, q);
    cr_assert_eq(mt_check(r, 200 * KiB, 3), 200 * KiB);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_maps, s0.large_maps, "no new mapping");
    cr_assert_eq(s1.large_reused, s0.large_reused + 1);
    cr_assert_eq(s1.large_inuse, s0.large_inuse);
    /* The old block went to the queue (or, if a reclaim pass ran since,
     * into the cache): the next malloc that fits reuses it. */
    char *t = malloc(200 * KiB);
    cr_assert_eq(t, p);
    free(t);
    free(r);
    free(b[1]);
}

/* Growth takes the free block that starts where the block ends: no copy,
 * no new block; the contents stay where they are. */
Test(malloc_large, realloc_growth_extends_into_the_free_neighbour_in_place)
{
    empty_cache();
    void *b[3];
    const size_t sz[3] = {200 * KiB, 400 * KiB, 16 * KiB};
    cr_assert(mt_layout(b, sz, 3));
    char *p = b[0];
    mt_fill(p, 200 * KiB, 5);
    free(b[1]);
    dp_malloc_stats_t s0 = mt_stats();
    char *q = realloc(p, 220 * KiB);
    cr_assert_eq(q, p, "moved although its neighbour is free");
    cr_assert_eq(mt_check(q, 200 * KiB, 5), 200 * KiB);
    /* Up to the guard: the rest of the neighbour, still in place. */
    size_t all = mt_blk_len(200 * KiB) + mt_blk_len(400 * KiB) - 64;
    q = realloc(q, all);
    cr_assert_eq(q, p);
    cr_assert_eq(malloc_usable_size(q), all);
    cr_assert_eq(mt_check(q, 200 * KiB, 5), 200 * KiB);
    memset(q + 200 * KiB, 1, all - 200 * KiB);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_maps, s0.large_maps);
    cr_assert_eq(s1.large_reused, s0.large_reused, "no block taken: no copy");
    cr_assert_eq(s1.large_inuse, s0.large_inuse);
    cr_assert_eq(s1.large_bytes_inuse,
                 s0.large_bytes_inuse + mt_blk_len(400 * KiB));
    free(q);
    free(b[2]);
}

/* A real shrink keeps the block where it is and caches its tail, still
 * resident, for the next growth (the return policy returns it later);
 * growing back takes the tail again in place. */
Test(malloc_large, realloc_shrink_caches_the_tail_and_regrowth_takes_it_back)
{
    empty_cache();
    char *g = malloc(8 * MiB); /* a mapping of its own */
    mt_fill(g, 8 * MiB, 6);
    dp_malloc_stats_t s0 = mt_stats();
    char *r = realloc(g, 2 * MiB);
    cr_assert_eq(r, g);
    cr_assert_eq(mt_check(r, 2 * MiB, 6), 2 * MiB);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_unmaps, s0.large_unmaps);
    cr_assert_eq(s1.large_cached, s0.large_cached + 1);
    cr_assert_geq(s1.large_bytes_cached, s0.large_bytes_cached + 6 * MiB - 4 * KiB);
    cr_assert_geq(mt_resident_pages(g + 3 * MiB, 4 * MiB), 1024,
                  "the tail's pages were given back");
    r = realloc(r, 8 * MiB);
    cr_assert_eq(r, g, "regrowth moved");
    cr_assert_eq(mt_check(r, 2 * MiB, 6), 2 * MiB);
    dp_malloc_stats_t s2 = mt_stats();
    cr_assert_eq(s2.large_maps, s0.large_maps);
    cr_assert_eq(s2.large_reused, s0.large_reused);
    free(r);
}

/* With no free memory next to it or in the cache, a block of more than
 * half a chunk grows by mremap: no new mapping, no copy by the library,
 * contents and the user pointer's alignment kept. */
Test(malloc_large, realloc_of_a_large_block_with_no_free_memory_uses_mremap)
{
    empty_cache();
    char *p = malloc(3 * MiB);
    mt_fill(p, 3 * MiB, 7);
    dp_malloc_stats_t s0 = mt_stats();
    cr_assert_eq(s0.large_queued + s0.large_cached, 0);
    char *q = realloc(p, 5 * MiB);
    cr_assert_not_null(q);
    cr_assert_eq((uintptr_t)q % 64, 0);
    cr_assert_eq(mt_check(q, 3 * MiB, 7), 3 * MiB);
    memset(q + 3 * MiB, 2, 2 * MiB);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_maps, s0.large_maps, "a new mapping and a copy");
    cr_assert_eq(s1.large_reused, s0.large_reused);
    cr_assert_eq(s1.large_inuse, s0.large_inuse);
    free(q);
}

Test(malloc_large, realloc_grown_strings_need_few_mappings)
{
    empty_cache();
    dp_malloc_stats_t s0 = mt_stats();
    /* Like benchmarks/macro/realloc_grow.c: strings grown by 1/8 from
     * 64 KiB to 1 MiB, four side by side, one after another. */
    enum { LIVE = 4, ROUNDS = 20 };
    char *s[LIVE];
    size_t len[LIVE];
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < LIVE; i++) {
            len[i] = 64 * KiB;
            s[i] = malloc(len[i]);
            memset(s[i], round * LIVE + i, len[i]);
        }
        for (int more = 1; more;) {
            more = 0;
            for (int i = 0; i < LIVE; i++) {
                size_t nl = len[i] + len[i] / 8;
                if (nl > 1 * MiB)
                    continue;
                more = 1;
                s[i] = realloc(s[i], nl);
                cr_assert_not_null(s[i]);
                memset(s[i] + len[i], round * LIVE + i, nl - len[i]);
                len[i] = nl;
            }
        }
        for (int i = 0; i < LIVE; i++) {
            for (size_t k = 0; k < len[i]; k += 4093)
                cr_assert_eq(s[i][k], (char)(round * LIVE + i));
            free(s[i]);
        }
    }
    dp_malloc_stats_t s1 = mt_stats();
    /* Without the cache each string made its own mapping. */
    cr_assert_lt(s1.large_maps - s0.large_maps, (uint64_t)ROUNDS * LIVE / 2,
                 "%llu mappings for %d strings",
                 (unsigned long long)(s1.large_maps - s0.large_maps),
                 ROUNDS * LIVE);
    cr_assert_gt(s1.large_reused, s0.large_reused);
}

Test(malloc_large, small_block_grown_past_64k_takes_a_roomy_block_and_stays)
{
    empty_cache();
    char *big = malloc(4 * MiB);
    free(big);
    char *p = malloc(6 * KiB); /* a class pool's */
    mt_fill(p, 6 * KiB, 9);
    dp_malloc_stats_t s0 = mt_stats();
    /* A growing block takes room for MC_GROW_ROOM (2) times what it asks
     * for from the cached 4 MiB block; the rest stays cached.  It then
     * grows in place within that room although it uses less than half of
     * it. */
    char *q = realloc(p, 80 * KiB);
    cr_assert_eq(q, big);
    size_t room = malloc_usable_size(q);
    cr_assert_geq(room, 2 * 80 * KiB);
    cr_assert_lt(room, 2 * 80 * KiB + 8 * KiB);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_cached, 1, "the rest of the 4 MiB block");
    cr_assert_eq(s1.large_trims, s0.large_trims + 1);
    for (size_t n = 90 * KiB; n <= room; n += n / 8) {
        char *r = realloc(q, n);
        cr_assert_eq(r, q, "moved at %zu", n);
    }
    cr_assert_eq(mt_check(q, 6 * KiB, 9), 6 * KiB);
    s1 = mt_stats();
    cr_assert_eq(s1.large_maps, s0.large_maps);
    cr_assert_eq(s1.large_trims, s0.large_trims + 1);
    /* A shrink stays in the block. */
    char *r = realloc(q, 100 * KiB);
    cr_assert_eq(mt_check(r, 6 * KiB, 9), 6 * KiB);
    cr_assert_lt(malloc_usable_size(r), 200 * KiB);
    free(r);
}

Test(malloc_large, cache_keeps_at_most_its_byte_limit)
{
    empty_cache();
    /* 1.1 GiB of address space, never touched: nothing resident. */
    enum { N = 12 };
    const size_t B = 96 * MiB;
    void *b[N];
    for (int i = 0; i < N; i++)
        cr_assert_not_null(b[i] = malloc(B));
    dp_malloc_stats_t s0 = mt_stats();
    for (int i = 0; i < N; i++)
        free(b[i]);
    cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_cache_max_bytes, 1024 * MiB);
    cr_assert_leq(s1.large_bytes_cached, s1.large_cache_max_bytes);
    /* Neighbours merge, up to a quarter of the limit: the oldest block
     * evicted may be that big. */
    cr_assert_gt(s1.large_bytes_cached, s1.large_cache_max_bytes * 3 / 4,
                 "the newest are kept");
    /* Each merge is one block less. */
    cr_assert_eq(s1.large_cached + (s1.large_unmaps - s0.large_unmaps) +
                     (s1.large_merges - s0.large_merges),
                 N);
    cr_assert_eq(s1.large_bytes_inuse, s0.large_bytes_inuse - N * mt_blk_len(B));
}

/* A freed aligned block joins the heap like any other (docs/malloc.md,
 * "Aligned blocks"): it serves the same aligned request again, and an
 * unaligned one of the same size from the same pages. */
Test(malloc_large, aligned_blocks_are_kept_and_reused)
{
    empty_cache();
    char *p;
    cr_assert_eq(posix_memalign((void **)&p, 64 * KiB, 1 * MiB), 0);
    dp_malloc_stats_t s0 = mt_stats();
    free(p);
    cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_queued, 0);
    cr_assert_eq(s1.large_cached, 1);
    cr_assert_eq(s1.large_unmaps, s0.large_unmaps);
    char *q;
    cr_assert_eq(posix_memalign((void **)&q, 64 * KiB, 1 * MiB), 0);
    cr_assert_eq(q, p, "the same aligned request takes the freed block");
    free(q);
    /* Unaligned: the header takes the page before the aligned pointer;
     * the block of the same length holds 1 MiB at the default offset. */
    char *u = malloc(1 * MiB);
    cr_assert_eq(u, p - 4096 + 64);
    dp_malloc_stats_t s2 = mt_stats();
    cr_assert_eq(s2.large_maps, s0.large_maps);
    cr_assert_eq(s2.large_unmaps, s0.large_unmaps);
    free(u);
}
