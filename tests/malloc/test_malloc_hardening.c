/*
 * test_malloc_hardening.c -- the default (non-debug) malloc against
 * misuse (docs/malloc.md, "Hardening"): a double free, an invalid or
 * interior free and a realloc of such a pointer abort with a message
 * naming the pointer (and the block or pool it lies in), for every size
 * class and for medium and large blocks; a use after free that overwrites
 * a link the malloc keeps in a freed block aborts instead of steering the
 * heap; and normal use, whatever it writes into its blocks, never trips a
 * check.
 *
 * Each misuse runs in a forked child (tu_expect_abort), on blocks the
 * parent allocated, so that the parent knows the addresses the message
 * must name.  Runs with background_thread:0 (tests/malloc/meson.build):
 * a fork child would restart the reclaim thread, which TSan does not
 * allow after a multi-threaded fork.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>

#include "../testutil.h"
#include "malloc_testutil.h"

TestSuite(malloc_hardening, .init = tu_watchdog_init);

/* The size classes (docs/malloc.md, "Size classes"): 16, 32, 48, ...,
 * 128, then four per doubling up to 8 KiB. */
#define NCLASS 32
static size_t class_size(unsigned c)
{
    static const size_t tiny[8] = {16, 32, 48, 64, 80, 96, 112, 128};
    if (c < 8)
        return tiny[c];
    unsigned j = c - 8, lg = 7 + j / 4;
    return ((size_t)1 << lg) + ((size_t)(j % 4 + 1) << (lg - 2));
}

/* A child's misuse: what to call on which pointer. */
enum op {
    OP_FREE,
    OP_FREE2,
    OP_REALLOC,
    OP_FREE_REALLOC,
    OP_FREE_FREE_LATER,
    OP_FREE_FLUSH_FREE,
    OP_MOVE_FREE,
};
struct misuse {
    enum op op;
    void *p;
    size_t size; /* OP_FREE_FREE_LATER: the class size */
};

static void run_misuse(void *arg)
{
    struct misuse *m = arg;
    switch (m->op) {
    case OP_FREE:
        free(m->p);
        break;
    case OP_FREE2:
        free(m->p);
        free(m->p);
        break;
    case OP_REALLOC:
        (void)!realloc(m->p, 100);
        break;
    case OP_FREE_REALLOC:
        free(m->p);
        (void)!realloc(m->p, 100);
        break;
    case OP_FREE_FLUSH_FREE: /* off this thread's lists onto the queue */
        free(m->p);
        dp_malloc_thread_flush();
        free(m->p);
        break;
    case OP_MOVE_FREE: /* realloc moves the block, then the old pointer */
        (void)!realloc(m->p, 100); /* into a small block: moved */
        free(m->p);
        break;
    case OP_FREE_FREE_LATER: {
        /* Freed, then pushed out of this thread's bin by more frees of
         * its class than a bin holds (DP_TC_MAXCAP), so that the pool
         * links it (over word 0; the tag is word 1), then freed again. */
        enum { N = 600 };
        void *o[N];
        for (int i = 0; i < N; i++)
            o[i] = malloc(m->size);
        free(m->p);
        for (int i = 0; i < N; i++)
            free(o[i]);
        free(m->p);
        break;
    }
    }
}

/* Run the misuse in a child: it must abort, and its stderr must hold
 * every string of want (NULL-terminated). */
static void expect_abort(enum op op, void *p, size_t size,
                         const char *const *want, const char *what)
{
    struct misuse m = {op, p, size};
    char out[1024];
    cr_assert(tu_expect_abort(run_misuse, &m, want, out, sizeof out),
              "%s: no abort with the message (stderr: \"%s\")", what, out);
}

static const char *pstr(char *buf, const void *p)
{
    snprintf(buf, 32, "%p", p);
    return buf;
}

/* ---- small blocks, every class ------------------------------------------ */

