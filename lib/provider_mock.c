/*
 * provider_mock.c -- page provider layer (test double), docs/design.md
 * §1 (Layers) and §8 (mock->lock is a leaf lock).  The mock provider:
 * capacity, failure injection, gates, exact counters, a call log, a hook
 * and a hand-driven clock, for tests to build the states pools must survive.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "pageset.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "deferpool.h"

/*
 * Locking.  One pthread mutex per mock, m->lock, guards every field not
 * marked otherwise.  It is a leaf lock: nothing is called while it is
 * held except the C library (memcpy, realloc for the log and page table).
 * In particular the hook, aligned_alloc and free() of a page run with it
 * released, and a caller at a closed gate waits on a condition variable,
 * which releases it.
 *
 * Call accounting.  A call first passes its gate; only then is it counted
 * (alloc_calls / free_calls, nowait_allocs, the failure-injection call
 * number), so a caller held at a gate shows up in blocked_* and nowhere
 * else.  Its outcome (allocs, frees, pages_out, bytes_out, max_pages_out,
 * alloc_failures) and its log entry are recorded when it completes, after
 * the hook.  An alloc that passed the capacity check but has not completed
 * holds a slot in `pending`, so concurrent allocs cannot overshoot the
 * capacity.  alloc_calls == allocs + alloc_failures once calls are done.
 *
 * DP_NOWAIT allocs never wait at a closed alloc gate: the contract lets
 * alloc sleep only for DP_WAITOK, and a closed gate models a provider that
 * would have to wait for memory, so such a call fails at once (counted in
 * alloc_failures and logged with ok = 0).
 *
 * Misuse that a test must see aborts with a message on stderr: freeing a
 * page this mock did not hand out or already took back, freeing with the
 * wrong size, alloc arguments outside the provider contract, destroying a
 * mock with pages out or calls in flight, and running out of memory for
 * the mock's own bookkeeping (so the counters and log are never silently
 * wrong).
 */

#define GATE_ALLOC 0 /* index of the alloc gate in per-gate arrays */
#define GATE_FREE  1 /* index of the free gate */
#define MOCK_CLOCK_START 1000000000ull /* 1 s, in ns */

struct dp_mock {
    dp_provider_t provider;   /* immutable after create; ctx = this mock */
    pthread_mutex_t lock;     /* leaf lock for every field below marked (L) */
    pthread_cond_t gate_cv;   /* callers at a closed gate wait here (L) */
    pthread_cond_t arrive_cv; /* dp_mock_gate_wait() waits here (L) */

    size_t capacity;          /* pages; 0 = unlimited (L) */
    size_t pending;           /* allocs past the capacity check, not yet
                                 completed (L) */
    unsigned inflight;        /* calls inside alloc/free, gated or not (L) */
    unsigned gates_closed;    /* DP_MOCK_ALLOC | DP_MOCK_FREE bits (L) */
    uint64_t gate_gen[2];     /* bumped by each open of the gate; a caller
                                 leaves once it changes (L) */

    uint64_t fail_nth;        /* fail this call number; 0 = off (L) */
    uint64_t fail_every;      /* fail multiples of this; 0 = off (L) */
    uint64_t fail_after;      /* fail call numbers above this (L) */
    bool fail_after_on;       /* fail_after is in force (L) */
    uint32_t fail_ppm;        /* random failures per million; 0 = off (L) */
    uint64_t rng;             /* splitmix64 state for fail_ppm (L) */

    dp_mock_hook_t hook;      /* may be NULL; read once per call (L) */
    void *hook_arg;           /* passed to hook (L) */

    dp_mock_counters_t c;     /* the exact counters, blocked_* too (L) */
    struct page_set out;      /* pages handed out and not taken back (L) */

    dp_mock_log_entry_t *log; /* log_len entries in completion order (L) */
    size_t log_len;           /* entries used (L) */
    size_t log_cap;           /* entries allocated (L) */

