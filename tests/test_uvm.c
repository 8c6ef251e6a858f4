/*
 * test_uvm.c -- the seed thread's scenario (NetBSD tech-kern, Feb 2004):
 * returning a page to UVM may split a kernel map entry, map entries come
 * from a pool, so a pool_put that returned pages could block (or deadlock)
 * waiting for a map entry.
 *
 * Here a mock provider plays UVM.  Its hook takes a "map entry" from a
 * hard-limited deferpool pool (the entry pool, on a second mock) for every
 * page it maps; unmapping a page needs a *new* entry for the split
 * (DP_WAITOK) and then puts back the page's entry and the split one.  A
 * data pool lives on this UVM.  The tests check that
 *   - the hook never runs inside a dp_pool_put (a thread-local flag is set
 *     around every put the test makes, and the hook checks it; the
 *     library's own put_provider_calls stays 0),
 *   - puts that empty pages complete even while the entry pool is
 *     exhausted (the 2004 deadlock), and the pages go back once entries
 *     are available again,
 *   - under concurrent map/unmap traffic, with reclamation by DP_WAITOK
 *     gets, dp_pool_reclaim() and the reclaim thread, nothing deadlocks,
 *     the entry pool never exceeds its hard limit, and every page and
 *     every entry comes back.
 * Worker threads never call cr_assert (it must run on the test's main
 * thread); they count violations, and the main thread asserts the counts.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include "testutil.h"

#include <stdatomic.h>
#include <stdbool.h>

TestSuite(uvm, .timeout = 240, .init = tu_watchdog_init);

/* ----------------------------------------------------- traced calls */

static _Thread_local int tl_in_put;

/* Which data-pool call the calling thread is inside, to attribute each
 * unmap to a reclaim path.  ROLE_NONE: not one of ours, i.e. the reclaim
 * thread. */
enum role {
    ROLE_NONE,
    ROLE_WAITOK_GET,
    ROLE_NOWAIT_GET,
    ROLE_RECLAIM,
    ROLE_DESTROY,
    ROLE_N
};
static _Thread_local int tl_role;

static void *traced_get(dp_pool_t *pool, int flags)
{
    tl_role = (flags & DP_NOWAIT) ? ROLE_NOWAIT_GET : ROLE_WAITOK_GET;
    void *o = dp_pool_get(pool, flags);
    tl_role = ROLE_NONE;
    return o;
}

static size_t traced_reclaim(dp_pool_t *pool)
{
    tl_role = ROLE_RECLAIM;
    size_t n = dp_pool_reclaim(pool);
    tl_role = ROLE_NONE;
    return n;
}

/* Every put the test makes goes through here. */
static void traced_put(dp_pool_t *pool, void *obj)
{
    tl_in_put++;
    dp_pool_put(pool, obj);
    tl_in_put--;
}

/* ------------------------------------------------------------ the "map" */

#define ENTRY_MAGIC 0x6d6170656e747279ull /* "mapentry" */
#define NBUCKET 1024

struct map_entry {
    uint64_t magic;
    uintptr_t start, end;
    struct map_entry *next;
};

struct uvm {
    dp_pool_t *entries;      /* the map-entry pool (hard limit)          */
    size_t entry_limit;      /* its max_pages                            */
    pthread_mutex_t lock;    /* the "vm_map lock": the table below       */
    struct map_entry *bucket[NBUCKET];
    size_t mapped;           /* entries in the table                     */
    /* Counters (relaxed atomics; read by the main thread at the end). */
    atomic_ullong maps, unmaps, map_failed;
    atomic_ullong bad_in_put;   /* hook ran inside a dp_pool_put         */
    atomic_ullong bad_entry;    /* WAITOK entry get returned NULL        */
    atomic_ullong bad_page;     /* unmap of a page that is not mapped    */
    atomic_ullong bad_limit;    /* entry pool above its hard limit       */
    atomic_ullong bad_magic;    /* entry corrupted while in the table    */
    atomic_ullong unmaps_by[ROLE_N]; /* unmaps per reclaim path         */
};