Test(malloc_hardening, double_free_of_every_size_class_aborts_naming_the_pool)
{
    for (unsigned c = 0; c < NCLASS; c++) {
        size_t sz = class_size(c);
        char *p = malloc(sz);
        cr_assert_not_null(p);
        char ps[32], pool[32], what[64];
        snprintf(pool, sizeof pool, "pool 'malloc-%zu'", sz);
        snprintf(what, sizeof what, "double free, class %zu", sz);
        const char *want[] = {"free(): double free of", pstr(ps, p), pool,
                              NULL};
        expect_abort(OP_FREE2, p, sz, want, what);
        free(p);
    }
}

Test(malloc_hardening,
     double_free_after_the_block_left_the_thread_cache_aborts)
{
    for (unsigned c = 0; c < NCLASS; c++) {
        size_t sz = class_size(c);
        char *p = malloc(sz);
        cr_assert_not_null(p);
        char ps[32], what[64];
        snprintf(what, sizeof what, "late double free, class %zu", sz);
        const char *want[] = {"free(): double free of", pstr(ps, p), NULL};
        expect_abort(OP_FREE_FREE_LATER, p, sz, want, what);
        free(p);
    }
}

Test(malloc_hardening, interior_free_of_every_size_class_names_the_block)
{
    for (unsigned c = 0; c < NCLASS; c++) {
        size_t sz = class_size(c);
        char *p = malloc(sz);
        cr_assert_not_null(p);
        size_t offs[] = {1, sz / 2};
        for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
            char ps[32], bs[32], pool[48], what[64];
            snprintf(pool, sizeof pool, "of pool 'malloc-%zu'", sz);
            snprintf(what, sizeof what, "free(p + %zu), class %zu", offs[i],
                     sz);
            const char *want[] = {"free(): invalid pointer",
                                  pstr(ps, p + offs[i]), "inside block",
                                  pstr(bs, p), pool, NULL};
            expect_abort(OP_FREE, p + offs[i], sz, want, what);
        }
        free(p);
    }
}

Test(malloc_hardening, realloc_of_an_interior_or_freed_small_block_aborts)
{
    for (unsigned c = 0; c < NCLASS; c++) {
        size_t sz = class_size(c);
        char *p = malloc(sz);
        char ps[32], qs[32], what[64];
        snprintf(what, sizeof what, "realloc(p + %zu), class %zu", sz / 2, sz);
        const char *interior[] = {"realloc(): invalid pointer",
                                  pstr(qs, p + sz / 2), "inside block",
                                  pstr(ps, p), NULL};
        expect_abort(OP_REALLOC, p + sz / 2, sz, interior, what);
        snprintf(what, sizeof what, "realloc after free, class %zu", sz);
        const char *freed[] = {"realloc(): pointer already freed:",
                               pstr(ps, p), NULL};
        expect_abort(OP_FREE_REALLOC, p, sz, freed, what);
        free(p);
    }
}

/* ---- medium and large blocks -------------------------------------------- */

/* 20 KiB: a thread list's; 100 KiB: queued for the heap; 3 MiB: a
 * mapping of its own; and aligned above a page. */
static void *block_of(unsigned i)
{
    void *p = NULL;
    switch (i) {
    case 0: return malloc(20 * KiB);
    case 1: return malloc(100 * KiB);
    case 2: return malloc(3 * MiB);
    case 3: cr_assert_eq(posix_memalign(&p, 64 * KiB, 100 * KiB), 0); return p;
    }
    return NULL;
}
#define NBLOCK 4

Test(malloc_hardening, double_free_of_a_medium_or_large_block_aborts)
{
    for (unsigned i = 0; i < NBLOCK; i++) {
        char *p = block_of(i);
        char ps[32], what[64];
        snprintf(what, sizeof what, "double free of block kind %u", i);
        const char *want[] = {"free(): double free of", pstr(ps, p), NULL};
        expect_abort(OP_FREE2, p, 0, want, what);
        free(p);
    }
}

/* A block malloc took back from this thread's lists carries the fast
 * free's tag in the page map, and its free touches nothing of its header
 * (docs/malloc.md, "Thread lists"): a second free, a realloc after the
 * free, a second free after the lists went back to the queue and a free
 * after realloc moved the block must still abort, and
 * malloc_usable_size of the freed block say 0. */
