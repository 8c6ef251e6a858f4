/*
 * test_malloc_threads.c -- the drop-in malloc with threads and fork:
 * blocks freed by another thread, memory freed by a thread that then
 * blocks forever still returned, and fork (the child allocates and frees, its reclaim thread
 * comes back).  Run with DEFERPOOL_CONF=reclaim_age_ms:1,
 * reclaim_interval_ms:5 (tests/malloc/meson.build) so that ageing takes
 * passes, not seconds; every wait is for reclaim passes, never a sleep.
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "malloc_testutil.h"

static size_t rnd_size(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    uint64_t r = *s % 1000;
    if (r < 2)
        return 70000 + *s % (2 << 20); /* large */
    if (r < 50)
        return 1 + *s % 65536; /* medium */
    return 1 + *s % 512;       /* small */
}

/* ---- cross-thread free ------------------------------------------------- */

struct xfer {
    void **blk;
    size_t *len;
    size_t n;
    tu_gate_t ready;
};

static void *producer(void *arg)
{
    struct xfer *x = arg;
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (uintptr_t)arg;
    for (size_t i = 0; i < x->n; i++) {
        x->len[i] = rnd_size(&s);
        x->blk[i] = malloc(x->len[i]);
        if (!x->blk[i])
            return (void *)1;
        mt_fill(x->blk[i], x->len[i] < 256 ? x->len[i] : 256, i);
    }
    tu_gate_open(&x->ready);
    return NULL;
}

static void *consumer(void *arg)
{
    struct xfer *x = arg;
    tu_gate_wait(&x->ready);
    for (size_t i = 0; i < x->n; i++) {
        size_t k = x->len[i] < 256 ? x->len[i] : 256;
        if (mt_check(x->blk[i], k, i) != k)
            return (void *)1;
        free(x->blk[i]);
    }
    return NULL;
}

Test(malloc_threads, blocks_freed_by_another_thread)
{
    size_t rounds = mt_scaled(20), n = 5000;
    dp_malloc_stats_t before, after;
    dp_malloc_stats_get(&before);
    for (size_t r = 0; r < rounds; r++) {
        struct xfer x = {.n = n, .ready = TU_GATE_INIT};
        x.blk = calloc(n, sizeof(void *));
        x.len = calloc(n, sizeof(size_t));
        pthread_t p, c;
        void *rp, *rc;
        pthread_create(&p, NULL, producer, &x);
        pthread_create(&c, NULL, consumer, &x);
        pthread_join(p, &rp);
        pthread_join(c, &rc);
        cr_assert_null(rp, "producer failed");
        cr_assert_null(rc, "consumer found a block overwritten");
        free(x.blk);
        free(x.len);
    }
    dp_malloc_stats_get(&after);
    cr_assert_eq(after.large_inuse, before.large_inuse);
    cr_assert_eq(after.put_provider_calls, 0);
}

/* ---- large blocks from several threads ----------------------------------- */

/* Each thread keeps a few large blocks and replaces, grows or shrinks
 * one at random, checking its contents first, while the other threads do
 * the same and the reclaim thread ages the cache every 5 ms: the cached
 * blocks are split, merged and unmapped under them. */
enum { LT_LIVE = 6 };
#define LT_MARK 64 /* bytes checked at each end of a block */

static void lt_mark(char *p, size_t n, uintptr_t seed)
{
    mt_fill(p, LT_MARK, seed);
    mt_fill(p + n - LT_MARK, LT_MARK, seed + 1);
}

static int lt_ok(const char *p, size_t n, uintptr_t seed)
{
    return mt_check(p, LT_MARK, seed) == LT_MARK &&
           mt_check(p + n - LT_MARK, LT_MARK, seed + 1) == LT_MARK;
}