static size_t bucket_of(uintptr_t page)
{
    return (size_t)((page >> 12) * 0x9e3779b97f4a7c15ull >> 54) % NBUCKET;
}

static void check_limit(struct uvm *u)
{
    dp_pool_stats_t s;
    if (dp_pool_stats(u->entries, &s) == 0 && s.pages > u->entry_limit)
        atomic_fetch_add(&u->bad_limit, 1);
}

static int uvm_hook(void *arg, int op, void *page, size_t size, int flags)
{
    struct uvm *u = arg;
    if (tl_in_put)
        atomic_fetch_add(&u->bad_in_put, 1);
    check_limit(u);
    uintptr_t start = (uintptr_t)page;
    if (op == DP_MOCK_ALLOC) {
        int mode = (flags & DP_NOWAIT) ? DP_NOWAIT : DP_WAITOK;
        struct map_entry *e = dp_pool_get(u->entries, mode);
        if (!e) {
            if (mode == DP_WAITOK)
                atomic_fetch_add(&u->bad_entry, 1);
            atomic_fetch_add(&u->map_failed, 1);
            return -1; /* the mock releases the page; the alloc fails */
        }
        *e = (struct map_entry){ENTRY_MAGIC, start, start + size, NULL};
        pthread_mutex_lock(&u->lock);
        size_t b = bucket_of(start);
        e->next = u->bucket[b];
        u->bucket[b] = e;
        u->mapped++;
        pthread_mutex_unlock(&u->lock);
        atomic_fetch_add(&u->maps, 1);
        check_limit(u);
        return 0;
    }
    /* Unmap: the split needs a new entry before anything is released. */
    struct map_entry *split = dp_pool_get(u->entries, DP_WAITOK);
    if (!split)
        atomic_fetch_add(&u->bad_entry, 1);
    pthread_mutex_lock(&u->lock);
    struct map_entry **pp = &u->bucket[bucket_of(start)], *old;
    while ((old = *pp) && old->start != start)
        pp = &old->next;
    if (old) {
        *pp = old->next;
        u->mapped--;
        if (old->magic != ENTRY_MAGIC || old->end != start + size)
            atomic_fetch_add(&u->bad_magic, 1);
        if (split) { /* [start, mid) stays in old, [mid, end) in split */
            uintptr_t mid = start + size / 2;
            *split = (struct map_entry){ENTRY_MAGIC, mid, old->end, NULL};
            old->end = mid;
        }
    }
    pthread_mutex_unlock(&u->lock);
    if (!old)
        atomic_fetch_add(&u->bad_page, 1);
    atomic_fetch_add(&u->unmaps_by[tl_role], 1);
    if (old)
        traced_put(u->entries, old);
    if (split)
        traced_put(u->entries, split);
    atomic_fetch_add(&u->unmaps, 1);
    check_limit(u);
    return 0;
}

/* The entry pool's own provider: a plain mock whose hook only checks that
 * it is not called from inside a put either. */
static atomic_ullong entry_prov_in_put;

static int entry_mock_hook(void *arg, int op, void *page, size_t size,
                           int flags)
{
    (void)arg, (void)op, (void)page, (void)size, (void)flags;
    if (tl_in_put)
        atomic_fetch_add(&entry_prov_in_put, 1);
    return 0;
}

struct world {
    dp_mock_t *entry_mock, *uvm_mock;
    struct uvm u;
    dp_pool_t *data;
};

