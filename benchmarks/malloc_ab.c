/*
 * malloc_ab.c -- builds of a malloc side by side in one process: each
 * shared library named on the command line is dlopen'ed (RTLD_LOCAL) and
 * its malloc and free (mimalloc's mi_malloc and mi_free, where it has
 * them) called through pointers on malloc_loop's `simple` workload (k
 * blocks of one size allocated, then freed), the builds in turn, round
 * after round (docs/benchmarks.md, "malloc loops").
 *
 *   malloc-ab name=/path/lib.so ...   [AB_ROUNDS=15]
 *
 * Prints, per build, the best of the rounds in ns per malloc+free pair.
 * In one process the host's mode changes reach every build alike; where
 * the loader puts each library does not, so compare over several
 * processes (scripts/malloc_ab.sh).  A library loaded this way is not
 * the process's malloc: its TLS may be reached more slowly than under
 * LD_PRELOAD (mimalloc's is), so compare builds of one allocator here,
 * and allocators with scripts/malloc_loop.sh.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SINK(o) __asm__ volatile("" : : "r"(o) : "memory")
#define MAXLIB 16

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *blocks[400];

/* malloc_loop.c's run_simple at a quarter of its counts: ns per pair. */
static double simple(malloc_fn m, free_fn f)
{
    static const int ks[] = {25, 100, 400};
    double t = 0;
    long pairs = 0;
    for (size_t sz = 16; sz <= 512; sz *= 2)
        for (int j = 0; j < 3; j++) {
            int k = ks[j];
            long rounds = 100000L / k;
            double t0 = now();
            for (long r = 0; r < rounds; r++) {
                for (int i = 0; i < k; i++)
                    blocks[i] = m(sz);
                SINK(blocks);
                for (int i = 0; i < k; i++)
                    f(blocks[i]);
            }
            t += now() - t0;
            pairs += rounds * k;
        }
    return t / (double)pairs * 1e9;
}

int main(int argc, char **argv)
{
    int n = argc - 1;
    if (n < 1 || n > MAXLIB) {
        fprintf(stderr, "usage: %s name=/path/lib.so ... (at most %d)\n",
                argv[0], MAXLIB);
        return 2;
    }
    malloc_fn m[MAXLIB];
    free_fn f[MAXLIB];
    double best[MAXLIB];
    for (int i = 0; i < n; i++) {
        char *eq = strchr(argv[i + 1], '=');
        if (!eq) {
            fprintf(stderr, "%s: not name=/path/lib.so\n", argv[i + 1]);
            return 2;
        }
        *eq = '\0';
        void *h = dlopen(eq + 1, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "%s\n", dlerror());
            return 1;
        }
        m[i] = (malloc_fn)dlsym(h, "mi_malloc");
        f[i] = (free_fn)dlsym(h, "mi_free");
        if (!m[i] || !f[i]) {
            m[i] = (malloc_fn)dlsym(h, "malloc");
            f[i] = (free_fn)dlsym(h, "free");
        }
        if (!m[i] || !f[i]) {
            fprintf(stderr, "%s: no malloc and free\n", eq + 1);
            return 1;
        }
        best[i] = simple(m[i], f[i]); /* warms the library */
    }
    const char *r = getenv("AB_ROUNDS");
    int rounds = r ? atoi(r) : 15;
    for (int k = 0; k < rounds; k++)
        for (int i = 0; i < n; i++) {
            double t = simple(m[i], f[i]);
            if (t < best[i])
                best[i] = t;
        }
    for (int i = 0; i < n; i++)
        printf("%s %.3f\n", argv[i + 1], best[i]);
    return 0;
}
