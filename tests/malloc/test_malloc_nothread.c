/*
 * test_malloc_nothread.c -- the drop-in malloc with the reclaim thread
 * off (DEFERPOOL_CONF=background_thread:0, tests/malloc/meson.build), so
 * that nothing but the behaviour under test moves memory: a thread's
 * cached objects go back when it exits, and freed large blocks go back
 * from a later large allocation or malloc_trim -- never from free(); a
 * medium block waits on its thread's list until a malloc takes it or a
 * heap miss hands the lists back; what a trim gives back leaves the
 * process's resident pages (mincore), and malloc_trim says whether it gave
 * anything back.
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "malloc_testutil.h"

Test(malloc_nothread, background_thread_off_is_honoured)
{
    void *p = malloc(10);
    free(p);
    dp_malloc_stats_t s;
    dp_malloc_stats_get(&s);
    cr_assert_eq(s.reclaim_running, 0);
    errno = 0;
    cr_assert_eq(dp_malloc_reclaim_sync(), -1);
    cr_assert_eq(errno, ESRCH);
}

struct cacher {
    tu_gate_t cached, go;
};

static void *cacher_main(void *arg)
{
    struct cacher *c = arg;
    void *v[300];
    for (int i = 0; i < 300; i++)
        v[i] = malloc(i % 2 ? 64 : 3000);
    for (int i = 0; i < 300; i++)
        free(v[i]);
    tu_gate_open(&c->cached);
    tu_gate_wait(&c->go);
    return NULL; /* pthread key destructor: the cache goes back */
}

Test(malloc_nothread, thread_exit_returns_its_cache)
{
    struct cacher c = {TU_GATE_INIT, TU_GATE_INIT};
    pthread_t t;
    pthread_create(&t, NULL, cacher_main, &c);
    tu_gate_wait(&c.cached);
    dp_malloc_stats_t s1, s2;
    dp_malloc_stats_get(&s1);
    tu_gate_open(&c.go);
    pthread_join(t, NULL);
    dp_malloc_stats_get(&s2);
    /* The thread held over 100 objects of 64 bytes (its bin refills 129
     * at a time and keeps up to 256). */
    cr_assert_geq(s1.small_objs_cached, 100);
    cr_assert_leq(s2.small_objs_cached + 100, s1.small_objs_cached,
                  "cached before exit %llu, after %llu",
                  (unsigned long long)s1.small_objs_cached,
                  (unsigned long long)s2.small_objs_cached);
}

/* A thread that only frees what another thread allocated has no cache
 * of its own (malloc makes it); a free of such a thread adopts the cache
 * the last allocation that missed made ready (lib/cache.c, "Adopted
 * caches"): what it frees from then on stays cached, and its exit hands
 * it back. */
enum { OF_N = 40 }; /* fewer than a young bin holds */

struct only_frees {
    void *v[OF_N];
    tu_gate_t first, go, rest, done;
};

static void *only_frees_main(void *arg)
{
    struct only_frees *o = arg;
    free(o->v[0]);
    tu_gate_open(&o->first);
    tu_gate_wait(&o->go);
    for (int i = 1; i < OF_N; i++)
        free(o->v[i]);
    tu_gate_open(&o->rest);
    tu_gate_wait(&o->done);
    return NULL;
}

