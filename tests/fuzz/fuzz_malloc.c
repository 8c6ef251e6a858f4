/*
 * fuzz_malloc.c -- libFuzzer harness for the drop-in malloc (docs/design.md,
 * "Fuzzing"), linked in under dpm_ names (tests/malloc/dpm_prefix.h) so
 * that ASan's allocator stays the process's malloc.  The input is an
 * operation sequence over up to 64 live blocks: malloc, calloc, realloc
 * (grow, shrink, from NULL, to 0), free, free_sized, aligned_alloc,
 * posix_memalign and memalign (size 0 included, alignments up to 2 MiB),
 * malloc_usable_size, dp_malloc_trim.  Each live block holds a pattern
 * derived from its id, checked whole at every realloc and free, and at
 * its head and tail after every step; the model also checks that calloc
 * zeroes, that the usable size covers the request and never changes while
 * the block lives, that alignments hold, that no two blocks' usable bytes
 * overlap, and the malloc's exact counts of live blocks.  The background
 * thread is off (DEFERPOOL_CONF background_thread:0), so an input always
 * replays the same way.
 */
#include <deferpool.h>
#include <deferpool-malloc.h>

#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz_malloc"
#include "fuzz_input.h"

/* C23's, which glibc 2.36's <stdlib.h> does not declare. */
void free_sized(void *p, size_t n);

#define LIVE_MAX 64
#define BYTES_MAX ((size_t)16 << 20) /* live bytes, at most */
#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static uint32_t u16(struct in *in)
{
    uint32_t lo = u8(in);
    return lo | (uint32_t)u8(in) << 8;
}

struct blk {
    unsigned char *p;
    size_t req;    /* bytes asked for                                  */
    size_t usable; /* malloc_usable_size when it was handed out        */
    size_t align;  /* alignment it must have                           */
    uint64_t id;   /* its bytes [0, req) are pat(id, i)                */
};

static struct blk live[LIVE_MAX];
static size_t nlive, live_bytes;
static uint64_t next_id;

/* The pattern: byte i of block id.  Filled and checked a word at a time
 * and without coverage (these loops are most of the harness's time, and
 * their branches say nothing about the malloc). */
#define NOCOV __attribute__((no_sanitize("coverage")))

static NOCOV uint64_t pat_word(uint64_t id, size_t w)
{
    return (id * 0x9e3779b97f4a7c15u) ^ (w * 0x100000001b3u);
}

static NOCOV unsigned char pat(uint64_t id, size_t i)
{
    return (unsigned char)(pat_word(id, i / 8) >> (i % 8 * 8));
}

static NOCOV void fill(struct blk *b)
{
    size_t w = b->req / 8;
    for (size_t k = 0; k < w; k++) {
        uint64_t v = pat_word(b->id, k);
        memcpy(b->p + k * 8, &v, 8);
    }
    for (size_t i = w * 8; i < b->req; i++)
        b->p[i] = pat(b->id, i);
}

static NOCOV void verify(const struct blk *b, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        if (i % 8 == 0 && i + 8 <= to) {
            uint64_t v;
            memcpy(&v, b->p + i, 8);
            if (v == pat_word(b->id, i / 8)) {
                i += 7;
                continue;
            }
        }
        CHECK(b->p[i] == pat(b->id, i),
              "block %p (id %llu, %zu bytes) byte %zu is %#x, written %#x",
              (void *)b->p, (unsigned long long)b->id, b->req, i, b->p[i],
              pat(b->id, i));
    }
}

/* What malloc(n) promises: 8 for blocks of at most 8 bytes, else 16. */
static size_t min_align(size_t n) { return n <= 8 ? 8 : 16; }

