/*
 * runner.c -- main() of the Criterion-compatible test runner used ONLY for
 * ThreadSanitizer builds (real Criterion cannot start under TSan,
 * Snaipe/Criterion#274).  Linked into every test executable instead of
 * libcriterion by tests/meson.build.
 *
 * Tests run one after another, each in its own forked process (the runner
 * itself never starts a thread, so fork is safe under TSan).  A test
 * passes when its process ends the way the test declares -- by .signal if
 * set, otherwise by exiting with .exit_code (default 0) -- with no failed
 * assertion and no ThreadSanitizer report.  A TSan report is seen through
 * TSan's __tsan_on_report hook and through its exit code (66 unless
 * TSAN_OPTIONS sets exitcode), whichever comes first.  Death by any other
 * signal, or running past .timeout (the runner kills it), is a crash.
 *
 * Options: --filter=GLOB (or --pattern; an extended glob matched against
 * "suite/name"; tests it leaves out are reported as skipped),
 * --timeout=SECONDS (default for tests without .timeout), --fail-fast,
 * --list, --help.  --jobs, --verbose and other Criterion options are
 * accepted and ignored: tests always run one at a time, verbosely.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "criterion/criterion.h"

#include <errno.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define CRS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CRS_TSAN 1
#endif
#endif

#define CRS_EXIT_ASSERT 121 /* a test process ended by a failed assertion */

enum phase { PH_SETUP = 1, PH_BODY, PH_TEARDOWN, PH_DONE };

/* Shared between the runner and the test process (and any process the
 * test forks): MAP_SHARED, reset before every test. */
struct shared {
    int phase;
    int failed;                 /* failed assertions */
    int skipped;
    volatile int tsan_reports;  /* written by __tsan_on_report only */
    volatile int tsan_died;     /* the sanitizer runtime ended the process */
    pid_t pid;                  /* the test's own process */
    const char *file;           /* last assertion reached */
    unsigned line;
    char skip_msg[512];
};

static struct shared *shm;
static struct crs_test *test_list;
static size_t test_count;
static struct crs_suite *suite_list;
static const struct crs_test *cur_test;   /* in the test process */
static const struct crs_suite *cur_suite;

void crs_register_test(struct crs_test *t)
{
    t->next = test_list;
    test_list = t;
    test_count++;
}

void crs_register_suite(struct crs_suite *s)
{
    s->next = suite_list;
    suite_list = s;
}

/* ---- output: one write(2) per message so threads do not interleave ---- */

struct buf {
    char b[8192];
    size_t n;
};