Test(malloc_nothread, a_thread_that_only_frees_adopts_a_cache)
{
    static struct only_frees o = {.first = TU_GATE_INIT, .go = TU_GATE_INIT,
                                  .rest = TU_GATE_INIT, .done = TU_GATE_INIT};
    for (int i = 0; i < OF_N; i++)
        cr_assert_not_null(o.v[i] = malloc(64));
    dp_malloc_thread_flush();
    dp_malloc_stats_t s0 = mt_stats();
    pthread_t t;
    pthread_create(&t, NULL, only_frees_main, &o);
    tu_gate_wait(&o.first);
    /* A miss (this thread caches nothing) makes a cache ready, unless
     * one was ready already and the first free took it. */
    void *volatile q = malloc(64);
    free(q);
    dp_malloc_thread_flush();
    dp_malloc_stats_t s2 = mt_stats();
    tu_gate_open(&o.go);
    tu_gate_wait(&o.rest);
    dp_malloc_stats_t s3 = mt_stats();
    cr_assert_eq(s3.small_objs_cached - s2.small_objs_cached, OF_N - 1,
                 "of %d frees, %llu stayed cached", OF_N - 1,
                 (unsigned long long)(s3.small_objs_cached -
                                      s2.small_objs_cached));
    tu_gate_open(&o.done);
    pthread_join(t, NULL);
    dp_malloc_stats_t s4 = mt_stats();
    cr_assert_eq(s4.small_objs_cached, s0.small_objs_cached,
                 "cached: %llu before the thread, %llu after its exit",
                 (unsigned long long)s0.small_objs_cached,
                 (unsigned long long)s4.small_objs_cached);
}

/* ... but a medium block such a thread frees goes to the heap, where
 * the next malloc of its size finds it, not onto the thread's lists,
 * which only a malloc of that thread would take it back from. */
struct frees_medium {
    void *small[2], *medium;
    tu_gate_t first, go, done, exit;
};

static void *frees_medium_main(void *arg)
{
    struct frees_medium *f = arg;
    free(f->small[0]);
    tu_gate_open(&f->first);
    tu_gate_wait(&f->go);
    free(f->small[1]); /* adopts the cache, if the first did not */
    free(f->medium);
    tu_gate_open(&f->done);
    tu_gate_wait(&f->exit); /* its exit would flush its cache */
    return NULL;
}

Test(malloc_nothread, a_medium_block_a_thread_that_only_frees_frees_goes_to_the_heap)
{
    static struct frees_medium f = {.first = TU_GATE_INIT,
                                    .go = TU_GATE_INIT,
                                    .done = TU_GATE_INIT,
                                    .exit = TU_GATE_INIT};
    f.small[0] = malloc(64);
    f.small[1] = malloc(64);
    f.medium = malloc(20000);
    cr_assert(f.small[0] && f.small[1] && f.medium);
    pthread_t t;
    pthread_create(&t, NULL, frees_medium_main, &f);
    tu_gate_wait(&f.first);
    dp_malloc_thread_flush();
    void *volatile q = malloc(64); /* a miss: a cache made ready */
    free(q);
    dp_malloc_stats_t s1 = mt_stats();
    tu_gate_open(&f.go);
    tu_gate_wait(&f.done);
    dp_malloc_stats_t s2 = mt_stats();
    cr_assert_geq(s2.small_objs_cached, s1.small_objs_cached + 1,
                  "the thread adopted a cache");
    void *again = malloc(20000);
    cr_assert_eq(again, f.medium, "the freed block %p is not in the heap "
                                  "(got %p)", f.medium, again);
    free(again);
    tu_gate_open(&f.exit);
    pthread_join(t, NULL);
}

/* Bursts of frees in one thread: what its bin cannot hold goes back to
 * the blocks' pages (the class pool's depot keeps a few magazines, not
 * 16 MiB of them), so the next allocations take whole pages again and
 * emptied pages can go back.  Several rounds: the depot gets its empty
 * magazines from refills that found bins short of them. */
Test(malloc_nothread, bursts_of_frees_go_back_to_the_pages)
{
    enum { N = 20000, ROUNDS = 8 };
    static void *v[N];
    dp_malloc_stats_t a, b;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < N; i++)
            v[i] = malloc(64);
        a = mt_stats();
        for (int i = 0; i < N; i++)
            free(v[i]);
        b = mt_stats();
    }
    cr_assert_eq(a.small_objs_inuse - b.small_objs_inuse, N);
    cr_assert_leq(b.small_objs_cached, a.small_objs_cached + N / 8,
                  "of %d blocks freed, %llu stay cached (before: %llu)", N,
                  (unsigned long long)b.small_objs_cached,
                  (unsigned long long)a.small_objs_cached);
    cr_assert_gt(b.small_pages_empty, a.small_pages_empty);
}

