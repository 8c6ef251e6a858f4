/*
 * criterion/assert.h -- old-style Criterion assertions for the TSan test
 * runner (see criterion.h).
 *
 * cr_assert_*: on failure print file:line, the expression and the optional
 * message to stderr, then end the test (its .fini runs when the failure
 * happens on the test's main thread).  cr_expect_*: print and record the
 * failure, then continue.  Every operand is evaluated exactly once.  The
 * optional message is a printf format string literal plus its arguments.
 */
#ifndef DP_TSAN_CRITERION_ASSERT_H
#define DP_TSAN_CRITERION_ASSERT_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* Argument juggling: HEAD is the first argument, TAIL all but the first
 * (possibly nothing).  Up to 63 message arguments. */
#define CRS_STR(x) CRS_STR_(x)
#define CRS_STR_(x) #x
#define CRS_CAT(a, b) CRS_CAT_(a, b)
#define CRS_CAT_(a, b) a##b
#define CRS_HEAD(...) CRS_HEAD_(__VA_ARGS__, ~)
#define CRS_HEAD_(h, ...) h
#define CRS_TAIL(...) CRS_CAT(CRS_TAIL_, CRS_MANY_(__VA_ARGS__))(__VA_ARGS__)
#define CRS_TAIL_1(h)
#define CRS_TAIL_M(h, ...) __VA_ARGS__
#define CRS_MANY_(...)                                                      \
    CRS_PICK_(__VA_ARGS__, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,  \
              M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,   \
              M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,   \
              M, M, M, M, M, M, M, 1, ~)
#define CRS_PICK_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13,   \
                  _14, _15, _16, _17, _18, _19, _20, _21, _22, _23, _24,    \
                  _25, _26, _27, _28, _29, _30, _31, _32, _33, _34, _35,    \
                  _36, _37, _38, _39, _40, _41, _42, _43, _44, _45, _46,    \
                  _47, _48, _49, _50, _51, _52, _53, _54, _55, _56, _57,    \
                  _58, _59, _60, _61, _62, _63, _64, N, ...) N

/* Runtime side, in runner.c.  The format always starts with one space
 * (so an absent message is " ", not an empty format); it is skipped. */
__attribute__((noreturn, format(printf, 6, 7)))
void crs_assert_abort(const char *file, unsigned line, const char *what,
                      const char *actual, const char *expected,
                      const char *fmt, ...);
__attribute__((format(printf, 6, 7)))
void crs_assert_continue(const char *file, unsigned line, const char *what,
                         const char *actual, const char *expected,
                         const char *fmt, ...);
__attribute__((noreturn, format(printf, 3, 4)))
void crs_skip(const char *file, unsigned line, const char *fmt, ...);
void crs_assert_passed(const char *file, unsigned line);

/* Kind is abort or continue; What is the assertion as written. */
#define CRS_CHECK_(Kind, Cond, What, ...)                                   \
    do {                                                                    \
        if (Cond)                                                           \
            crs_assert_passed(__FILE__, __LINE__);                          \
        else                                                                \
            crs_assert_##Kind(__FILE__, __LINE__, What, NULL, NULL,         \
                              " " __VA_ARGS__);                             \
    } while (0)

/* cr_assert(Cond, [Fmt, ...]) */
#define CRS_COND_(Kind, Not, What, ...)                                     \
    CRS_COND2_(Kind, Not, What, CRS_HEAD(__VA_ARGS__), CRS_TAIL(__VA_ARGS__))
#define CRS_COND2_(Kind, Not, What, C, ...)                                 \
    CRS_CHECK_(Kind, Not(C), What, __VA_ARGS__)

/* cr_assert_eq(Actual, Expected, [Fmt, ...]) and friends */
#define CRS_BIN_(Kind, Op, What, ...)                                       \
    CRS_BIN2_(Kind, Op, What, CRS_HEAD(__VA_ARGS__),                        \
              CRS_HEAD(CRS_TAIL(__VA_ARGS__)),                              \
              CRS_TAIL(CRS_TAIL(__VA_ARGS__)))
#define CRS_BIN2_(Kind, Op, What, A, B, ...)                                \
    CRS_CHECK_(Kind, (A) Op (B), What, __VA_ARGS__)

/* cr_assert_null(Value, [Fmt, ...]) and friends */
#define CRS_UN_(Kind, Op, What, ...)                                        \
    CRS_UN2_(Kind, Op, What, CRS_HEAD(__VA_ARGS__), CRS_TAIL(__VA_ARGS__))
#define CRS_UN2_(Kind, Op, What, V, ...)                                    \
    CRS_CHECK_(Kind, (V) Op, What, __VA_ARGS__)

