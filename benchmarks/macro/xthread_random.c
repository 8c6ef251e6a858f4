/*
 * xthread_random.c -- random sizes across threads: THREADS threads each
 * make OPS allocations of 16 B to 16 KiB (uniform in the log of the
 * size), writing each, and swap each into a random slot of a shared
 * array, freeing (after checking) the block taken out: most frees are
 * of another thread's block.  Throughput: the elapsed time of all.
 */
#include "macro.h"

#include <pthread.h>
#include <stdatomic.h>

enum { THREADS = 4, SLOTS = 8192 };

static void *_Atomic slot[SLOTS];
static _Atomic size_t bad;
static size_t ops;

static void *worker(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    size_t nbad = 0;
    for (size_t i = 0; i < ops; i++) {
        size_t sz = (size_t)16 << mb_range(&rng, 0, 9); /* 16 B..8 KiB */
        sz += mb_range(&rng, 0, sz);                    /* ..16 KiB   */
        char *p = malloc(sz);
        if (p == NULL)
            abort();
        memset(p, (int)i, sz < 256 ? sz : 256);
        mb_stamp(p, sz);
        void *old = atomic_exchange(&slot[mb_rand(&rng) % SLOTS], p);
        if (old != NULL) {
            nbad += mb_stamp_bad(old);
            free(old);
        }
    }
    atomic_fetch_add(&bad, nbad);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[THREADS];

    ops = (size_t)(500000 * mb_scale());
    if (argc > 1)
        ops = strtoul(argv[1], NULL, 10);
    uint64_t t0 = mb_now_ns();
    for (int k = 0; k < THREADS; k++)
        pthread_create(&t[k], NULL, worker, (void *)(uintptr_t)(k + 1));
    for (int k = 0; k < THREADS; k++)
        pthread_join(t[k], NULL);
    bad += mb_free_stamped(slot, SLOTS);
    uint64_t t1 = mb_now_ns();
    mb_print_elapsed(t0, t1);
    printf("MACRO ops=%zu\nMACRO corrupt=%zu\n", ops * THREADS, (size_t)bad);
    return bad != 0;
}
