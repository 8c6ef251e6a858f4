/*
 * macro.h -- helpers shared by the macro workloads (benchmarks/macro/).
 *
 * Each workload is a plain program that calls the malloc family and is run
 * under LD_PRELOAD of the allocator being measured, so nothing here may
 * depend on a particular allocator.  Results are printed as one line per
 * figure, "MACRO key=value", which run.sh parses.  Memory the harness
 * itself needs (latency samples, pointer tables) comes from mmap so that
 * it neither perturbs nor is counted as the allocator's heap.
 */
#ifndef DP_MACRO_H
#define DP_MACRO_H

#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t mb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: cheap, and the same sequence for every allocator. */
static inline uint64_t mb_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [lo, hi]. */
static inline size_t mb_range(uint64_t *s, size_t lo, size_t hi)
{
    return lo + (size_t)(mb_rand(s) % (hi - lo + 1));
}

/* populate: fault the pages in now, so the timed loop takes no fault on
 * them (and they count in the RSS from the start). */
static inline void *mb_map(size_t bytes, int populate)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0),
                   -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return p;
}

/* VmRSS of this process in KiB, or -1.  Uses open/read, not stdio, so
 * that reading it makes no allocation: an allocation would count as
 * activity of the thread and could keep its cache from being drained. */
static inline long mb_rss_kib(void)
{
    static char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    ssize_t n;
    char *p;
    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    p = strstr(buf, "VmRSS:");
    return p != NULL ? strtol(p + 6, NULL, 10) : -1;
}

/* Workload size scale from MACRO_SCALE (default 1.0). */
static inline double mb_scale(void)
{
    const char *s = getenv("MACRO_SCALE");
    double v = s != NULL ? strtod(s, NULL) : 1.0;
    return v > 0 ? v : 1.0;
}

/* Spin a little, then yield: waiting for another thread of the workload
 * (the machine may have fewer cores than the workload has threads). */
static inline void mb_wait_a_bit(unsigned *spins)
{
    if (++*spins < 64)
        __builtin_ia32_pause();
    else
        sched_yield();
}

/* A block's check pattern: its first word holds its size, its last byte
 * a tag derived from it, so a consumer can check what it frees. */
static inline void mb_stamp(void *p, size_t sz)
{
    ((size_t *)p)[0] = sz;
    ((unsigned char *)p)[sz - 1] = (unsigned char)(sz * 131u);
}

static inline int mb_stamp_bad(const void *p)
{
    size_t sz = ((const size_t *)p)[0];
    return ((const unsigned char *)p)[sz - 1] != (unsigned char)(sz * 131u);
}

/* Free the stamped blocks left in slot[0..n) (NULL: empty); returns how
 * many failed their stamp check. */
static inline size_t mb_free_stamped(void *_Atomic *slot, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        void *p = atomic_load(&slot[i]);
        if (p != NULL) {
            bad += (size_t)mb_stamp_bad(p);
            free(p);
        }
    }
    return bad;
}

static inline void mb_print_elapsed(uint64_t t0, uint64_t t1)
{
    printf("MACRO elapsed_s=%.4f\n", (double)(t1 - t0) / 1e9);
}

#endif