static void *large_churn(void *arg)
{
    uint64_t s = 0x2545f4914f6cdd1dull ^ (uintptr_t)arg;
    char *b[LT_LIVE] = {0};
    size_t len[LT_LIVE] = {0};
    uintptr_t seed[LT_LIVE] = {0};
    size_t steps = mt_scaled(3000);
    for (size_t i = 0; i < steps; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        unsigned k = (unsigned)(s % LT_LIVE);
        size_t n = (64u << 10) + (size_t)((s >> 8) % (4u << 20));
        if (b[k] && !lt_ok(b[k], len[k], seed[k]))
            return (void *)1;
        if (b[k] && (s >> 40) % 3 == 0) {
            char *r = realloc(b[k], n); /* keeps the first bytes */
            if (!r)
                return (void *)2;
            size_t keep = n < len[k] ? n : len[k];
            if (mt_check(r, keep < LT_MARK ? keep : LT_MARK, seed[k]) !=
                (keep < LT_MARK ? keep : LT_MARK))
                return (void *)3;
            b[k] = r;
        } else {
            free(b[k]);
            b[k] = malloc(n);
            if (!b[k])
                return (void *)2;
        }
        len[k] = n;
        seed[k] = (uintptr_t)i * 7 + (uintptr_t)arg;
        lt_mark(b[k], n, seed[k]);
    }
    for (unsigned k = 0; k < LT_LIVE; k++) {
        if (b[k] && !lt_ok(b[k], len[k], seed[k]))
            return (void *)1;
        free(b[k]);
    }
    return NULL;
}

/* Run fn in three threads (argument 1, 2, 3) and check that none of
 * them reports a failure: 1 overwritten, 2 allocation failed, 3 realloc
 * lost the contents. */
static void run_churners(void *(*fn)(void *))
{
    enum { T = 3 };
    pthread_t t[T];
    for (uintptr_t i = 0; i < T; i++)
        pthread_create(&t[i], NULL, fn, (void *)(i + 1));
    for (int i = 0; i < T; i++) {
        void *r;
        pthread_join(t[i], &r);
        cr_assert_null(r, "thread %d: %s", i,
                       r == (void *)1 ? "a block was overwritten"
                       : r == (void *)3 ? "realloc lost the contents"
                                         : "an allocation failed");
    }
}

/* After a churn of medium and large blocks: none is left in use, freed
 * blocks were reused, no free() called the provider, and trim empties
 * the queue and the cache (everything goes back). */
static void assert_churn_settled(const dp_malloc_stats_t *before)
{
    dp_malloc_stats_t after;
    dp_malloc_stats_get(&after);
    cr_assert_eq(after.large_inuse, before->large_inuse);
    cr_assert_eq(after.large_bytes_inuse, before->large_bytes_inuse);
    cr_assert_gt(after.large_reused, before->large_reused);
    cr_assert_eq(after.put_provider_calls, 0);
    dp_malloc_trim();
    dp_malloc_stats_get(&after);
    cr_assert_eq(after.large_queued + after.large_cached, 0);
    cr_assert_eq(after.large_bytes_cached, 0);
}

Test(malloc_threads, large_blocks_split_and_merged_under_several_threads)
{
    dp_malloc_stats_t before;
    dp_malloc_stats_get(&before);
    run_churners(large_churn);
    assert_churn_settled(&before);
}

/* dp_malloc_trim() promises every free block unmapped when it returns
 * (include/deferpool-malloc.h), also while a reclaim pass is purging:
 * such a pass holds the blocks it purges out of the heap, where the trim
 * cannot take them, and must unmap them instead of putting them back.
 * Each round maps 32 written blocks of 1 MiB, each a mapping of its own
 * kept apart from the next by a live one, so that freed they stay
 * smaller than a chunk and are purged, not unmapped; frees them; waits
 * until the pass that finds them due has purged the first; trims at once,
 * while that pass is still purging the others; and waits for a pass that
 * began after the trim, so that the purging one has finished. */
Test(malloc_threads, trim_while_a_pass_purges_leaves_no_free_block)
{
    enum { N = 32 };
    const size_t B = 1 << 20;
    size_t rounds = mt_scaled(8);
    for (size_t r = 0; r < rounds; r++) {
        void *b[N], *sep[N];
        dp_malloc_trim(); /* every block below is a new mapping */
        for (int i = 0; i < N; i++) {
            cr_assert_not_null(b[i] = malloc(B));
            memset(b[i], 1, B);
            cr_assert_not_null(sep[i] = malloc(B));
        }
        dp_malloc_stats_t s;
        dp_malloc_stats_get(&s);
        uint64_t purges = s.large_purges;
        for (int i = 0; i < N; i++)
            free(b[i]);
        do
            dp_malloc_stats_get(&s);
        while (s.large_purges == purges);
        dp_malloc_trim();
        cr_assert_eq(dp_malloc_reclaim_sync(), 0);
        dp_malloc_stats_get(&s);
        cr_assert_eq(s.large_queued + s.large_cached, 0,
                     "round %zu: %llu blocks queued, %llu cached", r,
                     (unsigned long long)s.large_queued,
                     (unsigned long long)s.large_cached);
        cr_assert_eq(s.large_bytes_cached, 0);
        for (int i = 0; i < N; i++)
            free(sep[i]);
    }
}