Test(malloc_nothread, freed_large_blocks_are_kept_by_a_later_allocation_until_trim)
{
    dp_malloc_stats_t a, b, c;
    dp_malloc_trim();
    /* x and y with a live block between them (freed neighbours would
     * merge), all cut from one mapping. */
    void *v[3];
    const size_t sz[3] = {2 << 20, 100 << 10, 3 << 20};
    cr_assert(mt_layout(v, sz, 3));
    void *x = v[0], *y = v[2];
    memset(x, 1, 2 << 20);
    memset(y, 1, 3 << 20);
    dp_malloc_stats_get(&a);
    free(x);
    free(y);
    dp_malloc_stats_get(&b);
    cr_assert_eq(b.large_queued, 2, "free() queues, it does not unmap");
    cr_assert_eq(b.large_unmaps, a.large_unmaps);
    /* The next large allocation takes the queue into the cache and
     * reuses the best fit (the 2 MiB block), whose last page it does not
     * need: split off and cached, with y. */
    void *z = malloc((2 << 20) - 100);
    cr_assert_not_null(z);
    cr_assert_eq(z, x, "best fit: the 2 MiB block");
    dp_malloc_stats_get(&c);
    cr_assert_eq(c.large_queued, 0);
    cr_assert_eq(c.large_cached, 2);
    cr_assert_eq(c.large_bytes_cached,
                 mt_blk_len(3 << 20) + mt_blk_len(2 << 20) - mt_blk_len((2 << 20) - 100));
    cr_assert_eq(c.large_reused, b.large_reused + 1);
    cr_assert_eq(c.large_maps, b.large_maps);
    cr_assert_eq(c.large_unmaps, b.large_unmaps);
    free(z);
    /* Without a reclaim thread, trim gives them back. */
    cr_assert_geq(dp_malloc_trim(), 2);
    dp_malloc_stats_get(&c);
    cr_assert_eq(c.large_queued, 0);
    cr_assert_eq(c.large_cached, 0);
    cr_assert_eq(c.large_bytes_cached, 0);
    /* z merged with its split-off page: two blocks, two unmaps. */
    cr_assert_eq(c.large_unmaps, b.large_unmaps + 2);
    cr_assert_eq(c.large_inuse, a.large_inuse - 2);
    free(v[1]);
}


/* Medium blocks on the thread's lists (docs/malloc.md, "Thread lists"):
 * here no reclaim pass can hand them back behind the test's back. */
Test(malloc_nothread, a_medium_block_comes_back_from_the_thread_list)
{
    dp_malloc_trim(); /* an empty heap */
    char *p = malloc(40 * KiB);
    char *q = malloc(40 * KiB);
    dp_malloc_stats_t s0 = mt_stats();
    free(p);
    /* On this thread's list: freed (queued), not yet in the heap. */
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_inuse, s0.large_inuse - 1);
    cr_assert_eq(s1.large_queued, s0.large_queued + 1);
    cr_assert_eq(s1.large_bytes_queued, s0.large_bytes_queued + mt_blk_len(40 * KiB));
    /* A malloc of the same page count takes it back, last in first out,
     * without the heap: nothing split, merged or mapped. */
    char *r = malloc(40 * KiB + 1000); /* 11 pages with the header, as p */
    cr_assert_eq(r, p);
    dp_malloc_stats_t s2 = mt_stats();
    cr_assert_eq(s2.large_inuse, s0.large_inuse);
    cr_assert_eq(s2.large_queued, s0.large_queued);
    cr_assert_eq(s2.large_reused, s0.large_reused + 1);
    cr_assert_eq(s2.large_trims, s0.large_trims);
    cr_assert_eq(s2.large_merges, s0.large_merges);
    cr_assert_eq(s2.large_maps, s0.large_maps);
    /* Freed, it waits on the list and is handed out once (a second free
     * of it aborts: test_malloc_hardening). */
    free(q);
    char *x = malloc(40 * KiB), *y = malloc(40 * KiB);
    cr_assert_eq(x, q);
    cr_assert_neq(y, q);
    free(x);
    free(y);
    free(r);
}

