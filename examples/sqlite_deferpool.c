/*
 * sqlite_deferpool.c -- deferpool behind SQLite's allocator hooks.
 *
 *   SQLITE_CONFIG_PCACHE2: the page cache.  Each cache SQLite creates
 *     gets a deferpool pool of its page size; pages are looked up in a
 *     hash table, unpinned pages sit on an LRU list and are recycled when
 *     the cache is at its size, and a discarded or truncated page is put
 *     back to its pool (a put: it never blocks).
 *   SQLITE_CONFIG_MALLOC: SQLite's general allocations.  Requests up to
 *     4 KiB come from 16 size-class pools, larger ones from malloc.
 *
 * The workload is a small shop database on a file, bigger than the cache:
 * inserts in transactions with prepared statements, indexes, updates,
 * deletes, joins, aggregates, then PRAGMA integrity_check.  Every query
 * result goes into a checksum.
 *
 *   sqlite_deferpool check        run with SQLite's own allocators, then
 *                                 with both hooks, in one process; the
 *                                 checksums must match, integrity_check
 *                                 must say "ok", the pools must have
 *                                 served the work and given everything
 *                                 back.  Exits 0 ("ok") when all holds.
 *   sqlite_deferpool bench MODE N run the workload N times in this
 *                                 process, MODE default, pcache or
 *                                 pcache+malloc, and print the median
 *                                 wall and CPU time per run, the peak
 *                                 RSS and SQLite's own peak memory
 *                                 count (docs/benchmarks.md).
 *
 * DP_TEST_SCALE divides the workload's size (tests/testutil.h).
 */
#include <deferpool.h>
#include <sqlite3.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ==================================================== the page cache */

struct pc_page {
    sqlite3_pcache_page base; /* pBuf, pExtra: what SQLite sees        */
    unsigned key;
    int pinned;
    struct pc_page *hnext;            /* hash chain                    */
    struct pc_page *lprev, *lnext;    /* LRU (unpinned pages only)     */
    /* followed by szPage bytes of page, then szExtra bytes of extra   */
};

struct pc_cache {
    dp_pool_t *pool;
    int sz_page, sz_extra, purgeable;
    unsigned nmax;          /* cache size in pages                      */
    unsigned npage;         /* pages in the hash                        */
    unsigned nhash;         /* buckets, a power of two                  */
    struct pc_page **hash;
    struct pc_page lru;     /* sentinel: lru.lnext is the oldest        */
};

static unsigned long pc_pools_created, pc_pools_destroyed;

static void lru_unlink(struct pc_page *p)
{
    p->lprev->lnext = p->lnext;
    p->lnext->lprev = p->lprev;
    p->lprev = p->lnext = NULL;
}

static void lru_append(struct pc_cache *c, struct pc_page *p)
{
    p->lnext = &c->lru;
    p->lprev = c->lru.lprev;
    c->lru.lprev->lnext = p;
    c->lru.lprev = p;
}

static struct pc_page **hash_slot(struct pc_cache *c, unsigned key)
{
    struct pc_page **pp = &c->hash[key & (c->nhash - 1)];
    while (*pp && (*pp)->key != key)
        pp = &(*pp)->hnext;
    return pp;
}

static void hash_remove(struct pc_cache *c, struct pc_page *p)
{
    struct pc_page **pp = hash_slot(c, p->key);
    *pp = p->hnext;
    c->npage--;
}

static void hash_grow(struct pc_cache *c)
{
    unsigned n = c->nhash * 2;
    struct pc_page **h = calloc(n, sizeof(*h));
    if (!h)
        return; /* longer chains, still correct */
    for (unsigned i = 0; i < c->nhash; i++)
        for (struct pc_page *p = c->hash[i], *next; p; p = next) {
            next = p->hnext;
            p->hnext = h[p->key & (n - 1)];
            h[p->key & (n - 1)] = p;
        }
    free(c->hash);
    c->hash = h;
    c->nhash = n;
}

/* Remove p from the cache and put it back to its pool. */
static void page_drop(struct pc_cache *c, struct pc_page *p)
{
    hash_remove(c, p);
    if (p->lnext)
        lru_unlink(p);
    dp_pool_put(c->pool, p); /* never blocks */
}

