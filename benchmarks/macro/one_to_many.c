/*
 * one_to_many.c -- one thread allocates, many free: a producer allocates
 * blocks of 24 B to 1 KiB and hands them round robin to CONSUMERS
 * threads, each through its own shared stack (the link is the block's
 * first word); each consumer takes its whole stack at a time, checks and
 * frees the blocks.  Every free is a remote free, from several threads
 * at once.
 *
 * The producer waits while a consumer has INFLIGHT blocks queued, so the
 * live set is the program's, not the scheduler's: with a bound of 16,384
 * the depth reached depended on how long the producer ran while the
 * consumers were off the 2 cores, and every allocator's page faults
 * followed it (docs/benchmarks.md, History, "one_to_many's depth").
 */
#include "macro.h"

#include <pthread.h>
#include <stdatomic.h>

enum { CONSUMERS = 3, INFLIGHT = 1024 };

struct msg {
    struct msg *next;
    size_t sz;
};

static struct {
    _Alignas(64) struct msg *_Atomic top;
    _Atomic size_t inflight;
} q[CONSUMERS];
static _Atomic int finished;
static size_t nmsg;

static void *producer(void *arg)
{
    uint64_t rng = 99;
    (void)arg;
    for (size_t i = 0; i < nmsg; i++) {
        int k = (int)(i % CONSUMERS);
        unsigned spins = 0;
        while (atomic_load_explicit(&q[k].inflight, memory_order_relaxed) >
               INFLIGHT)
            mb_wait_a_bit(&spins);
        size_t sz = mb_range(&rng, 24, 1024);
        struct msg *m = malloc(sz);
        if (m == NULL)
            abort();
        m->sz = sz;
        ((unsigned char *)m)[sz - 1] = (unsigned char)(sz * 131u);
        atomic_fetch_add_explicit(&q[k].inflight, 1, memory_order_relaxed);
        m->next = atomic_load_explicit(&q[k].top, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(
            &q[k].top, &m->next, m, memory_order_release, memory_order_relaxed))
            ;
    }
    atomic_store_explicit(&finished, 1, memory_order_release);
    return NULL;
}

static void *consumer(void *arg)
{
    int k = (int)(uintptr_t)arg;
    size_t bad = 0;
    for (;;) {
        int last = atomic_load_explicit(&finished, memory_order_acquire);
        struct msg *m = atomic_exchange_explicit(&q[k].top, NULL,
                                                 memory_order_acquire);
        if (m == NULL) {
            if (last)
                break;
            sched_yield();
            continue;
        }
        size_t n = 0;
        while (m != NULL) {
            struct msg *next = m->next;
            bad += ((unsigned char *)m)[m->sz - 1] !=
                   (unsigned char)(m->sz * 131u);
            free(m);
            m = next;
            n++;
        }
        atomic_fetch_sub_explicit(&q[k].inflight, n, memory_order_relaxed);
    }
    return (void *)(uintptr_t)bad;
}

int main(int argc, char **argv)
{
    pthread_t p, c[CONSUMERS];
    size_t bad = 0;

    nmsg = (size_t)(2000000 * mb_scale());
    if (argc > 1)
        nmsg = strtoul(argv[1], NULL, 10);
    uint64_t t0 = mb_now_ns();
    for (int k = 0; k < CONSUMERS; k++)
        pthread_create(&c[k], NULL, consumer, (void *)(uintptr_t)k);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(p, NULL);
    for (int k = 0; k < CONSUMERS; k++) {
        void *r;
        pthread_join(c[k], &r);
        bad += (size_t)(uintptr_t)r;
    }
    uint64_t t1 = mb_now_ns();
    mb_print_elapsed(t0, t1);
    printf("MACRO messages=%zu\nMACRO corrupt=%zu\n", nmsg, bad);
    return bad != 0;
}
