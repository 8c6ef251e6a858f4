/*
 * os.h -- the OS layer, below everything else: memory mappings, futexes,
 * membarrier, clocks.  Apart from the page providers' own calls, every
 * system call the library makes is written here or in os.c.
 * docs/design.md §1 (Layers) and "What may block".
 */
#ifndef DP_OS_H
#define DP_OS_H

#include "util.h"

#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* A huge page (x86-64 and arm64 with 4 KiB pages). */
#define DP_HUGE_SIZE ((size_t)2 << 20)

/* An anonymous private read-write mapping of len bytes; NULL on failure. */
DP_HIDDEN void *dp_os_map(size_t len);
/* The mapping of len bytes that *slot holds, mapped and installed by CAS
 * if it holds none yet (a thread that loses the race unmaps its own);
 * NULL when the map fails.  For tables whose chunks are made on demand
 * and never unmapped, with no lock (nothing to do at fork). */
DP_HIDDEN void *dp_os_map_once(void *_Atomic *slot, size_t len);
/* Unmap [p, p + len).  Fails only for arguments that were never mapped,
 * which nobody could act on: the result is dropped. */
DP_HIDDEN void dp_os_unmap(void *p, size_t len);
/* Keep transparent huge pages off [p, p + len) if the thp option says so
 * (docs/tuning.md, `thp`).  One madvise; errors are ignored (a kernel
 * without THP) and errno is left as it was.  Never called from a put. */
DP_HIDDEN void dp_map_nohuge(void *p, size_t len);
/* Ask for transparent huge pages on [p, p + len) (MADV_HUGEPAGE) if
 * the thp option resolved to advising them: the drop-in malloc's huge
 * chunks (docs/malloc.md, "Huge chunks").  Errors are ignored (a kernel
 * without THP) and errno is left as it was.  Never called from a put or
 * a free. */
DP_HIDDEN void dp_map_huge(void *p, size_t len);
/* Fault in [p, p + len) for writing with one system call
 * (madvise(MADV_POPULATE_WRITE), Linux 5.14): where a page fault is a
 * trap, as in a virtual machine, one call costs less than a fault per
 * page.  The pages must be mapped and about to be written anyway.
 * false: not done (the pages then fault in as they are touched); a
 * kernel without the advice is not asked again.  Never called from a put
 * or a free. */
DP_HIDDEN bool dp_os_populate(void *p, size_t len);
/* mincore(2) of [p, p + len), p page-aligned: vec[i] bit 0 set when
 * page i is resident.  0, or -1 (a page of the range is not mapped).
 * Both leave errno as it was. */
DP_HIDDEN int dp_os_resident(void *p, size_t len, unsigned char *vec);
/* membarrier(2) with cmd and no flags: 0, or -1 with errno. */
DP_HIDDEN int dp_os_membarrier(int cmd);
/* A random word (getrandom, never blocking); falls back to the clock and
 * an address when the kernel has no entropy to give yet. */
DP_HIDDEN uintptr_t dp_os_random(void);
/* The system page size (glibc answers it from memory). */
DP_HIDDEN size_t dp_os_pagesize(void);
/* Bytes of physical memory; SIZE_MAX when unknown. */
DP_HIDDEN size_t dp_os_phys_bytes(void);

static inline void dp_os_yield(void) { sched_yield(); }

static inline uint64_t dp_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The clock of the reclaim policy: ages are hundreds of milliseconds, so
 * the kernel's last tick (CLOCK_MONOTONIC_COARSE, cheaper to read than
 * CLOCK_MONOTONIC) is precise enough, and a WAITOK get that checks for
 * due pages on each refill reads it. */
static inline uint64_t dp_coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* FUTEX_WAKE never blocks: this is the one syscall a put may make. */
static inline void dp_futex_wake_all(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL,
            0);
}

/* Sleep while *w == val, at most until abs_ns (CLOCK_MONOTONIC; 0: no
 * bound).  Spurious returns are fine: every caller re-checks. */
static inline void dp_futex_wait(_Atomic uint32_t *w, uint32_t val,
                                 uint64_t abs_ns)
{
    struct timespec ts, *tp = NULL;
    if (abs_ns) {
        ts.tv_sec = (time_t)(abs_ns / 1000000000ull);
        ts.tv_nsec = (long)(abs_ns % 1000000000ull);
        tp = &ts;
    }
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_BITSET_PRIVATE, val, tp, NULL,
            FUTEX_BITSET_MATCH_ANY);
}

#endif /* DP_OS_H */