/* cr_assert_float_eq(Actual, Expected, Epsilon, [Fmt, ...]), as in
 * Criterion: |Expected - Actual| <= Epsilon, each operand evaluated once. */
#define CRS_FLT_(Kind, Eq, What, ...)                                       \
    CRS_FLT2_(Kind, Eq, What, CRS_HEAD(__VA_ARGS__),                        \
              CRS_HEAD(CRS_TAIL(__VA_ARGS__)),                              \
              CRS_HEAD(CRS_TAIL(CRS_TAIL(__VA_ARGS__))),                    \
              CRS_TAIL(CRS_TAIL(CRS_TAIL(__VA_ARGS__))))
#define CRS_FLT2_(Kind, Eq, What, A, B, E, ...)                             \
    do {                                                                    \
        long double crs_a_ = (A), crs_b_ = (B), crs_e_ = (E);               \
        bool crs_in_ = crs_b_ - crs_a_ <= crs_e_ && crs_a_ - crs_b_ <= crs_e_; \
        CRS_CHECK_(Kind, crs_in_ == (Eq), What, __VA_ARGS__);               \
    } while (0)

/* cr_assert_str_eq(Actual, Expected, [Fmt, ...]) and friends; a NULL
 * string is reported as a failure instead of crashing in strcmp. */
#define CRS_STROP_(Kind, Op, What, ...)                                     \
    CRS_STROP2_(Kind, Op, What, CRS_HEAD(__VA_ARGS__),                      \
                CRS_HEAD(CRS_TAIL(__VA_ARGS__)),                            \
                CRS_TAIL(CRS_TAIL(__VA_ARGS__)))
#define CRS_STROP2_(Kind, Op, What, A, B, ...)                              \
    do {                                                                    \
        const char *crs_a_ = (A), *crs_b_ = (B);                            \
        if (crs_a_ != NULL && crs_b_ != NULL &&                             \
            strcmp(crs_a_, crs_b_) Op 0)                                    \
            crs_assert_passed(__FILE__, __LINE__);                          \
        else                                                                \
            crs_assert_##Kind(__FILE__, __LINE__, What,                     \
                              crs_a_ ? crs_a_ : "(null)",                   \
                              crs_b_ ? crs_b_ : "(null)", " " __VA_ARGS__); \
    } while (0)
#define CRS_STREMPTY_(Kind, Empty, What, ...)                               \
    CRS_STREMPTY2_(Kind, Empty, What, CRS_HEAD(__VA_ARGS__),                \
                   CRS_TAIL(__VA_ARGS__))
#define CRS_STREMPTY2_(Kind, Empty, What, V, ...)                           \
    do {                                                                    \
        const char *crs_v_ = (V);                                           \
        if (crs_v_ != NULL && (crs_v_[0] == '\0') == (Empty))               \
            crs_assert_passed(__FILE__, __LINE__);                          \
        else                                                                \
            crs_assert_##Kind(__FILE__, __LINE__, What,                     \
                              crs_v_ ? crs_v_ : "(null)", NULL,             \
                              " " __VA_ARGS__);                             \
    } while (0)

/* cr_assert_arr_eq(Actual, Expected, Size, [Fmt, ...]) */
#define CRS_ARR_(Kind, Op, What, ...)                                       \
    CRS_ARR2_(Kind, Op, What, CRS_HEAD(__VA_ARGS__),                        \
              CRS_HEAD(CRS_TAIL(__VA_ARGS__)),                              \
              CRS_HEAD(CRS_TAIL(CRS_TAIL(__VA_ARGS__))),                    \
              CRS_TAIL(CRS_TAIL(CRS_TAIL(__VA_ARGS__))))
#define CRS_ARR2_(Kind, Op, What, A, B, N, ...)                             \
    CRS_CHECK_(Kind, memcmp((A), (B), (N)) Op 0, What, __VA_ARGS__)

/* The assertion text is stringified here, before any macro in it expands. */
#define CRS_W_(Name, Args) #Name "(" Args ")"