static int pc_init(void *arg) { (void)arg; return SQLITE_OK; }
static void pc_shutdown(void *arg) { (void)arg; }

static sqlite3_pcache *pc_create(int sz_page, int sz_extra, int purgeable)
{
    struct pc_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->sz_page = sz_page;
    c->sz_extra = sz_extra;
    c->purgeable = purgeable;
    c->nmax = 100;
    c->nhash = 64;
    c->hash = calloc(c->nhash, sizeof(*c->hash));
    c->lru.lnext = c->lru.lprev = &c->lru;
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.align = 16;
    c->pool = dp_pool_create("sqlite-page",
                             sizeof(struct pc_page) + (size_t)sz_page +
                                 (size_t)sz_extra,
                             &a);
    if (!c->hash || !c->pool) {
        free(c->hash);
        free(c);
        return NULL;
    }
    pc_pools_created++;
    return (sqlite3_pcache *)c;
}

static void pc_cachesize(sqlite3_pcache *pc, int n)
{
    struct pc_cache *c = (struct pc_cache *)pc;
    c->nmax = n > 0 ? (unsigned)n : 1;
    while (c->purgeable && c->npage > c->nmax && c->lru.lnext != &c->lru)
        page_drop(c, c->lru.lnext);
}

static int pc_pagecount(sqlite3_pcache *pc)
{
    return (int)((struct pc_cache *)pc)->npage;
}

static sqlite3_pcache_page *pc_fetch(sqlite3_pcache *pc, unsigned key,
                                     int create)
{
    struct pc_cache *c = (struct pc_cache *)pc;
    struct pc_page *p = *hash_slot(c, key);
    if (p) {
        if (!p->pinned) {
            lru_unlink(p);
            p->pinned = 1;
        }
        return &p->base;
    }
    if (create == 0)
        return NULL;
    if (c->purgeable && c->npage >= c->nmax) {
        if (c->lru.lnext != &c->lru) {
            /* Recycle the least recently used unpinned page. */
            p = c->lru.lnext;
            hash_remove(c, p);
            lru_unlink(p);
        } else if (create == 1) {
            return NULL; /* SQLite spills and asks again with 2 */
        }
    }
    if (!p) {
        /* create 1: only if it is easy (DP_NOWAIT never sleeps);
         * create 2: make every effort. */
        p = dp_pool_get(c->pool, create == 1 ? DP_NOWAIT : DP_WAITOK);
        if (!p)
            return NULL;
        p->base.pBuf = (char *)(p + 1);
        p->base.pExtra = (char *)(p + 1) + c->sz_page;
    }
    memset(p->base.pExtra, 0, (size_t)c->sz_extra); /* a new page */
    p->key = key;
    p->pinned = 1;
    p->lprev = p->lnext = NULL;
    if (c->npage >= c->nhash)
        hash_grow(c);
    struct pc_page **slot = &c->hash[key & (c->nhash - 1)];
    p->hnext = *slot;
    *slot = p;
    c->npage++;
    return &p->base;
}

static void pc_unpin(sqlite3_pcache *pc, sqlite3_pcache_page *pg, int discard)
{
    struct pc_cache *c = (struct pc_cache *)pc;
    struct pc_page *p = (struct pc_page *)pg;
    if (discard || (c->purgeable && c->npage > c->nmax)) {
        page_drop(c, p);
        return;
    }
    p->pinned = 0;
    lru_append(c, p);
}

static void pc_rekey(sqlite3_pcache *pc, sqlite3_pcache_page *pg,
                     unsigned old_key, unsigned new_key)
{
    struct pc_cache *c = (struct pc_cache *)pc;
    struct pc_page *p = (struct pc_page *)pg;
    (void)old_key;
    struct pc_page *other = *hash_slot(c, new_key);
    if (other)
        page_drop(c, other); /* never pinned, says SQLite */
    hash_remove(c, p);
    p->key = new_key;
    struct pc_page **slot = &c->hash[new_key & (c->nhash - 1)];
    p->hnext = *slot;
    *slot = p;
    c->npage++;
}

static void pc_truncate(sqlite3_pcache *pc, unsigned limit)
{
    struct pc_cache *c = (struct pc_cache *)pc;
    for (unsigned i = 0; i < c->nhash; i++)
        for (struct pc_page *p = c->hash[i], *next; p; p = next) {
            next = p->hnext;
            if (p->key >= limit)
                page_drop(c, p);
        }
}

