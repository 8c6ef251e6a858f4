/*
 * bench_single.c -- one thread, 64-byte objects, four get/put patterns.
 * Every benchmark counts one iteration per get+put pair, so Google
 * Benchmark's time per iteration is the time per pair.
 */
#include "bench.h"

#include <stdlib.h>

#define LIFO_BATCH 256
#define BATCH_MAX 200000

static void *objs[BATCH_MAX];

/* get, touch, put, repeat: the object stays hot in every allocator. */
static void bm_lifo_pair(dpb_state_t *st) {
    const dpb_backend_t *b = &dpb_backend;
    while (dpb_keep_running_batch(st, LIFO_BATCH)) {
        for (int i = 0; i < LIFO_BATCH; i++)
            b->put(dpb_get_touch(b));
    }
    dpb_set_items(st, dpb_iterations(st));
}

/* Get n objects, then put all of them in the order they were got. */
static void batch_round(const dpb_backend_t *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        objs[i] = dpb_get_touch(b);
    for (int64_t i = 0; i < n; i++)
        b->put(objs[i]);
}

static void bm_batch(dpb_state_t *st) {
    const dpb_backend_t *b = &dpb_backend;
    int64_t n = dpb_range(st, 0);
    if (n <= 0 || n > BATCH_MAX) {
        dpb_skip_with_error(st, "batch size out of range");
        return;
    }
    batch_round(b, n); /* untimed warm-up: first-touch faults */
    while (dpb_keep_running_batch(st, n))
        batch_round(b, n);
    dpb_set_items(st, dpb_iterations(st));
}

void dpb_register_single(void) {
    dpb_register("lifo_pair", bm_lifo_pair, NULL);
    dpb_args_t a = {.nargs = 3, .arg = {100, 10000, BATCH_MAX}};
    dpb_register("batch", bm_batch, &a);
}
