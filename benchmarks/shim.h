/*
 * shim.h -- a C face for Google Benchmark.
 *
 * Benchmark bodies are plain C (bench_*.c); shim.cc is the only C++ in the
 * suite.  It owns main(): it calls dpb_suite_register(), which the C side
 * defines, and then hands the command line to Google Benchmark, so the
 * usual --benchmark_* flags work unchanged.
 */
#ifndef DPB_SHIM_H
#define DPB_SHIM_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dpb_state dpb_state_t; /* opaque: a benchmark::State */
typedef void (*dpb_body_t)(dpb_state_t *st);

#define DPB_MAX_ARGS 8

typedef struct dpb_args {
    int nargs;                 /* entries used in arg[]; 0: no argument    */
    int64_t arg[DPB_MAX_ARGS]; /* one instance per value; dpb_range(st, 0) */
    int threads;               /* 0 or 1: one thread; n: n threads run the
                                  body at once (barrier at start and end) */
    bool real_time;            /* time by the wall clock; forced when
                                  threads > 1, where CPU time misleads     */
} dpb_args_t;

/* Register `body` as benchmark `name` (copied).  args NULL: defaults. */
void dpb_register(const char *name, dpb_body_t body, const dpb_args_t *args);

/* The timing loop.  while (dpb_keep_running(st)) { one iteration }.
 * The _batch form runs n iterations per call (fewer calls across the
 * language boundary); it may overshoot by up to n - 1 iterations, which
 * Google Benchmark accounts for in the iteration count. */
bool dpb_keep_running(dpb_state_t *st);
bool dpb_keep_running_batch(dpb_state_t *st, int64_t n);

int64_t dpb_range(dpb_state_t *st, int i);
int dpb_thread_index(dpb_state_t *st);
int dpb_threads(dpb_state_t *st);
int64_t dpb_iterations(dpb_state_t *st);     /* done, incl. this batch */
int64_t dpb_max_iterations(dpb_state_t *st); /* this run's target count  */

/* items_per_second; summed over threads, divided by the (wall) time. */
void dpb_set_items(dpb_state_t *st, int64_t items);
/* A user counter: summed over threads; `rate` divides by the time. */
void dpb_counter(dpb_state_t *st, const char *name, double value, bool rate);
void dpb_set_label(dpb_state_t *st, const char *label);

void dpb_pause_timing(dpb_state_t *st);
void dpb_resume_timing(dpb_state_t *st);
void dpb_skip_with_error(dpb_state_t *st, const char *msg);

/* key/value pair for the "context" block of the JSON output. */
void dpb_add_context(const char *key, const char *value);

/* Defined by the benchmark program (C): register everything. */
void dpb_suite_register(void);

#ifdef __cplusplus
}
#endif
#endif /* DPB_SHIM_H */
