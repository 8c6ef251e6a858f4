/*
 * direct_pairs.c -- the four 1-thread patterns of bench-<alloc> (live
 * objects 1 (LIFO), 100, 10,000, 200,000; 64 B), without the harness: a
 * plain C loop of direct calls, dp_pool_get(DP_NOWAIT)/dp_pool_put against
 * mimalloc's mi_malloc/mi_free, tcmalloc's tc_malloc/tc_free and
 * jemalloc's mallocx/sdallocx, all shared libraries (the same PLT call
 * each), all in one process.  Wall time per get+put pair, no touch of the
 * object.  Best of DPB_DIRECT_ROUNDS (default 7) rounds; the allocators
 * take turns inside a round, in alternating order, so load that comes
 * and goes falls on all of them.  Part of scripts/bench.sh (main job);
 * docs/benchmarks.md, "Direct pairs".
 *
 *   build/bench/benchmarks/direct-pairs [--json FILE]
 *
 * DPB_DIRECT_ONLY=<allocator> and DPB_DIRECT_LIVE=<live objects> run one
 * allocator's loop of one pattern alone, for an instruction count under
 * valgrind (docs/benchmarks.md, "Direct pairs"): the difference between
 * two DPB_DIRECT_PAIRS values over the difference of pairs is
 * instructions per pair.
 *
 * Three of the four export malloc; the loops call none of it, and each
 * allocator's own entry points reach its own heap whichever serves malloc.
 *
 * A fifth column is the floor (floor.c, libdpb-floor.so): a pointer stack
 * behind the same kind of call, no allocator.  It takes its turn with the
 * others but is not one of them: no ratio is taken to it, and a pattern
 * whose allocators all sit near it is bound by the calls, not by their
 * code (docs/benchmarks.md, "Direct pairs").
 */
#include <deferpool.h>
#include <gperftools/tcmalloc.h>
#include <jemalloc/jemalloc.h>
#include <mimalloc.h>

/* floor.c, linked as libdpb-floor.so. */
void dpb_floor_init(size_t size);
void *dpb_floor_get(void);
void dpb_floor_put(void *p);

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NALLOC 5 /* the four allocators, then the floor */
#define FLOOR 4
#define NPAT 4
#define OBJ 64

static const char *const alloc_name[NALLOC] = {"deferpool", "mimalloc",
                                               "tcmalloc", "jemalloc",
                                               "floor"};
static const int live[NPAT] = {1, 100, 10000, 200000};
static const char *const pat_name[NPAT] = {"LIFO pair", "batch 100",
                                           "batch 10,000", "batch 200,000"};
static void *arr[200000];
static dp_pool_t *pool;

#define SINK(o) __asm__ volatile("" : : "r"(o) : "memory")

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* One pattern: `pairs` get+put pairs, b objects live at once (b = 1: each
 * put follows its get).  The allocator is a constant in each copy, so
 * each loop has direct calls only. */
#define LOOPS(GET, PUT)                                                      \
    do {                                                                     \
        if (b == 1) {                                                        \
            for (long i = 0; i < pairs; i++) {                               \
                void *o = GET;                                               \
                SINK(o);                                                     \
                PUT(o);                                                      \
            }                                                                \
        } else {                                                             \
            for (long r = 0; r < pairs / b; r++) {                           \
                for (int i = 0; i < b; i++)                                  \
                    arr[i] = GET;                                            \
                for (int i = 0; i < b; i++)                                  \
                    PUT(arr[i]);                                             \
            }                                                                \
        }                                                                    \
    } while (0)

#define DP_PUT(o) dp_pool_put(pool, (o))
#define JE_PUT(o) sdallocx((o), OBJ, 0)

static double run(int a, int b, long pairs)
{
    double t0 = now();
    switch (a) {
    case 0: LOOPS(dp_pool_get(pool, DP_NOWAIT), DP_PUT); break;
    case 1: LOOPS(mi_malloc(OBJ), mi_free); break;
    case 2: LOOPS(tc_malloc(OBJ), tc_free); break;
    case 3: LOOPS(mallocx(OBJ, 0), JE_PUT); break;
    case FLOOR: LOOPS(dpb_floor_get(), dpb_floor_put); break;
    }
    long done = b == 1 ? pairs : pairs / b * b;
    return (now() - t0) / (double)done * 1e9;
}