static void world_init(struct world *w, size_t entry_limit,
                       unsigned entry_flags, const dp_pool_attr_t *data_attr,
                       size_t data_objsize)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->u.lock, NULL);
    atomic_store(&entry_prov_in_put, 0);
    w->entry_mock = tu_mock(0);
    dp_mock_set_hook(w->entry_mock, entry_mock_hook, NULL);
    dp_pool_attr_t ea;
    dp_pool_attr_init(&ea);
    ea.provider = dp_mock_provider(w->entry_mock);
    ea.flags = DP_POOL_NOTHREAD | entry_flags;
    ea.pagesize = 4096;
    ea.max_pages = entry_limit;
    ea.lowat = 0;
    w->u.entries = tu_pool("map-entries", sizeof(struct map_entry), &ea);
    w->u.entry_limit = entry_limit;

    w->uvm_mock = tu_mock(0);
    dp_mock_set_hook(w->uvm_mock, uvm_hook, &w->u);
    dp_pool_attr_t da = *data_attr;
    da.provider = dp_mock_provider(w->uvm_mock);
    w->data = tu_pool("data", data_objsize, &da);
}

static void assert_no_violations(struct world *w)
{
    struct uvm *u = &w->u;
    cr_assert_eq(atomic_load(&u->bad_in_put), 0,
                 "the UVM provider ran inside dp_pool_put %llu times",
                 (unsigned long long)atomic_load(&u->bad_in_put));
    cr_assert_eq(atomic_load(&entry_prov_in_put), 0,
                 "the entry pool's provider ran inside dp_pool_put");
    cr_assert_eq(atomic_load(&u->bad_entry), 0,
                 "a DP_WAITOK map-entry get returned NULL");
    cr_assert_eq(atomic_load(&u->bad_page), 0, "unmap of an unmapped page");
    cr_assert_eq(atomic_load(&u->bad_magic), 0, "a map entry was corrupted");
    cr_assert_eq(atomic_load(&u->bad_limit), 0,
                 "the entry pool went over its hard limit");
    cr_assert_eq(atomic_load(&u->unmaps_by[ROLE_NOWAIT_GET]), 0,
                 "a DP_NOWAIT get gave a page back to the provider");
    cr_assert_eq(tu_stats(w->data).put_provider_calls, 0);
    cr_assert_eq(tu_stats(u->entries).put_provider_calls, 0);
}

/* Destroy the data pool (every page is unmapped), then the entry pool. */
static void world_destroy(struct world *w)
{
    struct uvm *u = &w->u;
    assert_no_violations(w);
    tl_role = ROLE_DESTROY;
    tu_destroy_checked(w->data, NULL);
    tl_role = ROLE_NONE;
    dp_mock_counters_t c = tu_counters(w->uvm_mock);
    cr_assert_eq(c.allocs, c.frees, "UVM: %llu pages mapped, %llu unmapped",
                 (unsigned long long)c.allocs, (unsigned long long)c.frees);
    cr_assert_eq(atomic_load(&u->maps), c.allocs);
    cr_assert_eq(atomic_load(&u->unmaps), c.frees);
    cr_assert_eq(u->mapped, 0, "%zu map entries left in the map", u->mapped);
    dp_mock_destroy(w->uvm_mock);
    cr_assert_eq(atomic_load(&u->bad_in_put), 0, "hook inside a put");
    cr_assert_eq(atomic_load(&u->bad_entry), 0, "WAITOK entry get failed");
    cr_assert_eq(atomic_load(&u->bad_page), 0, "unmap of an unmapped page");
    cr_assert_eq(atomic_load(&u->bad_limit), 0, "entry pool over its limit");

    dp_pool_stats_t es = tu_stats(u->entries);
    cr_assert_eq(es.objs_inuse, 0, "%llu map entries never came back",
                 (unsigned long long)es.objs_inuse);
    cr_assert_leq(tu_counters(w->entry_mock).max_pages_out, u->entry_limit,
                  "the entry pool held more pages than its hard limit");
    tu_destroy_checked(u->entries, w->entry_mock);
    pthread_mutex_destroy(&u->lock);
}

/* ------------------------------------------------ the 2004 deadlock case */

struct reclaimer {
    dp_pool_t *pool;
    size_t returned;
    atomic_int done;
};

static void *reclaimer_thread(void *arg)
{
    struct reclaimer *r = arg;
    r->returned = traced_reclaim(r->pool);
    atomic_store(&r->done, 1);
    return NULL;
}