static void pc_destroy(sqlite3_pcache *pc)
{
    struct pc_cache *c = (struct pc_cache *)pc;
    pc_truncate(pc, 0);
    if (dp_pool_destroy(c->pool) == 0)
        pc_pools_destroyed++;
    free(c->hash);
    free(c);
}

static void pc_shrink(sqlite3_pcache *pc)
{
    struct pc_cache *c = (struct pc_cache *)pc;
    while (c->lru.lnext != &c->lru)
        page_drop(c, c->lru.lnext);
}

static const sqlite3_pcache_methods2 pcache_methods = {
    .iVersion = 1,
    .xInit = pc_init,
    .xShutdown = pc_shutdown,
    .xCreate = pc_create,
    .xCachesize = pc_cachesize,
    .xPagecount = pc_pagecount,
    .xFetch = pc_fetch,
    .xUnpin = pc_unpin,
    .xRekey = pc_rekey,
    .xTruncate = pc_truncate,
    .xDestroy = pc_destroy,
    .xShrink = pc_shrink,
};

/* ========================================== SQLite's general allocator */

/* A 16-byte header in front of every block: its class (MEM_BIG: from
 * malloc) and its usable size. */
struct mem_hdr {
    uint32_t cls;
    uint32_t pad;
    uint64_t size;
};
#define MEM_BIG UINT32_MAX
static const uint32_t mem_class_size[] = {16,  32,  48,   64,   96,   128,
                                          192, 256, 384,  512,  768,  1024,
                                          1536, 2048, 3072, 4096};
#define MEM_NCLASS (sizeof(mem_class_size) / sizeof(mem_class_size[0]))
static dp_pool_t *mem_pool[MEM_NCLASS];

static uint32_t mem_class(int n)
{
    for (uint32_t c = 0; c < MEM_NCLASS; c++)
        if ((uint32_t)n <= mem_class_size[c])
            return c;
    return MEM_BIG;
}

static int mem_roundup(int n)
{
    uint32_t c = mem_class(n);
    return c == MEM_BIG ? (n + 15) & ~15 : (int)mem_class_size[c];
}

static void *mem_malloc(int n)
{
    uint32_t c = mem_class(n);
    struct mem_hdr *h;
    if (c == MEM_BIG) {
        size_t sz = (size_t)mem_roundup(n);
        h = malloc(sizeof(*h) + sz);
        if (!h)
            return NULL;
        h->size = sz;
    } else {
        h = dp_pool_get(mem_pool[c], DP_WAITOK);
        if (!h)
            return NULL;
        h->size = mem_class_size[c];
    }
    h->cls = c;
    return h + 1;
}

static void mem_free(void *p)
{
    struct mem_hdr *h = (struct mem_hdr *)p - 1;
    if (h->cls == MEM_BIG)
        free(h);
    else
        dp_pool_put(mem_pool[h->cls], h); /* never blocks */
}

static int mem_size(void *p)
{
    return (int)((struct mem_hdr *)p - 1)->size;
}

static void *mem_realloc(void *p, int n)
{
    if ((uint64_t)n <= (uint64_t)mem_size(p))
        return p;
    void *q = mem_malloc(n);
    if (q) {
        memcpy(q, p, (size_t)mem_size(p));
        mem_free(p);
    }
    return q;
}

static unsigned long mem_pools_leaked;

static int mem_init(void *arg)
{
    (void)arg;
    for (uint32_t c = 0; c < MEM_NCLASS; c++) {
        char name[32];
        snprintf(name, sizeof(name), "sqlite-%u", mem_class_size[c]);
        mem_pool[c] = dp_pool_create(
            name, sizeof(struct mem_hdr) + mem_class_size[c], NULL);
        if (!mem_pool[c])
            return SQLITE_NOMEM;
    }
    return SQLITE_OK;
}

static void mem_shutdown(void *arg)
{
    (void)arg;
    for (uint32_t c = 0; c < MEM_NCLASS; c++) {
        if (dp_pool_destroy(mem_pool[c]) != 0)
            mem_pools_leaked++; /* SQLite left something allocated */
        mem_pool[c] = NULL;
    }
}

