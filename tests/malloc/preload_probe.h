/*
 * preload_probe.h -- run a probe program under LD_PRELOAD of the drop-in
 * malloc with its own DEFERPOOL_CONF, which a process reads once: the
 * tests malloc_thp, malloc_populate and malloc_huge run one per case;
 * and the machine's THP policy, which the first and the last expect.
 */
#ifndef DP_PRELOAD_PROBE_H
#define DP_PRELOAD_PROBE_H

#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The machine's THP policy, which the probes' expectations follow:
 * "always", "madvise" or "never" (also when it cannot be read). */
static inline const char *pp_thp_policy(void)
{
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    char buf[128] = "";
    if (!f)
        return "never";
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = 0;
    fclose(f);
    return strstr(buf, "[always]")    ? "always"
           : strstr(buf, "[madvise]") ? "madvise"
                                      : "never";
}

/* Run `DEFERPOOL_CONF='conf' LD_PRELOAD=$DP_MALLOC_LIB $<exe_var> args`,
 * asserting that it exits with 0; its stdout into out and its stderr
 * into err, each cut to fit and NUL-terminated. */
static void pp_run(const char *conf, const char *exe_var, const char *args,
                   char *out, size_t outlen, char *err, size_t errlen)
{
    const char *lib = getenv("DP_MALLOC_LIB");
    const char *exe = getenv(exe_var);
    cr_assert(lib && access(lib, R_OK) == 0, "DP_MALLOC_LIB not set");
    cr_assert(exe && access(exe, X_OK) == 0, "%s not set", exe_var);
    char errf[] = "/tmp/dpm-probe-XXXXXX";
    int fd = mkstemp(errf);
    cr_assert_geq(fd, 0);
    close(fd);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "DEFERPOOL_CONF='%s' LD_PRELOAD='%s' '%s' %s 2>'%s'", conf, lib,
             exe, args, errf);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t k = fread(out, 1, outlen - 1, p);
    out[k] = 0;
    cr_assert_eq(pclose(p), 0, "%s failed", cmd);
    FILE *e = fopen(errf, "r");
    cr_assert_not_null(e);
    k = fread(err, 1, errlen - 1, e);
    err[k] = 0;
    fclose(e);
    unlink(errf);
}

#endif