/* Four listed 48 KiB blocks, cut from a chunk whose rest a live block
 * takes whole, and an empty heap; then a malloc of 150 KiB, which none
 * of them fits alone (docs/malloc.md, "Thread lists"). */
static void heap_miss_with_lists(size_t ballast, bool handed_back)
{
    dp_malloc_trim(); /* an empty heap */
    char *big = ballast ? malloc(ballast) : NULL; /* a mapping of its own */
    char *b[4];
    for (int i = 0; i < 4; i++)
        b[i] = malloc(48 * KiB);
    char *rest = malloc(2 * MiB - 4 * mt_blk_len(48 * KiB) - 64);
    cr_assert_eq(rest, b[3] + mt_blk_len(48 * KiB));
    for (int i = 0; i < 4; i++)
        free(b[i]);
    dp_malloc_stats_t s0 = mt_stats();
    cr_assert_eq(s0.large_cached, 0);
    cr_assert_eq(s0.large_queued, 4, "on this thread's list");
    char *p = malloc(150 * KiB);
    dp_malloc_stats_t s1 = mt_stats();
    if (handed_back) {
        /* They go back to the heap, merge, and serve it, with no new
         * mapping. */
        cr_assert_eq(p, b[0]);
        cr_assert_eq(s1.large_maps, s0.large_maps);
        cr_assert_eq(s1.large_queued, 0);
        cr_assert_eq(s1.large_merges, s0.large_merges + 3);
    } else {
        /* They stay listed; a chunk is mapped. */
        cr_assert_eq(s1.large_maps, s0.large_maps + 1);
        cr_assert_eq(s1.large_queued, 4, "still on this thread's list");
        cr_assert_eq(s1.large_merges, s0.large_merges);
        for (int i = 0; i < 4; i++) {
            char *x = malloc(48 * KiB);
            cr_assert_eq(x, b[3 - i], "from the list, newest first");
            b[3 - i] = x;
        }
        for (int i = 0; i < 4; i++)
            free(b[i]);
    }
    free(p);
    free(rest);
    free(big);
}

/* With the blocks holding 8 MiB (MC_LISTS_KEPT, here a live block of 8
 * MiB) a heap miss hands the thread's lists back before it maps. */
Test(malloc_nothread, a_heap_miss_hands_this_threads_lists_back_before_mapping)
{
    heap_miss_with_lists(8 * MiB, true);
}

/* Below 8 MiB it maps a chunk and keeps the lists. */
Test(malloc_nothread, a_heap_miss_in_a_small_heap_maps_and_keeps_the_lists)
{
    heap_miss_with_lists(0, false);
}

/* A list miss takes a block one page longer, not two (docs/malloc.md,
 * "Thread lists"): a request of 10 pages gets the listed block of 11,
 * whole and from the list (no heap pass: nothing split, merged or
 * mapped); one of 9 pages does not get it. */
Test(malloc_nothread, a_list_miss_takes_a_block_one_page_longer_not_two)
{
    dp_malloc_trim(); /* an empty heap, then a chunk's rest */
    char *x = malloc(40 * KiB); /* 11 pages */
    cr_assert_eq(mt_blk_len(40 * KiB), 11 * 4096);
    free(x);
    dp_malloc_stats_t s0 = mt_stats();
    char *y = malloc(36 * KiB); /* 10 pages */
    cr_assert_eq(y, x, "the block one page longer");
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_merges, s0.large_merges);
    cr_assert_eq(s1.large_trims, s0.large_trims);
    cr_assert_eq(s1.large_maps, s0.large_maps);
    cr_assert_eq(s1.large_reused, s0.large_reused + 1);
    cr_assert_eq(malloc_usable_size(y), 11 * 4096 - 64, "its whole 11 pages");
    free(y); /* onto the list of 11 pages again */
    char *z = malloc(32 * KiB); /* 9 pages: the heap serves it */
    cr_assert_neq(z, y, "a block two pages longer came off the list");
    cr_assert_eq(malloc_usable_size(z), 9 * 4096 - 64);
    free(z);
}