/*
 * Every map entry is in use (the entry pool is at its hard limit with no
 * free object), and the data pool's objects are all put back, emptying
 * every page.  In NetBSD 2004 the put that emptied a page would call UVM,
 * need an entry for the split, and sleep forever.  Here the puts finish
 * without touching UVM; the pages wait on the empty queue.  A reclaim then
 * does need entries: it sleeps in the entry pool until one entry is put
 * back, and from there each unmap frees two entries for the one it takes.
 */
Test(uvm, puts_that_empty_pages_finish_while_the_map_entry_pool_is_exhausted)
{
    dp_pool_attr_t da;
    dp_pool_attr_init(&da);
    da.flags = DP_POOL_NOTHREAD;
    da.pagesize = 4096;
    da.lowat = 0;
    da.hiwat = 0; /* every empty page is due: nothing defers but the put */
    struct world w;
    world_init(&w, 1, 0, &da, 256);
    size_t dopp = tu_stats(w.data).objs_per_page;
    const size_t pages = 8;

    size_t n = pages * dopp;
    void **objs = calloc(n, sizeof(void *));
    cr_assert_not_null(objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = traced_get(w.data, DP_WAITOK));
    cr_assert_eq(w.u.mapped, tu_stats(w.data).pages);

    /* Exhaust the map entries. */
    size_t eopp = tu_stats(w.u.entries).objs_per_page;
    void **ents = calloc(eopp + 1, sizeof(void *));
    cr_assert_not_null(ents);
    size_t nents = 0;
    for (;;) {
        void *e = dp_pool_get(w.u.entries, DP_NOWAIT);
        if (!e) {
            cr_assert_eq(errno, ENOMEM);
            break;
        }
        cr_assert_lt(nents, eopp);
        ents[nents++] = e;
    }
    dp_pool_stats_t es = tu_stats(w.u.entries);
    cr_assert_eq(es.pages, 1);
    cr_assert_eq(es.objs_free, 0);
    cr_assert_gt(nents, 0);

    /* The puts: every data page empties, and none of it reaches UVM. */
    for (size_t i = 0; i < n; i++)
        traced_put(w.data, objs[i]);
    dp_thread_cache_flush();
    dp_pool_stats_t ds = tu_stats(w.data);
    cr_assert_eq(ds.objs_inuse, 0);
    cr_assert_eq(ds.pages_empty, ds.pages, "%llu of %llu pages empty",
                 (unsigned long long)ds.pages_empty,
                 (unsigned long long)ds.pages);
    cr_assert_eq(tu_counters(w.uvm_mock).free_calls, 0);
    cr_assert_eq(atomic_load(&w.u.unmaps), 0);

    /* Returning the pages needs entries: the reclaim sleeps for one. */
    struct reclaimer r = {.pool = w.data};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, reclaimer_thread, &r), 0);
    tu_wait_waiting(w.u.entries, 1);
    cr_assert_eq(atomic_load(&r.done), 0);
    cr_assert_eq(tu_counters(w.uvm_mock).frees, 0);

    /* One entry back is enough to make progress. */
    traced_put(w.u.entries, ents[--nents]);
    pthread_join(t, NULL);
    cr_assert_eq(r.returned, ds.pages, "reclaim returned %zu of %llu pages",
                 r.returned, (unsigned long long)ds.pages);
    cr_assert_eq(atomic_load(&w.u.unmaps), ds.pages);
    cr_assert_eq(w.u.mapped, 0);

    while (nents)
        traced_put(w.u.entries, ents[--nents]);
    free(ents);
    free(objs);
    world_destroy(&w);
}

/* ---------------------------------------------- concurrent map/unmap */

#define NWORKERS 4
#define DATA_LIMIT 64   /* data pages; entries needed: one per page      */
#define ENTRY_LIMIT 2   /* entry pages: room for DATA_LIMIT + in flight  */
/* Pages the last three steps empty on purpose: more than a refill takes
 * (129 objects of 256 bytes, 9 pages), so that some stay empty. */
#define EMPTY_PAGES 16

