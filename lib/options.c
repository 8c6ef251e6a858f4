/*
 * options.c -- the option table, read once from DEFERPOOL_CONF
 * ("key:value,key:value").  docs/tuning.md mirrors the table row for row.
 * A bad key or value is reported on stderr and the default is kept.
 */
#include "dp_internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Written once under dp_opt_once, read-only afterwards. */
static struct dp_options dp_opt = {
    .background_thread = true,
#ifdef DP_DEBUG_DEFAULT
    .debug = true,
#else
    .debug = false,
#endif
    .reclaim_interval_ns = 100000000ull,          /* 100 ms */
    .reclaim_age_ns = DP_DEFAULT_RECLAIM_AGE_NS,  /* 1 s    */
};
static pthread_once_t dp_opt_once = PTHREAD_ONCE_INIT;

enum opt_kind { OPT_BOOL, OPT_MS, OPT_THP };

static const struct opt_row {
    const char *key;
    enum opt_kind kind;
    size_t off;
    const char *doc;
} opt_table[] = {
    {"background_thread", OPT_BOOL,
     offsetof(struct dp_options, background_thread),
     "start the reclaim thread with the first pool"},
    {"debug", OPT_BOOL, offsetof(struct dp_options, debug),
     "validate every put in every pool (DP_POOL_DEBUG)"},
    {"reclaim_interval_ms", OPT_MS,
     offsetof(struct dp_options, reclaim_interval_ns),
     "reclaim thread period"},
    {"reclaim_age_ms", OPT_MS, offsetof(struct dp_options, reclaim_age_ns),
     "default age after which an empty page goes back"},
    {"stats_print", OPT_BOOL, offsetof(struct dp_options, stats_print),
     "drop-in malloc: print statistics to stderr at exit"},
    {"thp", OPT_THP, offsetof(struct dp_options, thp),
     "auto, never or default: keep transparent huge pages off page and "
     "chunk mappings (never), leave the system's policy (default), or "
     "never when the system's policy is always (auto)"},
};

/* The system's THP policy is "always": every anonymous mapping may be
 * backed by huge pages, whether or not it asked.  Read with plain
 * system calls: this runs inside the drop-in malloc's first call. */
static bool thp_always(void)
{
    char buf[128];
    int fd = open("/sys/kernel/mm/transparent_hugepage/enabled",
                  O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    return strstr(buf, "[always]") != NULL;
}

static void warn(const char *what, const char *s, size_t n)
{
    fprintf(stderr, "deferpool: DEFERPOOL_CONF: %s '%.*s', ignored\n", what,
            (int)n, s);
}

static void set_one(const char *kv, size_t n)
{
    const char *colon = memchr(kv, ':', n);
    if (!colon) {
        warn("expected key:value, got", kv, n);
        return;
    }
    size_t klen = (size_t)(colon - kv);
    const char *val = colon + 1;
    size_t vlen = n - klen - 1;
    for (size_t i = 0; i < sizeof(opt_table) / sizeof(opt_table[0]); i++) {
        const struct opt_row *r = &opt_table[i];
        if (strlen(r->key) != klen || memcmp(r->key, kv, klen) != 0)
            continue;
        char buf[32];
        if (vlen == 0 || vlen >= sizeof(buf)) {
            warn("bad value in", kv, n);
            return;
        }
        memcpy(buf, val, vlen);
        buf[vlen] = 0;
        char *end;
        if (r->kind == OPT_THP) {
            int v;
            if (!strcmp(buf, "auto"))
                v = DP_THP_AUTO;
            else if (!strcmp(buf, "never"))
                v = DP_THP_NEVER;
            else if (!strcmp(buf, "default"))
                v = DP_THP_DEFAULT;
            else {
                warn("bad thp value (auto, never, default) in", kv, n);
                return;
            }
            *(int *)((char *)&dp_opt + r->off) = v;
        } else if (r->kind == OPT_BOOL) {
            bool b;
            if (!strcmp(buf, "1") || !strcmp(buf, "true"))
                b = true;
            else if (!strcmp(buf, "0") || !strcmp(buf, "false"))
                b = false;
            else {
                warn("bad boolean in", kv, n);
                return;
            }
            *(bool *)((char *)&dp_opt + r->off) = b;
        } else {
            errno = 0;
            unsigned long long ms = strtoull(buf, &end, 10);
            if (errno || *end || buf[0] == '-' || ms == 0 ||
                ms > UINT64_MAX / 1000000ull) {
                warn("bad number of milliseconds in", kv, n);
                return;
            }
            *(uint64_t *)((char *)&dp_opt + r->off) = ms * 1000000ull;
        }
        return;
    }
    warn("unknown option", kv, klen);
}

static void parse(void)
{
    const char *s = getenv("DEFERPOOL_CONF");
    while (s && *s) {
        size_t n = strcspn(s, ",");
        if (n)
            set_one(s, n);
        s += n;
        if (*s == ',')
            s++;
    }
    dp_opt.nohuge = dp_opt.thp == DP_THP_NEVER ||
                    (dp_opt.thp == DP_THP_AUTO && thp_always());
}

const struct dp_options *dp_options(void)
{
    pthread_once(&dp_opt_once, parse);
    return &dp_opt;
}
