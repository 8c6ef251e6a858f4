/*
 * os.c -- the OS layer's out-of-line primitives (os.h): mappings,
 * madvise, membarrier, system sizes.  Nothing here takes a lock or
 * calls into another layer but the options.  docs/design.md §1.
 */
#include "os.h"
#include "options.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/random.h>

void *dp_os_map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void dp_os_unmap(void *p, size_t len) { (void)munmap(p, len); }

void *dp_os_map_once(void *_Atomic *slot, size_t len)
{
    void *chunk = atomic_load_explicit(slot, memory_order_acquire);
    if (chunk)
        return chunk;
    void *mine = dp_os_map(len);
    if (!mine)
        return NULL;
    if (atomic_compare_exchange_strong_explicit(slot, &chunk, mine,
                                                memory_order_acq_rel,
                                                memory_order_acquire))
        return mine;
    dp_os_unmap(mine, len);
    return chunk;
}

/* Advice whose failure changes nothing (a kernel without THP): errors
 * ignored, errno left as it was, since the callers are allocation paths
 * that succeed. */
static void advise_quiet(void *p, size_t len, int advice)
{
    int e = errno;
    (void)madvise(p, len, advice);
    errno = e;
}

void dp_map_nohuge(void *p, size_t len)
{
    if (dp_options()->nohuge)
        advise_quiet(p, len, MADV_NOHUGEPAGE);
}

void dp_map_huge(void *p, size_t len)
{
    if (dp_options()->huge_chunks == DP_HUGE_ADVISE)
        advise_quiet(p, len, MADV_HUGEPAGE);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Cleared, relaxed, when the kernel refuses the advice (EINVAL). */
static _Atomic bool dp_os_can_populate = true;

bool dp_os_populate(void *p, size_t len)
{
    if (!atomic_load_explicit(&dp_os_can_populate, memory_order_relaxed))
        return false;
    int e = errno; /* a malloc that succeeds leaves errno alone */
    bool ok = madvise(p, len, MADV_POPULATE_WRITE) == 0;
    if (!ok && errno == EINVAL)
        atomic_store_explicit(&dp_os_can_populate, false,
                              memory_order_relaxed);
    errno = e;
    return ok;
}

int dp_os_resident(void *p, size_t len, unsigned char *vec)
{
    int e = errno;
    int r = mincore(p, len, vec);
    errno = e;
    return r;
}

int dp_os_membarrier(int cmd) { return (int)syscall(SYS_membarrier, cmd, 0, 0); }

size_t dp_os_pagesize(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

size_t dp_os_phys_bytes(void)
{
    long n = sysconf(_SC_PHYS_PAGES), sz = sysconf(_SC_PAGESIZE);
    if (n <= 0 || sz <= 0)
        return SIZE_MAX;
    if ((size_t)n > SIZE_MAX / (size_t)sz)
        return SIZE_MAX;
    return (size_t)n * (size_t)sz;
}

uintptr_t dp_os_random(void)
{
    uintptr_t r = 0;
    if (syscall(SYS_getrandom, &r, sizeof(r), GRND_NONBLOCK) ==
        (long)sizeof(r))
        return r;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    r = (uintptr_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uintptr_t)&r;
    return r ^ (r >> 29);
}
