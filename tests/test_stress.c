/*
 * test_stress.c -- many threads, random gets and puts (DP_NOWAIT and
 * DP_WAITOK mixed), objects handed between threads and put by a thread
 * that did not get them; with and without a hard limit, with the reclaim
 * thread and dp_reclaim_step()/dp_pool_reclaim() running alongside, and
 * with provider failures injected.
 *
 * Ownership is checked two ways:
 *   - an owner table keyed by object address: a get inserts the address
 *     (finding it already there means the pool handed one object out
 *     twice), a put removes it first;
 *   - the object's own bytes: the owner writes a nonce and a pattern
 *     derived from it over the whole object, and checks them before the
 *     put (another owner, or the pool writing into an object that is out,
 *     would change them).  Every DP_ZERO get checks the object is zero.
 * Worker threads count violations; the main thread asserts them, then
 * checks that the pool's books match the workers' own counts.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include "testutil.h"

#include <stdatomic.h>
#include <stdbool.h>

TestSuite(stress, .timeout = 300, .init = tu_watchdog_init);

/* ---------------------------------------------------------- owner table */

#define OT_STRIPES 64
#define OT_SLOTS 1024 /* per stripe, power of two; 3/4 full at most */

struct ot_stripe {
    pthread_mutex_t mu;
    size_t n;
    uintptr_t slot[OT_SLOTS];
};

static struct ot_stripe ot[OT_STRIPES];

static void ot_init(void)
{
    for (int i = 0; i < OT_STRIPES; i++) {
        pthread_mutex_init(&ot[i].mu, NULL);
        ot[i].n = 0;
        memset(ot[i].slot, 0, sizeof(ot[i].slot));
    }
}