/* Medium blocks (mostly 16 KiB to 128 KiB, now and then up to 4 MiB)
 * churned by three threads that also trade blocks through a mailbox, so
 * that many are freed by a thread that did not allocate them: thread
 * lists, the heap's splits and merges, and (at reclaim_age_ms:1) purges
 * all run under them.  A block carries its length and seed in its first
 * 16 bytes and a mark at each end, checked by whoever holds it. */
enum { MT_LIVE = 16, MT_BOX = 8 };
static _Atomic(char *) mt_box[MT_BOX];

static void mt_stamp(char *p, size_t n, uint64_t seed)
{
    memcpy(p, &n, sizeof n);
    memcpy(p + 8, &seed, sizeof seed);
    mt_fill(p + 16, LT_MARK, (uintptr_t)seed);
    mt_fill(p + n - LT_MARK, LT_MARK, (uintptr_t)seed + 1);
}

static int mt_intact(const char *p)
{
    size_t n;
    uint64_t seed;
    memcpy(&n, p, sizeof n);
    memcpy(&seed, p + 8, sizeof seed);
    return n >= 16 + 2 * LT_MARK && malloc_usable_size((void *)p) >= n &&
           mt_check(p + 16, LT_MARK, (uintptr_t)seed) == LT_MARK &&
           mt_check(p + n - LT_MARK, LT_MARK, (uintptr_t)seed + 1) == LT_MARK;
}

static void *medium_churn(void *arg)
{
    uint64_t s = 0x9e3779b97f4a7c15ull ^ ((uintptr_t)arg << 32);
    char *b[MT_LIVE] = {0};
    size_t steps = mt_scaled(20000);
    for (size_t i = 0; i < steps; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        unsigned k = (unsigned)(s % MT_LIVE);
        size_t n = (s >> 56) % 16 == 0
                       ? (16u << 10) + (size_t)((s >> 8) % (4u << 20))
                       : (16u << 10) + 1 + (size_t)((s >> 8) % (112u << 10));
        if (b[k] && !mt_intact(b[k]))
            return (void *)1;
        switch ((s >> 40) % 4) {
        case 0: { /* trade it for whatever another thread left */
            char *got = b[k] ? atomic_exchange(&mt_box[(s >> 20) % MT_BOX], b[k])
                             : NULL;
            if (got && !mt_intact(got))
                return (void *)1;
            b[k] = got;
            continue;
        }
        case 1:
            if (b[k]) {
                size_t old;
                memcpy(&old, b[k], sizeof old);
                char *r = realloc(b[k], n);
                if (!r)
                    return (void *)2;
                if (mt_check(r + 16, LT_MARK,
                             (uintptr_t)*(uint64_t *)(r + 8)) != LT_MARK)
                    return (void *)3;
                b[k] = r;
                break;
            }
            /* fall through */
        default:
            free(b[k]);
            if (!(b[k] = malloc(n)))
                return (void *)2;
            break;
        }
        mt_stamp(b[k], n, i * 131 + (uintptr_t)arg);
    }
    for (unsigned k = 0; k < MT_LIVE; k++) {
        if (b[k] && !mt_intact(b[k]))
            return (void *)1;
        free(b[k]);
    }
    return NULL;
}

Test(malloc_threads, medium_blocks_churned_and_traded_by_several_threads)
{
    dp_malloc_stats_t before;
    dp_malloc_stats_get(&before);
    run_churners(medium_churn);
    for (int j = 0; j < MT_BOX; j++) {
        char *p = atomic_exchange(&mt_box[j], NULL);
        if (p) {
            cr_assert(mt_intact(p), "mailbox block %d overwritten", j);
            free(p);
        }
    }
    assert_churn_settled(&before);
}

/* ---- a thread that frees, then blocks forever --------------------------- */

/* Wait for reclaim passes until done(now, ref) holds, for at most 2000
 * of them (no sleep: each waits for a whole pass), calling before(arg)
 * ahead of each one if before is not NULL.  *now: the statistics after
 * the last pass.  Returns the number of passes waited for. */
