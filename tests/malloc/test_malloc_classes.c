/*
 * test_malloc_classes.c -- the class pools: each is made at its class's
 * first allocation, not at the malloc's start-up (a process that lives a
 * few milliseconds touches the pages of the pools it uses), and once,
 * even when threads race to that first allocation; their pages come from
 * chunks, not from a mapping each.
 *
 * Linked with the private copy (tests/malloc/meson.build, 'hooks'), so
 * that the test can ask the malloc which class pools exist
 * (mc_class_pool_if) and count them in its core's dp_stats_print.
 */
#include "malloc_testutil.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>

#define NCLASS 32
/* The malloc's own (lib/malloc/malloc_internal.h). */
dp_pool_t *mc_class_pool_if(unsigned c);
size_t mc_class_size(unsigned c);

/* How many pools of the core are named as class c's.  The core may have
 * none yet: in a sanitizer build nothing but the test calls the malloc
 * (dpm_prefix.h). */
static int pools_named(unsigned c)
{
    static char buf[1 << 20];
    memset(buf, 0, sizeof(buf));
    FILE *f = fmemopen(buf, sizeof(buf) - 1, "w");
    cr_assert_not_null(f);
    cr_assert_geq(dp_stats_print(f, DP_STATS_JSON), 0);
    fclose(f);
    char name[32];
    snprintf(name, sizeof(name), "\"malloc-%zu\"", mc_class_size(c));
    int n = 0;
    for (const char *p = buf; (p = strstr(p, name)) != NULL; p++)
        n++;
    return n;
}

/* The classes without a pool yet; at least one (Criterion and the
 * test's start-up allocate some sizes, not all 32). */
static unsigned absent_classes(unsigned out[NCLASS])
{
    unsigned k = 0;
    for (unsigned c = 0; c < NCLASS; c++)
        if (!mc_class_pool_if(c))
            out[k++] = c;
    cr_assert_gt(k, 0, "all %d class pools exist before their classes "
                 "were allocated", NCLASS);
    return k;
}

Test(malloc_classes, a_class_pool_is_made_at_the_class_first_allocation)
{
    unsigned absent[NCLASS];
    unsigned k = absent_classes(absent);
    for (unsigned i = 0; i < k; i++) {
        unsigned c = absent[i];
        cr_assert_eq(pools_named(c), 0, "class %zu: a pool before its "
                     "first allocation", mc_class_size(c));
        void *b = malloc(mc_class_size(c));
        cr_assert_not_null(b);
        memset(b, 0x5a, mc_class_size(c));
        cr_assert_not_null(mc_class_pool_if(c));
        cr_assert_eq(pools_named(c), 1, "class %zu", mc_class_size(c));
        cr_assert_eq(malloc_usable_size(b), mc_class_size(c));
        free(b);
    }
}

#define RACERS 8
#define PER 4 /* blocks of each class per thread */

static pthread_barrier_t start;
static unsigned race_classes[NCLASS], race_k;
static void *blocks[RACERS][NCLASS][PER];

static void *racer(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    pthread_barrier_wait(&start);
    /* Each thread walks the classes from a different one. */
    for (unsigned i = 0; i < race_k; i++) {
        unsigned j = (i + t * 5) % race_k, c = race_classes[j];
        for (int b = 0; b < PER; b++) {
            char *p = malloc(mc_class_size(c));
            if (p)
                memset(p, (int)(t + 1), mc_class_size(c));
            blocks[t][j][b] = p;
        }
    }
    return NULL;
}

Test(malloc_classes, threads_racing_to_a_class_first_allocation_make_one_pool)
{
    race_k = absent_classes(race_classes);
    cr_assert_eq(pthread_barrier_init(&start, NULL, RACERS), 0);
    pthread_t th[RACERS];
    for (unsigned t = 0; t < RACERS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, racer,
                                    (void *)(uintptr_t)t), 0);
    for (unsigned t = 0; t < RACERS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    for (unsigned j = 0; j < race_k; j++) {
        unsigned c = race_classes[j];
        cr_assert_not_null(mc_class_pool_if(c));
        cr_assert_eq(pools_named(c), 1, "class %zu: %d pools",
                     mc_class_size(c), pools_named(c));
        for (unsigned t = 0; t < RACERS; t++)
            for (int b = 0; b < PER; b++) {
                unsigned char *p = blocks[t][j][b];
                cr_assert_not_null(p, "thread %u, class %zu", t,
                                   mc_class_size(c));
                cr_assert_eq(malloc_usable_size(p), mc_class_size(c));
                for (size_t i = 0; i < mc_class_size(c); i++)
                    cr_assert_eq(p[i], t + 1, "thread %u, class %zu: "
                                 "byte %zu changed", t, mc_class_size(c), i);
                free(p);
            }
    }
}

/* The test's own mmap and munmap take every caller's calls (the private
 * malloc's among them), count those of a thread that set `counting`, and
 * pass each on to the next definition (libc's, or a sanitizer's). */
static _Thread_local int counting;
static unsigned maps, unmaps;

typedef void *mmap_fn(void *, size_t, int, int, int, off_t);
typedef int munmap_fn(void *, size_t);
static mmap_fn *_Atomic next_mmap;
static munmap_fn *_Atomic next_munmap;

void *mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
    mmap_fn *f = atomic_load(&next_mmap);
    if (!f) {
        f = (mmap_fn *)dlsym(RTLD_NEXT, "mmap");
        atomic_store(&next_mmap, f);
    }
    if (counting)
        maps++;
    return f(a, len, prot, flags, fd, off);
}