struct worker {
    struct world *w;
    int id;
    uint64_t ops;
    size_t hold;        /* at most this many objects held at once       */
    uint64_t seed;
    uint64_t gets, nowait_null, waitok_null, reclaims;
};

static void *worker_thread(void *arg)
{
    struct worker *k = arg;
    dp_pool_t *data = k->w->data;
    void **held = calloc(k->hold, sizeof(void *));
    size_t n = 0;
    if (!held)
        return NULL;
    for (uint64_t i = 0; i < k->ops; i++) {
        uint64_t r = tu_rng(&k->seed);
        if (n < k->hold && (r % 100) < 55) {
            /* DP_WAITOK only while holding at most half: then all workers
             * asleep at once hold too little to exhaust the data pool. */
            int fl = ((r >> 8) & 1) && n < k->hold / 2 ? DP_WAITOK
                                                        : DP_NOWAIT;
            void *o = traced_get(data, fl);
            if (o) {
                memset(o, k->id, 16);
                held[n++] = o;
                k->gets++;
            } else if (fl == DP_WAITOK) {
                k->waitok_null++;
            } else {
                k->nowait_null++;
            }
        } else if (n > 0) {
            size_t j = (size_t)(r >> 16) % n;
            traced_put(data, held[j]);
            held[j] = held[--n];
        }
        if ((i & 1023) == 1023) { /* unmap burst: empty pages */
            while (n)
                traced_put(data, held[--n]);
            dp_thread_cache_flush();
        }
        if (k->id == 0 && (i & 4095) == 4095) {
            traced_reclaim(data);
            k->reclaims++;
        }
    }
    while (n)
        traced_put(data, held[--n]);
    free(held);
    return NULL;
}

/* Get n objects without ever handing pages back (DP_NOWAIT), then put
 * them all: the pages they filled are now empty. */
static void make_empty_pages(struct world *w, void **objs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = traced_get(w->data, DP_NOWAIT),
                           "NOWAIT get %zu of %zu failed", i, n);
    for (size_t i = 0; i < n; i++)
        traced_put(w->data, objs[i]);
    dp_thread_cache_flush();
    cr_assert_gt(tu_stats(w->data).pages_empty, 2);
}