/* A size: mostly small, sometimes on a class edge, rarely large. */
static size_t size_of(struct in *in)
{
    static const size_t edges[] = {8,    16,   48,   64,   128,  1024,
                                   4096, 8192, 8193, 16384, 65536,
                                   128 * KiB, 512 * KiB, 1 * MiB, 2 * MiB};
    uint8_t band = u8(in);
    uint32_t r = u16(in);
    switch (band % 8) {
    case 0: return r % 17;
    case 1: return r % 129;
    case 2: return r % 1025;
    case 3: return r % 8193;
    case 4: return 8193 + r % 65536;
    case 5: {
        size_t e = edges[r % (sizeof(edges) / sizeof(edges[0]))];
        return e - 1 + (r >> 8) % 3; /* e - 1, e, e + 1 */
    }
    case 6: return r * 4u;          /* up to 256 KiB */
    default: return (size_t)r * 40; /* up to 2.5 MiB */
    }
}

static void add(void *p, size_t req, size_t align, bool zeroed)
{
    CHECK(nlive < LIVE_MAX, "model overflow");
    struct blk *b = &live[nlive++];
    b->p = p;
    b->req = req;
    b->align = align;
    b->usable = malloc_usable_size(p);
    b->id = ++next_id;
    CHECK(b->usable >= req, "%p: usable %zu < %zu asked", p, b->usable, req);
    CHECK((uintptr_t)p % align == 0, "%p (%zu bytes) not aligned to %zu", p,
          req, align);
    if (zeroed)
        for (size_t i = 0; i < req; i++)
            CHECK(b->p[i] == 0, "calloc %p byte %zu is %#x", p, i, b->p[i]);
    live_bytes += req;
    fill(b);
}

static void drop(size_t j)
{
    live_bytes -= live[j].req;
    live[j] = live[--nlive];
}

/* Live blocks the malloc counts (small objects and blocks) beyond the
 * model's: its own allocations, counted when the input starts. */
static uint64_t base_count;

static uint64_t malloc_count(void)
{
    dp_malloc_stats_t s;
    CHECK(dp_malloc_stats_get(&s) == 0, "dp_malloc_stats_get");
    return s.small_objs_inuse + s.large_inuse;
}

static int by_addr(const void *x, const void *y)
{
    const struct blk *a = *(const struct blk *const *)x;
    const struct blk *b = *(const struct blk *const *)y;
    return a->p < b->p ? -1 : a->p > b->p;
}

static void check_all(void)
{
    static const struct blk *s[LIVE_MAX];
    for (size_t j = 0; j < nlive; j++) {
        const struct blk *b = &live[j];
        size_t u = malloc_usable_size(b->p);
        CHECK(u == b->usable,
              "%p (%zu bytes): usable size %zu, was %zu when handed out",
              (void *)b->p, b->req, u, b->usable);
        verify(b, 0, b->req < 8 ? b->req : 8);
        verify(b, b->req > 8 ? b->req - 8 : 0, b->req);
        s[j] = b;
    }
    qsort(s, nlive, sizeof(s[0]), by_addr);
    for (size_t j = 1; j < nlive; j++)
        CHECK(s[j - 1]->p + s[j - 1]->usable <= s[j]->p &&
                  s[j - 1]->p != s[j]->p,
              "%p (usable %zu) overlaps %p", (void *)s[j - 1]->p,
              s[j - 1]->usable, (void *)s[j]->p);
    uint64_t c = malloc_count();
    if (c != base_count + nlive) {
        dp_malloc_stats_t st;
        dp_malloc_stats_get(&st);
        FAIL("the malloc counts %llu live (base %llu), model %zu: small %llu cached %llu large %llu queued %llu",
          (unsigned long long)c, (unsigned long long)base_count, nlive,
          (unsigned long long)st.small_objs_inuse, (unsigned long long)st.small_objs_cached,
          (unsigned long long)st.large_inuse, (unsigned long long)st.large_queued);
    }
}

static void op_free(size_t j, int how)
{
    struct blk *b = &live[j];
    verify(b, 0, b->req);
    if (how)
        free_sized(b->p, b->req);
    else
        free(b->p);
    drop(j);
}

