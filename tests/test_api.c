/*
 * test_api.c -- the public interface's own promises: the attribute rules
 * (hiwat 0), the results dp_pool_destroy() returns, the statistics
 * structs' size field, and the version the header and the library agree
 * on.  docs/api.md is the reference each test checks.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

/* ------------------------------------------------------------ hiwat = 0 */

Test(api, hiwat_zero_with_default_lowat_creates_and_makes_every_page_beyond_lowat_urgent)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.hiwat = 0; /* lowat stays at its default, 1 */
    dp_pool_t *pool = tu_pool("hiwat0", 64, &a);
    dp_pool_stats_t s = tu_stats(pool);
    cr_assert_eq(s.lowat, DP_DEFAULT_LOWAT);
    cr_assert_eq(s.hiwat, 0);

    size_t n = 5 * s.objs_per_page;
    void **objs = calloc(n, sizeof *objs);
    cr_assert_not_null(objs);
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(objs[i] = dp_pool_get(pool, DP_WAITOK));
    for (size_t i = 0; i < n; i++)
        dp_pool_put(pool, objs[i]);
    free(objs);
    dp_thread_cache_flush();
    dp_reclaim_stop();
    /* The mock clock never moves: the pages go by count alone. */
    cr_assert_eq(dp_reclaim_step(), 4, "pages beyond lowat not urgent");
    s = tu_stats(pool);
    cr_assert_eq(s.pages_empty, DP_DEFAULT_LOWAT, "lowat not kept");
    tu_destroy_checked(pool, m);
}

Test(api, lowat_above_a_nonzero_hiwat_is_einval)
{
    dp_pool_attr_t a;
    dp_pool_attr_init(&a);
    a.flags = DP_POOL_NOTHREAD;
    a.lowat = 3;
    a.hiwat = 2;
    errno = 0;
    cr_assert_null(dp_pool_create("bad", 64, &a));
    cr_assert_eq(errno, EINVAL);
}

/* -------------------------------------------------------------- version */

Test(api, version_macros_and_dp_version_are_the_meson_project_version)
{
    char hdr[64];
    snprintf(hdr, sizeof hdr, "%d.%d.%d", DP_VERSION_MAJOR, DP_VERSION_MINOR,
             DP_VERSION_PATCH);
    cr_assert_str_eq(hdr, DP_PROJECT_VERSION, "header says %s", hdr);
    cr_assert_str_eq(dp_version(), DP_PROJECT_VERSION, "library says %s",
                     dp_version());
}

/* ------------------------------------------- statistics structs' reserve */

/* The structs the library fills keep reserved space for later fields, and
 * the library writes it (as zero) so that a caller built against a later
 * header reads 0 for a field this library does not know. */
#define RESERVED_ZERO(s)                                                      \
    do {                                                                      \
        for (size_t i_ = 0; i_ < sizeof((s).reserved) / sizeof((s).reserved[0]); \
             i_++)                                                            \
            cr_assert_eq((s).reserved[i_], 0, #s ".reserved[%zu] not zeroed", \
                         i_);                                                 \
    } while (0)

Test(api, statistics_structs_have_reserved_space_that_the_library_zeroes)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    dp_pool_t *pool = tu_pool("reserve", 64, &a);

    dp_pool_stats_t s;
    memset(&s, 0xa5, sizeof s);
    cr_assert_eq(dp_pool_stats(pool, &s), 0);
    RESERVED_ZERO(s);
    cr_assert_geq(sizeof s.reserved, 8 * sizeof(uint64_t));

    dp_reclaim_info_t ri;
    memset(&ri, 0xa5, sizeof ri);
    dp_reclaim_info(&ri);
    RESERVED_ZERO(ri);

    dp_mock_counters_t c;
    memset(&c, 0xa5, sizeof c);
    dp_mock_counters(m, &c);
    RESERVED_ZERO(c);

    tu_destroy_checked(pool, m);
}
