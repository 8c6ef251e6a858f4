/*
 * threads_churn.c -- thread lifecycle: THREADS short-lived threads, WAVE
 * at a time created and joined.  Each allocates BLOCKS blocks of 16 B to
 * 1 KiB (one in eight up to 8 KiB), and swaps each into a random slot of
 * a shared exchange array, freeing (after checking) the block it takes
 * out -- most often one that another, maybe already exited, thread
 * allocated.  What a thread's cache holds when it exits is what its
 * allocator must hand back.
 */
#include "macro.h"

#include <pthread.h>
#include <stdatomic.h>

enum { SLOTS = 4096, WAVE = 4, BLOCKS = 16 };

static void *_Atomic slot[SLOTS];
static _Atomic size_t bad;

static void *worker(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < BLOCKS; i++) {
        size_t sz = mb_rand(&rng) % 8 ? mb_range(&rng, 16, 1024)
                                      : mb_range(&rng, 1025, 8192);
        void *p = malloc(sz);
        if (p == NULL)
            abort();
        mb_stamp(p, sz);
        void *old = atomic_exchange(&slot[mb_rand(&rng) % SLOTS], p);
        if (old != NULL) {
            if (mb_stamp_bad(old))
                atomic_fetch_add(&bad, 1);
            free(old);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    size_t threads = (size_t)(2000 * mb_scale());
    pthread_t t[WAVE];

    if (argc > 1)
        threads = strtoul(argv[1], NULL, 10);
    uint64_t t0 = mb_now_ns();
    for (size_t n = 0; n < threads; n += WAVE) {
        for (int k = 0; k < WAVE; k++)
            if (pthread_create(&t[k], NULL, worker, (void *)(uintptr_t)(n + k)))
                abort();
        for (int k = 0; k < WAVE; k++)
            pthread_join(t[k], NULL);
    }
    bad += mb_free_stamped(slot, SLOTS);
    uint64_t t1 = mb_now_ns();
    mb_print_elapsed(t0, t1);
    printf("MACRO threads=%zu\nMACRO corrupt=%zu\n", threads, (size_t)bad);
    return bad != 0;
}