int munmap(void *a, size_t len)
{
    munmap_fn *f = atomic_load(&next_munmap);
    if (!f) {
        f = (munmap_fn *)dlsym(RTLD_NEXT, "munmap");
        atomic_store(&next_munmap, f);
    }
    if (counting)
        unmaps++;
    return f(a, len);
}

/* The first allocation of each class without a pool yet makes the pool
 * and takes its first page: from a chunk of pages mapped once, so that
 * the classes together make fewer mmap calls than half their number, and
 * at most the two munmap calls of an alignment trim for each (a page
 * mapped on its own costs one mmap and one or two munmaps).  The
 * thread's cache exists beforehand. */
Test(malloc_classes, the_class_pools_first_pages_come_from_shared_chunks)
{
    free(malloc(16));
    unsigned absent[NCLASS];
    unsigned k = absent_classes(absent);
    cr_assert_geq(k, 4, "only %u classes without a pool", k);
    void *b[NCLASS];
    counting = 1;
    for (unsigned i = 0; i < k; i++)
        b[i] = malloc(mc_class_size(absent[i]));
    counting = 0;
    for (unsigned i = 0; i < k; i++) {
        cr_assert_not_null(b[i]);
        cr_assert_not_null(mc_class_pool_if(absent[i]));
        memset(b[i], 0x33, mc_class_size(absent[i]));
        free(b[i]);
    }
    cr_assert_lt(2 * maps, k, "%u classes' first allocations: %u mmap "
                 "calls", k, maps);
    cr_assert_leq(unmaps, 2 * maps, "%u munmap calls after %u mmap calls",
                  unmaps, maps);
}

/* The class of the class size sz. */
static unsigned class_of(size_t sz)
{
    for (unsigned c = 0; c < NCLASS; c++)
        if (mc_class_size(c) == sz)
            return c;
    cr_assert_fail("%zu is no class size", sz);
    return 0;
}

/* A block of sz bytes from malloc (how 0) or calloc (how 1, checked
 * zero). */
static char *get(size_t sz, int how)
{
    char *p = how ? calloc(1, sz) : malloc(sz);
    cr_assert_not_null(p);
    for (size_t i = 0; how && i < sz; i++)
        cr_assert_eq(p[i], 0, "calloc(1, %zu): byte %zu of %p is %d", sz,
                     i, (void *)p, p[i]);
    return p;
}

/* free() of the block the malloc handed out last takes that block's bin
 * from what the malloc noted, not from the page map's pool (api.c, "The
 * last block"): it must still go back to its own class, in any order of
 * frees, next to blocks of other classes, and be counted.  Pairs of ten
 * classes up to 8 KiB (the table's hit path up to 1 KiB, the pool's
 * above, and calloc's for all), each warmed first so that its bin holds
 * objects: a LIFO bin hands each block back to the next malloc of its
 * class. */
Test(malloc_classes, a_block_freed_after_its_malloc_goes_back_to_its_class)
{
    static const size_t sz[] = {16, 48, 64, 128, 320, 512, 1024, 1280,
                                2048, 8192};
    enum { K = sizeof sz / sizeof sz[0], WARM = 8 };
    for (int i = 0; i < K; i++) {
        void *w[WARM];
        for (int j = 0; j < WARM; j++)
            w[j] = malloc(sz[i]);
        for (int j = 0; j < WARM; j++)
            free(w[j]);
    }
    dp_pool_stats_t before[K], after;
    for (int i = 0; i < K; i++) {
        dp_pool_t *pool = mc_class_pool_if(class_of(sz[i]));
        cr_assert_not_null(pool, "no class pool for %zu", sz[i]);
        cr_assert_eq(dp_pool_stats(pool, &before[i]), 0);
    }
    for (int how = 0; how < 2; how++)
        for (int a = 0; a < K; a++)
            for (int b = 0; b < K; b++) {
                if (a == b)
                    continue;
                char *p = get(sz[a], how), *q = get(sz[b], how);
                /* The last block first, then the other. */
                free(q);
                free(p);
                char *q2 = get(sz[b], how), *p2 = get(sz[a], how);
                cr_assert_eq(q2, q, "%zu after %zu (%s): gave %p, not the "
                             "block just freed, %p", sz[b], sz[a],
                             how ? "calloc" : "malloc", (void *)q2,
                             (void *)q);
                cr_assert_eq(p2, p, "%zu after %zu (%s): gave %p, not %p",
                             sz[b], sz[a], how ? "calloc" : "malloc",
                             (void *)p2, (void *)p);
                /* The last block last. */
                free(p2);
                free(q2);
                char *p3 = get(sz[a], how);
                cr_assert_eq(p3, p, "%zu after the other class's free: "
                             "gave %p, not %p", sz[a], (void *)p3,
                             (void *)p);
                cr_assert_geq(malloc_usable_size(p3), sz[a]);
                /* Right after its allocation: the pair the hit path
                 * notes. */
                free(p3);
                char *p4 = get(sz[a], how);
                cr_assert_eq(p4, p);
                free(p4);
                cr_assert_eq(get(sz[b], how), q);
                free(q);
            }
    for (int i = 0; i < K; i++) {
        cr_assert_eq(dp_pool_stats(mc_class_pool_if(class_of(sz[i])),
                                   &after), 0);
        cr_assert_eq(after.objs_inuse, before[i].objs_inuse,
                     "class %zu: %llu out before, %llu after", sz[i],
                     (unsigned long long)before[i].objs_inuse,
                     (unsigned long long)after.objs_inuse);
        cr_assert_eq(after.puts - before[i].puts,
                     after.gets - before[i].gets);
    }
}
