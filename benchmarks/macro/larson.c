/*
 * larson.c -- larson-like server churn with cross-thread frees, and the
 * free() latency distribution under it.
 *
 * Two threads each keep SLOTS live blocks of 16..1024 bytes.  Each step
 * picks a random slot, gets rid of its block and allocates a new one.
 * One step in HANDOFF passes the old block to the other thread through a
 * lock-free single-producer ring instead of freeing it; each thread frees
 * what it finds in its incoming ring (cross-thread frees).  Every 16th
 * free() of either kind is timed with CLOCK_MONOTONIC into an mmap'd array
 * allocated before the timed loop; p50 .. max are printed at the end.
 */
#include "macro.h"

#include <pthread.h>
#include <stdatomic.h>

enum { T = 2, SLOTS = 8192, HANDOFF = 8, RING = 4096, SAMPLE = 16 };

struct ring {
    _Alignas(64) _Atomic size_t head; /* written by the consumer */
    _Alignas(64) _Atomic size_t tail; /* written by the producer */
    _Alignas(64) void *slot[RING];
};

struct worker {
    int id;
    size_t steps;
    uint32_t *lat; /* sampled free() latencies, ns */
    size_t nlat, maxlat;
    size_t nfree;
    struct ring *in, *out;
    pthread_t th;
};

static struct ring rings[T];
static _Atomic int start_gate;

static int ring_push(struct ring *r, void *p)
{
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (t - h == RING)
        return 0;
    r->slot[t % RING] = p;
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
    return 1;
}

static void *ring_pop(struct ring *r)
{
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    void *p;
    if (h == t)
        return NULL;
    p = r->slot[h % RING];
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
    return p;
}

static inline void timed_free(struct worker *w, void *p)
{
    if (w->nfree++ % SAMPLE == 0 && w->nlat < w->maxlat) {
        uint64_t t0 = mb_now_ns();
        free(p);
        uint64_t t1 = mb_now_ns();
        uint64_t d = t1 - t0;
        w->lat[w->nlat++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    } else {
        free(p);
    }
}

static void *run(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(w->id + 1);
    void **slot = mb_map(SLOTS * sizeof(void *), 1);
    void *p;

    for (size_t i = 0; i < SLOTS; i++) {
        size_t sz = mb_range(&rng, 16, 1024);
        slot[i] = malloc(sz);
        memset(slot[i], (int)i, 16);
    }
    atomic_fetch_add(&start_gate, 1);
    while (atomic_load(&start_gate) < T)
        ;
    for (size_t s = 0; s < w->steps; s++) {
        uint64_t r = mb_rand(&rng);
        size_t i = (size_t)(r % SLOTS);
        size_t sz = 16 + (size_t)((r >> 32) % 1009);
        void *old = slot[i];
        if ((r >> 20) % HANDOFF != 0 || !ring_push(w->out, old))
            timed_free(w, old);
        slot[i] = malloc(sz);
        *(volatile char *)slot[i] = (char)s;
        if ((s & 7) == 0)
            while ((p = ring_pop(w->in)) != NULL)
                timed_free(w, p);
    }
    /* Wait for the peer to stop pushing, then drain and free the rest. */
    atomic_fetch_add(&start_gate, 1);
    while (atomic_load(&start_gate) < 2 * T)
        while ((p = ring_pop(w->in)) != NULL)
            timed_free(w, p);
    while ((p = ring_pop(w->in)) != NULL)
        timed_free(w, p);
    for (size_t i = 0; i < SLOTS; i++)
        free(slot[i]);
    munmap(slot, SLOTS * sizeof(void *));
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    size_t steps = (size_t)(3000000 * mb_scale());
    struct worker w[T];
    uint32_t *all;
    size_t n = 0;

    if (argc > 1)
        steps = strtoul(argv[1], NULL, 10);
    for (int i = 0; i < T; i++) {
        w[i] = (struct worker){.id = i, .steps = steps};
        w[i].maxlat = steps / SAMPLE * 2 + 1024;
        w[i].lat = mb_map(w[i].maxlat * sizeof(uint32_t), 1);
        w[i].in = &rings[i];
        w[i].out = &rings[(i + 1) % T];
    }
    uint64_t t0 = mb_now_ns();
    for (int i = 0; i < T; i++)
        pthread_create(&w[i].th, NULL, run, &w[i]);
    for (int i = 0; i < T; i++)
        pthread_join(w[i].th, NULL);
    uint64_t t1 = mb_now_ns();

    for (int i = 0; i < T; i++)
        n += w[i].nlat;
    all = mb_map(n * sizeof(uint32_t), 1);
    n = 0;
    for (int i = 0; i < T; i++) {
        memcpy(all + n, w[i].lat, w[i].nlat * sizeof(uint32_t));
        n += w[i].nlat;
    }
    qsort(all, n, sizeof(uint32_t), cmp_u32);
#define PCT(q) all[(size_t)((double)(n - 1) * (q))]
    mb_print_elapsed(t0, t1);
    printf("MACRO free_samples=%zu\n", n);
    printf("MACRO free_ns_p50=%u\nMACRO free_ns_p99=%u\n"
           "MACRO free_ns_p99.9=%u\nMACRO free_ns_p99.99=%u\n"
           "MACRO free_ns_max=%u\n",
           PCT(0.5), PCT(0.99), PCT(0.999), PCT(0.9999), all[n - 1]);
    return 0;
}
