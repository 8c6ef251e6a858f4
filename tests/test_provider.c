/*
 * test_provider.c -- the page provider layer: the default mmap provider
 * and the mock provider that every other test area builds on.  Public
 * header only.  No sleeps and no timing: threads meet through the mock's
 * gate API, joins and pthread barriers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deferpool.h"
#include "testutil.h"

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

static int my_tid(void)
{
    return (int)syscall(SYS_gettid);
}

/* ================================================================== */
/* mmap provider                                                      */
/* ================================================================== */

/* VmSize from /proc/self/status, read without malloc or stdio so that
 * nothing but the code under test maps memory between two readings. */
static size_t vm_size_kib(void)
{
    char buf[8192];
    int fd = open("/proc/self/status", O_RDONLY);
    cr_assert(fd >= 0);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    cr_assert(n > 0);
    buf[n] = '\0';
    char *p = strstr(buf, "VmSize:");
    cr_assert(p != NULL);
    return (size_t)strtoull(p + 7, NULL, 10);
}

/* msync fails with ENOMEM exactly when part of the range is unmapped. */
static int is_mapped(void *p, size_t len)
{
    return msync(p, len, MS_ASYNC) == 0;
}

static void check_mmap_page(size_t size)
{
    const dp_provider_t *pv = dp_provider_mmap();
    char *p = pv->alloc(pv->ctx, size, size, DP_WAITOK);
    cr_assert_not_null(p, "mmap alloc of %zu failed", size);
    cr_assert_eq((uintptr_t)p % size, 0, "page %p not aligned to %zu",
                 (void *)p, size);
    memset(p, 0xa5, size);
    cr_assert_eq((unsigned char)p[0], 0xa5);
    cr_assert_eq((unsigned char)p[size - 1], 0xa5);
    cr_assert(is_mapped(p, size));
    pv->free(pv->ctx, p, size);
    cr_assert_not(is_mapped(p, size), "page still mapped after free");
}

TestSuite(provider_contract, .init = tu_watchdog_init);
TestSuite(provider_mmap, .init = tu_watchdog_init);
TestSuite(provider_mock, .init = tu_watchdog_init);

Test(provider_mmap, alloc_4k_is_aligned_writable_and_freed)
{
    check_mmap_page(4 * KiB);
}

Test(provider_mmap, alloc_64k_is_aligned_writable_and_freed)
{
    check_mmap_page(64 * KiB);
}

Test(provider_mmap, alloc_1m_is_aligned_writable_and_freed)
{
    check_mmap_page(1 * MiB);
}

Test(provider_mmap, alloc_2m_is_aligned_writable_and_freed)
{
    check_mmap_page(2 * MiB);
}

Test(provider_mmap, is_one_static_provider_named_mmap)
{
    const dp_provider_t *a = dp_provider_mmap(), *b = dp_provider_mmap();
    cr_assert_eq(a, b);
    cr_assert_not_null(a->alloc);
    cr_assert_not_null(a->free);
    cr_assert_str_eq(a->name, "mmap");
}

Test(provider_mmap, aligned_alloc_keeps_only_the_page_mapped)
{
    /* Over-mapping for alignment must unmap head and tail at once: the
     * address space grows by exactly the page, and shrinks back on free. */
    const dp_provider_t *pv = dp_provider_mmap();
    size_t size = 2 * MiB;
    size_t before = vm_size_kib();
    void *p = pv->alloc(pv->ctx, size, size, DP_WAITOK);
    size_t during = vm_size_kib();
    cr_assert_not_null(p);
    pv->free(pv->ctx, p, size);
    size_t after = vm_size_kib();
    cr_assert_eq(during - before, size / KiB, "VmSize grew by %zu KiB",
                 during - before);
    cr_assert_eq(after, before);
}

Test(provider_mmap, nowait_alloc_works)
{
    const dp_provider_t *pv = dp_provider_mmap();
    void *p = pv->alloc(pv->ctx, 64 * KiB, 64 * KiB, DP_NOWAIT);
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p % (64 * KiB), 0);
    pv->free(pv->ctx, p, 64 * KiB);
}

/* ================================================================== */
/* Mock provider: helpers                                             */
/* ================================================================== */

#define PG ((size_t)4096)

static void *mock_alloc(dp_mock_t *m, int flags)
{
    const dp_provider_t *pv = dp_mock_provider(m);
    return pv->alloc(pv->ctx, PG, PG, flags);
}

static void mock_free(dp_mock_t *m, void *page)
{
    const dp_provider_t *pv = dp_mock_provider(m);
    pv->free(pv->ctx, page, PG);
}