    _Atomic uint64_t clock_ns; /* dp_mock_clock(); atomic, no lock, so the
                                  pool may read it under its own lock */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                      */
/* ------------------------------------------------------------------ */

static void die(const char *fmt, ...)
    __attribute__((noreturn, format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("deferpool mock provider: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

static void check_mock(const dp_mock_t *m, const char *fn)
{
    if (m == NULL)
        die("%s: NULL mock", fn);
}

static void lock(dp_mock_t *m)
{
    pthread_mutex_lock(&m->lock);
}

static void unlock(dp_mock_t *m)
{
    pthread_mutex_unlock(&m->lock);
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t self_thread(void)
{
    return (uint64_t)pthread_self();
}

static int self_tid(void)
{
    return (int)syscall(SYS_gettid);
}

static int gate_index(int which, const char *fn)
{
    if (which == DP_MOCK_ALLOC)
        return GATE_ALLOC;
    if (which == DP_MOCK_FREE)
        return GATE_FREE;
    die("%s: `which` must be DP_MOCK_ALLOC or DP_MOCK_FREE, got %d", fn,
        which);
}

static uint64_t *blocked_counter_locked(dp_mock_t *m, int idx)
{
    return idx == GATE_ALLOC ? &m->c.blocked_alloc : &m->c.blocked_free;
}

/* ------------------------------------------------------------------ */
/* Log                                                                */
/* ------------------------------------------------------------------ */

/* seq is the entry's index in the log (0, 1, 2, ...), i.e. the order in
 * which calls completed. */
static void log_append_locked(dp_mock_t *m, int op, int flags, int ok,
                              uint64_t thread, int tid, void *page,
                              size_t size)
{
    if (m->log_len == m->log_cap) {
        size_t ncap = m->log_cap ? m->log_cap * 2 : 256;
        dp_mock_log_entry_t *nl = realloc(m->log, ncap * sizeof(*nl));
        if (nl == NULL)
            die("out of memory for the call log (%zu entries)", m->log_len);
        m->log = nl;
        m->log_cap = ncap;
    }
    m->log[m->log_len] = (dp_mock_log_entry_t){
        .seq = m->log_len,
        .op = op,
        .flags = flags,
        .ok = ok,
        .thread = thread,
        .tid = tid,
        .page = page,
        .size = size,
    };
    m->log_len++;
}

/* ------------------------------------------------------------------ */
/* Gates                                                              */
/* ------------------------------------------------------------------ */

/* Wait while gate idx is closed.  An open releases every caller that was
 * waiting at that moment, even if the gate is closed again before it
 * runs: that is what a test that opens a gate means. */
static void gate_pass_locked(dp_mock_t *m, int idx)
{
    unsigned bit = idx == GATE_ALLOC ? DP_MOCK_ALLOC : DP_MOCK_FREE;
    if (!(m->gates_closed & bit))
        return;
    uint64_t gen = m->gate_gen[idx];
    uint64_t *blocked = blocked_counter_locked(m, idx);
    (*blocked)++;
    pthread_cond_broadcast(&m->arrive_cv);
    while ((m->gates_closed & bit) && m->gate_gen[idx] == gen)
        pthread_cond_wait(&m->gate_cv, &m->lock);
    (*blocked)--;
}

/* ------------------------------------------------------------------ */
/* The provider callbacks                                             */
/* ------------------------------------------------------------------ */

static bool injected_failure_locked(dp_mock_t *m, uint64_t call)
{
    bool fail = false;
    if (m->fail_nth != 0 && call == m->fail_nth)
        fail = true;
    if (m->fail_every != 0 && call % m->fail_every == 0)
        fail = true;
    if (m->fail_after_on && call > m->fail_after)
        fail = true;
    /* Draw on every call while the rule is on, whatever the other rules
     * say, so a seed gives the same pattern however the rules combine. */
    if (m->fail_ppm != 0 && splitmix64(&m->rng) % 1000000u < m->fail_ppm)
        fail = true;
    return fail;
}

static void alloc_failed_locked(dp_mock_t *m, int flags, size_t size,
                                uint64_t thread, int tid)
{
    m->c.alloc_failures++;
    log_append_locked(m, DP_MOCK_ALLOC, flags, 0, thread, tid, NULL, size);
    m->inflight--;
}

static void *mock_alloc(void *ctx, size_t size, size_t align, int flags)
{
    dp_mock_t *m = ctx;
    check_mock(m, "alloc");
    if (flags != DP_WAITOK && flags != DP_NOWAIT)
        die("alloc: flags must be DP_WAITOK or DP_NOWAIT, got %#x", flags);
    if (!dp_is_pow2(align) || size == 0 || size % align != 0)
        die("alloc: bad size %zu / align %zu (align must be a power of two "
            "dividing size)", size, align);

    uint64_t thread = self_thread();
    int tid = self_tid();

    lock(m);
    m->inflight++;
    bool gated_nowait = false;
    if (flags == DP_NOWAIT)
        gated_nowait = (m->gates_closed & DP_MOCK_ALLOC) != 0;
    else
        gate_pass_locked(m, GATE_ALLOC);

    uint64_t call = ++m->c.alloc_calls;
    if (flags == DP_NOWAIT)
        m->c.nowait_allocs++;
    bool fail = injected_failure_locked(m, call) | gated_nowait;
    if (m->capacity != 0 && m->c.pages_out + m->pending >= m->capacity)
        fail = true;
    if (fail) {
        alloc_failed_locked(m, flags, size, thread, tid);
        unlock(m);
        return NULL;
    }
    m->pending++;
    dp_mock_hook_t hook = m->hook;
    void *hook_arg = m->hook_arg;
    unlock(m);

    void *page = aligned_alloc(align, size);
    if (page != NULL && hook != NULL &&
        hook(hook_arg, DP_MOCK_ALLOC, page, size, flags) != 0) {
        free(page);
        page = NULL;
    }

    lock(m);
    m->pending--;
    if (page == NULL) {
        alloc_failed_locked(m, flags, size, thread, tid);
        unlock(m);
        return NULL;
    }
    if (dp_ps_insert(&m->out, page, size) != 0)
        die("out of memory for the outstanding-page table");
    m->c.allocs++;
    m->c.pages_out++;
    m->c.bytes_out += size;
    if (m->c.pages_out > m->c.max_pages_out)
        m->c.max_pages_out = m->c.pages_out;
    log_append_locked(m, DP_MOCK_ALLOC, flags, 1, thread, tid, page, size);
    m->inflight--;
    unlock(m);
    return page;
}

/* The page is not outstanding: tell a double free from a foreign page by
 * the log (aligned_alloc may reuse an address, so only the latest entry
 * for it counts). */
static void die_bad_free_locked(dp_mock_t *m, void *page, size_t size)
{
    for (size_t i = m->log_len; i-- > 0;) {
        const dp_mock_log_entry_t *e = &m->log[i];
        if (e->page == page && e->op == DP_MOCK_FREE)
            die("double free of page %p (size %zu): already freed by log "
                "entry %" PRIu64 " from tid %d", page, size, e->seq, e->tid);
        if (e->page == page)
            break;
    }
    die("free of page %p (size %zu) that this mock did not hand out",
        page, size);
}

static void mock_free(void *ctx, void *page, size_t size)
{
    dp_mock_t *m = ctx;
    check_mock(m, "free");
    uint64_t thread = self_thread();
    int tid = self_tid();

    lock(m);
    m->inflight++;
    gate_pass_locked(m, GATE_FREE);
    m->c.free_calls++;
    struct page_slot *slot = dp_ps_find(&m->out, page);
    if (slot == NULL)
        die_bad_free_locked(m, page, size);
    if (slot->size != size)
        die("free of page %p with size %zu, but it was allocated with "
            "size %zu", page, size, slot->size);
    /* Out of the table now, so a racing second free of it aborts. */
    dp_ps_remove(&m->out, slot);
    dp_mock_hook_t hook = m->hook;
    void *hook_arg = m->hook_arg;
    unlock(m);

    if (hook != NULL)
        (void)hook(hook_arg, DP_MOCK_FREE, page, size, 0);

    lock(m);
    m->c.frees++;
    m->c.pages_out--;
    m->c.bytes_out -= size;
    log_append_locked(m, DP_MOCK_FREE, 0, 1, thread, tid, page, size);
    m->inflight--;
    unlock(m);
    free(page);
}

/* ------------------------------------------------------------------ */
/* Public API                                                         */
/* ------------------------------------------------------------------ */

DP_API dp_mock_t *dp_mock_create(size_t capacity_pages)
{
    dp_mock_t *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    if (pthread_mutex_init(&m->lock, NULL) != 0)
        goto fail_mutex;
    if (pthread_cond_init(&m->gate_cv, NULL) != 0)
        goto fail_gate;
    if (pthread_cond_init(&m->arrive_cv, NULL) != 0)
        goto fail_arrive;
    m->provider = (dp_provider_t){
        .alloc = mock_alloc,
        .free = mock_free,
        .ctx = m,
        .name = "mock",
    };
    m->capacity = capacity_pages;
    atomic_init(&m->clock_ns, MOCK_CLOCK_START);
    return m;

fail_arrive:
    pthread_cond_destroy(&m->gate_cv);
fail_gate:
    pthread_mutex_destroy(&m->lock);
fail_mutex:
    free(m);
    errno = ENOMEM;
    return NULL;
}

DP_API void dp_mock_destroy(dp_mock_t *m)
{
    if (m == NULL)
        return;
    lock(m);
    if (m->inflight != 0)
        die("dp_mock_destroy: %u call(s) still inside the provider "
            "(%" PRIu64 " at the alloc gate, %" PRIu64 " at the free gate)",
            m->inflight, m->c.blocked_alloc, m->c.blocked_free);
    if (m->c.pages_out != 0) {
        void *first = NULL;
        for (size_t i = 0; i < m->out.cap && first == NULL; i++)
            first = m->out.slots[i].page;
        die("dp_mock_destroy: %" PRIu64 " page(s), %" PRIu64 " bytes, still "
            "out (a leak), e.g. %p", m->c.pages_out, m->c.bytes_out, first);
    }
    unlock(m);
    pthread_cond_destroy(&m->arrive_cv);
    pthread_cond_destroy(&m->gate_cv);
    pthread_mutex_destroy(&m->lock);
    free(m->out.slots);
    free(m->log);
    free(m);
}

DP_API const dp_provider_t *dp_mock_provider(dp_mock_t *m)
{
    check_mock(m, "dp_mock_provider");
    return &m->provider;
}

DP_API void dp_mock_set_capacity(dp_mock_t *m, size_t capacity_pages)
{
    check_mock(m, "dp_mock_set_capacity");
    lock(m);
    m->capacity = capacity_pages;
    unlock(m);
}

/* Each setter replaces its own rule and leaves the others alone. */
DP_API void dp_mock_fail_nth(dp_mock_t *m, uint64_t n)
{
    check_mock(m, "dp_mock_fail_nth");
    lock(m);
    m->fail_nth = n;
    unlock(m);
}

DP_API void dp_mock_fail_every(dp_mock_t *m, uint64_t n)
{
    check_mock(m, "dp_mock_fail_every");
    lock(m);
    m->fail_every = n;
    unlock(m);
}

DP_API void dp_mock_fail_after(dp_mock_t *m, uint64_t n)
{
    check_mock(m, "dp_mock_fail_after");
    lock(m);
    m->fail_after = n;
    m->fail_after_on = true;
    unlock(m);
}

DP_API void dp_mock_fail_random(dp_mock_t *m, uint32_t ppm, uint64_t seed)
{
    check_mock(m, "dp_mock_fail_random");
    lock(m);
    m->fail_ppm = ppm > 1000000u ? 1000000u : ppm;
    m->rng = seed;
    unlock(m);
}

DP_API void dp_mock_fail_clear(dp_mock_t *m)
{
    check_mock(m, "dp_mock_fail_clear");
    lock(m);
    m->fail_nth = 0;
    m->fail_every = 0;
    m->fail_after = 0;
    m->fail_after_on = false;
    m->fail_ppm = 0;
    unlock(m);
}

DP_API void dp_mock_gate_close(dp_mock_t *m, int which)
{
    check_mock(m, "dp_mock_gate_close");
    (void)gate_index(which, "dp_mock_gate_close"); /* validates */
    lock(m);
    m->gates_closed |= (unsigned)which;
    unlock(m);
}

DP_API void dp_mock_gate_open(dp_mock_t *m, int which)
{
    check_mock(m, "dp_mock_gate_open");
    int idx = gate_index(which, "dp_mock_gate_open");
    lock(m);
    m->gates_closed &= ~(unsigned)which;
    m->gate_gen[idx]++;
    pthread_cond_broadcast(&m->gate_cv);
    unlock(m);
}

DP_API void dp_mock_gate_wait(dp_mock_t *m, int which, unsigned n)
{
    check_mock(m, "dp_mock_gate_wait");
    int idx = gate_index(which, "dp_mock_gate_wait");
    lock(m);
    while (*blocked_counter_locked(m, idx) < n)
        pthread_cond_wait(&m->arrive_cv, &m->lock);
    unlock(m);
}

DP_API void dp_mock_counters(dp_mock_t *m, dp_mock_counters_t *out)
{
    check_mock(m, "dp_mock_counters");
    lock(m);
    *out = m->c;
    unlock(m);
}

DP_API size_t dp_mock_log(dp_mock_t *m, size_t from, dp_mock_log_entry_t *out,
                          size_t max)
{
    check_mock(m, "dp_mock_log");
    lock(m);
    size_t n = 0;
    if (from < m->log_len) {
        n = m->log_len - from;
        if (n > max)
            n = max;
        if (n != 0)
            memcpy(out, m->log + from, n * sizeof(*out));
    }
    unlock(m);
    return n;
}

DP_API size_t dp_mock_log_length(dp_mock_t *m)
{
    check_mock(m, "dp_mock_log_length");
    lock(m);
    size_t n = m->log_len;
    unlock(m);
    return n;
}

DP_API void dp_mock_set_hook(dp_mock_t *m, dp_mock_hook_t hook, void *arg)
{
    check_mock(m, "dp_mock_set_hook");
    lock(m);
    m->hook = hook;
    m->hook_arg = arg;
    unlock(m);
}

/* Called by pools with their own lock held: a plain atomic load. */
DP_API uint64_t dp_mock_clock(void *mock)
{
    dp_mock_t *m = mock;
    check_mock(m, "dp_mock_clock");
    return atomic_load(&m->clock_ns);
}

DP_API void dp_mock_clock_advance(dp_mock_t *m, uint64_t ns)
{
    check_mock(m, "dp_mock_clock_advance");
    atomic_fetch_add(&m->clock_ns, ns);
}