static void op_realloc(struct in *in)
{
    size_t n = size_of(in);
    uint8_t b = u8(in);
    if (!nlive || (b & 7) == 0) { /* realloc(NULL, n) */
        if (nlive == LIVE_MAX || live_bytes + n > BYTES_MAX)
            return;
        void *p = realloc(NULL, n);
        CHECK(p, "realloc(NULL, %zu): %s", n, strerror(errno));
        add(p, n, min_align(n), false);
        return;
    }
    size_t j = (b >> 3) % nlive;
    struct blk *o = &live[j];
    verify(o, 0, o->req);
    if ((b & 7) == 1 || n == 0 || live_bytes - o->req + n > BYTES_MAX) {
        /* glibc: realloc(p, 0) frees p and returns NULL. */
        CHECK(realloc(o->p, 0) == NULL, "realloc(%p, 0) returned a block",
              (void *)o->p);
        drop(j);
        return;
    }
    struct blk keep = *o;
    unsigned char *p = realloc(o->p, n);
    CHECK(p, "realloc(%p, %zu): %s", (void *)keep.p, n, strerror(errno));
    struct blk moved = keep;
    moved.p = p;
    verify(&moved, 0, n < keep.req ? n : keep.req);
    drop(j);
    add(p, n, min_align(n), false);
}

static void op_aligned(struct in *in)
{
    static const size_t aligns[] = {16,       32,        64,       256,
                                    4 * KiB,  8 * KiB,   16 * KiB, 64 * KiB,
                                    256 * KiB, 1 * MiB,  2 * MiB};
    uint8_t b = u8(in);
    size_t align = aligns[(b >> 2) % (sizeof(aligns) / sizeof(aligns[0]))];
    size_t n = (b & 0x80) ? 0 : size_of(in);
    if (live_bytes + n + align > BYTES_MAX)
        return;
    void *p = NULL;
    switch (b & 3) {
    case 0:
        CHECK(posix_memalign(&p, align, n) == 0, "posix_memalign(%zu, %zu)",
              align, n);
        break;
    case 1:
        p = aligned_alloc(align, n);
        break;
    default:
        p = memalign(align, n);
        break;
    }
    CHECK(p, "aligned allocation (%d) of %zu at %zu: %s", b & 3, n, align,
          strerror(errno));
    add(p, n, align, false);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* No background thread: only the calls under test move blocks. */
    setenv("DEFERPOOL_CONF", "background_thread:0", 1);
    free(malloc(1)); /* initialise now: its own allocations are not ours */
    dp_reclaim_stop(); /* if the option came too late */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    base_count = malloc_count();
    unsigned steps = 0;
    while (in.n && steps++ < 2048) {
        uint8_t op = u8(&in);
        bool room = nlive < LIVE_MAX;
        switch (op % 12) {
        case 0:
        case 1:
        case 2: {
            size_t n = size_of(&in);
            if (!room || live_bytes + n > BYTES_MAX)
                break;
            void *p = malloc(n);
            CHECK(p, "malloc(%zu): %s", n, strerror(errno));
            add(p, n, min_align(n), false);
            break;
        }
        case 3: {
            size_t m = 1 + u8(&in) % 16, n = size_of(&in) / m;
            if (!room || live_bytes + m * n > BYTES_MAX)
                break;
            void *p = calloc(m, n);
            CHECK(p, "calloc(%zu, %zu): %s", m, n, strerror(errno));
            add(p, m * n, min_align(m * n), true);
            break;
        }
        case 4:
        case 5:
            op_realloc(&in);
            break;
        case 6:
        case 7:
            if (nlive)
                op_free(u8(&in) % nlive, 0);
            break;
        case 8:
            if (nlive)
                op_free(u8(&in) % nlive, 1);
            break;
        case 9:
        case 10:
            if (room)
                op_aligned(&in);
            break;
        default:
            dp_malloc_trim();
            break;
        }
        check_all();
    }
    while (nlive)
        op_free(nlive - 1, 0);
    check_all();
    return 0;
}