static dp_mock_counters_t counters(dp_mock_t *m)
{
    dp_mock_counters_t c;
    dp_mock_counters(m, &c);
    return c;
}

/* Make `calls` DP_WAITOK allocs, free each success at once, and write
 * '1' for a failed call and '0' for a good one into out. */
static void failure_pattern(dp_mock_t *m, size_t calls, char *out)
{
    for (size_t i = 0; i < calls; i++) {
        void *p = mock_alloc(m, DP_WAITOK);
        out[i] = p == NULL ? '1' : '0';
        if (p != NULL)
            mock_free(m, p);
    }
    out[calls] = '\0';
}

/* ================================================================== */
/* Mock provider: basics and capacity                                 */
/* ================================================================== */

Test(provider_mock, provider_hands_out_aligned_writable_pages)
{
    dp_mock_t *m = dp_mock_create(0);
    cr_assert_not_null(m);
    const dp_provider_t *pv = dp_mock_provider(m);
    cr_assert_eq(pv->ctx, (void *)m);
    cr_assert_str_eq(pv->name, "mock");
    char *p = pv->alloc(pv->ctx, 64 * KiB, 64 * KiB, DP_WAITOK);
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p % (64 * KiB), 0);
    memset(p, 0x5a, 64 * KiB);
    pv->free(pv->ctx, p, 64 * KiB);
    dp_mock_destroy(m);
}

Test(provider_mock, capacity_zero_is_unlimited)
{
    dp_mock_t *m = dp_mock_create(0);
    void *pages[200];
    for (int i = 0; i < 200; i++)
        cr_assert_not_null(pages[i] = mock_alloc(m, DP_WAITOK));
    for (int i = 0; i < 200; i++)
        mock_free(m, pages[i]);
    cr_assert_eq(counters(m).alloc_failures, 0);
    dp_mock_destroy(m);
}

Test(provider_mock, alloc_beyond_capacity_fails_and_counts_a_failure)
{
    dp_mock_t *m = dp_mock_create(2);
    void *a = mock_alloc(m, DP_WAITOK);
    void *b = mock_alloc(m, DP_WAITOK);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_null(mock_alloc(m, DP_WAITOK));
    cr_assert_null(mock_alloc(m, DP_NOWAIT));
    dp_mock_counters_t c = counters(m);
    cr_assert_eq(c.alloc_failures, 2);
    cr_assert_eq(c.pages_out, 2);

    /* A free makes room again. */
    mock_free(m, a);
    a = mock_alloc(m, DP_WAITOK);
    cr_assert_not_null(a);
    mock_free(m, a);
    mock_free(m, b);
    dp_mock_destroy(m);
}

Test(provider_mock, set_capacity_changes_the_limit)
{
    dp_mock_t *m = dp_mock_create(1);
    void *a = mock_alloc(m, DP_WAITOK);
    cr_assert_not_null(a);
    cr_assert_null(mock_alloc(m, DP_WAITOK));
    dp_mock_set_capacity(m, 2);
    void *b = mock_alloc(m, DP_WAITOK);
    cr_assert_not_null(b);
    cr_assert_null(mock_alloc(m, DP_WAITOK));
    dp_mock_set_capacity(m, 0);
    void *c = mock_alloc(m, DP_WAITOK);
    cr_assert_not_null(c);
    mock_free(m, a);
    mock_free(m, b);
    mock_free(m, c);
    dp_mock_destroy(m);
}

/* ================================================================== */
/* Mock provider: failure injection                                   */
/* ================================================================== */

Test(provider_mock, fail_nth_fails_only_that_call)
{
    dp_mock_t *m = dp_mock_create(0);
    char pat[8];
    dp_mock_fail_nth(m, 3);
    failure_pattern(m, 6, pat);
    cr_assert_str_eq(pat, "001000");
    dp_mock_destroy(m);
}

Test(provider_mock, fail_nth_counts_calls_over_the_mocks_life)
{
    dp_mock_t *m = dp_mock_create(0);
    char pat[8];
    failure_pattern(m, 2, pat);
    cr_assert_str_eq(pat, "00");
    dp_mock_fail_nth(m, 3); /* the next call is call 3 */
    failure_pattern(m, 3, pat);
    cr_assert_str_eq(pat, "100");
    dp_mock_destroy(m);
}

Test(provider_mock, fail_every_fails_multiples)
{
    dp_mock_t *m = dp_mock_create(0);
    char pat[8];
    dp_mock_fail_every(m, 2);
    failure_pattern(m, 7, pat);
    cr_assert_str_eq(pat, "0101010");
    dp_mock_destroy(m);
}