/* A block listed by free() after an aligned allocation has its user
 * pointer a page in; malloc takes it off the list with the user pointer
 * back at 64 bytes in, its own size usable, and free() finds it there. */
Test(malloc_nothread, a_listed_aligned_block_serves_malloc_at_the_default_offset)
{
    dp_malloc_trim();
    char *a = aligned_alloc(4 * KiB, 40 * KiB); /* a page in: 11 pages */
    cr_assert_not_null(a);
    char *h = a - 4 * KiB;
    free(a);
    dp_malloc_stats_t s0 = mt_stats();
    char *p = malloc(41000); /* 64 + 41,000 bytes: 11 pages */
    cr_assert_eq(p, h + 64, "p = %p, the listed block starts at %p",
                 (void *)p, (void *)h);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_reused, s0.large_reused + 1, "off the list");
    cr_assert_eq(s1.large_maps, s0.large_maps);
    cr_assert_eq(malloc_usable_size(p), 11 * 4096 - 64);
    memset(p, 7, malloc_usable_size(p));
    free(p); /* aborts unless the page map names the block at p's frame */
    char *q = malloc(41000);
    cr_assert_eq(q, p, "freed, it went back onto the list");
    free(q);
}

/* A block malloc took from a list, shrunk in place by realloc: free()
 * must list it by its new length, not the one it had when it was handed
 * out (the page map's fast tag, docs/malloc.md, "Thread lists"). */
Test(malloc_nothread, a_listed_block_shrunk_in_place_is_listed_by_its_new_length)
{
    dp_malloc_trim();
    char *p = malloc(40000); /* 64 + 40,000 bytes: 10 pages */
    cr_assert_not_null(p);
    free(p);
    char *q = malloc(40000);
    cr_assert_eq(q, p, "the block came back from the list");
    char *r = realloc(q, 20000); /* 5 pages, the tail to the heap */
    cr_assert_eq(r, q, "shrunk in place");
    cr_assert_eq(malloc_usable_size(r), 5 * 4096 - 64);
    free(r);
    char *s = malloc(40000);
    cr_assert_not_null(s);
    cr_assert_geq(malloc_usable_size(s), 40000,
                  "malloc(40000) got a block of %zu bytes (%p, the shrunk "
                  "block %p)",
                  malloc_usable_size(s), (void *)s, (void *)r);
    memset(s, 1, 40000);
    char *t = malloc(20000);
    cr_assert_eq(t, r, "the shrunk block is on the list of its length");
    free(t);
    free(s);
}

/* What a thread's lists may hold (docs/malloc.md, "Thread lists"): 16 MiB
 * shared among the threads that have a cache, at least 512 KiB and at most
 * 4 MiB each.  listed_of(n) cuts n blocks of 64 KiB (17 pages, 68 KiB
 * with the header) from an emptied heap and frees them in order: the
 * lists take them while they fit, the rest go to the heap.  It returns how
 * many the lists took, having seen the mallocs that follow take exactly
 * those back, newest first, without a heap pass (nothing merged, split or
 * mapped), and the next one get the first block the lists refused. */
enum { LIST_MAX = 64 };
#define LIST_SZ (64 * KiB)