static uint64_t ot_hash(uintptr_t a)
{
    uint64_t h = (uint64_t)a * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

/* 0: inserted; 1: already owned (double hand-out); -1: table full. */
static int ot_insert(uintptr_t a)
{
    uint64_t h = ot_hash(a);
    struct ot_stripe *s = &ot[h % OT_STRIPES];
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    size_t i = (size_t)(h >> 8) & (OT_SLOTS - 1);
    if (s->n >= OT_SLOTS * 3 / 4) {
        rc = -1;
    } else {
        while (s->slot[i] && s->slot[i] != a)
            i = (i + 1) & (OT_SLOTS - 1);
        if (s->slot[i] == a) {
            rc = 1;
        } else {
            s->slot[i] = a;
            s->n++;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* 0: removed; 1: was not owned. */
static int ot_remove(uintptr_t a)
{
    uint64_t h = ot_hash(a);
    struct ot_stripe *s = &ot[h % OT_STRIPES];
    pthread_mutex_lock(&s->mu);
    size_t i = (size_t)(h >> 8) & (OT_SLOTS - 1);
    while (s->slot[i] && s->slot[i] != a)
        i = (i + 1) & (OT_SLOTS - 1);
    if (!s->slot[i]) {
        pthread_mutex_unlock(&s->mu);
        return 1;
    }
    /* Backward-shift deletion keeps every probe chain unbroken. */
    size_t j = i;
    for (;;) {
        s->slot[i] = 0;
        for (;;) {
            j = (j + 1) & (OT_SLOTS - 1);
            if (!s->slot[j])
                goto done;
            size_t home = (size_t)(ot_hash(s->slot[j]) >> 8) & (OT_SLOTS - 1);
            /* Move slot[j] into the hole at i unless its home lies
             * cyclically in (i, j]. */
            bool stays = i <= j ? (i < home && home <= j)
                                : (i < home || home <= j);
            if (!stays)
                break;
        }
        s->slot[i] = s->slot[j];
        i = j;
    }
done:
    s->n--;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ------------------------------------------------------------- exchange */

#define XCAP 256

struct exchange {
    pthread_mutex_t mu;
    size_t head, n;
    void *ring[XCAP];
};

static bool xch_push(struct exchange *x, void *o)
{
    bool ok;
    pthread_mutex_lock(&x->mu);
    ok = x->n < XCAP;
    if (ok)
        x->ring[(x->head + x->n++) % XCAP] = o;
    pthread_mutex_unlock(&x->mu);
    return ok;
}

static void *xch_pop(struct exchange *x)
{
    void *o = NULL;
    pthread_mutex_lock(&x->mu);
    if (x->n) {
        o = x->ring[x->head];
        x->head = (x->head + 1) % XCAP;
        x->n--;
    }
    pthread_mutex_unlock(&x->mu);
    return o;
}

/* --------------------------------------------------------------- config */

struct cfg {
    int nthreads;
    uint64_t ops;        /* per thread, before DP_TEST_SCALE            */
    size_t objsize;
    size_t max_pages;    /* 0: unlimited                                */
    size_t hold;         /* objects a thread holds at most              */
    bool reclaim;        /* reclaim thread + a step/reclaim helper      */
    uint32_t fail_ppm;   /* injected provider alloc failures            */
    unsigned pool_flags; /* extra DP_POOL_* flags                       */
};

struct shared {
    const struct cfg *cfg;
    dp_pool_t *pool;
    dp_mock_t *m;
    struct exchange xch;
    pthread_barrier_t start;
    /* Helper wake-ups: bumped by workers after each burst of puts. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t epoch;
    bool stop;
    /* Violations, counted by workers. */
    atomic_ullong dup, notowned, corrupt, notzero, overlimit, waitok_null,
        table_full;
};

struct worker {
    struct shared *sh;
    int id;
    uint64_t seed;
    uint64_t gets, puts, nowait_null, waits, steps;
};

/* The object's words: nonce, then nonce-derived words to the end. */
static void stamp(void *o, size_t size, uint64_t nonce)
{
    uint64_t *w = o;
    size_t nw = size / 8;
    w[0] = nonce;
    for (size_t i = 1; i < nw; i++)
        w[i] = nonce * (i + 1) ^ 0x5bd1e9955bd1e995ull;
}

static bool stamp_ok(const void *o, size_t size)
{
    const uint64_t *w = o;
    size_t nw = size / 8;
    for (size_t i = 1; i < nw; i++)
        if (w[i] != (w[0] * (i + 1) ^ 0x5bd1e9955bd1e995ull))
            return false;
    return true;
}

static bool all_zero(const void *o, size_t size)
{
    const unsigned char *b = o;
    for (size_t i = 0; i < size; i++)
        if (b[i])
            return false;
    return true;
}

static void take(struct worker *k, void *o, int flags, uint64_t nonce)
{
    struct shared *sh = k->sh;
    size_t size = sh->cfg->objsize;
    if ((flags & DP_ZERO) && !all_zero(o, size))
        atomic_fetch_add(&sh->notzero, 1);
    int rc = ot_insert((uintptr_t)o);
    if (rc > 0)
        atomic_fetch_add(&sh->dup, 1);
    else if (rc < 0)
        atomic_fetch_add(&sh->table_full, 1);
    stamp(o, size, nonce);
    k->gets++;
}

static void give_back(struct worker *k, void *o)
{
    struct shared *sh = k->sh;
    if (!stamp_ok(o, sh->cfg->objsize))
        atomic_fetch_add(&sh->corrupt, 1);
    if (ot_remove((uintptr_t)o))
        atomic_fetch_add(&sh->notowned, 1);
    dp_pool_put(sh->pool, o);
    k->puts++;
}

static void check_limit(struct worker *k)
{
    struct shared *sh = k->sh;
    if (!sh->cfg->max_pages)
        return;
    dp_pool_stats_t s;
    if (dp_pool_stats(sh->pool, &s) == 0 && s.pages > sh->cfg->max_pages)
        atomic_fetch_add(&sh->overlimit, 1);
    dp_mock_counters_t c;
    dp_mock_counters(sh->m, &c);
    if (c.pages_out > sh->cfg->max_pages)
        atomic_fetch_add(&sh->overlimit, 1);
}

static void kick_helper(struct shared *sh)
{
    pthread_mutex_lock(&sh->mu);
    sh->epoch++;
    pthread_cond_signal(&sh->cv);
    pthread_mutex_unlock(&sh->mu);
}

static void *worker_thread(void *arg)
{
    struct worker *k = arg;
    struct shared *sh = k->sh;
    const struct cfg *c = sh->cfg;
    uint64_t ops = tu_scaled(c->ops);
    void **held = calloc(c->hold, sizeof(void *));
    size_t n = 0;
    uint64_t nonce = (uint64_t)(k->id + 1) << 48;
    if (!held) {
        atomic_fetch_add(&sh->table_full, 1);
        return NULL;
    }
    pthread_barrier_wait(&sh->start);
    for (uint64_t i = 0; i < ops; i++) {
        uint64_t r = tu_rng(&k->seed);
        unsigned pct = (unsigned)(r % 100);
        if (pct < 45 && n < c->hold) {
            /* DP_WAITOK only while holding less than half: all threads
             * asleep at once then hold less than the limit allows, so a
             * wait always has a put (or a reclaim) coming. */
            bool waitok = ((r >> 8) % 4 == 0) && n < c->hold / 2;
            int flags = waitok ? DP_WAITOK : DP_NOWAIT;
            if ((r >> 12) % 8 == 0)
                flags |= DP_ZERO;
            void *o = dp_pool_get(sh->pool, flags);
            if (o) {
                take(k, o, flags, ++nonce);
                held[n++] = o;
            } else if (waitok) {
                atomic_fetch_add(&sh->waitok_null, 1);
            } else {
                k->nowait_null++;
            }
        } else if (pct < 80 && n > 0) {
            size_t j = (size_t)(r >> 20) % n;
            give_back(k, held[j]);
            held[j] = held[--n];
        } else if (pct < 90 && n > 0) {
            /* Hand one to whichever thread pops it next. */
            size_t j = (size_t)(r >> 20) % n;
            if (xch_push(&sh->xch, held[j]))
                held[j] = held[--n];
        } else {
            void *o = xch_pop(&sh->xch);
            if (o)
                give_back(k, o); /* a put of another thread's object */
        }
        if ((i & 4095) == 4095) {
            while (n)
                give_back(k, held[--n]); /* empty pages */
            check_limit(k);
            if (c->reclaim)
                kick_helper(sh);
        }
    }
    while (n)
        give_back(k, held[--n]);
    free(held);
    return NULL;
}

/* Runs dp_reclaim_step() and dp_pool_reclaim() each time a worker has
 * emptied pages, alongside the reclaim thread. */
static void *helper_thread(void *arg)
{
    struct worker *k = arg;
    struct shared *sh = k->sh;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&sh->mu);
        while (!sh->stop && sh->epoch == seen)
            pthread_cond_wait(&sh->cv, &sh->mu);
        bool stop = sh->stop;
        seen = sh->epoch;
        pthread_mutex_unlock(&sh->mu);
        if (stop)
            break;
        if (tu_rng(&k->seed) & 1)
            dp_reclaim_step();
        else
            dp_pool_reclaim(sh->pool);
        k->steps++;
    }
    return NULL;
}

static void run_stress(const struct cfg *c)
{
    ot_init();
    struct shared sh = {.cfg = c};
    pthread_mutex_init(&sh.xch.mu, NULL);
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    sh.m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(sh.m);
    a.clock = NULL; /* real time: the reclaim thread ages pages itself */
    a.clock_arg = NULL;
    a.max_pages = c->max_pages;
    a.flags |= c->pool_flags;
    if (c->reclaim) {
        a.lowat = 1;
        a.hiwat = 4;
        a.reclaim_age_ns = 1000000; /* 1 ms */
    }
    sh.pool = tu_pool("stress", c->objsize, &a);
    dp_pool_stats_t s0 = tu_stats(sh.pool);
    if (c->max_pages) {
        /* Enough room that threads asleep in WAITOK (each holding less
         * than hold/2) plus the exchange never use it all up; little
         * enough that the limit is reached. */
        size_t room = c->max_pages * s0.objs_per_page;
        cr_assert_gt(room, c->nthreads * (c->hold / 2) + XCAP,
                     "config: the limit could deadlock the test itself");
        cr_assert_lt(room, c->nthreads * c->hold + XCAP,
                     "config: the limit can never be reached");
    }
    if (c->fail_ppm)
        dp_mock_fail_random(sh.m, c->fail_ppm, 0x5eedull);
    pthread_barrier_init(&sh.start, NULL, (unsigned)c->nthreads);
    if (c->reclaim) {
        dp_reclaim_set_interval(1000000); /* 1 ms */
        cr_assert_eq(dp_reclaim_start(), 0);
    }

    struct worker k[8], helper = {.sh = &sh, .id = -1, .seed = 77};
    pthread_t t[8], ht;
    cr_assert_leq(c->nthreads, 8);
    for (int i = 0; i < c->nthreads; i++) {
        k[i] = (struct worker){.sh = &sh, .id = i,
                               .seed = 0x9e3779b97f4a7c15ull * (i + 3)};
        cr_assert_eq(pthread_create(&t[i], NULL, worker_thread, &k[i]), 0);
    }
    if (c->reclaim)
        cr_assert_eq(pthread_create(&ht, NULL, helper_thread, &helper), 0);

    uint64_t gets = 0, puts = 0, nowait_null = 0;
    for (int i = 0; i < c->nthreads; i++) {
        pthread_join(t[i], NULL);
        gets += k[i].gets;
        puts += k[i].puts;
        nowait_null += k[i].nowait_null;
    }
    if (c->reclaim) {
        pthread_mutex_lock(&sh.mu);
        sh.stop = true;
        pthread_cond_signal(&sh.cv);
        pthread_mutex_unlock(&sh.mu);
        pthread_join(ht, NULL);
        dp_reclaim_stop();
    }
    /* Whatever is left in the exchange goes back from the main thread. */
    struct worker mk = {.sh = &sh, .id = 99};
    for (void *o; (o = xch_pop(&sh.xch));)
        give_back(&mk, o);
    puts += mk.puts;

    cr_assert_eq(atomic_load(&sh.table_full), 0, "owner table too small");
    cr_assert_eq(atomic_load(&sh.dup), 0,
                 "%llu objects were handed out while already out",
                 (unsigned long long)atomic_load(&sh.dup));
    cr_assert_eq(atomic_load(&sh.notowned), 0);
    cr_assert_eq(atomic_load(&sh.corrupt), 0,
                 "%llu objects changed while their owner held them",
                 (unsigned long long)atomic_load(&sh.corrupt));
    cr_assert_eq(atomic_load(&sh.notzero), 0, "DP_ZERO object not zeroed");
    cr_assert_eq(atomic_load(&sh.overlimit), 0, "hard limit exceeded");
    cr_assert_eq(atomic_load(&sh.waitok_null), 0, "a WAITOK get failed");
    cr_assert_eq(gets, puts);

    dp_pool_stats_t s = tu_stats(sh.pool);
    cr_log_info("stress: %llu gets, %llu NOWAIT failures, %llu waited, "
                "%llu pages alloc, %llu freed, %llu provider failures",
                (unsigned long long)gets, (unsigned long long)nowait_null,
                (unsigned long long)s.gets_waited,
                (unsigned long long)s.pages_alloc,
                (unsigned long long)s.pages_freed,
                (unsigned long long)s.provider_alloc_failures);
    cr_assert_eq(s.gets, gets, "pool counted %llu gets, threads %llu",
                 (unsigned long long)s.gets, (unsigned long long)gets);
    cr_assert_eq(s.puts, puts, "pool counted %llu puts, threads %llu",
                 (unsigned long long)s.puts, (unsigned long long)puts);
    cr_assert_eq(s.gets_failed, nowait_null,
                 "pool counted %llu failed gets, threads %llu",
                 (unsigned long long)s.gets_failed,
                 (unsigned long long)nowait_null);
    cr_assert_eq(s.objs_inuse, 0);
    dp_mock_counters_t mc = tu_counters(sh.m);
    cr_assert_eq(s.provider_alloc_failures, mc.alloc_failures,
                 "pool saw %llu provider failures, mock made %llu",
                 (unsigned long long)s.provider_alloc_failures,
                 (unsigned long long)mc.alloc_failures);
    if (c->max_pages) {
        cr_assert_leq(s.pages, c->max_pages);
        cr_assert_leq(mc.max_pages_out, c->max_pages,
                      "the provider had %llu pages out at once, limit %zu",
                      (unsigned long long)mc.max_pages_out, c->max_pages);
    }
    if (c->reclaim)
        cr_assert_gt(s.pages_freed, 0, "nothing was ever reclaimed");
    if (c->fail_ppm)
        cr_assert_gt(mc.alloc_failures, 0, "no failure was injected");
    tu_destroy_checked(sh.pool, sh.m);
    pthread_barrier_destroy(&sh.start);
}

Test(stress, four_threads_random_get_put_with_cross_thread_puts_never_hand_out_an_object_twice)
{
    run_stress(&(struct cfg){.nthreads = 4, .ops = 1000000, .objsize = 64,
                             .hold = 256});
}

Test(stress, two_threads_random_get_put_of_odd_sized_objects_never_hand_out_an_object_twice)
{
    run_stress(&(struct cfg){.nthreads = 2, .ops = 1500000, .objsize = 40,
                             .hold = 512});
}

Test(stress, random_get_put_at_a_hard_limit_never_exceeds_it_nor_hands_out_twice)
{
    run_stress(&(struct cfg){.nthreads = 4, .ops = 1000000, .objsize = 64,
                             .max_pages = 10, .hold = 128});
}

Test(stress, random_get_put_with_reclaim_thread_step_and_provider_failures)
{
    run_stress(&(struct cfg){.nthreads = 3, .ops = 1000000, .objsize = 64,
                             .hold = 256, .reclaim = true,
                             .fail_ppm = 50000});
}

Test(stress, random_get_put_at_a_hard_limit_with_reclaim_and_provider_failures)
{
    run_stress(&(struct cfg){.nthreads = 4, .ops = 1000000, .objsize = 64,
                             .max_pages = 10, .hold = 128, .reclaim = true,
                             .fail_ppm = 50000});
}

/* No thread caches: every put goes straight to its page, so the lock-free
 * page path takes all the concurrency. */
Test(stress, uncached_four_threads_random_get_put_with_cross_thread_puts_never_hand_out_twice)
{
    run_stress(&(struct cfg){.nthreads = 4, .ops = 1000000, .objsize = 64,
                             .hold = 256, .pool_flags = DP_POOL_NOCACHE});
}

Test(stress, uncached_random_get_put_at_a_hard_limit_with_reclaim_and_provider_failures)
{
    run_stress(&(struct cfg){.nthreads = 4, .ops = 1000000, .objsize = 64,
                             .max_pages = 10, .hold = 128, .reclaim = true,
                             .fail_ppm = 50000,
                             .pool_flags = DP_POOL_NOCACHE});
}