Test(provider_mock, fail_after_fails_every_later_call)
{
    dp_mock_t *m = dp_mock_create(0);
    char pat[8];
    dp_mock_fail_after(m, 3);
    failure_pattern(m, 6, pat);
    cr_assert_str_eq(pat, "000111");
    dp_mock_destroy(m);
}

Test(provider_mock, fail_after_zero_fails_every_call)
{
    dp_mock_t *m = dp_mock_create(0);
    char pat[8];
    dp_mock_fail_after(m, 0);
    failure_pattern(m, 4, pat);
    cr_assert_str_eq(pat, "1111");
    dp_mock_destroy(m);
}

Test(provider_mock, failure_rules_combine_with_or)
{
    dp_mock_t *m = dp_mock_create(0);
    char pat[12];
    dp_mock_fail_nth(m, 1);
    dp_mock_fail_every(m, 4);
    dp_mock_fail_after(m, 9);
    failure_pattern(m, 10, pat);
    cr_assert_str_eq(pat, "1001000101");
    dp_mock_destroy(m);
}

Test(provider_mock, fail_random_is_reproducible_from_its_seed)
{
    char a[129], b[129], c[129];
    dp_mock_t *m1 = dp_mock_create(0), *m2 = dp_mock_create(0),
              *m3 = dp_mock_create(0);
    dp_mock_fail_random(m1, 500000, 42);
    dp_mock_fail_random(m2, 500000, 42);
    dp_mock_fail_random(m3, 500000, 43);
    failure_pattern(m1, 128, a);
    failure_pattern(m2, 128, b);
    failure_pattern(m3, 128, c);
    cr_assert_str_eq(a, b, "same seed, different failures");
    cr_assert_str_neq(a, c, "different seeds, same failures");
    /* At 50% both outcomes occur in 128 draws. */
    cr_assert_not_null(strchr(a, '0'));
    cr_assert_not_null(strchr(a, '1'));
    dp_mock_counters_t k = counters(m1);
    cr_assert_eq(k.alloc_failures, (uint64_t)(128 - k.allocs));
    dp_mock_destroy(m1);
    dp_mock_destroy(m2);
    dp_mock_destroy(m3);
}

Test(provider_mock, fail_random_reseeding_restarts_the_sequence)
{
    char a[65], b[65];
    dp_mock_t *m = dp_mock_create(0);
    dp_mock_fail_random(m, 300000, 7);
    failure_pattern(m, 64, a);
    dp_mock_fail_random(m, 300000, 7);
    failure_pattern(m, 64, b);
    cr_assert_str_eq(a, b);
    dp_mock_destroy(m);
}

Test(provider_mock, fail_random_extremes_never_and_always_fail)
{
    char pat[33];
    dp_mock_t *m = dp_mock_create(0);
    dp_mock_fail_random(m, 0, 1);
    failure_pattern(m, 32, pat);
    cr_assert_str_eq(pat, "00000000000000000000000000000000");
    dp_mock_fail_random(m, 1000000, 1);
    failure_pattern(m, 32, pat);
    cr_assert_str_eq(pat, "11111111111111111111111111111111");
    dp_mock_destroy(m);
}

Test(provider_mock, fail_clear_removes_every_rule)
{
    dp_mock_t *m = dp_mock_create(0);
    char pat[8];
    dp_mock_fail_nth(m, 5);
    dp_mock_fail_every(m, 2);
    dp_mock_fail_after(m, 1);
    dp_mock_fail_random(m, 1000000, 9);
    failure_pattern(m, 2, pat);
    cr_assert_str_eq(pat, "11");
    dp_mock_fail_clear(m);
    failure_pattern(m, 6, pat);
    cr_assert_str_eq(pat, "000000");
    dp_mock_destroy(m);
}

/* ================================================================== */
/* Mock provider: counters and log                                    */
/* ================================================================== */