static const sqlite3_mem_methods mem_methods = {
    mem_malloc, mem_free, mem_realloc, mem_size, mem_roundup,
    mem_init,   mem_shutdown, NULL,
};

/* ======================================================== the workload */

static uint64_t rng_state;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint64_t sum_fnv = 1469598103934665603ull;
static void sum_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        sum_fnv = (sum_fnv ^ b[i]) * 1099511628211ull;
}

static int die(sqlite3 *db, const char *what)
{
    fprintf(stderr, "sqlite_deferpool: %s: %s\n", what,
            db ? sqlite3_errmsg(db) : "?");
    exit(1);
}

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "sqlite_deferpool: %s: %s\n", sql, err);
        exit(1);
    }
}

/* Run a query and fold every column of every row into the checksum. */
static void query(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        die(db, sql);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const unsigned char *t = sqlite3_column_text(st, i);
            if (t)
                sum_bytes(t, (size_t)sqlite3_column_bytes(st, i));
            sum_bytes("|", 1);
        }
    if (rc != SQLITE_DONE)
        die(db, sql);
    sqlite3_finalize(st);
}

static void random_text(char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)('a' + rng() % 26);
    buf[n] = 0;
}

/* The workload on a fresh database file; returns 1 when
 * integrity_check says ok. */
static int workload(const char *path, int users)
{
    unlink(path);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die(db, "open");
    rng_state = 88172645463325252ull;
    exec(db, "PRAGMA synchronous=OFF; PRAGMA cache_size=-2000;"
             "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT,"
             " email TEXT, score REAL);"
             "CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id INT,"
             " amount REAL, note TEXT);");
    sqlite3_stmt *iu, *io;
    if (sqlite3_prepare_v2(db, "INSERT INTO users VALUES(?,?,?,?)", -1, &iu,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO orders VALUES(NULL,?,?,?)", -1,
                           &io, NULL) != SQLITE_OK)
        die(db, "prepare");
    char name[64], note[300];
    for (int batch = 0; batch < users; batch += 1000) {
        exec(db, "BEGIN");
        for (int u = batch; u < batch + 1000 && u < users; u++) {
            random_text(name, 5 + rng() % 20);
            sqlite3_bind_int(iu, 1, u);
            sqlite3_bind_text(iu, 2, name, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(iu, 3, name, (int)(strlen(name) / 2),
                              SQLITE_TRANSIENT);
            sqlite3_bind_double(iu, 4, (double)(rng() % 10000) / 100.0);
            if (sqlite3_step(iu) != SQLITE_DONE)
                die(db, "insert user");
            sqlite3_reset(iu);
            for (int o = 0; o < 5; o++) {
                random_text(note, rng() % 250);
                sqlite3_bind_int(io, 1, (int)(rng() % (uint64_t)(u + 1)));
                sqlite3_bind_double(io, 2, (double)(rng() % 100000) / 100.0);
                sqlite3_bind_text(io, 3, note, -1, SQLITE_TRANSIENT);
                if (sqlite3_step(io) != SQLITE_DONE)
                    die(db, "insert order");
                sqlite3_reset(io);
            }
        }
        exec(db, "COMMIT");
    }
    sqlite3_finalize(iu);
    sqlite3_finalize(io);
    exec(db, "CREATE INDEX orders_user ON orders(user_id);"
             "CREATE INDEX users_score ON users(score);");
    exec(db, "BEGIN; UPDATE users SET score = score * 1.1 WHERE id % 7 = 0;"
             "DELETE FROM orders WHERE amount < 50;"
             "UPDATE orders SET note = note || 'x' WHERE id % 11 = 0;"
             "COMMIT");
    query(db, "SELECT count(*), sum(amount), max(length(note)) FROM orders");
    query(db, "SELECT u.id, u.name, count(o.id), round(sum(o.amount), 2)"
              " FROM users u JOIN orders o ON o.user_id = u.id"
              " GROUP BY u.id ORDER BY 4 DESC, 1 LIMIT 50");
    query(db, "SELECT name, score FROM users WHERE score > 90"
              " ORDER BY score DESC, id LIMIT 100");
    query(db, "SELECT substr(note, 1, 3) AS k, count(*) FROM orders"
              " GROUP BY k ORDER BY 2 DESC, 1 LIMIT 20");
    exec(db, "DELETE FROM users WHERE id % 3 = 0; VACUUM;");
    query(db, "SELECT count(*), sum(score) FROM users");
    sqlite3_stmt *ic;
    int ok = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &ic, NULL) !=
        SQLITE_OK)
        die(db, "integrity_check");
    if (sqlite3_step(ic) == SQLITE_ROW)
        ok = strcmp((const char *)sqlite3_column_text(ic, 0), "ok") == 0;
    sqlite3_finalize(ic);
    sqlite3_close(db);
    unlink(path);
    return ok;
}