Test(malloc_hardening, misuse_of_a_block_malloc_took_from_a_thread_list_aborts)
{
    char *p = malloc(20 * KiB);
    cr_assert_not_null(p);
    free(p);
    char *q = malloc(20 * KiB);
    cr_assert_eq(q, p, "the block came back from the list");
    char qs[32];
    const char *twice[] = {"free(): double free of", pstr(qs, q), NULL};
    expect_abort(OP_FREE2, q, 0, twice, "a second free");
    expect_abort(OP_FREE_FLUSH_FREE, q, 0, twice,
                 "a second free after the lists' flush");
    const char *re[] = {"realloc(): pointer already freed:", pstr(qs, q),
                        NULL};
    expect_abort(OP_FREE_REALLOC, q, 0, re, "realloc after free");
    expect_abort(OP_MOVE_FREE, q, 0, twice, "free after realloc moved it");
    free(q);
    cr_assert_eq(malloc_usable_size(q), 0, "a listed block is no block");
    char *r = malloc(20 * KiB);
    cr_assert_eq(r, q, "listed again by the fast free");
    cr_assert_eq(malloc_usable_size(r), 20 * KiB + 4 * KiB - 64);
    free(r);
    /* Taken off the list by another call: a live block again. */
    char *c = calloc(1, 20 * KiB);
    cr_assert_eq(c, r, "calloc took the listed block");
    cr_assert_eq(malloc_usable_size(c), 20 * KiB + 4 * KiB - 64);
    free(c);
}

/* Freed and moved into the heap (cached, its frames tagged there) by the
 * heap pass of a medium malloc that the block cannot serve, then freed
 * again. */
static void free_cache_free(void *arg)
{
    free(arg);
    (void)!malloc(300 * KiB);
    free(arg);
}

Test(malloc_hardening, double_free_of_a_cached_block_aborts)
{
    /* A fresh chunk: p at its start, a live block after it, so that p
     * merges with no cached neighbour and keeps its header. */
    dp_malloc_trim();
    char *p = malloc(100 * KiB), *guard = malloc(100 * KiB);
    char ps[32], out[1024];
    const char *want[] = {"free(): double free of", pstr(ps, p),
                          "a freed block", NULL};
    cr_assert(tu_expect_abort(free_cache_free, p, want, out, sizeof out),
              "stderr: \"%s\"", out);
    free(p);
    free(guard);
}

Test(malloc_hardening, interior_free_of_a_medium_or_large_block_aborts)
{
    for (unsigned i = 0; i < NBLOCK; i++) {
        char *p = block_of(i);
        char ps[32], bs[32], what[64];
        snprintf(what, sizeof what, "free(p + 16), block kind %u", i);
        const char *near[] = {"free(): invalid pointer", pstr(ps, p + 16),
                              "inside block", pstr(bs, p), NULL};
        expect_abort(OP_FREE, p + 16, 0, near, what);
        /* A later frame of the block is unknown to the page map. */
        snprintf(what, sizeof what, "free(p + 4096), block kind %u", i);
        const char *far[] = {"free(): invalid pointer", pstr(ps, p + 4096),
                             NULL};
        expect_abort(OP_FREE, p + 4096, 0, far, what);
        const char *re[] = {"realloc(): invalid pointer", pstr(ps, p + 16),
                            NULL};
        expect_abort(OP_REALLOC, p + 16, 0, re, what);
        const char *freed[] = {"realloc(): pointer already freed:",
                               pstr(ps, p), NULL};
        expect_abort(OP_FREE_REALLOC, p, 0, freed, what);
        free(p);
    }
}

/* ---- pointers it never handed out --------------------------------------- */

static char a_global[64];