Test(provider_mock, counters_are_exact)
{
    dp_mock_t *m = dp_mock_create(3);
    dp_mock_counters_t c = counters(m);
    cr_assert_eq(c.alloc_calls + c.free_calls + c.allocs + c.frees +
                     c.alloc_failures + c.pages_out + c.max_pages_out +
                     c.bytes_out + c.blocked_alloc + c.blocked_free +
                     c.nowait_allocs, 0);

    const dp_provider_t *pv = dp_mock_provider(m);
    void *a = pv->alloc(pv->ctx, 4096, 4096, DP_WAITOK);
    void *b = pv->alloc(pv->ctx, 8192, 8192, DP_NOWAIT);
    void *d = pv->alloc(pv->ctx, 16384, 16384, DP_WAITOK);
    cr_assert(a && b && d);
    cr_assert_null(pv->alloc(pv->ctx, 4096, 4096, DP_NOWAIT)); /* capacity */
    pv->free(pv->ctx, b, 8192);
    dp_mock_fail_nth(m, 5);
    cr_assert_null(pv->alloc(pv->ctx, 4096, 4096, DP_WAITOK)); /* call 5 */
    pv->free(pv->ctx, a, 4096);

    c = counters(m);
    cr_assert_eq(c.alloc_calls, 5);
    cr_assert_eq(c.free_calls, 2);
    cr_assert_eq(c.allocs, 3);
    cr_assert_eq(c.frees, 2);
    cr_assert_eq(c.alloc_failures, 2);
    cr_assert_eq(c.pages_out, 1);
    cr_assert_eq(c.max_pages_out, 3);
    cr_assert_eq(c.bytes_out, 16384);
    cr_assert_eq(c.blocked_alloc, 0);
    cr_assert_eq(c.blocked_free, 0);
    cr_assert_eq(c.nowait_allocs, 2);

    pv->free(pv->ctx, d, 16384);
    c = counters(m);
    cr_assert_eq(c.pages_out, 0);
    cr_assert_eq(c.bytes_out, 0);
    cr_assert_eq(c.max_pages_out, 3, "high-water mark must not fall");
    dp_mock_destroy(m);
}

Test(provider_mock, log_records_every_call_in_order)
{
    dp_mock_t *m = dp_mock_create(1);
    void *a = mock_alloc(m, DP_WAITOK);
    cr_assert_null(mock_alloc(m, DP_NOWAIT)); /* over capacity */
    mock_free(m, a);

    cr_assert_eq(dp_mock_log_length(m), 3);
    dp_mock_log_entry_t e[4];
    cr_assert_eq(dp_mock_log(m, 0, e, 4), 3);
    uint64_t self = (uint64_t)pthread_self();
    int tid = my_tid();

    cr_assert_eq(e[0].seq, 0);
    cr_assert_eq(e[0].op, DP_MOCK_ALLOC);
    cr_assert_eq(e[0].flags, DP_WAITOK);
    cr_assert_eq(e[0].ok, 1);
    cr_assert_eq(e[0].page, a);
    cr_assert_eq(e[0].size, PG);

    cr_assert_eq(e[1].seq, 1);
    cr_assert_eq(e[1].op, DP_MOCK_ALLOC);
    cr_assert_eq(e[1].flags, DP_NOWAIT);
    cr_assert_eq(e[1].ok, 0);
    cr_assert_null(e[1].page);

    cr_assert_eq(e[2].seq, 2);
    cr_assert_eq(e[2].op, DP_MOCK_FREE);
    cr_assert_eq(e[2].ok, 1);
    cr_assert_eq(e[2].page, a);
    cr_assert_eq(e[2].size, PG);

    for (int i = 0; i < 3; i++) {
        cr_assert_eq(e[i].thread, self);
        cr_assert_eq(e[i].tid, tid);
    }
    dp_mock_destroy(m);
}

