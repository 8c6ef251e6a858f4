// shim.cc -- the only C++ in the benchmark suite: Google Benchmark behind
// the C API of shim.h.  Bodies stay in C so that each allocator binary runs
// exactly the same code; see docs/benchmarks.md.
#include "shim.h"

#include <benchmark/benchmark.h>

#include <string>

// dpb_state_t is never defined: a dpb_state_t * is a benchmark::State *.
static inline benchmark::State &S(dpb_state_t *st) {
    return *reinterpret_cast<benchmark::State *>(st);
}

extern "C" {

void dpb_register(const char *name, dpb_body_t body, const dpb_args_t *args) {
    dpb_args_t def = {};
    if (args == nullptr)
        args = &def;
    benchmark::internal::Benchmark *b = benchmark::RegisterBenchmark(
        name, [body](benchmark::State &state) {
            body(reinterpret_cast<dpb_state_t *>(&state));
        });
    for (int i = 0; i < args->nargs && i < DPB_MAX_ARGS; i++)
        b->Arg(args->arg[i]);
    if (args->threads > 1) {
        b->Threads(args->threads);
        b->UseRealTime();
    } else if (args->real_time) {
        b->UseRealTime();
    }
}

bool dpb_keep_running(dpb_state_t *st) { return S(st).KeepRunning(); }

bool dpb_keep_running_batch(dpb_state_t *st, int64_t n) {
    return S(st).KeepRunningBatch(n);
}

int64_t dpb_range(dpb_state_t *st, int i) {
    return S(st).range(static_cast<std::size_t>(i));
}

int dpb_thread_index(dpb_state_t *st) { return S(st).thread_index(); }
int dpb_threads(dpb_state_t *st) { return S(st).threads(); }
int64_t dpb_iterations(dpb_state_t *st) { return S(st).iterations(); }
int64_t dpb_max_iterations(dpb_state_t *st) { return S(st).max_iterations; }

void dpb_set_items(dpb_state_t *st, int64_t items) {
    S(st).SetItemsProcessed(items);
}

void dpb_counter(dpb_state_t *st, const char *name, double value, bool rate) {
    S(st).counters[name] = benchmark::Counter(
        value, rate ? benchmark::Counter::kIsRate
                    : benchmark::Counter::kDefaults);
}

void dpb_set_label(dpb_state_t *st, const char *label) {
    S(st).SetLabel(label);
}

void dpb_pause_timing(dpb_state_t *st) { S(st).PauseTiming(); }
void dpb_resume_timing(dpb_state_t *st) { S(st).ResumeTiming(); }

void dpb_skip_with_error(dpb_state_t *st, const char *msg) {
    S(st).SkipWithError(msg);
}

void dpb_add_context(const char *key, const char *value) {
    benchmark::AddCustomContext(key, value);
}

} // extern "C"

int main(int argc, char **argv) {
    dpb_suite_register();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
