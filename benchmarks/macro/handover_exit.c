/*
 * handover_exit.c -- threads that allocate, hand their blocks over and
 * exit.  PRODUCERS threads, WAVE at a time, each allocate BLOCKS blocks
 * of 24 B to 2 KiB and push them on a shared stack (the link is the
 * block's first word); one consumer thread takes the whole stack at a
 * time, checks and frees every block.  The producers exit while the
 * consumer still frees their blocks.
 */
#include "macro.h"

#include <pthread.h>
#include <stdatomic.h>

enum { WAVE = 2, BLOCKS = 1000, INFLIGHT = 1 << 16 };

struct msg {
    struct msg *next;
    size_t sz;
};

static struct msg *_Atomic stack;
static _Atomic size_t inflight;
static size_t producers;

static void *producer(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < BLOCKS; i++) {
        unsigned spins = 0;
        while (atomic_load_explicit(&inflight, memory_order_relaxed) > INFLIGHT)
            mb_wait_a_bit(&spins);
        size_t sz = mb_range(&rng, 24, 2048);
        struct msg *m = malloc(sz);
        if (m == NULL)
            abort();
        m->sz = sz;
        ((unsigned char *)m)[sz - 1] = (unsigned char)(sz * 131u);
        atomic_fetch_add_explicit(&inflight, 1, memory_order_relaxed);
        m->next = atomic_load_explicit(&stack, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(
            &stack, &m->next, m, memory_order_release, memory_order_relaxed))
            ;
    }
    return NULL;
}

static void *consumer(void *arg)
{
    size_t *bad = arg, got = 0, want = producers * BLOCKS;
    while (got < want) {
        struct msg *m = atomic_exchange_explicit(&stack, NULL,
                                                 memory_order_acquire);
        if (m == NULL) {
            unsigned spins = 0;
            mb_wait_a_bit(&spins);
            sched_yield();
            continue;
        }
        size_t n = 0;
        while (m != NULL) {
            struct msg *next = m->next;
            *bad += ((unsigned char *)m)[m->sz - 1] !=
                    (unsigned char)(m->sz * 131u);
            free(m);
            m = next;
            n++;
        }
        got += n;
        atomic_fetch_sub_explicit(&inflight, n, memory_order_relaxed);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t c, t[WAVE];
    size_t bad = 0;

    producers = (size_t)(400 * mb_scale());
    if (argc > 1)
        producers = strtoul(argv[1], NULL, 10);
    producers -= producers % WAVE;
    uint64_t t0 = mb_now_ns();
    pthread_create(&c, NULL, consumer, &bad);
    for (size_t n = 0; n < producers; n += WAVE) {
        for (int k = 0; k < WAVE; k++)
            if (pthread_create(&t[k], NULL, producer, (void *)(uintptr_t)(n + k)))
                abort();
        for (int k = 0; k < WAVE; k++)
            pthread_join(t[k], NULL);
    }
    pthread_join(c, NULL);
    uint64_t t1 = mb_now_ns();
    mb_print_elapsed(t0, t1);
    printf("MACRO blocks=%zu\nMACRO corrupt=%zu\n", producers * BLOCKS, bad);
    return bad != 0;
}