static int listed_of(int n)
{
    char *b[LIST_MAX], *got[LIST_MAX];
    cr_assert_leq(n, LIST_MAX);
    dp_malloc_trim(); /* an empty heap */
    for (int i = 0; i < n; i++) {
        b[i] = malloc(LIST_SZ);
        cr_assert_not_null(b[i]);
        memset(b[i], 1, 64);
    }
    for (int i = 0; i < n; i++)
        free(b[i]);
    dp_malloc_stats_t s0 = mt_stats();
    got[0] = malloc(LIST_SZ);
    int top = -1;
    for (int i = 0; i < n; i++)
        if (got[0] == b[i])
            top = i;
    cr_assert_geq(top, 0, "the first malloc took none of the freed blocks");
    for (int i = top - 1; i >= 0; i--) {
        got[top - i] = malloc(LIST_SZ);
        cr_assert_eq(got[top - i], b[i], "list pop %d: not newest first",
                     top - i);
    }
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_merges, s0.large_merges, "a heap pass");
    cr_assert_eq(s1.large_trims, s0.large_trims, "a heap pass");
    cr_assert_eq(s1.large_maps, s0.large_maps);
    if (top + 1 < n) {
        char *q = malloc(LIST_SZ);
        cr_assert_eq(q, b[top + 1], "the heap serves the first refused block");
        free(q);
    }
    for (int i = 0; i <= top; i++)
        free(got[i]);
    dp_malloc_trim();
    return top + 1;
}

Test(malloc_nothread, a_thread_alone_lists_up_to_4_MiB_of_medium_blocks)
{
    cr_assert_eq(listed_of(61), (int)(4 * MiB / mt_blk_len(LIST_SZ)));
}

/* Threads that have a cache (a malloc made it), parked until released. */
struct parked {
    pthread_barrier_t ready;
    tu_gate_t go;
};

static void *parked_main(void *arg)
{
    struct parked *k = arg;
    free(malloc(64));
    pthread_barrier_wait(&k->ready);
    tu_gate_wait(&k->go);
    return NULL;
}

/* listed_of(n) with `others` more threads that have a cache. */
static int listed_among(int others, int n)
{
    struct parked k = {.go = TU_GATE_INIT};
    pthread_t t[40];
    cr_assert_leq(others, 40);
    pthread_barrier_init(&k.ready, NULL, (unsigned)others + 1);
    for (int i = 0; i < others; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, parked_main, &k), 0);
    pthread_barrier_wait(&k.ready);
    int listed = listed_of(n);
    tu_gate_open(&k.go);
    for (int i = 0; i < others; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&k.ready);
    return listed;
}

/* Blocks of LIST_SZ in a share of 16 MiB among `threads` threads. */
static int share_of(int threads)
{
    return (int)(16 * MiB / (size_t)threads / mt_blk_len(LIST_SZ));
}

Test(malloc_nothread, each_threads_lists_hold_a_share_of_16_MiB)
{
    /* The test's process may hold caches besides this thread's (the test
     * runner's threads): how many, the first count says -- the share of
     * 12 to 15 threads it is -- and the second must agree. */
    int a = listed_among(11, 31), extra = -1;
    for (int e = 0; e <= 3 && extra < 0; e++)
        if (a == share_of(12 + e))
            extra = e;
    cr_assert_geq(extra, 0,
                  "%d blocks listed: not a share of 16 MiB among 12 to 15 "
                  "threads", a);
    cr_assert_eq(listed_among(15, 31), share_of(16 + extra));
    /* With 41 threads and more, the floor: 512 KiB. */
    cr_assert_eq(listed_among(40, 31), (int)(512 * KiB / mt_blk_len(LIST_SZ)));
}

/* A block realloc moves out of goes to the heap, where it can merge, not
 * onto this thread's lists (docs/malloc.md, "Thread lists"): a growing
 * block does not ask for its old size again.  The block is queued; the
 * heap pass of a malloc the lists cannot serve takes it in, which it
 * would not if the block waited on a list. */
static void moved_block_is_in_the_heap(const char *how)
{
    dp_malloc_stats_t s = mt_stats();
    cr_assert_eq(s.large_queued, 1, "%s: the old block, freed", how);
    char *x = malloc(100 * KiB); /* 25 pages: past the lists */
    s = mt_stats();
    cr_assert_eq(s.large_queued, 0, "%s: the old block waits on a list", how);
    free(x);
}