Test(provider_mock, log_copies_the_requested_range)
{
    dp_mock_t *m = dp_mock_create(0);
    char pat[11];
    failure_pattern(m, 5, pat); /* 10 entries: alloc, free, ... */
    cr_assert_eq(dp_mock_log_length(m), 10);

    dp_mock_log_entry_t e[10];
    cr_assert_eq(dp_mock_log(m, 3, e, 4), 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(e[i].seq, (uint64_t)(3 + i));
    cr_assert_eq(e[0].op, DP_MOCK_FREE);
    cr_assert_eq(e[1].op, DP_MOCK_ALLOC);
    cr_assert_eq(dp_mock_log(m, 8, e, 10), 2, "clipped at the end");
    cr_assert_eq(dp_mock_log(m, 10, e, 10), 0);
    cr_assert_eq(dp_mock_log(m, 99, e, 10), 0);
    cr_assert_eq(dp_mock_log(m, 0, e, 0), 0);
    dp_mock_destroy(m);
}

struct ident {
    dp_mock_t *m;
    pthread_barrier_t *mid, *end;
    int first;       /* allocs before `mid`, else after */
    uint64_t thread; /* pthread_self() as the thread saw it */
    int tid;         /* gettid() as the thread saw it */
    void *page;
};

/* The first thread allocs, then both meet at `mid`, then the second
 * allocs; both stay alive until `end`, so the ids cannot be reused and
 * the log order is fixed. */
static void *alloc_and_record(void *arg)
{
    struct ident *id = arg;
    id->thread = (uint64_t)pthread_self();
    id->tid = my_tid();
    if (id->first)
        id->page = mock_alloc(id->m, DP_WAITOK);
    pthread_barrier_wait(id->mid);
    if (!id->first)
        id->page = mock_alloc(id->m, DP_WAITOK);
    pthread_barrier_wait(id->end);
    return NULL;
}

Test(provider_mock, log_records_distinct_ids_of_two_threads_in_order)
{
    dp_mock_t *m = dp_mock_create(0);
    pthread_barrier_t mid, end;
    pthread_barrier_init(&mid, NULL, 2);
    pthread_barrier_init(&end, NULL, 2);
    struct ident id[2] = {
        {.m = m, .mid = &mid, .end = &end, .first = 1},
        {.m = m, .mid = &mid, .end = &end, .first = 0},
    };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, alloc_and_record, &id[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&mid);
    pthread_barrier_destroy(&end);

    dp_mock_log_entry_t e[2];
    cr_assert_eq(dp_mock_log(m, 0, e, 2), 2);
    for (int i = 0; i < 2; i++) {
        cr_assert_not_null(id[i].page);
        cr_assert_eq(e[i].page, id[i].page, "log out of order");
        cr_assert_eq(e[i].thread, id[i].thread);
        cr_assert_eq(e[i].tid, id[i].tid);
        cr_assert_neq(e[i].tid, my_tid());
    }
    cr_assert_neq(e[0].thread, e[1].thread);
    cr_assert_neq(e[0].tid, e[1].tid);
    mock_free(m, id[0].page);
    mock_free(m, id[1].page);
    dp_mock_destroy(m);
}

/* ================================================================== */
/* Mock provider: gates                                               */
/* ================================================================== */

struct call {
    dp_mock_t *m;
    int flags;
    void *page; /* alloc: result; free: the page to free */
};

static void *alloc_thread(void *arg)
{
    struct call *c = arg;
    c->page = mock_alloc(c->m, c->flags);
    return NULL;
}

static void *free_thread(void *arg)
{
    struct call *c = arg;
    mock_free(c->m, c->page);
    return NULL;
}

Test(provider_mock, closed_alloc_gate_holds_caller_until_opened)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_mock_gate_close(m, DP_MOCK_ALLOC);
    struct call c = {.m = m, .flags = DP_WAITOK};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, alloc_thread, &c), 0);
    dp_mock_gate_wait(m, DP_MOCK_ALLOC, 1);

    /* Held at the gate: visible as blocked, not yet an alloc. */
    dp_mock_counters_t k = counters(m);
    cr_assert_eq(k.blocked_alloc, 1);
    cr_assert_eq(k.alloc_calls, 0);
    cr_assert_eq(k.allocs, 0);
    cr_assert_eq(k.pages_out, 0);
    cr_assert_eq(dp_mock_log_length(m), 0);

    dp_mock_gate_open(m, DP_MOCK_ALLOC);
    pthread_join(t, NULL);
    cr_assert_not_null(c.page);
    k = counters(m);
    cr_assert_eq(k.blocked_alloc, 0);
    cr_assert_eq(k.alloc_calls, 1);
    cr_assert_eq(k.allocs, 1);
    cr_assert_eq(dp_mock_log_length(m), 1);
    mock_free(m, c.page);
    dp_mock_destroy(m);
}

Test(provider_mock, gate_wait_counts_several_blocked_callers)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_mock_gate_close(m, DP_MOCK_ALLOC);
    struct call c[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        c[i] = (struct call){.m = m, .flags = DP_WAITOK};
        cr_assert_eq(pthread_create(&t[i], NULL, alloc_thread, &c[i]), 0);
    }
    dp_mock_gate_wait(m, DP_MOCK_ALLOC, 3);
    cr_assert_eq(counters(m).blocked_alloc, 3);
    dp_mock_gate_open(m, DP_MOCK_ALLOC);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        cr_assert_not_null(c[i].page);
        mock_free(m, c[i].page);
    }
    cr_assert_eq(counters(m).allocs, 3);
    dp_mock_destroy(m);
}

Test(provider_mock, open_releases_callers_even_if_closed_again)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_mock_gate_close(m, DP_MOCK_ALLOC);
    struct call c = {.m = m, .flags = DP_WAITOK};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, alloc_thread, &c), 0);
    dp_mock_gate_wait(m, DP_MOCK_ALLOC, 1);
    dp_mock_gate_open(m, DP_MOCK_ALLOC);
    dp_mock_gate_close(m, DP_MOCK_ALLOC);
    pthread_join(t, NULL); /* would hang if the re-close caught it */
    cr_assert_not_null(c.page);
    dp_mock_gate_open(m, DP_MOCK_ALLOC);
    mock_free(m, c.page);
    dp_mock_destroy(m);
}

