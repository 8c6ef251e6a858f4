/*
 * ctor_cache.c -- Bonwick-style object caching: objects that hold a mutex
 * and a heap buffer are constructed once, when their page arrives from
 * the provider, and destroyed once, when it leaves; a get hands out an
 * object that is ready to use, and a put keeps it constructed.
 *
 * Four threads each get and put connection objects 100000 times.  The
 * program counts constructor and destructor calls: they equal the objects
 * the pages held, not the gets.  Prints the counts and exits 0 when that
 * holds.
 */
#include <deferpool.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4
#define ROUNDS 100000
#define HELD 50 /* objects each thread holds at once */

struct conn {
    pthread_mutex_t lock; /* costly to set up: what caching saves */
    char *buf;            /* a 4 KiB buffer, allocated once        */
    size_t used;
    unsigned long requests;
};

static atomic_ulong ctors, dtors;

static int conn_ctor(void *obj, void *arg, int flags)
{
    struct conn *c = obj;
    (void)arg;
    (void)flags; /* malloc may sleep briefly; a DP_NOWAIT user would
                    take its buffer from a primed pool instead */
    c->buf = malloc(4096);
    if (!c->buf)
        return -1; /* the page is abandoned; the get fails or retries */
    pthread_mutex_init(&c->lock, NULL);
    c->used = 0;
    c->requests = 0;
    atomic_fetch_add(&ctors, 1);
    return 0;
}

static void conn_dtor(void *obj, void *arg)
{
    struct conn *c = obj;
    (void)arg;
    pthread_mutex_destroy(&c->lock);
    free(c->buf);
    atomic_fetch_add(&dtors, 1);
}

static dp_pool_t *pool;
static int bad;

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    struct conn *held[HELD] = {0};
    unsigned long rounds = ROUNDS;
    const char *scale = getenv("DP_TEST_SCALE");
    if (scale && atoi(scale) > 1)
        rounds /= (unsigned long)atoi(scale);
    for (unsigned long r = 0; r < rounds; r++) {
        unsigned i = (seed = seed * 1103515245u + 12345u) / 65536 % HELD;
        if (held[i]) {
            dp_pool_put(pool, held[i]); /* stays constructed */
            held[i] = NULL;
            continue;
        }
        struct conn *c = dp_pool_get(pool, DP_WAITOK);
        /* Ready to use: the lock works, the buffer is there. */
        if (!c || !c->buf || pthread_mutex_lock(&c->lock) != 0) {
            bad = 1;
            break;
        }
        c->used = (size_t)snprintf(c->buf, 4096, "request %lu", r);
        c->requests++;
        pthread_mutex_unlock(&c->lock);
        held[i] = c;
    }
    for (unsigned i = 0; i < HELD; i++)
        dp_pool_put(pool, held[i]); /* NULL: no-op */
    return NULL;
}

int main(void)
{
    dp_pool_attr_t attr;
    dp_pool_attr_init(&attr);
    attr.ctor = conn_ctor;
    attr.dtor = conn_dtor;
    pool = dp_pool_create("conn", sizeof(struct conn), &attr);
    if (!pool)
        return 1;
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* The reclaim thread may be constructing a page for lowat right now:
     * stop it (it finishes its pass) so the counts below hold still. */
    dp_reclaim_stop();

    dp_pool_stats_t st;
    dp_pool_stats(pool, &st);
    unsigned long c = atomic_load(&ctors), d = atomic_load(&dtors);
    /* Constructed: every object of every page that arrived, minus those
     * of pages already gone (their destructors ran). */
    int ok = !bad && st.objs_inuse == 0 &&
             c == (st.pages_alloc * st.objs_per_page) &&
             c - d == st.pages * st.objs_per_page && c < st.gets;
    printf("%llu gets, %lu constructor calls (%llu pages of %zu objects), "
           "%lu destructor calls so far\n",
           (unsigned long long)st.gets, c,
           (unsigned long long)st.pages_alloc, st.objs_per_page, d);
    ok = dp_pool_destroy(pool) == 0 && ok;
    d = atomic_load(&dtors);
    ok = ok && d == c; /* destroy destroyed the rest */
    printf("after destroy: %lu destructor calls: %s\n", d,
           ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}
