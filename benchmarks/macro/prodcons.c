/*
 * prodcons.c -- producer/consumer: one thread mallocs messages of 64..512
 * bytes and passes them through a lock-free single-producer ring; the
 * other thread checks and frees them.  Every free is a remote free.
 */
#include "macro.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

enum { RING = 1024 };

static _Alignas(64) _Atomic size_t head;
static _Alignas(64) _Atomic size_t tail;
static _Alignas(64) void *slot[RING];
static size_t nmsg;

static void wait_a_bit(unsigned *spins)
{
    if (++*spins < 64)
        __builtin_ia32_pause();
    else
        sched_yield();
}

static void *producer(void *arg)
{
    uint64_t rng = 12345;
    (void)arg;
    for (size_t i = 0; i < nmsg; i++) {
        size_t sz = mb_range(&rng, 64, 512);
        uint64_t *m = malloc(sz);
        m[0] = i;
        m[1] = sz;
        ((char *)m)[sz - 1] = (char)i;
        size_t t = atomic_load_explicit(&tail, memory_order_relaxed);
        unsigned spins = 0;
        while (t - atomic_load_explicit(&head, memory_order_acquire) == RING)
            wait_a_bit(&spins);
        slot[t % RING] = m;
        atomic_store_explicit(&tail, t + 1, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    size_t *bad = arg;
    for (size_t i = 0; i < nmsg; i++) {
        size_t h = atomic_load_explicit(&head, memory_order_relaxed);
        unsigned spins = 0;
        while (atomic_load_explicit(&tail, memory_order_acquire) == h)
            wait_a_bit(&spins);
        uint64_t *m = slot[h % RING];
        atomic_store_explicit(&head, h + 1, memory_order_release);
        if (m[0] != i || ((char *)m)[m[1] - 1] != (char)i)
            ++*bad;
        free(m);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t p, c;
    size_t bad = 0;

    nmsg = (size_t)(4000000 * mb_scale());
    if (argc > 1)
        nmsg = strtoul(argv[1], NULL, 10);
    uint64_t t0 = mb_now_ns();
    pthread_create(&c, NULL, consumer, &bad);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    uint64_t t1 = mb_now_ns();
    mb_print_elapsed(t0, t1);
    printf("MACRO messages=%zu\nMACRO corrupt=%zu\n", nmsg, bad);
    return bad != 0;
}
