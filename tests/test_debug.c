/*
 * test_debug.c -- debug mode (DP_POOL_DEBUG and the finer DP_POOL_REDZONE,
 * DP_POOL_JUNK, DP_POOL_AUDIT): overflows, underflows, writes after put,
 * double and foreign puts are reported with the pool, the object and the
 * offset; audit adds the stacks of the last get and put; the leak report
 * groups objects out by allocation stack; normal use loses nothing.  And
 * a foreign put to a DP_POOL_NOCACHE pool aborts with a message.
 *
 * Each misuse runs in a forked child (tu_expect_abort), which checks the
 * abort and the words of its message.  The stacks name this file's
 * dbgt_* helpers: they are global and not inlined, and the program is
 * linked with -rdynamic (tests/meson.build), so backtrace_symbols_fd()
 * can name them.
 */
#include <criterion/criterion.h>
#include <deferpool.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "testutil.h"

TestSuite(debug, .init = tu_watchdog_init);

#define NOINL __attribute__((noinline, visibility("default")))

static dp_pool_t *debug_pool(const char *name, size_t objsize,
                             unsigned flags)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.flags |= flags;
    dp_pool_t *p = dp_pool_create(name, objsize, &a);
    if (!p)
        _exit(3);
    return p;
}

/* Abort expected, with every string of want in the message. */
#define EXPECT_ABORT(fn, arg, ...)                                            \
    do {                                                                      \
        const char *const want_[] = {__VA_ARGS__, NULL};                      \
        char out_[16384];                                                     \
        cr_assert(tu_expect_abort(fn, arg, want_, out_, sizeof(out_)),        \
                  "no abort with the expected message; the child said:\n%s", \
                  out_);                                                      \
    } while (0)

/* ---- redzones ------------------------------------------------------------ */

struct misuse {
    size_t objsize;
    unsigned flags;
    long at;      /* offset written, from the object's start */
};

static void write_then_put(void *arg)
{
    const struct misuse *m = arg;
    dp_pool_t *p = debug_pool("rz", m->objsize, m->flags);
    char *o = dp_pool_get(p, DP_WAITOK);
    fprintf(stderr, "object %p\n", (void *)o);
    o[m->at] = 0x11;
    dp_pool_put(p, o);
}

Test(debug, an_overflow_by_one_byte_is_reported_at_put_with_its_offset)
{
    size_t sizes[] = {48, 13, 1};
    for (size_t i = 0; i < 3; i++) {
        struct misuse m = {sizes[i], DP_POOL_DEBUG, (long)sizes[i]};
        char at[64];
        snprintf(at, sizeof(at), "redzone overwritten at offset +%zu",
                 sizes[i]);
        EXPECT_ABORT(write_then_put, &m, "pool 'rz'", at,
                     "(1 byte(s) past the end", "found at put");
    }
}

Test(debug, an_overflow_further_past_the_end_names_its_distance)
{
    struct misuse m = {40, DP_POOL_REDZONE, 43};
    EXPECT_ABORT(write_then_put, &m, "pool 'rz'",
                 "redzone overwritten at offset +43",
                 "(4 byte(s) past the end of its 40)");
}

Test(debug, an_underflow_before_the_start_is_reported_at_put_with_its_offset)
{
    struct misuse m = {64, DP_POOL_DEBUG, -1};
    EXPECT_ABORT(write_then_put, &m, "pool 'rz'",
                 "redzone overwritten at offset -1",
                 "(1 byte(s) before the start)");
    struct misuse far = {64, DP_POOL_REDZONE, -16};
    EXPECT_ABORT(write_then_put, &far, "redzone overwritten at offset -16");
}