enum mode { M_DEFAULT, M_PCACHE, M_BOTH };

static void configure(enum mode m)
{
    if ((m != M_DEFAULT &&
         sqlite3_config(SQLITE_CONFIG_PCACHE2, &pcache_methods) !=
             SQLITE_OK) ||
        (m == M_BOTH &&
         sqlite3_config(SQLITE_CONFIG_MALLOC, &mem_methods) != SQLITE_OK) ||
        sqlite3_initialize() != SQLITE_OK) {
        fprintf(stderr, "sqlite_deferpool: configuring SQLite failed\n");
        exit(1);
    }
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int scale = 1;
    const char *s = getenv("DP_TEST_SCALE");
    if (s && atoi(s) > 1)
        scale = atoi(s);
    char path[256];
    snprintf(path, sizeof(path), "%s/deferpool-sqlite-%d.db",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());

    if (argc == 4 && !strcmp(argv[1], "bench")) {
        enum mode m = !strcmp(argv[2], "default")         ? M_DEFAULT
                      : !strcmp(argv[2], "pcache")        ? M_PCACHE
                      : !strcmp(argv[2], "pcache+malloc") ? M_BOTH
                                                          : (enum mode)-1;
        int reps = atoi(argv[3]);
        if ((int)m < 0 || reps < 1 || reps > 100) {
            fprintf(stderr, "usage: %s bench default|pcache|pcache+malloc N\n",
                    argv[0]);
            return 2;
        }
        configure(m);
        double t[100], cpu[100];
        for (int r = 0; r < reps; r++) {
            double t0 = now_s(), c0 = cpu_s();
            if (!workload(path, 20000 / scale))
                return 1;
            t[r] = now_s() - t0;
            cpu[r] = cpu_s() - c0;
        }
        qsort(t, (size_t)reps, sizeof(t[0]), cmp_double);
        qsort(cpu, (size_t)reps, sizeof(cpu[0]), cmp_double);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("mode=%s runs=%d wall_s=%.3f cpu_s=%.3f maxrss_kib=%ld "
               "sqlite_highwater_kib=%lld\n",
               argv[2], reps, t[reps / 2], cpu[reps / 2], ru.ru_maxrss,
               (long long)sqlite3_memory_highwater(0) / 1024);
        return 0;
    }
    if (argc != 2 || strcmp(argv[1], "check") != 0) {
        fprintf(stderr, "usage: %s check | bench MODE N\n", argv[0]);
        return 2;
    }

    int users = 6000 / scale;
    configure(M_DEFAULT);
    int ok_default = workload(path, users);
    uint64_t sum_default = sum_fnv;
    sqlite3_shutdown();

    sum_fnv = 1469598103934665603ull;
    configure(M_BOTH);
    int ok_pool = workload(path, users);
    uint64_t sum_pool = sum_fnv;
    sqlite3_int64 hw = sqlite3_memory_highwater(0);
    sqlite3_shutdown(); /* destroys the size-class pools */

    int ok = ok_default && ok_pool && sum_default == sum_pool &&
             pc_pools_created > 0 && pc_pools_created == pc_pools_destroyed &&
             mem_pools_leaked == 0 && hw > 0;
    printf("integrity_check: default %s, deferpool %s; results %016llx vs "
           "%016llx; %lu page-cache pools created and destroyed, "
           "%lu size-class pools left with objects: %s\n",
           ok_default ? "ok" : "FAILED", ok_pool ? "ok" : "FAILED",
           (unsigned long long)sum_default, (unsigned long long)sum_pool,
           pc_pools_created, mem_pools_leaked, ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}
