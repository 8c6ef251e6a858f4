/*
 * stats_prog.c -- a program that uses only pools, for test_stats_print.py.
 *
 * Creates three pools (one with a name that needs escaping in JSON, one
 * on the mock provider), gets and puts objects so that every pool has
 * objects out, empty pages or free objects, then prints each pool's
 * dp_pool_stats() counters on stdout, one line per pool:
 *   pool <name in hex> <field>=<value> ...
 * and exits with the pools still live.  argv[1] "api": also call
 * dp_stats_print(stdout, DP_STATS_JSON) and dp_stats_print(stdout, 0)
 * after those lines, between the markers "--json--", "--text--".
 */
#include <deferpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void line(dp_pool_t *p)
{
    dp_pool_stats_t s;
    if (dp_pool_stats(p, &s) != 0)
        exit(2);
    printf("pool ");
    for (const unsigned char *u = (const unsigned char *)s.name; *u; u++)
        printf("%02x", *u);
#define F(x) printf(" " #x "=%llu", (unsigned long long)s.x)
    F(objsize); F(slotsize); F(pagesize); F(objs_per_page); F(objs_inuse);
    F(objs_free); F(objs_cached); F(pages); F(pages_empty); F(pages_pending);
    F(pages_alloc); F(pages_freed); F(provider_alloc_failures); F(gets);
    F(puts); F(gets_waited); F(gets_failed); F(waiting);
    F(put_provider_calls); F(reserve_objs); F(max_pages); F(lowat);
    F(hiwat); F(reclaim_age_ns);
#undef F
    printf("\n");
}

int main(int argc, char **argv)
{
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.flags = DP_POOL_NOTHREAD;
    a.lowat = 0;
    dp_pool_t *p1 = dp_pool_create("alpha", 64, &a);
    a.max_pages = 8;
    dp_pool_t *p2 = dp_pool_create("be \"ta\"\\\t", 1000, &a);
    dp_mock_t *m = dp_mock_create(0);
    a.max_pages = 0;
    a.provider = m ? dp_mock_provider(m) : NULL;
    a.pagesize = 4096;
    dp_pool_t *p3 = dp_pool_create("gamma", 200, &a);
    if (!p1 || !p2 || !p3 || !m)
        return 1;

    enum { N = 3000 };
    static void *o1[N], *o2[N], *o3[N];
    for (int i = 0; i < N; i++) {
        o1[i] = dp_pool_get(p1, DP_WAITOK);
        o3[i] = dp_pool_get(p3, DP_WAITOK);
    }
    for (int i = 0; i < 100; i++)
        o2[i] = dp_pool_get(p2, DP_NOWAIT);
    for (int i = 0; i < N; i += 2)
        dp_pool_put(p1, o1[i]);          /* half of alpha back            */
    for (int i = 0; i < 90; i++)
        dp_pool_put(p2, o2[i]);          /* most of beta back             */
    for (int i = 0; i < N - 5; i++)
        dp_pool_put(p3, o3[i]);          /* gamma: empty pages queued     */
    dp_thread_cache_flush();
    dp_pool_put(p3, o3[N - 5]);          /* one object in this thread's cache */
    if (!o1[N - 1] || !o2[99] || !o3[N - 1])
        return 1;

    line(p1);
    line(p2);
    line(p3);
    fflush(stdout);
    if (argc > 1 && !strcmp(argv[1], "api")) {
        printf("--json--\n");
        fflush(stdout);
        if (dp_stats_print(stdout, DP_STATS_JSON) != 3)
            return 3;
        printf("--text--\n");
        fflush(stdout);
        if (dp_stats_print(stdout, 0) != 3)
            return 3;
        if (dp_stats_print(stdout, 2) != -1)
            return 4;                    /* unknown flags: EINVAL         */
    }
    return 0;                            /* pools left live for the exit print */
}
