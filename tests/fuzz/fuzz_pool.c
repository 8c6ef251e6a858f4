/*
 * fuzz_pool.c -- libFuzzer harness for the pool API (docs/design.md,
 * "Fuzzing").  The input is a pool configuration for 2-4 pools, each on
 * a mock provider of its own, followed by an operation sequence: gets
 * (DP_NOWAIT, DP_ZERO, DP_WAITOK with a deadline already passed, which
 * may call the provider but never sleeps), puts of live objects, writes
 * into them, prime, reclaim, reclaim passes, the mock clock, thread-cache
 * flushes, dp_pool_check, failure rules of the mock, and destroy and
 * re-create.  After every step the pools are compared with a model: the
 * live objects (aligned, inside a page the pool's mock handed out, none
 * overlapping another, their bytes as last written) and the exact
 * counters of dp_pool_stats against the model's and the mock's.  The
 * reclaim thread is off (DP_POOL_NOTHREAD) and ageing runs on the mock
 * clock, so an input always replays the same way.
 */
#include <deferpool.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz_pool"
#include "fuzz_input.h"

#define NPOOL_MAX 4
#define LIVE_MAX 96      /* live objects per pool                        */
#define PAGES_MAX 32     /* the mock's capacity, at most                 */
#define CHECK_WALK 4096  /* dp_pool_check at every step up to this many
                            slots (it walks every free object)           */
#define AGE_NS 1000000u  /* reclaim_age_ns, on the mock clock            */
#define CTOR_BYTE 0xc5   /* a constructed object's bytes                 */

/* ---- input (fuzz_input.h) ---------------------------------------------- */

#define PICK(in, tab) (tab[u8(in) % (sizeof(tab) / sizeof(tab[0]))])

/* ---- the model ------------------------------------------------------- */

struct obj {
    unsigned char *p;
    uint64_t id; /* its bytes are pat(id, i) */
};

struct fpool {
    dp_pool_t *pool;
    dp_mock_t *mock;
    int idx;
    size_t objsize, align, pagesize, opp;
    size_t max_pages;
    unsigned flags;
    bool ctor;
    uint64_t ctor_fail_every;
    struct obj live[LIVE_MAX];
    size_t nlive;
    uint64_t gets, puts, gets_failed;
    uint64_t ctor_calls, ctor_ok, dtors;
    size_t log_pos;           /* mock log entries applied to pages[]      */
    uintptr_t pages[PAGES_MAX]; /* pages the mock handed out, sorted      */
    size_t npages;
};

static struct fpool pools[NPOOL_MAX];
static int npools;
static uint64_t next_id;

static unsigned char pat(uint64_t id, size_t i)
{
    return (unsigned char)((id * 131u + i * 7u + (i >> 8)) ^ 0x5a);
}

static void fill(struct obj *o, size_t n)
{
    for (size_t i = 0; i < n; i++)
        o->p[i] = pat(o->id, i);
}

/* The bytes [from, to) of o hold its pattern. */
static void verify(const struct fpool *fp, const struct obj *o, size_t from,
                   size_t to)
{
    for (size_t i = from; i < to; i++)
        CHECK(o->p[i] == pat(o->id, i),
              "pool %d: live object %p (id %llu) byte %zu is %#x, "
              "written %#x: a get or put touched a live object",
              fp->idx, (void *)o->p, (unsigned long long)o->id, i, o->p[i],
              pat(o->id, i));
}

static int ctor(void *obj, void *arg, int flags)
{
    struct fpool *fp = arg;
    (void)flags;
    fp->ctor_calls++;
    if (fp->ctor_fail_every && fp->ctor_calls % fp->ctor_fail_every == 0)
        return 1;
    memset(obj, CTOR_BYTE, fp->objsize);
    fp->ctor_ok++;
    return 0;
}

static void dtor(void *obj, void *arg)
{
    struct fpool *fp = arg;
    const unsigned char *c = obj;
    for (size_t i = 0; i < fp->objsize; i++)
        CHECK(c[i] == CTOR_BYTE,
              "pool %d: dtor of %p: byte %zu is %#x, not constructed",
              fp->idx, obj, i, c[i]);
    fp->dtors++;
}