/* The report names the object: the child printed its address first. */
Test(debug, the_redzone_report_names_the_object)
{
    struct misuse m = {24, DP_POOL_DEBUG, 24};
    const char *const want[] = {"object 0x", NULL};
    char out[16384];
    cr_assert(tu_expect_abort(write_then_put, &m, want, out, sizeof(out)));
    char obj[64];
    cr_assert_eq(sscanf(out, "object %63s", obj), 1, "%s", out);
    char line[128];
    snprintf(line, sizeof(line), "pool 'rz': object %s: redzone", obj);
    cr_assert_not_null(strstr(out, line), "no '%s' in:\n%s", line, out);
}

Test(debug, dp_pool_check_reports_a_damaged_redzone_without_aborting)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.flags |= DP_POOL_DEBUG;
    dp_pool_t *p = tu_pool("check", 32, &a);
    char *o = dp_pool_get(p, DP_WAITOK);
    cr_assert_eq(dp_pool_check(p), 0);
    char saved = o[33];
    o[33] = (char)~saved;
    cr_assert_eq(dp_pool_check(p), -1, "a damaged redzone went unseen");
    o[33] = saved;
    cr_assert_eq(dp_pool_check(p), 0);
    dp_pool_put(p, o);
    tu_destroy_checked(p, m);
}

/* ---- junk ---------------------------------------------------------------- */

static void write_after_put(void *arg)
{
    const struct misuse *m = arg;
    dp_pool_t *p = debug_pool("junk", m->objsize, m->flags);
    char *o = dp_pool_get(p, DP_WAITOK);
    dp_pool_put(p, o);
    o[m->at] = 0x11; /* the misuse */
    /* The page hands o out again (the top of its put stack). */
    char *again = dp_pool_get(p, DP_WAITOK);
    fprintf(stderr, "no report; got %p for %p\n", (void *)again, (void *)o);
}

Test(debug, a_write_after_put_is_reported_at_the_next_get_with_its_offset)
{
    struct misuse m = {100, DP_POOL_DEBUG, 37};
    EXPECT_ABORT(write_after_put, &m, "pool 'junk'", "object 0x",
                 "written after put at offset +37");
    struct misuse first = {8, DP_POOL_JUNK, 0};
    EXPECT_ABORT(write_after_put, &first, "written after put at offset +0");
}

static void check_after_write_after_put(void *arg)
{
    (void)arg;
    dp_pool_t *p = debug_pool("junkcheck", 64, DP_POOL_DEBUG);
    char *o = dp_pool_get(p, DP_WAITOK);
    dp_pool_put(p, o);
    o[63] = 0;
    if (dp_pool_check(p) == -1)
        abort(); /* reported, as the parent expects */
}

Test(debug, dp_pool_check_reports_a_write_after_put)
{
    EXPECT_ABORT(check_after_write_after_put, NULL, "pool 'junkcheck'",
                 "written after put at offset +63");
}

static bool all_pattern(const void *o, size_t n, uint32_t pat)
{
    const uint32_t *w = o;
    for (size_t i = 0; i < n / 4; i++)
        if (w[i] != pat)
            return false;
    return true;
}

Test(debug, a_got_object_holds_the_uninitialised_pattern_until_written)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.flags |= DP_POOL_DEBUG;
    dp_pool_t *p = tu_pool("uninit", 96, &a);
    void *o[3];
    for (int i = 0; i < 3; i++) {
        o[i] = dp_pool_get(p, DP_WAITOK);
        cr_assert(all_pattern(o[i], 96, DP_DEBUG_UNINIT_PATTERN),
                  "object %d is not filled with 0x%08x", i,
                  DP_DEBUG_UNINIT_PATTERN);
        memset(o[i], 0, 96);
    }
    dp_pool_put(p, o[1]);
    void *again = dp_pool_get(p, DP_WAITOK);
    cr_assert_eq(again, o[1]);
    cr_assert(all_pattern(again, 96, DP_DEBUG_UNINIT_PATTERN),
              "a reused object is not filled again");
    unsigned char *z = dp_pool_get(p, DP_WAITOK | DP_ZERO);
    for (int i = 0; i < 96; i++)
        cr_assert_eq(z[i], 0, "DP_ZERO byte %d", i);
    dp_pool_put(p, z);
    dp_pool_put(p, again);
    dp_pool_put(p, o[0]);
    dp_pool_put(p, o[2]);
    tu_destroy_checked(p, m);
}