static int passes_until_each(bool (*done)(const dp_malloc_stats_t *,
                                          const dp_malloc_stats_t *),
                             const dp_malloc_stats_t *ref,
                             dp_malloc_stats_t *now, void (*before)(void *),
                             void *arg)
{
    int passes = 0;
    for (; passes < 2000; passes++) {
        if (before)
            before(arg);
        cr_assert_eq(dp_malloc_reclaim_sync(), 0, "reclaim thread not running");
        dp_malloc_stats_get(now);
        if (done(now, ref))
            break;
    }
    return passes;
}

static int passes_until(bool (*done)(const dp_malloc_stats_t *,
                                     const dp_malloc_stats_t *),
                        const dp_malloc_stats_t *ref, dp_malloc_stats_t *now)
{
    return passes_until_each(done, ref, now, NULL, NULL);
}

struct sleeper {
    size_t n;
    tu_gate_t freed, wake;
};

static void *sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    void **v = malloc(s->n * sizeof(void *));
    for (size_t i = 0; i < s->n; i++) {
        v[i] = malloc(1024);
        memset(v[i], 1, 1024);
    }
    for (size_t i = 0; i < s->n; i++)
        free(v[i]);
    free(v);
    tu_gate_open(&s->freed);
    tu_gate_wait(&s->wake); /* "forever": no allocator call until the end */
    return NULL;
}

static bool pages_came_back(const dp_malloc_stats_t *now,
                            const dp_malloc_stats_t *ref)
{
    return now->small_pages_freed >= ref->small_pages_freed + 120;
}

Test(malloc_threads, memory_freed_by_a_blocked_thread_is_returned)
{
    struct sleeper s = {.n = 8192, .freed = TU_GATE_INIT, .wake = TU_GATE_INIT};
    pthread_t t;
    dp_malloc_stats_t a, b;
    dp_malloc_stats_get(&a);
    pthread_create(&t, NULL, sleeper_main, &s);
    tu_gate_wait(&s.freed);
    /* 8 MiB went through 1 KiB objects: ~128 pages of 64 KiB.  Without
     * any help from the sleeping thread, passes drain its cache (GC of
     * idle caches) and return the aged pages. */
    int passes = passes_until(pages_came_back, &a, &b);
    cr_assert_geq(b.small_pages_freed, a.small_pages_freed + 120,
                  "only %llu pages came back after %d passes",
                  (unsigned long long)(b.small_pages_freed - a.small_pages_freed),
                  passes);
    tu_gate_open(&s.wake);
    pthread_join(t, NULL);
}

/* Medium blocks wait on the freeing thread's lists (docs/malloc.md,
 * "Thread lists"); a thread that then blocks does not keep them. */
static void *medium_sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    void *v[64];
    for (size_t i = 0; i < s->n; i++) {
        v[i] = malloc(20000 + 3000 * (i % 16));
        memset(v[i], 1, 20000);
    }
    for (size_t i = 0; i < s->n; i++)
        free(v[i]);
    tu_gate_open(&s->freed);
    tu_gate_wait(&s->wake);
    return NULL;
}

/* Nothing queued, and nothing resident left in the heap: what stays
 * cached is purged (or was never touched). */
static bool heap_clean(const dp_malloc_stats_t *now,
                       const dp_malloc_stats_t *ref)
{
    (void)ref;
    return !now->large_queued &&
           now->large_bytes_cached == now->large_bytes_purged;
}

static void assert_heap_clean(const dp_malloc_stats_t *s, int passes)
{
    cr_assert_eq(s->large_queued, 0, "%llu blocks still queued after %d passes",
                 (unsigned long long)s->large_queued, passes);
    cr_assert_eq(s->large_bytes_cached, s->large_bytes_purged,
                 "%llu bytes cached, %llu of them purged, after %d passes",
                 (unsigned long long)s->large_bytes_cached,
                 (unsigned long long)s->large_bytes_purged, passes);
}

Test(malloc_threads, medium_blocks_freed_by_a_blocked_thread_are_returned)
{
    struct sleeper s = {.n = 64, .freed = TU_GATE_INIT, .wake = TU_GATE_INIT};
    pthread_t t;
    dp_malloc_stats_t b;
    pthread_create(&t, NULL, medium_sleeper_main, &s);
    tu_gate_wait(&s.freed);
    dp_malloc_stats_get(&b);
    cr_assert_gt(b.large_queued, 0);
    /* Passes find the thread idle, hand its lists back, and age the
     * blocks out. */
    int passes = passes_until(heap_clean, NULL, &b);
    assert_heap_clean(&b, passes);
    tu_gate_open(&s.wake);
    pthread_join(t, NULL);
}