__attribute__((format(printf, 2, 3)))
static void bprintf(struct buf *o, const char *fmt, ...)
{
    va_list ap;
    int k;

    if (o->n >= sizeof(o->b) - 1)
        return;
    va_start(ap, fmt);
    k = vsnprintf(o->b + o->n, sizeof(o->b) - o->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        o->n += (size_t)k < sizeof(o->b) - o->n ? (size_t)k
                                                 : sizeof(o->b) - o->n - 1;
}

/* Each line of text, prefixed. */
static void blines(struct buf *o, const char *prefix, const char *text)
{
    while (*text) {
        const char *nl = strchr(text, '\n');
        int len = nl ? (int)(nl - text) : (int)strlen(text);

        bprintf(o, "%s%.*s\n", prefix, len, text);
        text += len + (nl != NULL);
    }
}

static void bflush(struct buf *o)
{
    const char *p = o->b;
    size_t left = o->n;

    while (left > 0) {
        ssize_t w = write(STDERR_FILENO, p, left);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    o->n = 0;
}

/* Flush the test's stdout unless another thread holds it. */
static void flush_stdout(void)
{
    if (ftrylockfile(stdout) == 0) {
        fflush_unlocked(stdout);
        funlockfile(stdout);
    }
}

/* ---- the test process side ------------------------------------------- */

static void run_fini(void)
{
    if (cur_test && cur_test->data->fini)
        cur_test->data->fini();
    if (cur_suite && cur_suite->data->fini)
        cur_suite->data->fini();
}

/* End the test process early.  On the test's main thread, during the body,
 * the .fini fixtures run first (as in Criterion); anywhere else (another
 * thread, a process the test forked) the process just exits. */
__attribute__((noreturn))
static void end_test(int code)
{
    if (shm && getpid() == shm->pid && syscall(SYS_gettid) == getpid() &&
        __atomic_load_n(&shm->phase, __ATOMIC_RELAXED) == PH_BODY) {
        __atomic_store_n(&shm->phase, PH_TEARDOWN, __ATOMIC_RELAXED);
        run_fini();
    }
    flush_stdout();
    _exit(code);
}

static void report_failure(const char *file, unsigned line, const char *what,
                           const char *actual, const char *expected,
                           const char *fmt, va_list ap)
{
    struct buf o;
    char msg[4096];

    o.n = 0;
    vsnprintf(msg, sizeof(msg), fmt[0] == ' ' ? fmt + 1 : fmt, ap);
    bprintf(&o, "[----] %s:%u: Assertion Failed\n", file, line);
    bprintf(&o, "[----]   %s\n", what);
    if (actual && expected) {
        bprintf(&o, "[----]     actual: \"%s\"\n", actual);
        bprintf(&o, "[----]   expected: \"%s\"\n", expected);
    } else if (actual) {
        bprintf(&o, "[----]      value: \"%s\"\n", actual);
    }
    blines(&o, "[----]   ", msg);
    bflush(&o);
    if (shm) {
        __atomic_fetch_add(&shm->failed, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&shm->file, file, __ATOMIC_RELAXED);
        __atomic_store_n(&shm->line, line, __ATOMIC_RELAXED);
    }
}

void crs_assert_abort(const char *file, unsigned line, const char *what,
                      const char *actual, const char *expected,
                      const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    report_failure(file, line, what, actual, expected, fmt, ap);
    va_end(ap);
    end_test(CRS_EXIT_ASSERT);
}

void crs_assert_continue(const char *file, unsigned line, const char *what,
                         const char *actual, const char *expected,
                         const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    report_failure(file, line, what, actual, expected, fmt, ap);
    va_end(ap);
}

void crs_assert_passed(const char *file, unsigned line)
{
    if (shm) {
        __atomic_store_n(&shm->file, file, __ATOMIC_RELAXED);
        __atomic_store_n(&shm->line, line, __ATOMIC_RELAXED);
    }
}

void crs_skip(const char *file, unsigned line, const char *fmt, ...)
{
    va_list ap;

    (void)file;
    (void)line;
    if (shm) {
        va_start(ap, fmt);
        vsnprintf(shm->skip_msg, sizeof(shm->skip_msg),
                  fmt[0] == ' ' ? fmt + 1 : fmt, ap);
        va_end(ap);
        __atomic_store_n(&shm->skipped, 1, __ATOMIC_RELAXED);
    }
    end_test(0);
}

void cr_log(enum criterion_severity severity, const char *fmt, ...)
{
    static const char *const prefix[] = { "[----] ", "[WARN] ", "[ERR ] " };
    struct buf o;
    char msg[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    o.n = 0;
    blines(&o, prefix[(unsigned)severity <= CR_LOG_ERROR ? severity : 0],
           msg);
    bflush(&o);
}

#ifdef CRS_TSAN
/* Called by the TSan runtime after it prints each (unsuppressed) report,
 * with its report lock held; must not itself be instrumented. */
void __tsan_on_report(const void *report);
__attribute__((no_sanitize("thread"), used))
void __tsan_on_report(const void *report)
{
    (void)report;
    if (shm)
        shm->tsan_reports++;
}

/* TSan ends a process itself (exit code 66 by default) on a deadly signal
 * such as SIGSEGV, on an internal error, or on halt_on_error=1: tell that
 * apart from a test that exits. */
void __sanitizer_set_death_callback(void (*callback)(void));
__attribute__((no_sanitize("thread")))
static void on_sanitizer_death(void)
{
    if (shm)
        shm->tsan_died = 1;
}
#endif

/* ---- the runner side ---------------------------------------------------- */

struct entry {
    const struct crs_test *test;
    const struct crs_suite *suite;
};

static int entry_cmp(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = strcmp(x->test->suite, y->test->suite);

    return c ? c : strcmp(x->test->name, y->test->name);
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *signame(int sig)
{
    const char *s = sigabbrev_np(sig);

    return s ? s : "?";
}

enum outcome { R_PASS, R_FAIL, R_CRASH, R_SKIP };

static enum outcome run_test(const struct crs_test *t,
                             const struct crs_suite *s, double dflt_timeout)
{
    const struct criterion_test_extra_data *td = t->data;
    const struct criterion_test_extra_data *sd = s ? s->data : NULL;
    int want_signal = td->signal ? td->signal : sd ? sd->signal : 0;
    int want_exit = td->exit_code ? td->exit_code : sd ? sd->exit_code : 0;
    double timeout = td->timeout > 0 ? td->timeout
                     : sd && sd->timeout > 0 ? sd->timeout : dflt_timeout;
    pid_t runner = getpid(), pid;
    int status = 0, timed_out = 0;
    double start, elapsed;
    useconds_t delay = 100;
    struct buf o;

    memset(shm, 0, sizeof(*shm));
    fflush(NULL);
    start = now();
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "[----] fork: %s\n[FAIL] %s::%s: CRASH!\n",
                strerror(errno), t->suite, t->name);
        return R_CRASH;
    }
    if (pid == 0) {
        /* Die with the runner (meson's timeout kills only us). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != runner)
            _exit(127);
        if (want_signal) {
            /* An expected crash needs no core dump. */
            struct rlimit rl = { 0, 0 };
            setrlimit(RLIMIT_CORE, &rl);
        }
        shm->pid = getpid();
#ifdef CRS_TSAN
        __sanitizer_set_death_callback(on_sanitizer_death);
#endif
        cur_test = t;
        cur_suite = s;
        __atomic_store_n(&shm->phase, PH_SETUP, __ATOMIC_RELAXED);
        if (sd && sd->init)
            sd->init();
        if (td->init)
            td->init();
        __atomic_store_n(&shm->phase, PH_BODY, __ATOMIC_RELAXED);
        t->fn();
        __atomic_store_n(&shm->phase, PH_TEARDOWN, __ATOMIC_RELAXED);
        run_fini();
        __atomic_store_n(&shm->phase, PH_DONE, __ATOMIC_RELAXED);
        exit(0); /* not _exit: TSan's exit-time checks and exitcode run */
    }

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "[----] waitpid: %s\n", strerror(errno));
            status = 0;
            break;
        }
        if (timeout > 0 && now() - start >= timeout) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            timed_out = 1;
            break;
        }
        usleep(delay);
        if (delay < 10000)
            delay *= 2;
    }
    elapsed = now() - start;

    o.n = 0;
    {
        int failed = shm->failed, tsan = shm->tsan_reports;
        int died = shm->tsan_died;
        int phase = shm->phase;
        const char *where = phase == PH_SETUP ? "setup"
                            : phase == PH_TEARDOWN ? "teardown" : NULL;
        enum outcome res;
        const char *file = shm->file ? shm->file : t->file;
        unsigned line = shm->file ? shm->line : t->line;

        if (timed_out) {
            bprintf(&o, "[FAIL] %s::%s: Timed out. (%3.2fs)\n", t->suite,
                    t->name, elapsed);
            res = R_CRASH;
        } else if ((WIFSIGNALED(status) && WTERMSIG(status) != want_signal) ||
                   (died && !tsan && !failed)) {
            bprintf(&o, "[----] %s:%u: Unexpected signal caught below this "
                    "line!\n", file, line);
            if (where)
                bprintf(&o, "[----] Warning! The test `%s::%s` crashed "
                        "during its %s.\n", t->suite, t->name, where);
            if (WIFSIGNALED(status))
                bprintf(&o, "[FAIL] %s::%s: CRASH! (SIG%s) (%3.2fs)\n",
                        t->suite, t->name, signame(WTERMSIG(status)),
                        elapsed);
            else
                bprintf(&o, "[FAIL] %s::%s: CRASH! (ended by "
                        "ThreadSanitizer, exit status %d: see its report "
                        "above) (%3.2fs)\n", t->suite, t->name,
                        WEXITSTATUS(status), elapsed);
            res = R_CRASH;
        } else {
            /* Either the expected signal or a normal exit. */
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            char why[256] = "";

            if (failed > 0)
                snprintf(why, sizeof(why), "%d assertion(s) failed", failed);
            else if (tsan > 0)
                snprintf(why, sizeof(why),
                         "ThreadSanitizer reported %d warning(s)", tsan);
            else if (WIFEXITED(status) && want_signal)
                snprintf(why, sizeof(why), "expected signal SIG%s, but the "
                         "test exited with status %d",
                         signame(want_signal), code);
            else if (WIFEXITED(status) && code != want_exit) {
                if (where)
                    bprintf(&o, "[----] Warning! The test `%s::%s` exited "
                            "during its %s.\n", t->suite, t->name, where);
                snprintf(why, sizeof(why), "exited with status %d, "
                         "expected %d%s", code, want_exit,
                         code == 66 ? " (66 is ThreadSanitizer's exit code "
                                      "after a report)" : "");
            }
            if (why[0]) {
                bprintf(&o, "[FAIL] %s::%s: %s (%3.2fs)\n", t->suite,
                        t->name, why, elapsed);
                res = R_FAIL;
            } else if (shm->skipped) {
                bprintf(&o, "[SKIP] %s::%s: %s\n", t->suite, t->name,
                        shm->skip_msg[0] ? shm->skip_msg
                                         : "Test was skipped");
                res = R_SKIP;
            } else {
                bprintf(&o, "[PASS] %s::%s: (%3.2fs)\n", t->suite, t->name,
                        elapsed);
                res = R_PASS;
            }
        }
        bflush(&o);
        return res;
    }
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--filter=GLOB] [--timeout=SECONDS] [--fail-fast] "
            "[--list]\n"
            "  deferpool's Criterion-compatible runner for TSan builds.\n"
            "  GLOB matches \"suite/name\".  --jobs and --verbose are "
            "accepted and ignored.\n", prog);
}