Test(malloc_nothread, a_block_realloc_moved_into_the_heap_goes_to_the_heap)
{
    dp_malloc_trim(); /* an empty heap */
    char *p = malloc(40 * KiB), *q = malloc(40 * KiB);
    cr_assert_eq(q, p + mt_blk_len(40 * KiB), "q blocks growth in place");
    memset(p, 7, 40 * KiB);
    char *r = realloc(p, 60 * KiB); /* into the chunk's rest */
    cr_assert_neq(r, p);
    cr_assert_eq(r[40 * KiB - 1], 7);
    moved_block_is_in_the_heap("moved into the heap");
    free(r);
    free(q);
}

Test(malloc_nothread, a_block_realloc_moved_into_a_new_chunk_goes_to_the_heap)
{
    dp_malloc_trim();
    char *p = malloc(40 * KiB);
    /* The rest of the chunk, whole: the heap has no fit. */
    char *q = malloc(2 * MiB - mt_blk_len(40 * KiB) - 64);
    cr_assert_eq(q, p + mt_blk_len(40 * KiB));
    memset(p, 7, 40 * KiB);
    dp_malloc_stats_t s0 = mt_stats();
    char *r = realloc(p, 60 * KiB); /* a new chunk */
    cr_assert_neq(r, p);
    cr_assert_eq(r[40 * KiB - 1], 7);
    cr_assert_eq(mt_stats().large_maps, s0.large_maps + 1);
    moved_block_is_in_the_heap("moved into a new chunk");
    free(r);
    free(q);
}

/* ---- what free() keeps and trim gives back, as the kernel sees it ------- */

/* free() of a large block only queues it: its pages stay mapped and
 * resident, nothing is unmapped; dp_malloc_trim() unmaps them. */
Test(malloc_nothread, large_free_is_deferred_then_trimmed)
{
    const size_t n = 6 * MiB, pages = mt_blk_len(6 * MiB) / 4096;
    dp_malloc_trim();
    dp_malloc_stats_t a = mt_stats();
    char *p = malloc(n);
    cr_assert_not_null(p);
    memset(p, 3, n);
    dp_malloc_stats_t b = mt_stats();
    cr_assert_eq(b.large_inuse, a.large_inuse + 1);
    cr_assert_eq(b.large_bytes_inuse, a.large_bytes_inuse + mt_blk_len(n));
    cr_assert_eq(mt_resident_pages(p - 64, mt_blk_len(n)), pages);
    free(p);
    dp_malloc_stats_t c = mt_stats();
    cr_assert_eq(c.large_inuse, a.large_inuse);
    cr_assert_eq(c.large_queued, a.large_queued + 1, "free() queues it");
    cr_assert_eq(c.large_bytes_queued, a.large_bytes_queued + mt_blk_len(n));
    cr_assert_eq(c.large_unmaps, b.large_unmaps, "free() unmapped it");
    cr_assert_eq(mt_resident_pages(p - 64, mt_blk_len(n)), pages,
                 "free() gave pages back");
    cr_assert_geq(dp_malloc_trim(), 1);
    c = mt_stats();
    cr_assert_eq(c.large_queued, 0);
    cr_assert_eq(c.large_bytes_queued, 0);
    cr_assert_eq(c.large_cached, 0);
    cr_assert_eq(c.large_unmaps, b.large_unmaps + 1);
    cr_assert_eq(c.put_provider_calls, 0);
    cr_assert_eq(mt_resident_pages(p - 64, mt_blk_len(n)), 0,
                 "trim left pages resident");
    cr_assert_eq(dp_malloc_stats_get(NULL), -1);
}

/* The pages a trim gives back leave the process: class pages emptied by
 * free, a medium block purged by malloc_trim (all but its header page),
 * then unmapped by dp_malloc_trim(), and an aligned block. */