/* A thread at work, but no longer with medium blocks, does not keep its
 * lists either: a pass that finds them unchanged since the last one hands
 * them back, while the thread goes on allocating small blocks.  Each pass
 * waits for the thread to have allocated since the last one, so that no
 * pass can find the thread idle and take its whole cache. */
struct busy {
    tu_gate_t freed;
    atomic_int stop;
    atomic_ulong pairs;
};

static void *busy_main(void *arg)
{
    struct busy *b = arg;
    void *v[20];
    for (int i = 0; i < 20; i++) {
        v[i] = malloc(40000);
        memset(v[i], 1, 40000);
    }
    for (int i = 0; i < 20; i++)
        free(v[i]);
    tu_gate_open(&b->freed);
    while (!atomic_load(&b->stop)) {
        free(malloc(100));
        atomic_fetch_add(&b->pairs, 1);
    }
    return NULL;
}

/* Before a pass: wait for the busy thread to allocate once more. */
static void busy_allocated(void *arg)
{
    struct busy *b = arg;
    unsigned long seen = atomic_load(&b->pairs);
    while (atomic_load(&b->pairs) == seen)
        sched_yield();
}

Test(malloc_threads, a_busy_threads_unused_lists_are_returned)
{
    struct busy b = {.freed = TU_GATE_INIT};
    pthread_t t;
    dp_malloc_stats_t s;
    pthread_create(&t, NULL, busy_main, &b);
    tu_gate_wait(&b.freed);
    dp_malloc_stats_get(&s);
    cr_assert_geq(s.large_queued, 20, "on the thread's lists");
    int passes = passes_until_each(heap_clean, NULL, &s, busy_allocated, &b);
    atomic_store(&b.stop, 1);
    pthread_join(t, NULL);
    assert_heap_clean(&s, passes);
}

/* Ageing gives back a free block smaller than a chunk by purging it, not
 * by unmapping it: an unmapped hole in a chunk splits its mapping in two
 * for the kernel, and a process may have at most vm.max_map_count
 * (65,530) mappings.  Every other block of a chunk is freed; once the
 * passes have aged them out, the blocks' address range is covered by no
 * more mappings than before (docs/malloc.md, "Purged, not unmapped").
 * Only that range is counted: the class pools may unmap pages elsewhere
 * meanwhile. */
static int count_maps(const char *lo, const char *hi)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert_not_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 &&
            a < (unsigned long)hi && b > (unsigned long)lo)
            n++;
    }
    fclose(f);
    return n;
}

/* N written 24 KiB blocks, cut side by side from a new chunk (the heap
 * is emptied first); returns the address just past the last one. */
enum { HOLE_N = 64 };
#define HOLE_SZ ((size_t)24 * 1024)
static char *side_by_side(char **v)
{
    dp_malloc_trim();
    for (int i = 0; i < HOLE_N; i++) {
        v[i] = malloc(HOLE_SZ);
        cr_assert_not_null(v[i]);
        memset(v[i], 1, HOLE_SZ);
        if (i)
            cr_assert_eq(v[i], v[i - 1] + mt_blk_len(HOLE_SZ));
    }
    return v[HOLE_N - 1] + HOLE_SZ;
}

/* heap_clean, and every other block of the chunk purged. */
static bool halves_purged(const dp_malloc_stats_t *now,
                          const dp_malloc_stats_t *ref)
{
    return heap_clean(now, ref) &&
           now->large_purges >= ref->large_purges + HOLE_N / 2;
}

Test(malloc_threads, ageing_cuts_no_holes_into_chunks)
{
    enum { N = HOLE_N };
    char *v[N];
    const char *hi = side_by_side(v), *lo = v[0];
    dp_malloc_thread_flush();
    int before = count_maps(lo, hi);
    dp_malloc_stats_t s0, b;
    dp_malloc_stats_get(&s0);
    for (int i = 0; i < N; i += 2)
        free(v[i]);
    dp_malloc_thread_flush(); /* off this thread's lists, into the heap */
    int passes = passes_until(halves_purged, &s0, &b);
    cr_assert_geq(b.large_purges, s0.large_purges + N / 2,
                  "%llu purges after %d passes",
                  (unsigned long long)(b.large_purges - s0.large_purges),
                  passes);
    int after = count_maps(lo, hi);
    cr_assert_leq(after, before, "%d mappings before, %d after", before, after);
    for (int i = 1; i < N; i += 2)
        free(v[i]);
}

