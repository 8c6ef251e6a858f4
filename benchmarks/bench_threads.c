/*
 * bench_threads.c -- two threads, where puts are remote.
 *
 * prodcons: thread 0 gets and hands every object over an SPSC ring to
 *   thread 1, which puts it: every put is remote.  Throughput = objects
 *   through the pipe per second (items_per_second, counted by the
 *   consumer only).
 * random2t: each thread keeps 4096 live objects; each iteration replaces a
 *   random one, and half of the replaced objects (by a coin flip) are sent
 *   to the other thread to put (a remote put), the rest put locally; each
 *   iteration also puts at most one object received from the other thread.
 *   Throughput = gets per second over both threads.
 *
 * Both threads run the same number of iterations (Google Benchmark gives
 * each thread the same count), so the rings balance; the end barrier in
 * dpb_keep_running() guarantees no more pushes when each thread drains its
 * incoming ring after the loop.
 */
#include "bench.h"
#include "ring.h"
#include "timing.h"

#define STEP 64
#define LIVE 4096 /* power of two */

static dpb_ring_t pc_ring;

static void bm_prodcons(dpb_state_t *st) {
    if (dpb_threads(st) != 2) {
        dpb_skip_with_error(st, "prodcons needs exactly 2 threads");
        return;
    }
    if (dpb_thread_index(st) == 0) {
        while (dpb_keep_running_batch(st, STEP)) {
            for (int i = 0; i < STEP; i++) {
                void *p = dpb_get_touch();
                unsigned spins = 0;
                while (!dpb_ring_push(&pc_ring, p))
                    dpb_cpu_relax(&spins);
            }
        }
    } else {
        while (dpb_keep_running_batch(st, STEP)) {
            for (int i = 0; i < STEP; i++) {
                void *p;
                unsigned spins = 0;
                while ((p = dpb_ring_pop(&pc_ring)) == NULL)
                    dpb_cpu_relax(&spins);
                dpb_put(p);
            }
        }
        dpb_set_items(st, dpb_iterations(st));
    }
}

static dpb_ring_t rnd_ring[2]; /* rnd_ring[i]: objects for thread i to put */
static void *rnd_live[2][LIVE];
/* rnd_done[i]: thread i has begun its last batch and will put no more of
 * what it receives; the other then puts locally instead of waiting for
 * room in i's ring.  Reset before the start barrier of each run. */
static _Atomic int rnd_done[2];

static void bm_random2t(dpb_state_t *st) {
    if (dpb_threads(st) != 2) {
        dpb_skip_with_error(st, "random2t needs exactly 2 threads");
        return;
    }
    int me = dpb_thread_index(st), other = 1 - me;
    void **live = rnd_live[me];
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(me + 1);
    uint64_t remote = 0;

    for (int i = 0; i < LIVE; i++) /* untimed: before the start barrier */
        live[i] = dpb_get_touch();
    atomic_store(&rnd_done[me], 0);
    int64_t max = dpb_max_iterations(st), done = 0;
    while (dpb_keep_running_batch(st, STEP)) {
        done += STEP;
        if (done >= max)
            atomic_store_explicit(&rnd_done[me], 1, memory_order_relaxed);
        for (int k = 0; k < STEP; k++) {
            uint64_t r = dpb_rand(&seed);
            void *in = dpb_ring_pop(&rnd_ring[me]);
            if (in != NULL)
                dpb_put(in);
            size_t i = r & (LIVE - 1);
            void *old = live[i];
            if ((r >> 32) & 1) {
                /* Remote: wait for room, putting what arrives meanwhile
                 * (both threads waiting on full rings cannot deadlock). */
                unsigned spins = 0;
                bool sent;
                while (!(sent = dpb_ring_push(&rnd_ring[other], old))) {
                    if (atomic_load_explicit(&rnd_done[other],
                                             memory_order_relaxed))
                        break;
                    if ((in = dpb_ring_pop(&rnd_ring[me])) != NULL)
                        dpb_put(in);
                    else
                        dpb_cpu_relax(&spins);
                }
                if (sent)
                    remote++;
                else
                    dpb_put(old);
            } else {
                dpb_put(old);
            }
            live[i] = dpb_get_touch();
        }
    }
    dpb_set_items(st, dpb_iterations(st));
    dpb_counter(st, "remote_puts_per_get",
                (double)remote / (double)dpb_iterations(st) / 2.0, false);
    void *in;
    while ((in = dpb_ring_pop(&rnd_ring[me])) != NULL)
        dpb_put(in);
    for (int i = 0; i < LIVE; i++)
        dpb_put(live[i]);
}

void dpb_register_threads(void) {
    dpb_args_t two = {.threads = 2};
    dpb_register("prodcons", bm_prodcons, &two);
    dpb_register("random2t", bm_random2t, &two);
}