/* "--name=value", or "--name value" (advancing *i). */
static const char *optval(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);

    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

int main(int argc, char **argv)
{
    const char *filter = NULL, *v;
    double dflt_timeout = 0;
    int fail_fast = 0, list = 0;
    size_t n = 0, tested = 0, passed = 0, failed = 0, crashed = 0;
    struct entry *all;
    const char *last_suite = NULL;

    for (int i = 1; i < argc; i++) {
        if ((v = optval(argc, argv, &i, "--filter")) ||
            (v = optval(argc, argv, &i, "--pattern")))
            filter = v;
        else if ((v = optval(argc, argv, &i, "--timeout")))
            dflt_timeout = atof(v);
        else if ((v = optval(argc, argv, &i, "--jobs")) ||
                 (v = optval(argc, argv, &i, "-j")))
            ; /* always one at a time */
        else if (strncmp(argv[i], "-j", 2) == 0 ||
                 strncmp(argv[i], "--verbose", 9) == 0)
            ; /* -jN; always verbose */
        else if (strcmp(argv[i], "--fail-fast") == 0)
            fail_fast = 1;
        else if (strcmp(argv[i], "--list") == 0 || strcmp(argv[i], "-l") == 0)
            list = 1;
        else if (strcmp(argv[i], "--help") == 0 ||
                 strcmp(argv[i], "-h") == 0) {
            usage(argv[0]);
            return 0;
        } else
            fprintf(stderr, "[WARN] ignoring unsupported option %s\n",
                    argv[i]);
    }

    all = calloc(test_count ? test_count : 1, sizeof(*all));
    if (!all) {
        perror("calloc");
        return 1;
    }
    for (const struct crs_test *t = test_list; t; t = t->next) {
        char id[512];

        snprintf(id, sizeof(id), "%s/%s", t->suite, t->name);
        /* Criterion's filters are extended globs (!(...), @(...)). */
        if (filter && fnmatch(filter, id, FNM_EXTMATCH) != 0) {
            /* As Criterion --verbose: a test filtered out is a skipped
             * test (scripts/test.sh counts them). */
            if (!list)
                fprintf(stderr, "[SKIP] %s::%s: filtered out\n", t->suite,
                        t->name);
            continue;
        }
        all[n].test = t;
        for (const struct crs_suite *s = suite_list; s; s = s->next)
            if (strcmp(s->name, t->suite) == 0)
                all[n].suite = s;
        n++;
    }
    qsort(all, n, sizeof(*all), entry_cmp);

    if (list) {
        for (size_t i = 0; i < n; i++) {
            if (!last_suite || strcmp(last_suite, all[i].test->suite) != 0)
                printf("%s:\n", all[i].test->suite);
            last_suite = all[i].test->suite;
            printf("  %s\n", all[i].test->name);
        }
        free(all);
        return 0;
    }

    shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) {
        perror("mmap");
        return 1;
    }

    fprintf(stderr, "[----] deferpool TSan test runner "
            "(tests/tsan-criterion: a Criterion-compatible shim, not "
            "Criterion)\n");
    for (size_t i = 0; i < n; i++) {
        const struct crs_test *t = all[i].test;
        const struct crs_suite *s = all[i].suite;
        enum outcome r;

        if (!last_suite || strcmp(last_suite, t->suite) != 0) {
            size_t k = 0;

            for (size_t j = i; j < n && strcmp(all[j].test->suite,
                                               t->suite) == 0; j++)
                k++;
            fprintf(stderr, "[====] Running %zu test%s from %s:\n", k,
                    k == 1 ? "" : "s", t->suite);
            if (s && s->data->description)
                fprintf(stderr, "[----]   %s\n", s->data->description);
        }
        last_suite = t->suite;

        if (t->data->disabled || (s && s->data->disabled)) {
            fprintf(stderr, "[SKIP] %s::%s: Test is disabled\n", t->suite,
                    t->name);
            continue;
        }
        fprintf(stderr, "[RUN ] %s::%s\n", t->suite, t->name);
        if (t->data->description)
            fprintf(stderr, "[----]   %s\n", t->data->description);

        r = run_test(t, s, dflt_timeout);
        if (r == R_SKIP)
            continue;
        tested++;
        if (r == R_PASS)
            passed++;
        else
            failed++;
        if (r == R_CRASH)
            crashed++;
        if (r != R_PASS && fail_fast)
            break;
    }

    /* Criterion's synthesis line; Failing includes Crashing. */
    fprintf(stderr, "[====] Synthesis: Tested: %zu | Passing: %zu | "
            "Failing: %zu | Crashing: %zu \n", tested, passed, failed,
            crashed);
    free(all);
    munmap(shm, sizeof(*shm));
    return failed ? 1 : 0;
}
