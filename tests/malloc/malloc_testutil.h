/*
 * malloc_testutil.h -- helpers shared by the tests of the drop-in malloc.
 * Everything is static: each test file is its own executable.
 */
#ifndef DP_MALLOC_TESTUTIL_H
#define DP_MALLOC_TESTUTIL_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <criterion/criterion.h>
#include <deferpool-malloc.h>
#include <deferpool.h>
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../testutil.h" /* tu_gate_*, TU_TSAN; watchdog.h */
#include "resident.h"     /* mt_resident_pages */

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* The malloc's statistics, asserting the call worked. */
static inline dp_malloc_stats_t mt_stats(void)
{
    dp_malloc_stats_t s;
    cr_assert_eq(dp_malloc_stats_get(&s), 0);
    return s;
}

/* n divided by DP_TEST_SCALE (default 1), at least 1. */
static inline uint64_t mt_scaled(uint64_t n)
{
    const char *s = getenv("DP_TEST_SCALE");
    unsigned long long v = s && *s ? strtoull(s, NULL, 10) : 1;
    if (v < 1)
        v = 1;
    n /= v;
    return n ? n : 1;
}

/* A pattern that depends on the block's identity and the byte offset. */
static inline unsigned char mt_pat(uintptr_t seed, size_t i)
{
    return (unsigned char)((seed * 131u + i * 7u + (i >> 8)) ^ 0x5a);
}

static inline void mt_fill(void *p, size_t n, uintptr_t seed)
{
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        c[i] = mt_pat(seed, i);
}

/* Index of the first wrong byte, or n. */
static inline size_t mt_check(const void *p, size_t n, uintptr_t seed)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != mt_pat(seed, i))
            return i;
    return n;
}

/* Bytes a large block of n bytes takes: a 64-byte header, whole pages. */
static inline size_t mt_blk_len(size_t n) { return (n + 64 + 4095) & ~(size_t)4095; }

/* Lay large blocks of the given sizes out side by side, in this order, by
 * splitting one cached block.  The kernel may place separate mappings
 * next to each other, and freed neighbours merge in the cache, so tests
 * that need blocks apart (or together) build the layout themselves.
 * Needs an empty large-block cache.  0: a block is not where the layout
 * puts it. */
static inline int mt_layout(void **out, const size_t *sizes, int n)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += mt_blk_len(sizes[i]);
    /* Another thread's malloc (the test runner has threads of its own)
     * may take part of the freed block before ours do: then try again, a
     * bounded number of times. */
    for (int attempt = 0; attempt < 8; attempt++) {
        char *all = malloc(total - 64);
        if (!all)
            return 0;
        free(all);
        int i = 0;
        for (; i < n; i++) {
            out[i] = malloc(sizes[i]);
            char *want = i == 0 ? all : (char *)out[i - 1] + mt_blk_len(sizes[i - 1]);
            if (out[i] != want)
                break;
        }
        if (i == n)
            return 1;
        for (int k = 0; k <= i; k++)
            free(out[k]);
    }
    return 0;
}

/* Free memory that libc allocated (open_memstream, strdup, ...): with
 * the malloc linked in under dpm_ names (sanitizer builds,
 * dpm_prefix.h), that is not the malloc under test. */
static inline void mt_libc_free(void *p)
{
#ifdef DP_MALLOC_PREFIXED
#undef free
    extern void free(void *); /* <stdlib.h> declared dpm_free */
    free(p);
#define free dpm_free
#else
    free(p);
#endif
}

/* Run child(a, b) in a forked child and expect its exit code; text
 * names an exit code for the message.  The child's own watchdog aborts
 * it if it hangs; ours kills it should it not. */
static inline void mt_run_child(int (*child)(int, int), int a, int b,
                                int expect, const char *(*text)(int))
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        /* A child's reclaim thread starts at its first blocking get or
         * reclaim call (docs/design.md, "Fork"), and starting it
         * allocates: start it now, so that no child counts its blocks
         * among its own.  Without the thread: -1, nothing to start. */
        (void)dp_malloc_reclaim_sync();
        _exit(child(a, b));
    }
    tu_watchdog(120, "the forked child");
    tu_watchdog_child(pid);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        cr_assert_eq(errno, EINTR);
    tu_watchdog_stop();
    cr_assert(WIFEXITED(st), "child died of signal %d%s",
              WIFSIGNALED(st) ? WTERMSIG(st) : 0,
              WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT
                  ? " (see its watchdog message above)" : "");
    cr_assert_eq(WEXITSTATUS(st), expect, "child: %s (expected: %s)",
                 text(WEXITSTATUS(st)), text(expect));
}

/* C23 names glibc 2.36 does not declare. */
void free_sized(void *p, size_t n);
void free_aligned_sized(void *p, size_t align, size_t n);

#endif