/* ---- double and foreign puts ---------------------------------------------- */

/* The empty asm keeps each call from becoming a tail call, which would
 * take the helper's frame off the stack. */
#define NOTAIL() __asm__ volatile("" ::: "memory")
NOINL void *dbgt_getter(dp_pool_t *p)
{
    void *o = dp_pool_get(p, DP_WAITOK);
    NOTAIL();
    return o;
}
NOINL void dbgt_putter(dp_pool_t *p, void *o)
{
    dp_pool_put(p, o);
    NOTAIL();
}
NOINL void dbgt_second_putter(dp_pool_t *p, void *o)
{
    dp_pool_put(p, o);
    NOTAIL();
}

static void double_put(void *arg)
{
    unsigned flags = *(const unsigned *)arg;
    dp_pool_t *p = debug_pool("twice", 40, flags);
    void *o = dbgt_getter(p);
    fprintf(stderr, "object %p\n", o);
    dbgt_putter(p, o);
    dbgt_second_putter(p, o);
}

Test(debug, a_double_put_names_the_pool_and_the_address)
{
    unsigned flags = DP_POOL_DEBUG;
    const char *const want[] = {"pool 'twice': double put of 0x", NULL};
    char out[16384];
    cr_assert(tu_expect_abort(double_put, &flags, want, out, sizeof(out)),
              "%s", out);
    char obj[64], line[128];
    cr_assert_eq(sscanf(out, "object %63s", obj), 1, "%s", out);
    snprintf(line, sizeof(line), "double put of %s", obj);
    cr_assert_not_null(strstr(out, line), "no '%s' in:\n%s", line, out);
    cr_assert_null(strstr(out, "last get"), "stacks without audit:\n%s", out);
}

/* The stacks are the last get's and the last put's (the first put's),
 * each in its own section: the getter under "last get", the putter
 * under "last put". */
Test(debug, with_audit_a_double_put_shows_the_stacks_of_the_last_get_and_put)
{
    unsigned flags = DP_POOL_DEBUG | DP_POOL_AUDIT;
    const char *const want[] = {"double put of", "last get:", "last put:",
                                NULL};
    char out[16384];
    cr_assert(tu_expect_abort(double_put, &flags, want, out, sizeof(out)),
              "%s", out);
    const char *g = strstr(out, "last get:"), *pu = strstr(out, "last put:");
    cr_assert(g < pu, "%s", out);
    const char *getter = strstr(g, "dbgt_getter");
    cr_assert(getter && getter < pu, "no dbgt_getter in the get's stack:\n%s",
              out);
    cr_assert_not_null(strstr(pu, "dbgt_putter"),
                       "no dbgt_putter in the put's stack:\n%s", out);
    cr_assert_null(strstr(pu, "dbgt_second_putter"),
                   "the stack recorded is the second put's:\n%s", out);
}

static void foreign_put(void *arg)
{
    unsigned flags = *(const unsigned *)arg;
    dp_pool_t *p = debug_pool("home", 64, flags);
    static char not_ours[256] __attribute__((aligned(64)));
    fprintf(stderr, "pointer %p\n", (void *)(not_ours + 64));
    dp_pool_put(p, not_ours + 64);
}

Test(debug, a_foreign_put_names_the_pool_and_the_address)
{
    unsigned flags = DP_POOL_DEBUG;
    const char *const want[] = {"pool 'home': put of foreign pointer 0x",
                                NULL};
    char out[16384];
    cr_assert(tu_expect_abort(foreign_put, &flags, want, out, sizeof(out)),
              "%s", out);
    char ptr[64], line[128];
    cr_assert_eq(sscanf(out, "pointer %63s", ptr), 1, "%s", out);
    snprintf(line, sizeof(line), "foreign pointer %s", ptr);
    cr_assert_not_null(strstr(out, line), "no '%s' in:\n%s", line, out);
}

