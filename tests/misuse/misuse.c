/*
 * misuse.c -- one misuse of a pool object per run, for AddressSanitizer
 * and Valgrind to report (check-misuse.sh; docs/api.md, "Using
 * deferpool with ASan and Valgrind").  argv[1] names the case:
 *
 *   ok                correct use, every path that touches free objects
 *                     (caches, chains, flushes, ctor/dtor, prime,
 *                     reclaim, check, stats, destroy): no report
 *   write_after_put   a store into an object after its put
 *   read_after_put    a load from an object after its put
 *   double_put        the same object put twice
 *   overflow          a store one byte past the object, into the next slot
 *   uninit            a branch on a field of a fresh object never written
 *                     (prints the field: ASan builds fill it with 0xbe)
 *   leak              an object never put, its pointer dropped, at exit
 *
 * Each misuse goes through a volatile pointer, so the compiler keeps it.
 */
#include <deferpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 48 bytes at alignment 16: slots are exactly objects, so the byte after
 * an object is the first byte of the next slot. */
struct obj {
    unsigned long a;
    char buf[40];
};

static dp_pool_t *make_pool(const char *name)
{
    dp_pool_t *p = dp_pool_create(name, sizeof(struct obj), NULL);
    if (!p) {
        perror("dp_pool_create");
        exit(2);
    }
    return p;
}

static int ctor(void *o, void *arg, int flags)
{
    (void)arg, (void)flags;
    memset(o, 0x5a, 40);
    return 0;
}

static void dtor(void *o, void *arg)
{
    (void)arg;
    if (((unsigned char *)o)[0] != 0x5a)
        abort();
}

/* Correct use: every library path over free objects must stay silent. */
static int case_ok(void)
{
    enum { N = 3000 };
    static struct obj *o[N];
    dp_pool_t *p = make_pool("misuse-ok");
    if (dp_pool_prime(p, 100) != 0)
        return 2;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            o[i] = dp_pool_get(p, i % 3 ? DP_WAITOK : DP_NOWAIT | DP_ZERO);
            if (!o[i])
                return 2;
            memset(o[i], i, sizeof(struct obj));
        }
        for (int i = 0; i < N; i += 2) /* every other: mixed pages */
            dp_pool_put(p, o[i]);
        for (int i = 1; i < N; i += 2)
            dp_pool_put(p, o[i]);
    }
    if (dp_pool_check(p) != 0)
        return 3;
    dp_pool_stats_t st;
    if (dp_pool_stats(p, &st) != 0)
        return 3;
    dp_pool_reclaim(p);
    if (dp_pool_destroy(p) != 0)
        return 3;

    /* A pool with a ctor: the link lives after the object. */
    dp_pool_attr_t attr;
    dp_pool_attr_init(&attr);
    attr.ctor = ctor;
    attr.dtor = dtor;
    dp_pool_t *c = dp_pool_create("misuse-ctor", 40, &attr);
    if (!c)
        return 2;
    for (int i = 0; i < N; i++) {
        o[i] = dp_pool_get(c, DP_WAITOK);
        if (!o[i] || ((unsigned char *)o[i])[39] != 0x5a)
            return 4;
    }
    for (int i = 0; i < N; i++)
        dp_pool_put(c, o[i]);
    if (dp_pool_check(c) != 0 || dp_pool_destroy(c) != 0)
        return 3;
    puts("ok");
    return 0;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "ok"))
        return case_ok();

    dp_pool_t *p = make_pool("misuse");
    struct obj *volatile o = dp_pool_get(p, DP_WAITOK);
    if (!o)
        return 2;
    o->a = 0x0123456789abcdefUL;
    if (!strcmp(what, "write_after_put")) {
        dp_pool_put(p, o);
        o->buf[8] = 1;
        return 0;
    } else if (!strcmp(what, "read_after_put")) {
        dp_pool_put(p, o);
        printf("%d\n", o->buf[8]);
        return 0;
    } else if (!strcmp(what, "double_put")) {
        dp_pool_put(p, o);
        dp_pool_put(p, o);
        return 0;
    } else if (!strcmp(what, "overflow")) {
        ((volatile char *)o)[sizeof(struct obj)] = 1;
    } else if (!strcmp(what, "uninit")) {
        /* The same slot again: without annotations it still holds the
         * value written above. */
        dp_pool_put(p, o);
        o = dp_pool_get(p, DP_WAITOK);
        if (o->a == 0x0123456789abcdefUL)
            puts("stale");
        printf("uninitialised read: %#lx\n", o->a);
    } else if (!strcmp(what, "leak")) {
        o = NULL; /* the only pointer to it */
        return 0; /* exit with the pool alive and the object out */
    } else {
        fprintf(stderr, "usage: misuse ok|write_after_put|read_after_put|"
                        "double_put|overflow|uninit|leak\n");
        return 2;
    }
    dp_pool_put(p, (void *)o);
    dp_pool_destroy(p);
    return 0;
}
