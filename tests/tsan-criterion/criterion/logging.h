/*
 * criterion/logging.h -- cr_log* for the TSan test runner (see
 * criterion.h).  Messages go to stderr as "[----] ", "[WARN] " or
 * "[ERR ] " lines, like Criterion's.
 */
#ifndef DP_TSAN_CRITERION_LOGGING_H
#define DP_TSAN_CRITERION_LOGGING_H

enum criterion_severity {
    CR_LOG_INFO,
    CR_LOG_WARNING,
    CR_LOG_ERROR,
};

__attribute__((format(printf, 2, 3)))
void cr_log(enum criterion_severity severity, const char *fmt, ...);

#define cr_log_info(...)  cr_log(CR_LOG_INFO, __VA_ARGS__)
#define cr_log_warn(...)  cr_log(CR_LOG_WARNING, __VA_ARGS__)
#define cr_log_error(...) cr_log(CR_LOG_ERROR, __VA_ARGS__)

#endif /* DP_TSAN_CRITERION_LOGGING_H */