/* Apply the mock's new log entries to the model's page set. */
static void sync_pages(struct fpool *fp)
{
    dp_mock_log_entry_t e[16];
    size_t n;
    while ((n = dp_mock_log(fp->mock, fp->log_pos, e, 16)) > 0) {
        for (size_t k = 0; k < n; k++) {
            uintptr_t pg = (uintptr_t)e[k].page;
            if (e[k].op == DP_MOCK_ALLOC && e[k].ok) {
                CHECK(fp->npages < PAGES_MAX, "pool %d: mock over capacity",
                      fp->idx);
                CHECK(e[k].size == fp->pagesize,
                      "pool %d: page of %zu bytes, pagesize %zu", fp->idx,
                      e[k].size, fp->pagesize);
                size_t i = fp->npages++;
                while (i > 0 && fp->pages[i - 1] > pg) {
                    fp->pages[i] = fp->pages[i - 1];
                    i--;
                }
                fp->pages[i] = pg;
            } else if (e[k].op == DP_MOCK_FREE) {
                size_t i = 0;
                while (i < fp->npages && fp->pages[i] != pg)
                    i++;
                CHECK(i < fp->npages, "pool %d: freed page %p never allocated",
                      fp->idx, (void *)pg);
                memmove(&fp->pages[i], &fp->pages[i + 1],
                        (fp->npages - i - 1) * sizeof(fp->pages[0]));
                fp->npages--;
            }
        }
        fp->log_pos += n;
    }
}