static void put_to_the_wrong_pool(void *arg)
{
    unsigned flags = *(const unsigned *)arg;
    dp_pool_t *p = debug_pool("left", 64, flags);
    dp_pool_t *q = debug_pool("right", 64, flags);
    void *o = dp_pool_get(q, DP_WAITOK);
    dp_pool_put(p, o);
}

Test(debug, a_put_to_the_wrong_pool_names_both_pools)
{
    unsigned flags = DP_POOL_DEBUG;
    EXPECT_ABORT(put_to_the_wrong_pool, &flags, "pool 'left': put of 0x",
                 "an object of pool 'right'");
}

/* ---- DP_POOL_NOCACHE, no debug ---------------------------------------- */

/* A pointer whose page is not mapped: without the page-map check the
 * put reads the page header there and dies of SIGSEGV. */
static void nocache_put_of_unmapped(void *arg)
{
    (void)arg;
    dp_pool_t *p = debug_pool("nc", 64, DP_POOL_NOCACHE);
    void *o = dp_pool_get(p, DP_WAITOK);
    dp_pool_put(p, o);
    size_t len = (size_t)1 << 20;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        _exit(5);
    munmap(m, len);
    fprintf(stderr, "pointer %p\n", (void *)(m + 4096 + 64));
    dp_pool_put(p, m + 4096 + 64);
}

Test(debug, a_nocache_pool_aborts_with_a_message_on_a_foreign_put)
{
    EXPECT_ABORT(nocache_put_of_unmapped, NULL,
                 "pool 'nc': put of foreign pointer 0x");
    unsigned flags = DP_POOL_NOCACHE;
    EXPECT_ABORT(put_to_the_wrong_pool, &flags, "pool 'left': put of 0x",
                 "an object of pool 'right'");
}

/* ---- leaks ------------------------------------------------------------------ */

NOINL void dbgt_leak_a(dp_pool_t *p, int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_not_null(dp_pool_get(p, DP_WAITOK));
    NOTAIL();
}
NOINL void dbgt_leak_b(dp_pool_t *p, int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_not_null(dp_pool_get(p, DP_WAITOK));
    NOTAIL();
}

static void leak_and_destroy(void *arg)
{
    unsigned flags = *(const unsigned *)arg;
    dp_pool_t *p = debug_pool("leaky", 48, flags);
    void *kept = dp_pool_get(p, DP_WAITOK);
    dbgt_leak_a(p, 3);
    dbgt_leak_b(p, 2);
    dp_pool_put(p, kept);
    dp_pool_destroy(p); /* a debug pool with objects out: report, abort */
}

/* The text between the group header `head` and the next group's. */
static bool group_names(const char *out, const char *head, const char *fn)
{
    const char *g = strstr(out, head);
    if (!g)
        return false;
    const char *end = strstr(g + strlen(head), " object(s):");
    const char *f = strstr(g, fn);
    return f && (!end || f < end);
}

Test(debug, the_leak_report_at_destroy_groups_objects_by_allocation_stack)
{
    unsigned flags = DP_POOL_DEBUG | DP_POOL_AUDIT;
    const char *const want[] = {
        "pool 'leaky': 5 object(s) still out, from 2 allocation stack(s)",
        "dp_pool_destroy('leaky'): 5 object(s) still out", NULL};
    char out[16384];
    cr_assert(tu_expect_abort(leak_and_destroy, &flags, want, out,
                              sizeof(out)),
              "%s", out);
    cr_assert(group_names(out, "  3 object(s):", "dbgt_leak_a"), "%s", out);
    cr_assert(group_names(out, "  2 object(s):", "dbgt_leak_b"), "%s", out);
    /* The report comes before the refusal. */
    cr_assert(strstr(out, "allocation stack") <
                  strstr(out, "dp_pool_destroy('leaky')"),
              "%s", out);
}

