/*
 * arena_provider.c -- a page provider that carves pages from one fixed
 * arena, as an embedded system or a kernel would (no mmap after start-up).
 *
 * The provider contract (deferpool.h, "Page-provider interface"): alloc
 * returns `size` bytes aligned to `size`, may sleep only for DP_WAITOK,
 * returns NULL when it has nothing; free takes a page back.  Both run with
 * no pool lock held, from any thread, so the arena has its own lock.
 *
 * The program fills a pool until the arena is exhausted, shows that a
 * DP_NOWAIT get then fails with ENOMEM instead of waiting, that puts
 * never hand pages back by themselves (the arena stays full), and that
 * dp_pool_reclaim() does.  Prints "ok" and exits 0 when all of it holds.
 */
#include <deferpool.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ARENA_PAGE 4096
#define ARENA_PAGES 32

/* The arena: statically allocated, page-aligned, with a used-map. */
struct arena {
    pthread_mutex_t lock;
    unsigned char used[ARENA_PAGES];
    size_t in_use, allocs, frees, failures;
    _Alignas(ARENA_PAGE) unsigned char mem[ARENA_PAGES * ARENA_PAGE];
};
static struct arena arena = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *arena_alloc(void *ctx, size_t size, size_t align, int flags)
{
    struct arena *a = ctx;
    (void)flags; /* never sleeps: the same for DP_WAITOK and DP_NOWAIT */
    if (size != ARENA_PAGE || align != ARENA_PAGE)
        return NULL;
    void *page = NULL;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < ARENA_PAGES; i++) {
        if (!a->used[i]) {
            a->used[i] = 1;
            a->in_use++;
            a->allocs++;
            page = a->mem + i * ARENA_PAGE;
            break;
        }
    }
    if (!page)
        a->failures++;
    pthread_mutex_unlock(&a->lock);
    return page;
}

static void arena_free(void *ctx, void *page, size_t size)
{
    struct arena *a = ctx;
    size_t i = (size_t)((unsigned char *)page - a->mem) / ARENA_PAGE;
    if (size != ARENA_PAGE || i >= ARENA_PAGES || !a->used[i]) {
        fprintf(stderr, "arena: bad free of %p\n", page);
        abort();
    }
    pthread_mutex_lock(&a->lock);
    a->used[i] = 0;
    a->in_use--;
    a->frees++;
    pthread_mutex_unlock(&a->lock);
}

static size_t arena_in_use(void)
{
    pthread_mutex_lock(&arena.lock);
    size_t n = arena.in_use;
    pthread_mutex_unlock(&arena.lock);
    return n;
}

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "arena_provider: %s:%d: %s\n", __FILE__,          \
                    __LINE__, #cond);                                         \
            return 1;                                                         \
        }                                                                     \
    } while (0)

int main(void)
{
    const dp_provider_t prov = {arena_alloc, arena_free, &arena, "arena"};
    dp_pool_attr_t attr;
    dp_pool_attr_init(&attr);
    attr.provider = &prov;  /* copied by dp_pool_create */
    attr.pagesize = ARENA_PAGE;
    attr.lowat = 0;         /* keep nothing back from the arena */
    attr.flags = DP_POOL_NOTHREAD | DP_POOL_NOCACHE;
    dp_pool_t *pool = dp_pool_create("msg", 100, &attr);
    CHECK(pool != NULL);

    dp_pool_stats_t st;
    CHECK(dp_pool_stats(pool, &st) == 0);
    size_t per_page = st.objs_per_page, n = per_page * ARENA_PAGES;
    void **objs = calloc(n, sizeof(*objs));
    CHECK(objs != NULL);

    /* Fill the arena.  DP_NOWAIT: the provider is asked without leave
     * to sleep, and this one never does. */
    for (size_t i = 0; i < n; i++)
        CHECK((objs[i] = dp_pool_get(pool, DP_NOWAIT)) != NULL);
    CHECK(arena_in_use() == ARENA_PAGES);
    errno = 0;
    CHECK(dp_pool_get(pool, DP_NOWAIT) == NULL && errno == ENOMEM);

    /* Put everything back: the pages empty but stay queued in the pool;
     * nothing is returned to the arena from a put. */
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    CHECK(arena_in_use() == ARENA_PAGES);
    CHECK(dp_pool_stats(pool, &st) == 0);
    CHECK(st.objs_inuse == 0 && st.pages_empty == ARENA_PAGES);
    CHECK(st.put_provider_calls == 0);

    /* An explicit reclaim gives them back. */
    CHECK(dp_pool_reclaim(pool) == ARENA_PAGES);
    CHECK(arena_in_use() == 0);
    CHECK(arena.allocs == ARENA_PAGES && arena.frees == ARENA_PAGES &&
          arena.failures == 1);
    CHECK(dp_pool_destroy(pool) == 0);
    free(objs);
    printf("%zu objects of 100 bytes in %d arena pages: ok\n", n,
           ARENA_PAGES);
    return 0;
}