static bool page_held(const struct fpool *fp, uintptr_t pg)
{
    size_t lo = 0, hi = fp->npages;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (fp->pages[mid] == pg)
            return true;
        if (fp->pages[mid] < pg)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static dp_pool_stats_t stats(struct fpool *fp)
{
    dp_pool_stats_t s;
    CHECK(dp_pool_stats(fp->pool, &s) == 0, "pool %d: dp_pool_stats failed",
          fp->idx);
    return s;
}

static dp_mock_counters_t counters(struct fpool *fp)
{
    dp_mock_counters_t c;
    dp_mock_counters(fp->mock, &c);
    return c;
}

/* The counters of one pool against the model and its mock. */
static void check_counters(struct fpool *fp)
{
    dp_pool_stats_t s = stats(fp);
    dp_mock_counters_t c = counters(fp);
    int i = fp->idx;
    CHECK(s.objsize == fp->objsize && s.objs_per_page == fp->opp &&
              s.pagesize == fp->pagesize,
          "pool %d: geometry changed", i);
    CHECK(s.objs_inuse == fp->nlive, "pool %d: objs_inuse %llu, model %zu", i,
          (unsigned long long)s.objs_inuse, fp->nlive);
    CHECK(s.gets == fp->gets && s.puts == fp->puts &&
              s.gets_failed == fp->gets_failed,
          "pool %d: gets/puts/failed %llu/%llu/%llu, model %llu/%llu/%llu", i,
          (unsigned long long)s.gets, (unsigned long long)s.puts,
          (unsigned long long)s.gets_failed, (unsigned long long)fp->gets,
          (unsigned long long)fp->puts, (unsigned long long)fp->gets_failed);
    CHECK(s.pages == c.pages_out && s.pages == c.allocs - c.frees &&
              s.pages_alloc == c.allocs && s.pages_freed == c.frees,
          "pool %d: pages %llu alloc %llu freed %llu; mock out %llu "
          "allocs %llu frees %llu",
          i, (unsigned long long)s.pages, (unsigned long long)s.pages_alloc,
          (unsigned long long)s.pages_freed, (unsigned long long)c.pages_out,
          (unsigned long long)c.allocs, (unsigned long long)c.frees);
    CHECK(s.pages == fp->npages, "pool %d: pages %llu, mock log %zu", i,
          (unsigned long long)s.pages, fp->npages);
    CHECK(s.provider_alloc_failures == c.alloc_failures,
          "pool %d: provider_alloc_failures %llu, mock %llu", i,
          (unsigned long long)s.provider_alloc_failures,
          (unsigned long long)c.alloc_failures);
    CHECK(s.pages_pending == 0 && s.waiting == 0 && s.put_provider_calls == 0,
          "pool %d: pending %llu waiting %llu put_provider_calls %llu", i,
          (unsigned long long)s.pages_pending, (unsigned long long)s.waiting,
          (unsigned long long)s.put_provider_calls);
    CHECK(!fp->max_pages || s.pages <= fp->max_pages,
          "pool %d: %llu pages, max_pages %zu", i,
          (unsigned long long)s.pages, fp->max_pages);
    CHECK(s.pages_empty <= s.pages && s.objs_cached <= s.objs_free,
          "pool %d: empty %llu of %llu pages, cached %llu of %llu free", i,
          (unsigned long long)s.pages_empty, (unsigned long long)s.pages,
          (unsigned long long)s.objs_cached, (unsigned long long)s.objs_free);
    /* Every slot of a page is out or free; a page whose ctor failed in a
     * DP_NOWAIT get is held (dead) until it can be returned, with no
     * slot of either kind. */
    uint64_t slots = s.objs_inuse + s.objs_free;
    if (fp->ctor && fp->ctor_fail_every)
        CHECK(slots % fp->opp == 0 && slots <= s.pages * fp->opp,
              "pool %d: %llu slots out or free on %llu pages of %zu", i,
              (unsigned long long)slots, (unsigned long long)s.pages, fp->opp);
    else
        CHECK(slots == s.pages * fp->opp,
              "pool %d: %llu slots out or free on %llu pages of %zu", i,
              (unsigned long long)slots, (unsigned long long)s.pages, fp->opp);
    if (fp->flags & (DP_POOL_NOCACHE | DP_POOL_DEBUG))
        CHECK(s.objs_cached == 0, "pool %d: uncached pool caches %llu", i,
              (unsigned long long)s.objs_cached);
    if (fp->ctor) {
        uint64_t built = fp->ctor_ok - fp->dtors;
        CHECK(fp->ctor_ok >= fp->dtors && built % fp->opp == 0 &&
                  built == slots,
              "pool %d: %llu objects constructed, %llu slots on live pages", i,
              (unsigned long long)built, (unsigned long long)slots);
    }
    if (s.pages * fp->opp <= CHECK_WALK)
        CHECK(dp_pool_check(fp->pool) == 0, "pool %d: dp_pool_check", i);
}

struct where {
    uintptr_t a;
    size_t n;
    int pool;
};

static int where_cmp(const void *x, const void *y)
{
    const struct where *a = x, *b = y;
    return a->a < b->a ? -1 : a->a > b->a;
}

/* After every step: counters, and every live object of every pool. */
static void check_all(void)
{
    static struct where w[NPOOL_MAX * LIVE_MAX];
    size_t nw = 0;
    for (int k = 0; k < npools; k++) {
        struct fpool *fp = &pools[k];
        if (!fp->pool)
            continue; /* destroyed, at the end of the input */
        sync_pages(fp);
        check_counters(fp);
        for (size_t j = 0; j < fp->nlive; j++) {
            struct obj *o = &fp->live[j];
            uintptr_t a = (uintptr_t)o->p;
            uintptr_t pg = a & ~(uintptr_t)(fp->pagesize - 1);
            CHECK(a % fp->align == 0, "pool %d: %p not aligned to %zu", k,
                  (void *)o->p, fp->align);
            CHECK(page_held(fp, pg),
                  "pool %d: %p is not in a page its mock handed out", k,
                  (void *)o->p);
            CHECK(a - pg + fp->objsize <= fp->pagesize,
                  "pool %d: %p (%zu bytes) crosses its page's end", k,
                  (void *)o->p, fp->objsize);
            /* Head and tail at every step, everything at put. */
            size_t n = fp->objsize;
            verify(fp, o, 0, n < 8 ? n : 8);
            verify(fp, o, n > 8 ? n - 8 : 0, n);
            w[nw++] = (struct where){a, n, k};
        }
    }
    qsort(w, nw, sizeof(w[0]), where_cmp);
    for (size_t j = 1; j < nw; j++)
        CHECK(w[j - 1].a + w[j - 1].n <= w[j].a,
              "object %p (pool %d, %zu bytes) overlaps %p (pool %d)",
              (void *)w[j - 1].a, w[j - 1].pool, w[j - 1].n, (void *)w[j].a,
              w[j].pool);
}

/* ---- pools ----------------------------------------------------------- */

static const size_t objsizes[] = {1,   7,    8,    16,   24,   33,
                                  48,  64,   100,  128,  255,  256,
                                  1000, 1024, 3000, 4097, 12345, 40000};
static const size_t aligns[] = {0, 8, 16, 32, 64, 256, 1024, 4096};
static const size_t pagesizes[] = {0, 4096, 8192, 16384, 65536, 262144};
static const size_t maxpages[] = {0, 0, 0, 2, 3, 8, 16};
static const size_t capacities[] = {PAGES_MAX, PAGES_MAX, 1, 2, 4, 8};
static const uint64_t fail_everys[] = {0, 0, 0, 0, 2, 3, 5};
static const uint64_t ctor_fails[] = {0, 0, 5, 11};

static void pool_create(struct fpool *fp, struct in *in)
{
    size_t objsize = PICK(in, objsizes);
    size_t align = PICK(in, aligns);
    size_t pagesize = PICK(in, pagesizes);
    uint8_t f = u8(in);
    size_t max_pages = PICK(in, maxpages);
    uint8_t w = u8(in);
    size_t capacity = PICK(in, capacities);
    uint64_t fail_every = PICK(in, fail_everys);

    int idx = fp->idx;
    memset(fp, 0, sizeof(*fp));
    fp->idx = idx;
    fp->mock = dp_mock_create(capacity);
    CHECK(fp->mock, "dp_mock_create");
    if (fail_every)
        dp_mock_fail_every(fp->mock, fail_every);

    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.align = align;
    a.pagesize = pagesize;
    a.flags = DP_POOL_NOTHREAD;
    if (f & 1)
        a.flags |= DP_POOL_NOCACHE;
    if (f & 2)
        a.flags |= DP_POOL_DEBUG;
    if (f & 4) {
        fp->ctor = true;
        a.ctor = ctor;
        a.dtor = dtor;
        a.cbarg = fp;
        fp->ctor_fail_every = ctor_fails[(f >> 3) & 3];
    }
    a.max_pages = max_pages;
    a.lowat = w & 3;
    if (max_pages && a.lowat > max_pages)
        a.lowat = max_pages;
    switch ((w >> 2) & 3) {
    case 0: a.hiwat = 0; break;
    case 1: a.hiwat = a.lowat ? a.lowat : 1; break;
    case 2: a.hiwat = a.lowat + 1; break;
    default: a.hiwat = 4 + a.lowat; break;
    }
    a.reclaim_age_ns = AGE_NS;
    a.reclaim_budget = 1 + ((w >> 4) & 3);
    a.provider = dp_mock_provider(fp->mock);
    a.clock = dp_mock_clock;
    a.clock_arg = fp->mock;

    char name[16];
    snprintf(name, sizeof(name), "fuzz%d", idx);
    fp->pool = dp_pool_create(name, objsize, &a);
    if (!fp->pool && errno == EINVAL && a.pagesize) {
        /* The object (at its alignment) does not fit the page. */
        a.pagesize = 0;
        fp->pool = dp_pool_create(name, objsize, &a);
    }
    CHECK(fp->pool, "dp_pool_create(%zu, align %zu, page %zu): %s", objsize,
          align, pagesize, strerror(errno));
    dp_pool_stats_t s = stats(fp);
    fp->objsize = objsize;
    fp->align = align ? align : (objsize < 16 ? 8 : 16);
    if (fp->align < sizeof(void *))
        fp->align = sizeof(void *);
    fp->pagesize = s.pagesize;
    fp->opp = s.objs_per_page;
    fp->max_pages = max_pages;
    fp->flags = a.flags;
    CHECK(!a.pagesize || s.pagesize == a.pagesize, "pagesize %zu, asked %zu",
          s.pagesize, a.pagesize);
    CHECK(fp->opp >= 1 && fp->opp * fp->objsize <= fp->pagesize,
          "%zu objects of %zu bytes in a page of %zu", fp->opp, fp->objsize,
          fp->pagesize);
}

static void put_at(struct fpool *fp, size_t j)
{
    struct obj *o = &fp->live[j];
    verify(fp, o, 0, fp->objsize);
    if (fp->ctor)
        memset(o->p, CTOR_BYTE, fp->objsize); /* back to constructed */
    dp_mock_counters_t c0 = counters(fp);
    dp_pool_put(fp->pool, o->p);
    dp_mock_counters_t c1 = counters(fp);
    CHECK(c1.alloc_calls == c0.alloc_calls && c1.free_calls == c0.free_calls,
          "pool %d: a put called the provider", fp->idx);
    fp->puts++;
    fp->live[j] = fp->live[--fp->nlive];
}

static void pool_destroy(struct fpool *fp)
{
    while (fp->nlive)
        put_at(fp, fp->nlive - 1);
    check_all();
    CHECK(dp_pool_destroy(fp->pool) == 0, "pool %d: destroy: %s", fp->idx,
          strerror(errno));
    dp_mock_counters_t c = counters(fp);
    CHECK(c.pages_out == 0, "pool %d: %llu pages not returned by destroy",
          fp->idx, (unsigned long long)c.pages_out);
    CHECK(fp->ctor_ok == fp->dtors, "pool %d: %llu constructed, %llu destroyed",
          fp->idx, (unsigned long long)fp->ctor_ok,
          (unsigned long long)fp->dtors);
    dp_mock_destroy(fp->mock);
    fp->pool = NULL;
    fp->mock = NULL;
}

/* ---- operations ------------------------------------------------------ */

static void op_get(struct fpool *fp, struct in *in, bool waitok)
{
    uint8_t b = u8(in);
    int flags = waitok ? DP_WAITOK : DP_NOWAIT;
    bool zero = !fp->ctor && (b & 1);
    if (zero)
        flags |= DP_ZERO;
    if (fp->nlive == LIVE_MAX)
        return;
    dp_pool_stats_t s0 = stats(fp);
    dp_mock_counters_t c0 = counters(fp);
    uint64_t ctor_fails0 = fp->ctor_calls - fp->ctor_ok;
    /* A deadline long past: a DP_WAITOK get may call the provider and
     * return due pages, but never sleeps. */
    static const struct timespec past = {0, 0};
    errno = 0;
    unsigned char *p = waitok ? dp_pool_get_timed(fp->pool, flags, &past)
                              : dp_pool_get(fp->pool, flags);
    int err = errno;
    dp_mock_counters_t c1 = counters(fp);
    if (!waitok)
        CHECK(c1.free_calls == c0.free_calls,
              "pool %d: a DP_NOWAIT get called the provider's free", fp->idx);
    if (!p) {
        fp->gets_failed++;
        CHECK(waitok ? (err == ETIMEDOUT || err == ENOMEM) : err == ENOMEM,
              "pool %d: failed get, errno %d", fp->idx, err);
        CHECK(s0.objs_free == 0,
              "pool %d: get failed with %llu free objects", fp->idx,
              (unsigned long long)s0.objs_free);
        bool limit = fp->max_pages && s0.pages >= fp->max_pages;
        bool refused = c1.alloc_failures > c0.alloc_failures;
        bool ctor_failed = fp->ctor_calls - fp->ctor_ok > ctor_fails0;
        CHECK(limit || refused || ctor_failed,
              "pool %d: get failed with no limit reached, no provider or "
              "ctor failure", fp->idx);
        return;
    }
    fp->gets++;
    struct obj *o = &fp->live[fp->nlive++];
    o->p = p;
    o->id = ++next_id;
    for (size_t i = 0; i < fp->objsize; i++) {
        if (zero)
            CHECK(p[i] == 0, "pool %d: DP_ZERO object %p byte %zu is %#x",
                  fp->idx, (void *)p, i, p[i]);
        else if (fp->ctor)
            CHECK(p[i] == CTOR_BYTE,
                  "pool %d: object %p byte %zu is %#x, not constructed",
                  fp->idx, (void *)p, i, p[i]);
    }
    fill(o, fp->objsize);
}

static void op_prime(struct fpool *fp, struct in *in)
{
    size_t n = u8(in) % (3 * fp->opp + 1);
    dp_pool_stats_t s0 = stats(fp);
    int r = dp_pool_prime(fp->pool, n);
    int err = errno;
    dp_pool_stats_t s1 = stats(fp);
    if (r == 0) {
        CHECK(s1.objs_free >= n, "pool %d: primed %zu, %llu free", fp->idx, n,
              (unsigned long long)s1.objs_free);
        CHECK(s1.reserve_objs >= n && s1.reserve_objs >= s0.reserve_objs,
              "pool %d: primed %zu, reserve %llu (was %llu)", fp->idx, n,
              (unsigned long long)s1.reserve_objs,
              (unsigned long long)s0.reserve_objs);
    } else {
        CHECK(r == -1 && err == ENOMEM, "pool %d: prime: %d errno %d",
              fp->idx, r, err);
        CHECK(s1.reserve_objs == s0.reserve_objs && s1.pages <= s0.pages,
              "pool %d: a failed prime changed the pool: reserve %llu->%llu "
              "pages %llu->%llu",
              fp->idx, (unsigned long long)s0.reserve_objs,
              (unsigned long long)s1.reserve_objs,
              (unsigned long long)s0.pages, (unsigned long long)s1.pages);
    }
}

static void op_reclaim(struct fpool *fp)
{
    dp_pool_stats_t s0 = stats(fp);
    dp_mock_counters_t c0 = counters(fp);
    size_t r = dp_pool_reclaim(fp->pool);
    dp_pool_stats_t s1 = stats(fp);
    dp_mock_counters_t c1 = counters(fp);
    CHECK(c1.allocs == c0.allocs, "pool %d: reclaim allocated", fp->idx);
    CHECK(r <= c1.frees - c0.frees && s1.pages == s0.pages - (c1.frees - c0.frees),
          "pool %d: reclaim returned %zu, mock freed %llu, pages %llu->%llu",
          fp->idx, r, (unsigned long long)(c1.frees - c0.frees),
          (unsigned long long)s0.pages, (unsigned long long)s1.pages);
}

static void op_mock(struct fpool *fp, struct in *in)
{
    uint8_t b = u8(in);
    dp_mock_counters_t c = counters(fp);
    switch (b & 3) {
    case 0: dp_mock_fail_clear(fp->mock); break;
    case 1: dp_mock_fail_nth(fp->mock, c.alloc_calls + 1 + (b >> 2) % 4); break;
    case 2: dp_mock_fail_every(fp->mock, 2 + (b >> 2) % 5); break;
    default: dp_mock_set_capacity(fp->mock, (b >> 2) % PAGES_MAX + 1); break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    npools = 2 + u8(&in) % 3;
    for (int k = 0; k < npools; k++) {
        pools[k].idx = k;
        pool_create(&pools[k], &in);
    }
    check_all();
    unsigned steps = 0;
    while (in.n && steps++ < 4096) {
        uint8_t op = u8(&in);
        struct fpool *fp = &pools[(op >> 4) % npools];
        switch (op & 15) {
        case 0:
        case 1:
        case 2:
            op_get(fp, &in, false);
            break;
        case 3:
            op_get(fp, &in, true);
            break;
        case 4:
        case 5:
        case 6:
            if (fp->nlive)
                put_at(fp, u8(&in) % fp->nlive);
            break;
        case 7:
            if (fp->nlive) {
                struct obj *o = &fp->live[u8(&in) % fp->nlive];
                verify(fp, o, 0, fp->objsize);
                o->id = ++next_id;
                fill(o, fp->objsize);
            }
            break;
        case 8:
            op_prime(fp, &in);
            break;
        case 9:
            op_reclaim(fp);
            break;
        case 10:
            dp_mock_clock_advance(fp->mock, (uint64_t)(u8(&in) + 1) * AGE_NS / 16);
            break;
        case 11:
            dp_reclaim_step();
            break;
        case 12:
            dp_thread_cache_flush();
            break;
        case 13:
            CHECK(dp_pool_check(fp->pool) == 0, "pool %d: dp_pool_check",
                  fp->idx);
            break;
        case 14:
            pool_destroy(fp);
            pool_create(fp, &in);
            break;
        default:
            op_mock(fp, &in);
            break;
        }
        check_all();
    }
    for (int k = 0; k < npools; k++)
        pool_destroy(&pools[k]);
    return 0;
}
