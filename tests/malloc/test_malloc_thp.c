/*
 * test_malloc_thp.c -- the thp option (docs/tuning.md): which mappings
 * the drop-in malloc keeps off transparent huge pages.  Each case runs
 * tests/malloc/thp_probe.c under LD_PRELOAD with its own DEFERPOOL_CONF
 * (the option is read once per process) and reads which of its blocks'
 * mappings carry MADV_NOHUGEPAGE.  The machine's THP policy is not
 * changed: `auto` is checked against what the machine says.
 */
#include "preload_probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct flags {
    int small, medium, large;
    char err[512];
};

static struct flags probe(const char *conf)
{
    struct flags f = {-2, -2, -2, ""};
    char out[256];
    pp_run(conf, "DP_MALLOC_THP_PROBE", "", out, sizeof(out), f.err,
           sizeof(f.err));
    int n = sscanf(out, "small=%d medium=%d large=%d", &f.small, &f.medium,
                   &f.large);
    cr_assert_eq(n, 3, "conf '%s': no output", conf);
    return f;
}

/* The machine's policy is "always" (THP for every anonymous mapping). */
static int thp_always(void) { return !strcmp(pp_thp_policy(), "always"); }

Test(malloc_thp, never_keeps_pages_and_chunks_off_huge_pages)
{
    struct flags f = probe("thp:never");
    cr_assert_eq(f.small, 1, "a class pool's page");
    cr_assert_eq(f.medium, 1, "a heap chunk");
    cr_assert_eq(f.large, 0, "a 4 MiB block keeps the system's policy");
    cr_assert_str_empty(f.err);
}

Test(malloc_thp, default_leaves_every_mapping_to_the_system)
{
    struct flags f = probe("thp:default");
    cr_assert_eq(f.small, 0);
    cr_assert_eq(f.medium, 0);
    cr_assert_eq(f.large, 0);
    cr_assert_str_empty(f.err);
}

Test(malloc_thp, auto_advises_only_when_the_system_says_always)
{
    int want = thp_always();
    struct flags f = probe("thp:auto");
    cr_assert_eq(f.small, want);
    cr_assert_eq(f.medium, want);
    cr_assert_eq(f.large, 0);
    struct flags d = probe("");
    cr_assert_eq(d.small, want, "auto is the default");
    cr_assert_eq(d.medium, want);
}

Test(malloc_thp, a_bad_value_is_reported_and_auto_kept)
{
    struct flags f = probe("thp:sometimes");
    cr_assert_not_null(strstr(f.err, "bad thp value"), "stderr: %s", f.err);
    cr_assert_eq(f.small, thp_always());
    cr_assert_eq(f.medium, thp_always());
}
