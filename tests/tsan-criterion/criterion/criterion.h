/*
 * criterion/criterion.h -- a small Criterion-compatible test runner, used
 * ONLY for ThreadSanitizer builds of the test suite.
 *
 * Real Criterion (2.4.1) cannot start under TSan: its BoxFort sandbox
 * fails with "Could not initialize inheritable arena" (Snaipe/Criterion#274).
 * tests/meson.build puts this directory ahead of the system include path
 * when b_sanitize contains 'thread', and links ../runner.c (which holds
 * main()) instead of libcriterion.
 *
 * Supported: Test(Suite, Name, .init, .fini, .signal, .exit_code,
 * .disabled, .description, .timeout), TestSuite(Name, same fields), the
 * old-style (non-"new") assertion macros cr_assert* / cr_expect* that
 * the tests use and their direct siblings, cr_assert_fail, cr_expect_fail,
 * cr_skip_test and cr_log*.  Each optionally takes a printf-style
 * message, which must be a string literal (as with real Criterion).
 * Not supported: parameterized tests, theories, redirections, the "new"
 * assertion API, report hooks, wide-string and C++ assertions.
 *
 * Each test runs in its own forked process, one after another; see
 * runner.c for the result rules.
 */
#ifndef DP_TSAN_CRITERION_H
#define DP_TSAN_CRITERION_H

/* The same standard headers real <criterion/criterion.h> pulls in, so a
 * test that compiles against one compiles against the other. */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "assert.h"
#include "logging.h"

struct criterion_test_extra_data {
    int sentinel_;
    void (*init)(void);
    void (*fini)(void);
    int signal;
    int exit_code;
    bool disabled;
    const char *description;
    double timeout;
    void *data;
};

struct crs_test {
    const char *suite;
    const char *name;
    const char *file;
    unsigned line;
    void (*fn)(void);
    struct criterion_test_extra_data *data;
    struct crs_test *next;
};

struct crs_suite {
    const char *name;
    struct criterion_test_extra_data *data;
    struct crs_suite *next;
};

void crs_register_test(struct crs_test *t);
void crs_register_suite(struct crs_suite *s);

/* Test(Suite, Name, ...) -- the trailing sentinel keeps the initialiser
 * valid when no option is given, as in real Criterion. */
#define Test(...) CRS_TEST_(__VA_ARGS__, .sentinel_ = 0)
#define CRS_TEST_(Suite, Name, ...)                                         \
    static void Suite##_##Name##_impl(void);                                \
    static struct criterion_test_extra_data crs_data_##Suite##_##Name = {   \
        __VA_ARGS__                                                         \
    };                                                                      \
    static struct crs_test crs_test_##Suite##_##Name = {                    \
        #Suite, #Name, __FILE__, __LINE__, Suite##_##Name##_impl,           \
        &crs_data_##Suite##_##Name, NULL                                    \
    };                                                                      \
    __attribute__((constructor)) static void crs_reg_##Suite##_##Name(void) \
    {                                                                       \
        crs_register_test(&crs_test_##Suite##_##Name);                      \
    }                                                                       \
    static void Suite##_##Name##_impl(void)

#define TestSuite(...) CRS_SUITE_(__VA_ARGS__, .sentinel_ = 0)
#define CRS_SUITE_(Name, ...)                                               \
    static struct criterion_test_extra_data crs_suite_data_##Name = {       \
        __VA_ARGS__                                                         \
    };                                                                      \
    static struct crs_suite crs_suite_##Name = {                            \
        #Name, &crs_suite_data_##Name, NULL                                 \
    };                                                                      \
    __attribute__((constructor)) static void crs_sreg_##Name(void)          \
    {                                                                       \
        crs_register_suite(&crs_suite_##Name);                              \
    }                                                                       \
    struct crs_suite_semicolon_##Name

#endif /* DP_TSAN_CRITERION_H */