Test(malloc_hardening, free_of_a_pointer_never_handed_out_aborts)
{
    free(malloc(16)); /* initialised */
    char on_stack[64];
    void *ptrs[] = {
        on_stack + 16,
        a_global,
        a_global + 3,                      /* unaligned */
        (void *)(uintptr_t)0x7e5a5a5a5000, /* far, never mapped */
        (void *)(uintptr_t)0x1000000000008, /* beyond 48 bits */
        (void *)(uintptr_t)4096,
    };
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) {
        char ps[32], what[64];
        snprintf(what, sizeof what, "foreign pointer %zu", i);
        const char *want[] = {"free(): invalid pointer", pstr(ps, ptrs[i]),
                              "not allocated by deferpool-malloc", NULL};
        expect_abort(OP_FREE, ptrs[i], 0, want, what);
        const char *re[] = {"realloc(): invalid pointer", pstr(ps, ptrs[i]),
                            NULL};
        expect_abort(OP_REALLOC, ptrs[i], 0, re, what);
        cr_assert_eq(malloc_usable_size(ptrs[i]), 0, "%s", what);
    }
}

/* A query does not abort: a pointer that is no live block's start has
 * no usable size. */
Test(malloc_hardening, malloc_usable_size_of_a_bad_pointer_is_zero)
{
    char *p = malloc(64), *q = malloc(64);
    cr_assert_eq(malloc_usable_size(p), 64);
    cr_assert_eq(malloc_usable_size(p + 8), 0);
    free(q);
    cr_assert_eq(malloc_usable_size(q), 0);
    char *b = malloc(100 * KiB);
    cr_assert_eq(malloc_usable_size(b + 16), 0);
    free(b);
    free(p);
}

/* ---- links in freed blocks ---------------------------------------------- */

static char decoy[64 * 1024] __attribute__((aligned(4096)));

/* A cached block's user area holds its heap links: a use after free
 * writes there the address of another cached block's header -- a value a
 * plain link could hold, which only the encoding tells from a real one --
 * then a malloc walks the heap. */
static void write_after_free_cached(void *arg)
{
    (void)arg;
    dp_malloc_trim();
    char *p = malloc(100 * KiB), *g1 = malloc(100 * KiB);
    char *other = malloc(200 * KiB), *g2 = malloc(100 * KiB);
    free(p);
    free(other);
    (void)!malloc(300 * KiB); /* its heap pass caches both, apart */
    fprintf(stderr, "header %p\n", (void *)(p - 64));
    for (int i = 0; i < 4; i++)
        ((uintptr_t *)p)[i] = (uintptr_t)(other - 64);
    (void)!malloc(100 * KiB);
    (void)g1;
    (void)g2;
}

/* A queued block's header holds its queue link (mc_block.next, the
 * second word): an overflow of the block before it, or a write before
 * the pointer, plants a decoy; then the heap drains the queue.  On a
 * thread list only the blocks past the ring's newest eight are linked
 * (lib/malloc/tlist.c): ten are freed, the ninth and tenth newest
 * linked, and the ninth newest's link is planted; eight mallocs take the
 * ring's blocks, and the ninth pops the planted one. */
enum { WAF_LISTED = 10 };

static void write_after_free_queued(void *arg)
{
    size_t sz = *(size_t *)arg;
    dp_malloc_trim();
    char *b[WAF_LISTED];
    for (int i = 0; i < WAF_LISTED; i++)
        b[i] = malloc(sz);
    for (int i = 0; i < WAF_LISTED; i++)
        free(b[i]); /* b[1]'s next is b[0], on the list or the queue */
    fprintf(stderr, "header %p\n", (void *)(b[1] - 64));
    uintptr_t *hdr = (uintptr_t *)((uintptr_t)b[1] - 64);
    hdr[1] = (uintptr_t)decoy;
    /* The queue's drain, or the ring's pops then the list's. */
    for (int i = 0; i < WAF_LISTED - 1; i++)
        (void)!malloc(sz);
}