Test(provider_mock, nowait_alloc_at_closed_gate_fails_instead_of_blocking)
{
    /* The contract lets alloc sleep only for DP_WAITOK. */
    dp_mock_t *m = dp_mock_create(0);
    dp_mock_gate_close(m, DP_MOCK_ALLOC);
    cr_assert_null(mock_alloc(m, DP_NOWAIT));
    dp_mock_counters_t k = counters(m);
    cr_assert_eq(k.blocked_alloc, 0);
    cr_assert_eq(k.alloc_calls, 1);
    cr_assert_eq(k.nowait_allocs, 1);
    cr_assert_eq(k.alloc_failures, 1);
    dp_mock_gate_open(m, DP_MOCK_ALLOC);
    void *p = mock_alloc(m, DP_NOWAIT);
    cr_assert_not_null(p);
    mock_free(m, p);
    dp_mock_destroy(m);
}

Test(provider_mock, closed_free_gate_holds_caller_until_opened)
{
    dp_mock_t *m = dp_mock_create(0);
    void *p = mock_alloc(m, DP_WAITOK);
    cr_assert_not_null(p);
    dp_mock_gate_close(m, DP_MOCK_FREE);

    /* The alloc gate is independent of the free gate. */
    void *q = mock_alloc(m, DP_WAITOK);
    cr_assert_not_null(q);

    struct call c = {.m = m, .page = p};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, free_thread, &c), 0);
    dp_mock_gate_wait(m, DP_MOCK_FREE, 1);

    dp_mock_counters_t k = counters(m);
    cr_assert_eq(k.blocked_free, 1);
    cr_assert_eq(k.blocked_alloc, 0);
    cr_assert_eq(k.free_calls, 0);
    cr_assert_eq(k.frees, 0);
    cr_assert_eq(k.pages_out, 2);
    cr_assert_eq(dp_mock_log_length(m), 2);

    dp_mock_gate_open(m, DP_MOCK_FREE);
    pthread_join(t, NULL);
    k = counters(m);
    cr_assert_eq(k.blocked_free, 0);
    cr_assert_eq(k.free_calls, 1);
    cr_assert_eq(k.frees, 1);
    cr_assert_eq(k.pages_out, 1);
    cr_assert_eq(dp_mock_log_length(m), 3);
    mock_free(m, q);
    dp_mock_destroy(m);
}

/* ================================================================== */
/* Mock provider: hook                                                */
/* ================================================================== */

struct hook_rec {
    dp_mock_t *m;
    int calls;
    int fail;                 /* return this from the hook */
    int op[4], flags[4];
    void *page[4];
    size_t size[4];
    uint64_t pages_out_seen[4]; /* from dp_mock_counters() in the hook */
};

static int recording_hook(void *arg, int op, void *page, size_t size,
                          int flags)
{
    struct hook_rec *r = arg;
    dp_mock_counters_t c;
    /* Takes the mock lock: deadlocks unless the hook runs without it. */
    dp_mock_counters(r->m, &c);
    int i = r->calls++;
    if (i < 4) {
        r->op[i] = op;
        r->flags[i] = flags;
        r->page[i] = page;
        r->size[i] = size;
        r->pages_out_seen[i] = c.pages_out;
    }
    if (op == DP_MOCK_ALLOC)
        memset(page, 0, size); /* the page is real memory here */
    return r->fail;
}

Test(provider_mock, hook_runs_without_the_mock_lock_on_alloc_and_free,
     .timeout = 60)
{
    dp_mock_t *m = dp_mock_create(0);
    struct hook_rec r = {.m = m};
    dp_mock_set_hook(m, recording_hook, &r);
    void *p = mock_alloc(m, DP_NOWAIT);
    cr_assert_not_null(p);
    mock_free(m, p);
    cr_assert_eq(r.calls, 2);
    cr_assert_eq(r.op[0], DP_MOCK_ALLOC);
    cr_assert_eq(r.flags[0], DP_NOWAIT);
    cr_assert_eq(r.page[0], p);
    cr_assert_eq(r.size[0], PG);
    cr_assert_eq(r.op[1], DP_MOCK_FREE);
    cr_assert_eq(r.page[1], p);
    cr_assert_eq(r.size[1], PG);
    /* Free's hook runs before the page is released. */
    cr_assert_eq(r.pages_out_seen[1], 1);

    dp_mock_set_hook(m, NULL, NULL);
    p = mock_alloc(m, DP_WAITOK);
    mock_free(m, p);
    cr_assert_eq(r.calls, 2, "cleared hook still called");
    dp_mock_destroy(m);
}

