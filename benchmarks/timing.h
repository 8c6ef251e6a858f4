/*
 * timing.h -- cycle-exact timing for the latency program.
 *
 * Each timed put is bracketed by RDTSC fenced with LFENCE before and
 * RDTSCP + LFENCE after, so the put's instructions cannot drift out of the
 * window.  Cycles are converted to nanoseconds with a TSC rate calibrated
 * against CLOCK_MONOTONIC at start-up (needs an invariant TSC:
 * constant_tsc/nonstop_tsc in /proc/cpuinfo).  Neither instruction is a
 * system call, so timing adds none to the phase it measures.
 */
#ifndef DPB_TIMING_H
#define DPB_TIMING_H

#include <stdint.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>

static inline uint64_t dpb_tsc_begin(void) {
    _mm_lfence();
    uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
}

static inline uint64_t dpb_tsc_end(void) {
    unsigned aux;
    uint64_t t = __rdtscp(&aux);
    _mm_lfence();
    return t;
}
#define DPB_HAVE_TSC 1
#else
/* Fallback: the vDSO clock (not a syscall with a TSC-like clocksource). */
static inline uint64_t dpb_tsc_begin(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#define dpb_tsc_end dpb_tsc_begin
#define DPB_HAVE_TSC 0
#endif

static inline uint64_t dpb_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void dpb_sleep_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000u),
                          (long)(ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) != 0) {
    }
}

/* Ticks of dpb_tsc_* per nanosecond, measured over ~100 ms. */
static inline double dpb_tsc_per_ns(void) {
#if DPB_HAVE_TSC
    uint64_t n0 = dpb_now_ns(), c0 = dpb_tsc_begin();
    dpb_sleep_ns(100000000u);
    uint64_t n1 = dpb_now_ns(), c1 = dpb_tsc_end();
    return (double)(c1 - c0) / (double)(n1 - n0);
#else
    return 1.0;
#endif
}

/* xorshift64*: deterministic, seedable, cheap. */
static inline uint64_t dpb_rand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#endif /* DPB_TIMING_H */
