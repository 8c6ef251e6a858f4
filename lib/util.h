/*
 * util.h -- below every layer: compiler attributes, relaxed-atomic
 * shorthands, prefetch and the power-of-two test that every file of
 * lib/ shares.  No state, no system call.  docs/design.md §1.
 */
#ifndef DP_UTIL_H
#define DP_UTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DP_HIDDEN __attribute__((visibility("hidden")))
/* The globals the fork handlers write or read after the fork (fork.c):
 * in one section, so that after a fork, where every write to a page the
 * two processes still share is a copy-on-write fault, they cost the
 * parent and the child a page or two, not a page per file
 * (docs/design.md, "Fork"). */
#define DP_FORK_DATA __attribute__((section("deferpool_fork")))
#define DP_NOINLINE __attribute__((noinline))
/* A hit path's function starts a 64-byte line: otherwise where its
 * code falls moves with unrelated code, and its speed with it
 * (docs/benchmarks.md, History, "the malloc's hit path without the pool"
 * and "threads that come and go"). */
#define DP_HOT_ALIGN __attribute__((aligned(64)))
/* initial-exec TLS: one %fs-relative load, no __tls_get_addr call. */
#define DP_TLS __thread __attribute__((tls_model("initial-exec")))
#define DP_LIKELY(x) __builtin_expect(!!(x), 1)
#define DP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define DP_CACHELINE 64

#define DP_RLX memory_order_relaxed
/* 1 in a ThreadSanitizer build (GCC's macro, or clang's feature). */
#if defined(__SANITIZE_THREAD__)
#define DP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DP_TSAN 1
#endif
#endif
#ifndef DP_TSAN
#define DP_TSAN 0
#endif

/* Owner-only increment of a counter others may read: no RMW. */
#define DP_BUMP(a, d) atomic_store_explicit((a), atomic_load_explicit((a), DP_RLX) + (d), DP_RLX)

static inline bool dp_is_pow2(size_t x) { return x && !(x & (x - 1)); }

/* The inverse of odd d modulo 2^64: d * dp_inverse_odd(d) == 1.  Newton's
 * iteration x' = x(2 - dx) doubles the correct low bits; d itself is
 * right to 3 bits (d*d == 1 mod 8 for odd d), so five steps give 96. */
static inline uint64_t dp_inverse_odd(uint64_t d)
{
    uint64_t x = d;
    for (int i = 0; i < 5; i++)
        x *= 2 - d * x;
    return x;
}

/* Fetch a line for writing.  GCC's __builtin_prefetch(.., 1, ..) emits a
 * read prefetch without -mprfchw, so x86-64 says PREFETCHW itself (CPUs
 * without it run it as a NOP). */
static inline void dp_prefetchw(const void *a)
{
#if defined(__x86_64__)
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)a));
#else
    __builtin_prefetch(a, 1, 3);
#endif
}

#endif /* DP_UTIL_H */