Test(provider_mock, failing_alloc_hook_fails_alloc_and_leaves_counters)
{
    dp_mock_t *m = dp_mock_create(0);
    void *keep = mock_alloc(m, DP_WAITOK);
    cr_assert_not_null(keep);
    dp_mock_counters_t before = counters(m);

    struct hook_rec r = {.m = m, .fail = 1};
    dp_mock_set_hook(m, recording_hook, &r);
    cr_assert_null(mock_alloc(m, DP_WAITOK));
    cr_assert_eq(r.calls, 1);
    dp_mock_set_hook(m, NULL, NULL);

    dp_mock_counters_t after = counters(m);
    cr_assert_eq(after.allocs, before.allocs);
    cr_assert_eq(after.pages_out, before.pages_out);
    cr_assert_eq(after.max_pages_out, before.max_pages_out);
    cr_assert_eq(after.bytes_out, before.bytes_out);
    cr_assert_eq(after.frees, before.frees);
    /* It was a call, and it failed. */
    cr_assert_eq(after.alloc_calls, before.alloc_calls + 1);
    cr_assert_eq(after.alloc_failures, before.alloc_failures + 1);

    dp_mock_log_entry_t e;
    cr_assert_eq(dp_mock_log(m, 1, &e, 1), 1);
    cr_assert_eq(e.op, DP_MOCK_ALLOC);
    cr_assert_eq(e.ok, 0);
    mock_free(m, keep);
    dp_mock_destroy(m); /* would abort if the hooked page were still out */
}

/* ================================================================== */
/* Mock provider: clock                                               */
/* ================================================================== */

Test(provider_mock, clock_starts_at_one_second_and_moves_only_on_advance)
{
    dp_mock_t *m = dp_mock_create(0);
    dp_mock_t *other = dp_mock_create(0);
    cr_assert_eq(dp_mock_clock(m), 1000000000ull);
    cr_assert_eq(dp_mock_clock(m), 1000000000ull);
    dp_mock_clock_advance(m, 250);
    cr_assert_eq(dp_mock_clock(m), 1000000250ull);
    dp_mock_clock_advance(m, 2000000000ull);
    cr_assert_eq(dp_mock_clock(m), 3000000250ull);
    cr_assert_eq(dp_mock_clock(other), 1000000000ull, "clocks are per mock");
    dp_mock_destroy(other);
    dp_mock_destroy(m);
}

struct clock_arg {
    dp_mock_t *m;
    pthread_barrier_t *go;
};

static void *advance_thread(void *arg)
{
    struct clock_arg *a = arg;
    pthread_barrier_wait(a->go);
    for (int i = 0; i < 10000; i++)
        dp_mock_clock_advance(a->m, 3);
    return NULL;
}

Test(provider_mock, clock_advances_from_threads_add_up)
{
    dp_mock_t *m = dp_mock_create(0);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 4);
    struct clock_arg a = {.m = m, .go = &go};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, advance_thread, &a), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    cr_assert_eq(dp_mock_clock(m), 1000000000ull + 4 * 10000 * 3);
    dp_mock_destroy(m);
}

/* ================================================================== */
/* Mock provider: concurrency                                         */
/* ================================================================== */

struct churn_arg {
    dp_mock_t *m;
    pthread_barrier_t *go;
};

static void *churn_thread(void *arg)
{
    struct churn_arg *a = arg;
    void *held[8] = {0};
    pthread_barrier_wait(a->go);
    for (int i = 0; i < 2000; i++) {
        int s = i % 8;
        if (held[s] != NULL)
            mock_free(a->m, held[s]);
        held[s] = mock_alloc(a->m, i % 3 ? DP_WAITOK : DP_NOWAIT);
    }
    for (int s = 0; s < 8; s++)
        if (held[s] != NULL)
            mock_free(a->m, held[s]);
    return NULL;
}

