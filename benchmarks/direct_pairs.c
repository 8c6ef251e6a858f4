/*
 * direct_pairs.c -- the four 1-thread patterns of bench-<alloc>, without
 * the harness: direct calls to dp_pool_get/dp_pool_put and jemalloc's
 * mallocx/sdallocx in one loop, wall time per get+put pair, no touch of
 * the object.  A cross-check of how much Google Benchmark's loop, the
 * touch and the shared libraries' PLT add to the ratios (docs/benchmarks.md,
 * "Reading the numbers").  Not part of bench.sh.  Both static (the fair
 * comparison: direct calls on both sides):
 *
 *   cc -O2 -Iinclude benchmarks/direct_pairs.c build/bench/libdeferpool.a \
 *      /usr/lib/x86_64-linux-gnu/libjemalloc.a -pthread -ldl -lm \
 *      -o /tmp/direct_pairs && /tmp/direct_pairs
 *
 * Both shared, as the benchmark executables link them: replace the two
 * archives with -Lbuild/bench -Wl,-rpath,$PWD/build/bench -ldeferpool
 * -ljemalloc.
 *
 * Linking jemalloc also makes it this program's malloc; the loops below do
 * not call malloc.
 */
#include <deferpool.h>
#include <jemalloc/jemalloc.h>
#include <math.h>
#include <stdio.h>
#include <time.h>

#define N 50000000L
static void *arr[200000];

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define SINK(o) __asm__ volatile("" : : "r"(o) : "memory")

int main(void)
{
    dp_pool_t *p = dp_pool_create("direct", 64, NULL);
    double dp[4], je[4], t0;
    for (long i = 0; i < N; i++) { /* warm both */
        void *o = dp_pool_get(p, DP_WAITOK);
        SINK(o);
        dp_pool_put(p, o);
    }
    t0 = now();
    for (long i = 0; i < N; i++) {
        void *o = dp_pool_get(p, DP_WAITOK);
        SINK(o);
        dp_pool_put(p, o);
    }
    dp[0] = (now() - t0) / N * 1e9;
    t0 = now();
    for (long i = 0; i < N; i++) {
        void *o = mallocx(64, 0);
        SINK(o);
        sdallocx(o, 64, 0);
    }
    je[0] = (now() - t0) / N * 1e9;
    static const int sizes[3] = {100, 10000, 200000};
    for (int k = 0; k < 3; k++) {
        int b = sizes[k];
        long rounds = N / b / 2;
        t0 = now();
        for (long r = 0; r < rounds; r++) {
            for (int i = 0; i < b; i++)
                arr[i] = dp_pool_get(p, DP_WAITOK);
            for (int i = 0; i < b; i++)
                dp_pool_put(p, arr[i]);
        }
        dp[k + 1] = (now() - t0) / ((double)rounds * b) * 1e9;
        t0 = now();
        for (long r = 0; r < rounds; r++) {
            for (int i = 0; i < b; i++)
                arr[i] = mallocx(64, 0);
            for (int i = 0; i < b; i++)
                sdallocx(arr[i], 64, 0);
        }
        je[k + 1] = (now() - t0) / ((double)rounds * b) * 1e9;
    }
    const char *name[4] = {"LIFO pair", "batch 100", "batch 10,000",
                           "batch 200,000"};
    double g = 1;
    printf("%-14s %10s %10s %7s\n", "pattern", "deferpool", "jemalloc",
           "ratio");
    for (int k = 0; k < 4; k++) {
        printf("%-14s %8.2f ns %8.2f ns %6.2fx\n", name[k], dp[k], je[k],
               dp[k] / je[k]);
        g *= dp[k] / je[k];
    }
    printf("geomean ratio %.2fx\n", pow(g, 0.25));
    return 0;
}
