/*
 * malloc_loop.c -- plain C loops over the process's malloc, for comparing
 * drop-in allocators under LD_PRELOAD without a harness in the way
 * (docs/benchmarks.md, "malloc loops"; scripts/malloc_loop.sh runs it
 * against every allocator, interleaved, best of rounds).
 *
 *   malloc_loop pair     malloc(n); free: one live block, n cycling
 *                        through 16..512 B (the hit path), ns per pair
 *   malloc_loop simple   glibc's malloc-simple kind: k blocks of one size
 *                        allocated, then freed (k 25, 100, 400; sizes 16,
 *                        32, ..., 512), ns per pair
 *   malloc_loop bignum   a bignum-like program: numbers of 1..32 limbs,
 *                        each operation allocates its result and a
 *                        temporary and frees both an operand and the
 *                        temporary, ms in all
 *   malloc_loop threads  threads created and joined by the thousand, four
 *                        at a time; each allocates a few blocks, frees
 *                        the blocks an earlier thread left, leaves its
 *                        own; ms in all
 *   malloc_loop medium   medium blocks churned on two threads: each keeps
 *                        64 blocks of 8 KiB + 1 to 64 KiB, frees a random
 *                        one and mallocs a random size in its place,
 *                        writing its first and last byte; ns per pair
 *                        (elapsed time over one thread's pairs)
 *   malloc_loop medium1  the same on one thread: a small heap (about 4 MiB
 *                        of blocks), which one thread's lists and the heap
 *                        share
 *
 * A second argument scales the iteration counts (default 1).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SINK(o) __asm__ volatile("" : : "r"(o) : "memory")

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long scale = 1;

/* 16, 48, 80, ..., 496: 16 sizes spread over 16..512 B. */
static size_t pair_size(long i) { return 16 + (size_t)(i & 15) * 32; }

static double run_pair(void)
{
    long n = 20000000L * scale;
    for (long i = 0; i < 1000000; i++) { /* warm every class */
        void *o = malloc(pair_size(i));
        SINK(o);
        free(o);
    }
    double t0 = now();
    for (long i = 0; i < n; i++) {
        void *o = malloc(pair_size(i));
        SINK(o);
        free(o);
    }
    return (now() - t0) / (double)n * 1e9;
}

static void *blocks[400];

static double run_simple(void)
{
    static const int ks[] = {25, 100, 400};
    long pairs = 0;
    double t = 0;
    for (int w = 0; w < 2; w++) { /* the first round warms */
        t = 0;
        pairs = 0;
        for (size_t sz = 16; sz <= 512; sz *= 2)
            for (int j = 0; j < 3; j++) {
                int k = ks[j];
                long rounds = 400000L * scale / k;
                double t0 = now();
                for (long r = 0; r < rounds; r++) {
                    for (int i = 0; i < k; i++)
                        blocks[i] = malloc(sz);
                    SINK(blocks);
                    for (int i = 0; i < k; i++)
                        free(blocks[i]);
                }
                t += now() - t0;
                pairs += rounds * k;
            }
    }
    return t / (double)pairs * 1e9;
}

/* ---- bignum --------------------------------------------------------------- */

struct num {
    uint32_t len;
    uint64_t limb[];
};

static uint64_t rng = 88172645463325252ull;
static uint64_t xs(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static struct num *num_new(uint32_t len)
{
    struct num *x = malloc(sizeof(*x) + len * sizeof(uint64_t));
    x->len = len;
    return x;
}

/* x + y, or x * (low limb of y) truncated to 1..16 limbs: results of
 * 1..32 limbs (16 to 264 bytes with the header), mostly short. */
static struct num *num_op(const struct num *x, const struct num *y, int mul)
{
    uint32_t len = (x->len > y->len ? x->len : y->len) + 1;
    if (mul || len > 32)
        len = 1 + (uint32_t)(xs() % 16);
    struct num *r = num_new(len);
    uint64_t c = 0, m = y->limb[0] | 1;
    for (uint32_t i = 0; i < len; i++) {
        uint64_t a = i < x->len ? x->limb[i] : 0;
        uint64_t b = i < y->len ? y->limb[i] : 0;
        if (mul) {
            unsigned __int128 p = (unsigned __int128)a * m + c;
            r->limb[i] = (uint64_t)p;
            c = (uint64_t)(p >> 64);
        } else {
            uint64_t s = a + b + c;
            c = s < a || (c && s == a);
            r->limb[i] = s;
        }
    }
    return r;
}

static double run_bignum(void)
{
    enum { LIVE = 16 };
    struct num *v[LIVE];
    for (int i = 0; i < LIVE; i++) {
        v[i] = num_new(1 + (uint32_t)(xs() % 8));
        for (uint32_t j = 0; j < v[i]->len; j++)
            v[i]->limb[j] = xs();
    }
    long n = 10000000L * scale;
    uint64_t sum = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        uint64_t r = xs();
        int a = (int)(r % LIVE), b = (int)((r >> 8) % LIVE);
        struct num *t = num_op(v[a], v[b], (r >> 16) % 3 == 0);
        /* a temporary, as an expression's intermediate result */
        struct num *tmp = num_new(1 + (uint32_t)((r >> 24) % 4));
        tmp->limb[0] = t->limb[0];
        sum += tmp->limb[0];
        free(tmp);
        free(v[a]);
        v[a] = t;
    }
    double ms = (now() - t0) * 1e3;
    for (int i = 0; i < LIVE; i++)
        free(v[i]);
    SINK(sum);
    return ms;
}