Test(malloc_hardening, a_link_written_after_free_aborts_naming_the_block)
{
    char out[1024];
    const char *cached[] = {"corrupted link", "written after free?", NULL};
    cr_assert(tu_expect_abort(write_after_free_cached, NULL, cached, out,
                              sizeof out),
              "cached: stderr: \"%s\"", out);
    /* The message names the header the child printed. */
    char hdr[64];
    cr_assert_eq(sscanf(out, "header %63s", hdr), 1);
    cr_assert(strstr(strchr(out, '\n'), hdr), "%s", out);
    size_t sizes[] = {20 * KiB, 100 * KiB}; /* a thread list, mc_lq */
    for (size_t i = 0; i < 2; i++) {
        const char *queued[] = {"corrupted link 'next'", NULL};
        cr_assert(tu_expect_abort(write_after_free_queued, &sizes[i], queued,
                                  out, sizeof out),
                  "queued %zu: stderr: \"%s\"", sizes[i], out);
        cr_assert_eq(sscanf(out, "header %63s", hdr), 1);
        cr_assert(strstr(strchr(out, '\n'), hdr), "%s", out);
    }
}

/* ---- normal use never trips a check ------------------------------------- */

/* Allocate sz bytes by way w: each path that hands a small block out
 * (the thread-cache hits of malloc and calloc, the pool's get behind
 * aligned_alloc) must clear the tag the block's last free left. */
static void *alloc_way(int w, size_t sz)
{
    switch (w) {
    case 0: return malloc(sz);
    case 1: return calloc(1, sz);
    case 2: return calloc(1, 0); /* writes no byte of the block */
    case 3: return aligned_alloc(16, sz);
    default: return realloc(NULL, sz);
    }
}

Test(malloc_hardening, a_block_handed_out_again_by_any_call_frees_cleanly)
{
    for (int w = 0; w < 5; w++)
        for (unsigned c = 0; c < NCLASS; c++) {
            size_t sz = class_size(c);
            void *p = alloc_way(w, sz);
            cr_assert_not_null(p);
            free(p);
            void *q = alloc_way(w, sz); /* p again: this thread's bin */
            cr_assert_eq(q, p, "way %d, class %zu", w, sz);
            free(q); /* aborts if q still carried its tag */
        }
}

/* Every class and some blocks, allocated, filled with a pattern whose
 * words include what a tag or a link could look like (the block's own
 * address, zero, all ones), reallocated across classes and freed, in an
 * interleaved order: no abort, and the contents hold. */
Test(malloc_hardening, churn_of_every_class_with_any_contents_never_aborts)
{
    enum { N = 256 };
    char *p[N];
    size_t n[N];
    uint64_t rng = 0x9e3779b97f4a7c15u;
    memset(p, 0, sizeof p);
    uint64_t rounds = mt_scaled(20000);
    for (uint64_t r = 0; r < rounds; r++) {
        unsigned i = (unsigned)(tu_rng(&rng) % N);
        if (p[i]) {
            cr_assert_eq(mt_check(p[i], n[i], (uintptr_t)i), n[i]);
            if (tu_rng(&rng) & 1) {
                free(p[i]);
                p[i] = NULL;
                continue;
            }
        }
        uint64_t x = tu_rng(&rng);
        size_t sz = x % 8 == 0 ? (size_t)(x >> 8) % (200 * KiB)
                               : class_size((unsigned)(x >> 8) % NCLASS) -
                                     (size_t)(x >> 16) % 8;
        if (p[i]) {
            p[i] = realloc(p[i], sz);
            cr_assert(p[i] || !sz);
            size_t keep = n[i] < sz ? n[i] : sz;
            cr_assert_eq(mt_check(p[i], keep, (uintptr_t)i), keep);
        } else {
            p[i] = (x >> 60) & 1 ? calloc(1, sz) : malloc(sz);
            cr_assert(p[i]);
        }
        n[i] = sz;
        /* Words that look like a tag or a link: free() must still take
         * the block.  Then the pattern the next visit checks. */
        uintptr_t w[3] = {(uintptr_t)p[i], 0, ~(uintptr_t)0};
        for (size_t k = 0; k + sizeof(uintptr_t) <= sz; k += sizeof(uintptr_t))
            memcpy(p[i] + k, &w[(k / 8 + r) % 3], sizeof(uintptr_t));
        if ((r & 3) == 0 && p[i]) {
            free(p[i]);
            p[i] = malloc(sz);
            cr_assert(p[i]);
        }
        mt_fill(p[i], sz, (uintptr_t)i);
    }
    for (unsigned i = 0; i < N; i++)
        free(p[i]);
}
