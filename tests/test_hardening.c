/*
 * test_hardening.c -- what the default (non-debug) build does against
 * misuse that corrupts memory: free-list links are safe-linked, so a
 * write after put that overwrites a link cannot steer a get (link.h).
 *
 * Each case runs the misuse in a forked child (tu_expect_abort) and
 * checks the abort and its message: the pool's name and the object.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAS_ASAN 1
#endif
#endif
#ifdef HAS_ASAN
#include <sanitizer/asan_interface.h>
#endif

/* Store v over the link word at w of a free object.  In an ASan build the
 * library keeps free objects poisoned and ASan itself reports such a
 * store (tests/misuse); here it must get past ASan to reach the link
 * check, as a store ASan cannot see (from uninstrumented code) would. */
static void store_unseen(void *w, uintptr_t v)
{
#ifdef HAS_ASAN
    int was = __asan_address_is_poisoned(w); /* debug pools are not */
    ASAN_UNPOISON_MEMORY_REGION(w, sizeof(v));
#endif
    memcpy(w, &v, sizeof(v));
#ifdef HAS_ASAN
    if (was)
        ASAN_POISON_MEMORY_REGION(w, sizeof(v));
#endif
}

TestSuite(hardening, .init = tu_watchdog_init);

struct overwrite {
    bool zero;       /* write zero, else the address of a static buffer */
    unsigned flags;  /* pool flags */
};

/* Put two objects of a fresh page back (no cache: straight to the page,
 * where the first word of a free object is its link), overwrite the
 * link of the one on top, then get twice: the second get follows it. */
static void write_after_put(void *arg)
{
    const struct overwrite *w = arg;
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.flags |= DP_POOL_NOCACHE | w->flags;
    a.pagesize = 4096;
    dp_pool_t *pool = dp_pool_create("victim", 64, &a);
    if (!pool)
        _exit(3);
    void *x = dp_pool_get(pool, DP_NOWAIT);
    void *y = dp_pool_get(pool, DP_NOWAIT);
    dp_pool_put(pool, x);
    dp_pool_put(pool, y); /* y on top, its link names x */
    static char target[64] __attribute__((aligned(64)));
    store_unseen(y, w->zero ? 0 : (uintptr_t)target);
    void *g1 = dp_pool_get(pool, DP_NOWAIT);
    void *g2 = dp_pool_get(pool, DP_NOWAIT);
    fprintf(stderr, "got %p and %p, target %p\n", g1, g2, (void *)target);
    _exit(g2 == (void *)target ? 4 : 0);
}

static void expect_link_abort(struct overwrite w)
{
    static const char *const want[] = {"pool 'victim'", "corrupted link",
                                       NULL};
    char out[4096];
    cr_assert(tu_expect_abort(write_after_put, &w, want, out, sizeof(out)),
              "no abort with the expected message; the child said:\n%s",
              out);
}

Test(hardening, an_overwritten_link_pointing_outside_the_page_aborts_the_get)
{
    expect_link_abort((struct overwrite){false, 0});
}

Test(hardening, an_overwritten_link_of_zero_bytes_does_not_read_as_the_end)
{
    /* Zeroing a freed object is the commonest write after put: it must
     * not look like "end of list" and cut the page's free objects off
     * silently.  Zero decodes to the mask, which is outside the page. */
    expect_link_abort((struct overwrite){true, 0});
}

/* A debug pool keeps the link after the object, out of the user's
 * reach (docs/design.md, "Debug checks"): the same write lands in the
 * junk and the get reports it as such. */
Test(hardening, the_same_write_is_caught_as_a_write_after_put_in_a_debug_pool)
{
    static const char *const want[] = {"pool 'victim'",
                                       "written after put at offset +0",
                                       NULL};
    struct overwrite w = {false, DP_POOL_DEBUG};
    char out[4096];
    cr_assert(tu_expect_abort(write_after_put, &w, want, out, sizeof(out)),
              "no abort with the expected message; the child said:\n%s",
              out);
}

/* Without misuse, links decode to the same objects: every object of a
 * page comes back once after puts in any order. */
Test(hardening, links_decode_to_the_objects_that_were_put)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.flags |= DP_POOL_NOCACHE;
    a.pagesize = 4096;
    dp_pool_t *pool = dp_pool_create("links", 48, &a);
    cr_assert_not_null(pool);
    enum { N = 64 };
    void *o[N], *g[N];
    for (int i = 0; i < N; i++)
        cr_assert_not_null(o[i] = dp_pool_get(pool, DP_NOWAIT));
    for (int i = 0; i < N; i++)
        dp_pool_put(pool, o[(i * 7) % N]);
    cr_assert_eq(dp_pool_check(pool), 0);
    for (int i = 0; i < N; i++)
        cr_assert_not_null(g[i] = dp_pool_get(pool, DP_NOWAIT));
    qsort(o, N, sizeof(void *), tu_cmp_ptr);
    qsort(g, N, sizeof(void *), tu_cmp_ptr);
    cr_assert_arr_eq(o, g, sizeof(o));
    for (int i = 0; i < N; i++)
        dp_pool_put(pool, g[i]);
    tu_destroy_checked(pool, m);
}