/* ---- threads -------------------------------------------------------------- */

enum { TH_BLOCKS = 8, TH_WAVE = 4 };
static void *box[TH_WAVE][TH_BLOCKS]; /* what the previous wave left */

static void *worker(void *arg)
{
    void **slot = arg;
    void *mine[TH_BLOCKS];
    for (int i = 0; i < TH_BLOCKS; i++) {
        mine[i] = malloc(16 + (size_t)i * 32);
        memset(mine[i], i, 16);
    }
    for (int i = 0; i < TH_BLOCKS; i++) {
        free(slot[i]); /* another thread's blocks */
        slot[i] = mine[i];
    }
    return NULL;
}

static double run_threads(void)
{
    long waves = 500L * scale; /* 2000 threads */
    pthread_t th[TH_WAVE];
    double t0 = now();
    for (long w = 0; w < waves; w++) {
        for (int i = 0; i < TH_WAVE; i++)
            if (pthread_create(&th[i], NULL, worker, box[(i + w) % TH_WAVE]))
                abort();
        for (int i = 0; i < TH_WAVE; i++)
            pthread_join(th[i], NULL);
    }
    double ms = (now() - t0) * 1e3;
    for (int i = 0; i < TH_WAVE; i++)
        for (int j = 0; j < TH_BLOCKS; j++)
            free(box[i][j]);
    return ms;
}

/* ---- medium ---------------------------------------------------------------- */

enum { MD_LIVE = 64, MD_THREADS_MAX = 2 };
static long md_pairs;

static void *medium_worker(void *arg)
{
    uint64_t r = 0x9E3779B97F4A7C15ull * ((uint64_t)(uintptr_t)arg + 1);
    char *v[MD_LIVE] = {0};
    for (long i = 0; i < md_pairs; i++) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        int k = (int)(r % MD_LIVE);
        size_t n = 8192 + 1 + (size_t)((r >> 16) % (56 * 1024));
        free(v[k]);
        v[k] = malloc(n);
        v[k][0] = 1;
        v[k][n - 1] = 1;
    }
    for (int k = 0; k < MD_LIVE; k++)
        free(v[k]);
    return NULL;
}

static double run_medium(int threads)
{
    pthread_t th[MD_THREADS_MAX];
    md_pairs = 100000L; /* warm: the heap's chunks, the lists */
    for (int pass = 0; pass < 2; pass++) {
        double t0 = now();
        for (int i = 0; i < threads; i++)
            if (pthread_create(&th[i], NULL, medium_worker,
                               (void *)(uintptr_t)i))
                abort();
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        if (pass == 1)
            return (now() - t0) / (double)md_pairs * 1e9;
        md_pairs = 1000000L * scale;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr,
                "usage: %s pair|simple|bignum|threads|medium|medium1 [scale]\n",
                argv[0]);
        return 2;
    }
    if (argc > 2)
        scale = atol(argv[2]) > 0 ? atol(argv[2]) : 1;
    const char *m = argv[1];
    if (!strcmp(m, "pair"))
        printf("pair %.2f ns\n", run_pair());
    else if (!strcmp(m, "simple"))
        printf("simple %.2f ns\n", run_simple());
    else if (!strcmp(m, "bignum"))
        printf("bignum %.1f ms\n", run_bignum());
    else if (!strcmp(m, "threads"))
        printf("threads %.1f ms\n", run_threads());
    else if (!strcmp(m, "medium"))
        printf("medium %.1f ns\n", run_medium(2));
    else if (!strcmp(m, "medium1"))
        printf("medium1 %.1f ns\n", run_medium(1));
    else
        return 2;
    return 0;
}