Test(provider_mock, concurrent_calls_keep_counters_log_and_capacity_exact)
{
    enum { T = 4 };
    dp_mock_t *m = dp_mock_create(20); /* 4 x 8 wanted: capacity bites */
    dp_mock_fail_every(m, 7);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, T);
    struct churn_arg a = {.m = m, .go = &go};
    pthread_t t[T];
    for (int i = 0; i < T; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, churn_thread, &a), 0);
    for (int i = 0; i < T; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);

    dp_mock_counters_t c = counters(m);
    cr_assert_eq(c.alloc_calls, T * 2000);
    cr_assert_eq(c.allocs + c.alloc_failures, c.alloc_calls);
    cr_assert_eq(c.frees, c.allocs);
    cr_assert_eq(c.free_calls, c.frees);
    cr_assert_eq(c.pages_out, 0);
    cr_assert_eq(c.bytes_out, 0);
    cr_assert_leq(c.max_pages_out, 20);
    cr_assert_geq(c.alloc_failures, c.alloc_calls / 7);
    cr_assert_eq(dp_mock_log_length(m), c.alloc_calls + c.free_calls);
    dp_mock_destroy(m);
}

/* ================================================================== */
/* Mock provider: misuse aborts                                       */
/* ================================================================== */

Test(provider_mock, destroy_with_pages_out_aborts, .signal = SIGABRT)
{
    dp_mock_t *m = dp_mock_create(0);
    cr_assert_not_null(mock_alloc(m, DP_WAITOK));
    dp_mock_destroy(m);
}

Test(provider_mock, free_of_a_foreign_page_aborts, .signal = SIGABRT)
{
    dp_mock_t *m = dp_mock_create(0);
    void *foreign = aligned_alloc(PG, PG);
    mock_free(m, foreign);
}

Test(provider_mock, free_of_a_page_from_another_mock_aborts,
     .signal = SIGABRT)
{
    dp_mock_t *m1 = dp_mock_create(0), *m2 = dp_mock_create(0);
    void *p = mock_alloc(m1, DP_WAITOK);
    cr_assert_not_null(p);
    mock_free(m2, p);
}

Test(provider_mock, double_free_aborts, .signal = SIGABRT)
{
    dp_mock_t *m = dp_mock_create(0);
    void *keep = mock_alloc(m, DP_WAITOK); /* keeps p's address from reuse */
    void *p = mock_alloc(m, DP_WAITOK);
    cr_assert(keep && p);
    mock_free(m, p);
    mock_free(m, p);
}

Test(provider_mock, free_with_the_wrong_size_aborts, .signal = SIGABRT)
{
    dp_mock_t *m = dp_mock_create(0);
    const dp_provider_t *pv = dp_mock_provider(m);
    void *p = pv->alloc(pv->ctx, 8192, 8192, DP_WAITOK);
    cr_assert_not_null(p);
    pv->free(pv->ctx, p, 4096);
}

Test(provider_mock, alloc_with_bad_flags_aborts, .signal = SIGABRT)
{
    dp_mock_t *m = dp_mock_create(0);
    const dp_provider_t *pv = dp_mock_provider(m);
    pv->alloc(pv->ctx, PG, PG, DP_WAITOK | DP_NOWAIT);
}

/* ------------------------------------------- a provider that breaks the rules */

/* Hands out a page one cache line past its alignment: the pool would find
 * the wrong header by masking an object's address. */
static void *misaligned_alloc(void *ctx, size_t size, size_t align, int flags)
{
    (void)ctx;
    (void)flags;
    char *p = aligned_alloc(align, 2 * size);
    return p ? p + 64 : NULL;
}

static void misaligned_free(void *ctx, void *page, size_t size)
{
    (void)ctx;
    (void)size;
    free((char *)page - 64);
}

/* The child gets from a pool on that provider, with stderr on a pipe;
 * the parent reads what it said and how it ended. */
Test(provider_contract, a_misaligned_page_aborts_naming_the_pool_and_the_address)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        dp_provider_t prov = {misaligned_alloc, misaligned_free, NULL, "skewed"};
        dp_pool_attr_t a;
        dp_pool_attr_init(&a);
        a.provider = &prov;
        a.flags = DP_POOL_NOTHREAD;
        a.pagesize = 4096;
        dp_pool_t *pool = dp_pool_create("crooked", 64, &a);
        if (!pool)
            _exit(2);
        void *o = dp_pool_get(pool, DP_WAITOK);
        (void)o;
        _exit(0); /* not reached when the page is caught */
    }
    close(fds[1]);
    char buf[1024];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = 0;
    close(fds[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
              "the get did not abort (status %#x); stderr: %s", st, buf);
    cr_assert_not_null(strstr(buf, "pool 'crooked'"), "message: %s", buf);
    cr_assert_not_null(strstr(buf, "'skewed'"), "message: %s", buf);
    cr_assert_not_null(strstr(buf, "not aligned"), "message: %s", buf);
}