/* malloc_trim(), which programs may call often, gives the same blocks
 * back the same way: purged, no hole, nothing resident left but their
 * first pages.  dp_malloc_trim() unmaps them all. */
Test(malloc_threads, malloc_trim_purges_small_free_blocks_without_holes)
{
    enum { N = HOLE_N };
    char *v[N];
    const char *hi = side_by_side(v), *lo = v[0];
    int before = count_maps(lo, hi);
    dp_malloc_stats_t s0, s1;
    dp_malloc_stats_get(&s0);
    for (int i = 0; i < N; i += 2)
        free(v[i]);
    malloc_trim(0);
    dp_malloc_stats_get(&s1);
    cr_assert_eq(s1.large_queued, 0);
    cr_assert_eq(s1.large_bytes_cached, s1.large_bytes_purged,
                 "nothing resident left in the heap but first pages");
    cr_assert_geq(s1.large_purges, s0.large_purges + N / 2);
    cr_assert_leq(count_maps(lo, hi), before, "malloc_trim cut a hole");
    struct mallinfo2 mi = mallinfo2();
    cr_assert_eq(mi.keepcost, 0, "purged blocks are not releasable");
    for (int i = 1; i < N; i += 2)
        free(v[i]);
    dp_malloc_trim();
    dp_malloc_stats_get(&s1);
    cr_assert_eq(s1.large_queued + s1.large_cached, 0);
}

/* ---- fork --------------------------------------------------------------- */

static atomic_int churn_stop;

static void *churner(void *arg)
{
    (void)arg;
    uint64_t s = 12345;
    void *v[64] = {0};
    while (!atomic_load(&churn_stop)) {
        size_t i = s % 64;
        free(v[i]);
        v[i] = malloc(rnd_size(&s));
    }
    for (int i = 0; i < 64; i++)
        free(v[i]);
    return NULL;
}

/* In the child: allocate and free every kind of block, and see the
 * reclaim thread run.  Exit code: 0 ok, else the failing step. */
static int child_work(void)
{
    uint64_t s = 777;
    void *v[2000];
    for (int i = 0; i < 2000; i++) {
        size_t n = rnd_size(&s);
        if (!(v[i] = malloc(n)))
            return 2;
        memset(v[i], 7, n < 64 ? n : 64);
    }
    for (int i = 0; i < 2000; i++)
        free(v[i]);
    dp_malloc_stats_t st0;
    dp_malloc_stats_get(&st0);
    void *big = malloc(3 << 20);
    if (!big)
        return 3;
    free(big);
    if (dp_malloc_reclaim_sync() != 0)
        return 4;
    dp_malloc_stats_t st;
    dp_malloc_stats_get(&st);
    if (!st.reclaim_running)
        return 5;
    /* The large block went back through the child's own reclaim passes:
     * one moves it into the cache, a later one finds it past the age and
     * unmaps it; smaller free blocks are purged (nothing resident but
     * their header pages). */
    for (int i = 0; i < 100 && (st.large_queued ||
                                st.large_bytes_cached != st.large_bytes_purged);
         i++) {
        dp_malloc_reclaim_sync();
        dp_malloc_stats_get(&st);
    }
    if (st.large_queued || st.large_bytes_cached != st.large_bytes_purged ||
        st.large_unmaps <= st0.large_unmaps)
        return 6;
    return 0;
}

Test(malloc_threads, fork_child_allocates_and_its_reclaim_thread_runs)
{
    size_t rounds = mt_scaled(10);
    pthread_t t[2];
    atomic_store(&churn_stop, 0);
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, churner, NULL);
    for (size_t r = 0; r < rounds; r++) {
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0)
            _exit(child_work());
        int st;
        while (waitpid(pid, &st, 0) < 0)
            cr_assert_eq(errno, EINTR);
        cr_assert(WIFEXITED(st), "child died of signal %d",
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        cr_assert_eq(WEXITSTATUS(st), 0, "child failed at step %d",
                     WEXITSTATUS(st));
    }
    atomic_store(&churn_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    /* The parent is unaffected. */
    cr_assert_eq(dp_malloc_reclaim_sync(), 0);
    void *p = malloc(100);
    cr_assert_not_null(p);
    free(p);
}
