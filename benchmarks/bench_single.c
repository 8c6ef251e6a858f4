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
    while (dpb_keep_running_batch(st, LIFO_BATCH)) {
        for (int i = 0; i < LIFO_BATCH; i++)
            dpb_put(dpb_get_touch());
    }
    dpb_set_items(st, dpb_iterations(st));
}

/* Get n objects, then put all of them in the order they were got. */
static void batch_round(int64_t n) {
    for (int64_t i = 0; i < n; i++)
        objs[i] = dpb_get_touch();
    for (int64_t i = 0; i < n; i++)
        dpb_put(objs[i]);
}

static void bm_batch(dpb_state_t *st) {
    int64_t n = dpb_range(st, 0);
    if (n <= 0 || n > BATCH_MAX) {
        dpb_skip_with_error(st, "batch size out of range");
        return;
    }
    batch_round(n); /* untimed warm-up: first-touch faults */
    while (dpb_keep_running_batch(st, n))
        batch_round(n);
    dpb_set_items(st, dpb_iterations(st));
}

void dpb_register_single(void) {
    dpb_register("lifo_pair", bm_lifo_pair, NULL);
    dpb_args_t a = {.nargs = 3, .arg = {100, 10000, BATCH_MAX}};
    dpb_register("batch", bm_batch, &a);
}