int main(int argc, char **argv)
{
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            json = argv[++i];
        } else {
            fprintf(stderr, "usage: direct-pairs [--json FILE]\n");
            return 2;
        }
    }
    const char *e = getenv("DPB_DIRECT_ROUNDS");
    int rounds = e ? atoi(e) : 7;
    e = getenv("DPB_DIRECT_PAIRS");
    long pairs = e ? atol(e) : 8000000L; /* per pattern, allocator, round */
    if (rounds < 1 || pairs < 400000) {
        fprintf(stderr, "direct-pairs: bad DPB_DIRECT_ROUNDS/PAIRS\n");
        return 2;
    }
    int only = -1;
    if ((e = getenv("DPB_DIRECT_ONLY")) != NULL) {
        for (int a = 0; a < NALLOC; a++)
            if (!strcmp(e, alloc_name[a]))
                only = a;
        if (only < 0) {
            fprintf(stderr, "direct-pairs: no allocator %s\n", e);
            return 2;
        }
    }
    int only_live = (e = getenv("DPB_DIRECT_LIVE")) != NULL ? atoi(e) : 0;
    dpb_floor_init(OBJ);
    pool = dp_pool_create("direct", OBJ, NULL);
    if (!pool) {
        perror("dp_pool_create");
        return 1;
    }
    double best[NALLOC][NPAT];
    for (int a = 0; a < NALLOC; a++) {
        for (int k = 0; k < NPAT; k++) {
            best[a][k] = INFINITY;
            if ((only < 0 || a == only) && (!only_live || live[k] == only_live))
                run(a, live[k], 400000); /* warm: heaps, caches, pages */
        }
    }
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < NPAT; k++) {
            if (only_live && live[k] != only_live)
                continue;
            for (int i = 0; i < NALLOC; i++) {
                int a = r % 2 ? NALLOC - 1 - i : i;
                if (only >= 0 && a != only)
                    continue;
                double t = run(a, live[k], pairs);
                if (t < best[a][k])
                    best[a][k] = t;
            }
        }
    }
    double g[NALLOC];
    printf("direct pairs: 64 B get+put, ns per pair, best of %d rounds\n",
           rounds);
    printf("%-14s", "pattern");
    for (int a = 0; a < NALLOC; a++)
        printf(" %10s", alloc_name[a]);
    printf("  dp/mi  dp/tc  dp/je\n");
    for (int a = 0; a < NALLOC; a++)
        g[a] = 0;
    for (int k = 0; k < NPAT; k++) {
        printf("%-14s", pat_name[k]);
        for (int a = 0; a < NALLOC; a++) {
            printf(" %10.2f", best[a][k]);
            g[a] += log(best[a][k]);
        }
        for (int a = 1; a < FLOOR; a++)
            printf(" %6.2f", best[0][k] / best[a][k]);
        printf("\n");
    }
    printf("%-14s", "geomean");
    for (int a = 0; a < NALLOC; a++) {
        g[a] = exp(g[a] / NPAT);
        printf(" %10.2f", g[a]);
    }
    for (int a = 1; a < FLOOR; a++)
        printf(" %6.2f", g[0] / g[a]);
    printf("\n");
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        fprintf(f, "{\"unit\": \"ns per get+put pair, best of rounds\", "
                   "\"rounds\": %d, \"pairs\": %ld, \"patterns\": [",
                rounds, pairs);
        for (int k = 0; k < NPAT; k++)
            fprintf(f, "%s%d", k ? ", " : "", live[k]);
        fprintf(f, "], \"ns\": {");
        for (int a = 0; a < NALLOC; a++) {
            fprintf(f, "%s\"%s\": [", a ? ", " : "", alloc_name[a]);
            for (int k = 0; k < NPAT; k++)
                fprintf(f, "%s%.3f", k ? ", " : "", best[a][k]);
            fprintf(f, "]");
        }
        fprintf(f, "}}\n");
        fclose(f);
    }
    dp_pool_destroy(pool);
    return 0;
}