#define cr_assert(...) \
    CRS_COND_(abort, , CRS_W_(cr_assert, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect(...) \
    CRS_COND_(continue, , CRS_W_(cr_expect, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_not(...) \
    CRS_COND_(abort, !, CRS_W_(cr_assert_not, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_not(...) \
    CRS_COND_(continue, !, CRS_W_(cr_expect_not, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_eq(...) \
    CRS_BIN_(abort, ==, CRS_W_(cr_assert_eq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_eq(...) \
    CRS_BIN_(continue, ==, CRS_W_(cr_expect_eq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_neq(...) \
    CRS_BIN_(abort, !=, CRS_W_(cr_assert_neq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_neq(...) \
    CRS_BIN_(continue, !=, CRS_W_(cr_expect_neq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_lt(...) \
    CRS_BIN_(abort, <, CRS_W_(cr_assert_lt, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_lt(...) \
    CRS_BIN_(continue, <, CRS_W_(cr_expect_lt, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_leq(...) \
    CRS_BIN_(abort, <=, CRS_W_(cr_assert_leq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_leq(...) \
    CRS_BIN_(continue, <=, CRS_W_(cr_expect_leq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_gt(...) \
    CRS_BIN_(abort, >, CRS_W_(cr_assert_gt, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_gt(...) \
    CRS_BIN_(continue, >, CRS_W_(cr_expect_gt, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_geq(...) \
    CRS_BIN_(abort, >=, CRS_W_(cr_assert_geq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_geq(...) \
    CRS_BIN_(continue, >=, CRS_W_(cr_expect_geq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_null(...) \
    CRS_UN_(abort, == NULL, CRS_W_(cr_assert_null, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_null(...) \
    CRS_UN_(continue, == NULL, CRS_W_(cr_expect_null, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_not_null(...) \
    CRS_UN_(abort, != NULL, CRS_W_(cr_assert_not_null, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_not_null(...) \
    CRS_UN_(continue, != NULL, CRS_W_(cr_expect_not_null, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_float_eq(...) \
    CRS_FLT_(abort, true, CRS_W_(cr_assert_float_eq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_float_eq(...) \
    CRS_FLT_(continue, true, CRS_W_(cr_expect_float_eq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_float_neq(...) \
    CRS_FLT_(abort, false, CRS_W_(cr_assert_float_neq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_float_neq(...) \
    CRS_FLT_(continue, false, CRS_W_(cr_expect_float_neq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_str_eq(...) \
    CRS_STROP_(abort, ==, CRS_W_(cr_assert_str_eq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_str_eq(...) \
    CRS_STROP_(continue, ==, CRS_W_(cr_expect_str_eq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_str_neq(...) \
    CRS_STROP_(abort, !=, CRS_W_(cr_assert_str_neq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_str_neq(...) \
    CRS_STROP_(continue, !=, CRS_W_(cr_expect_str_neq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_str_lt(...) \
    CRS_STROP_(abort, <, CRS_W_(cr_assert_str_lt, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_str_lt(...) \
    CRS_STROP_(continue, <, CRS_W_(cr_expect_str_lt, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_str_leq(...) \
    CRS_STROP_(abort, <=, CRS_W_(cr_assert_str_leq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_str_leq(...) \
    CRS_STROP_(continue, <=, CRS_W_(cr_expect_str_leq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_str_gt(...) \
    CRS_STROP_(abort, >, CRS_W_(cr_assert_str_gt, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_str_gt(...) \
    CRS_STROP_(continue, >, CRS_W_(cr_expect_str_gt, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_str_geq(...) \
    CRS_STROP_(abort, >=, CRS_W_(cr_assert_str_geq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_str_geq(...) \
    CRS_STROP_(continue, >=, CRS_W_(cr_expect_str_geq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_str_empty(...) \
    CRS_STREMPTY_(abort, true, CRS_W_(cr_assert_str_empty, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_str_empty(...) \
    CRS_STREMPTY_(continue, true, CRS_W_(cr_expect_str_empty, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_str_not_empty(...) \
    CRS_STREMPTY_(abort, false, CRS_W_(cr_assert_str_not_empty, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_str_not_empty(...) \
    CRS_STREMPTY_(continue, false, CRS_W_(cr_expect_str_not_empty, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_arr_eq(...) \
    CRS_ARR_(abort, ==, CRS_W_(cr_assert_arr_eq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_arr_eq(...) \
    CRS_ARR_(continue, ==, CRS_W_(cr_expect_arr_eq, #__VA_ARGS__), __VA_ARGS__)
#define cr_assert_arr_neq(...) \
    CRS_ARR_(abort, !=, CRS_W_(cr_assert_arr_neq, #__VA_ARGS__), __VA_ARGS__)
#define cr_expect_arr_neq(...) \
    CRS_ARR_(continue, !=, CRS_W_(cr_expect_arr_neq, #__VA_ARGS__), __VA_ARGS__)

#define cr_assert_fail(...)                                                 \
    crs_assert_abort(__FILE__, __LINE__, "cr_assert_fail(" #__VA_ARGS__ ")", \
                     NULL, NULL, " " __VA_ARGS__)
#define cr_expect_fail(...)                                                 \
    crs_assert_continue(__FILE__, __LINE__,                                 \
                        "cr_expect_fail(" #__VA_ARGS__ ")", NULL, NULL,     \
                        " " __VA_ARGS__)
#define cr_skip_test(...) crs_skip(__FILE__, __LINE__, " " __VA_ARGS__)

#endif /* DP_TSAN_CRITERION_ASSERT_H */