Test(uvm, concurrent_map_unmap_with_every_reclaim_path_keeps_entry_limit_and_returns_all)
{
    dp_pool_attr_t da;
    dp_pool_attr_init(&da);
    da.flags = DP_POOL_NOTHREAD;
    da.pagesize = 4096;
    da.max_pages = DATA_LIMIT;
    da.lowat = 1;
    da.hiwat = 2;                   /* WAITOK gets hand pages back often */
    da.reclaim_age_ns = 1000000;    /* 1 ms, real clock: the thread too  */
    da.reclaim_budget = 4;
    struct world w;
    world_init(&w, ENTRY_LIMIT, 0, &da, 256);

    size_t eopp = tu_stats(w.u.entries).objs_per_page;
    /* No legitimate exhaustion: every data page plus every unmap and map
     * in flight (workers, main, the reclaim thread) has an entry. */
    cr_assert_geq(ENTRY_LIMIT * eopp, DATA_LIMIT + 2 * (NWORKERS + 2),
                  "entry pool too small for the data limit");
    size_t dopp = tu_stats(w.data).objs_per_page;
    size_t hold = DATA_LIMIT * dopp / NWORKERS;
    if (hold > 256)
        hold = 256;

    dp_reclaim_set_interval(1000000); /* 1 ms */
    cr_assert_eq(dp_reclaim_start(), 0);

    struct worker k[NWORKERS];
    pthread_t t[NWORKERS];
    for (int i = 0; i < NWORKERS; i++) {
        k[i] = (struct worker){.w = &w, .id = i, .hold = hold,
                               .ops = tu_scaled(1000000),
                               .seed = 0x1234567ull * (uint64_t)(i + 1)};
        cr_assert_eq(pthread_create(&t[i], NULL, worker_thread, &k[i]), 0);
    }
    uint64_t gets = 0, nowait_null = 0;
    for (int i = 0; i < NWORKERS; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(k[i].waitok_null, 0, "worker %d: WAITOK get failed", i);
        gets += k[i].gets;
        nowait_null += k[i].nowait_null;
    }
    cr_assert_gt(k[0].reclaims, 0);

    /* Now each reclaim path once more, on pages emptied on purpose, so
     * that each is seen unmapping (during the run, who got there first
     * was up to the scheduler).  Empty pages past hiwat are urgent. */
    void **objs = calloc(EMPTY_PAGES * dopp, sizeof(void *));
    cr_assert_not_null(objs);
    struct uvm *u = &w.u;
    /* 1. The reclaim thread.  Stopped while the pages are emptied: empty
     * pages past hiwat are urgent, and it would take some before
     * make_empty_pages counts them. */
    dp_reclaim_stop();
    make_empty_pages(&w, objs, EMPTY_PAGES * dopp);
    cr_assert_eq(dp_reclaim_start(), 0);
    for (int pass = 0; pass < 100 && !atomic_load(&u->unmaps_by[ROLE_NONE]);
         pass++)
        cr_assert_eq(dp_reclaim_sync(), 0);
    dp_reclaim_stop();
    cr_assert_gt(atomic_load(&u->unmaps_by[ROLE_NONE]), 0,
                 "the reclaim thread never unmapped a page");
    /* 2. A DP_WAITOK get hands due pages back after serving. */
    make_empty_pages(&w, objs, EMPTY_PAGES * dopp);
    uint64_t before = atomic_load(&u->unmaps_by[ROLE_WAITOK_GET]);
    void *o = traced_get(w.data, DP_WAITOK);
    cr_assert_not_null(o);
    traced_put(w.data, o);
    cr_assert_gt(atomic_load(&u->unmaps_by[ROLE_WAITOK_GET]), before,
                 "a DP_WAITOK get with due pages unmapped none");
    /* 3. dp_pool_reclaim. */
    make_empty_pages(&w, objs, EMPTY_PAGES * dopp);
    before = atomic_load(&u->unmaps_by[ROLE_RECLAIM]);
    cr_assert_gt(traced_reclaim(w.data), 0);
    cr_assert_gt(atomic_load(&u->unmaps_by[ROLE_RECLAIM]), before);
    free(objs);
    gets += 3 * EMPTY_PAGES * dopp + 1;

    dp_pool_stats_t ds = tu_stats(w.data);
    cr_assert_eq(ds.gets, gets, "pool counted %llu gets, workers %llu",
                 (unsigned long long)ds.gets, (unsigned long long)gets);
    cr_assert_eq(ds.gets_failed, nowait_null);
    cr_assert_eq(ds.objs_inuse, 0);
    cr_assert_leq(tu_counters(w.uvm_mock).max_pages_out, DATA_LIMIT);
    cr_log_info("uvm: %llu gets, %llu maps, %llu unmaps (thread %llu, "
                "WAITOK gets %llu, dp_pool_reclaim %llu), %llu WAITOK-get "
                "waits, entry pool max %llu pages",
                (unsigned long long)gets,
                (unsigned long long)atomic_load(&w.u.maps),
                (unsigned long long)atomic_load(&w.u.unmaps),
                (unsigned long long)atomic_load(&u->unmaps_by[ROLE_NONE]),
                (unsigned long long)atomic_load(&u->unmaps_by[ROLE_WAITOK_GET]),
                (unsigned long long)atomic_load(&u->unmaps_by[ROLE_RECLAIM]),
                (unsigned long long)ds.gets_waited,
                (unsigned long long)tu_counters(w.entry_mock).max_pages_out);
    /* Pages went back during the run, not only at destroy. */
    cr_assert_gt(atomic_load(&w.u.unmaps), 0, "no page was ever unmapped");
    cr_assert_gt(ds.pages_freed, 0);
    assert_no_violations(&w);
    world_destroy(&w);
}