Test(debug, without_audit_the_leak_report_counts_and_lists_addresses)
{
    dp_mock_t *m = tu_mock(0);
    dp_pool_attr_t a = tu_attr(m);
    a.flags |= DP_POOL_DEBUG;
    dp_pool_t *p = tu_pool("plain", 64, &a);
    void *o[3];
    for (int i = 0; i < 3; i++)
        o[i] = dp_pool_get(p, DP_WAITOK);
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(dp_pool_leaks(p, f), 3);
    char buf[4096];
    rewind(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    cr_assert_not_null(strstr(buf, "pool 'plain': 3 object(s) still out"),
                       "%s", buf);
    cr_assert_null(strstr(buf, "allocation stack"), "%s", buf);
    for (int i = 0; i < 3; i++) {
        char addr[32];
        snprintf(addr, sizeof(addr), " %p", o[i]);
        cr_assert_not_null(strstr(buf, addr), "no %s in:\n%s", addr, buf);
    }
    for (int i = 0; i < 3; i++)
        dp_pool_put(p, o[i]);
    cr_assert_eq(dp_pool_leaks(p, NULL), 0);
    tu_destroy_checked(p, m);
    errno = 0;
    dp_pool_t *nd = tu_pool("nodebug", 64, NULL);
    cr_assert_eq(dp_pool_leaks(nd, NULL), -1);
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(dp_pool_destroy(nd), 0);
}

/* ---- normal use ------------------------------------------------------------- */

#define CTOR_MAGIC 0x5eedf00du

static int ctor(void *o, void *arg, int flags)
{
    (void)arg;
    (void)flags;
    *(uint32_t *)o = CTOR_MAGIC;
    return 0;
}

Test(debug, normal_use_of_debug_pools_passes_dp_pool_check_and_loses_nothing)
{
    const unsigned flagsets[] = {DP_POOL_DEBUG, DP_POOL_REDZONE, DP_POOL_JUNK,
                                 DP_POOL_AUDIT,
                                 DP_POOL_DEBUG | DP_POOL_AUDIT};
    const size_t sizes[] = {4, 13, 48, 100, 1000};
    const size_t aligns[] = {0, 8, 64, 256};
    enum { N = 24 };
    for (size_t fi = 0; fi < 5; fi++)
        for (int withctor = 0; withctor < 2; withctor++)
            for (size_t si = 0; si < 5; si++)
                for (size_t ai = 0; ai < 4; ai++) {
                    size_t sz = sizes[si], al = aligns[ai];
                    dp_mock_t *m = tu_mock(0);
                    dp_pool_attr_t a = tu_attr(m);
                    a.flags |= flagsets[fi];
                    a.align = al;
                    a.pagesize = 0; /* the library's choice */
                    if (withctor)
                        a.ctor = ctor;
                    dp_pool_t *p = tu_pool("use", sz, &a);
                    size_t want = al ? al : (sz < 16 ? 8 : 16);
                    void *o[N];
                    for (int round = 0; round < 2; round++) {
                        for (int i = 0; i < N; i++) {
                            if (round && i % 2)
                                continue;
                            o[i] = dp_pool_get(p, DP_WAITOK);
                            cr_assert_not_null(o[i]);
                            cr_assert_eq((uintptr_t)o[i] % want, 0,
                                         "flags %#x size %zu align %zu: %p",
                                         flagsets[fi], sz, al, o[i]);
                            if (withctor)
                                cr_assert_eq(*(uint32_t *)o[i], CTOR_MAGIC,
                                             "flags %#x size %zu: constructed"
                                             " state lost",
                                             flagsets[fi], sz);
                            else
                                memset(o[i], 0x3c, sz);
                        }
                        cr_assert_eq(dp_pool_check(p), 0);
                        for (int i = 0; i < N; i += 2)
                            dp_pool_put(p, o[i]);
                        cr_assert_eq(dp_pool_check(p), 0);
                    }
                    for (int i = 1; i < N; i += 2)
                        dp_pool_put(p, o[i]);
                    tu_destroy_checked(p, m);
                }
}