Test(malloc_nothread, trim_gives_the_pages_back_to_the_kernel)
{
    enum { NS = 600 };
    const size_t sn = 6500; /* the 7168 class: 9 blocks a 64 KiB page */
    static char *small[NS];
    dp_malloc_trim();
    for (int i = 0; i < NS; i++) {
        cr_assert_not_null(small[i] = malloc(sn));
        memset(small[i], 7, sn);
    }
    void *v[3];
    const size_t sz[3] = {100 * KiB, 256 * KiB, 100 * KiB};
    cr_assert(mt_layout(v, sz, 3));
    char *m = v[1];
    memset(m, 7, sz[1]);
    char *al;
    cr_assert_eq(posix_memalign((void **)&al, 64 * KiB, 1 * MiB), 0);
    memset(al, 7, 1 * MiB);
    size_t small_res = 0;
    for (int i = 0; i < NS; i++)
        small_res += mt_resident_pages(small[i], sn);
    cr_assert_geq(small_res, NS);
    const size_t mpages = mt_blk_len(sz[1]) / 4096;
    cr_assert_eq(mt_resident_pages(m - 64, mt_blk_len(sz[1])), mpages);

    for (int i = 0; i < NS; i++)
        free(small[i]);
    free(m);
    free(al);
    /* malloc_trim: the class pages go, the medium block (smaller than a
     * chunk) is purged: only its header page stays. */
    cr_assert_eq(malloc_trim(0), 1);
    small_res = 0;
    for (int i = 0; i < NS; i++)
        small_res += mt_resident_pages(small[i], sn);
    cr_assert_eq(small_res, 0, "%zu pages of freed small blocks resident",
                 small_res);
    cr_assert_eq(mt_resident_pages(m - 64, mt_blk_len(sz[1])), 1,
                 "purged, but for its header");
    cr_assert_eq(mt_resident_pages(al, 1 * MiB), 0);
    /* dp_malloc_trim: every free block unmapped, the purged one too. */
    dp_malloc_trim();
    cr_assert_eq(mt_resident_pages(m - 64, mt_blk_len(sz[1])), 0);
    free(v[0]);
    free(v[2]);
}

/* malloc_trim() returns 1 when it gave memory back, 0 when there was
 * nothing to give. */
Test(malloc_nothread, malloc_trim_returns_1_only_when_it_gave_memory_back)
{
    malloc_trim(0);
    cr_assert_eq(malloc_trim(0), 0, "nothing was left to give back");
    void *big = malloc(4 * MiB);
    memset(big, 1, 4 * MiB);
    free(big);
    cr_assert_eq(malloc_trim(0), 1);
    cr_assert_eq(mallinfo2().keepcost, 0);
    cr_assert_eq(malloc_trim(0), 0);
}

/* Best fit, with no reclaim pass that could move a freed block into the
 * heap and merge it between the frees and the counts. */
Test(malloc_nothread, best_fit_among_cached_blocks)
{
    dp_malloc_trim();
    dp_malloc_stats_t se = mt_stats();
    cr_assert_eq(se.large_queued + se.large_cached, 0);
    /* b1, b3 and b2 with live blocks between them (freed neighbours
     * would merge). */
    void *v[5];
    const size_t sz[5] = {1 * MiB, 200 * KiB, 3 * MiB, 200 * KiB, 2 * MiB};
    cr_assert(mt_layout(v, sz, 5));
    void *b1 = v[0], *b3 = v[2], *b2 = v[4];
    free(b1);
    free(b3);
    free(b2);
    dp_malloc_stats_t s0 = mt_stats();
    cr_assert_eq(s0.large_queued + s0.large_cached, 3, "free only queues");
    void *x = malloc(2 * MiB - 4 * KiB);
    cr_assert_eq(x, b2, "the smallest block that is big enough");
    void *y = malloc(900 * KiB);
    cr_assert_eq(y, b1);
    dp_malloc_stats_t s1 = mt_stats();
    cr_assert_eq(s1.large_maps, s0.large_maps);
    cr_assert_eq(s1.large_queued, 0);
    /* b3, and the whole pages x and y did not need, split off. */
    cr_assert_eq(s1.large_cached, 3);
    cr_assert_eq(s1.large_bytes_cached,
                 mt_blk_len(3 * MiB) + mt_blk_len(2 * MiB) - mt_blk_len(2 * MiB - 4 * KiB) +
                     mt_blk_len(1 * MiB) - mt_blk_len(900 * KiB));
    free(x);
    free(y);
    free(v[1]);
    free(v[3]);
}
