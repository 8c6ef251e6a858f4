/*
 * options.c -- the option table, read once from DEFERPOOL_CONF
 * ("key:value,key:value").  docs/tuning.md mirrors the table row for row.
 * A bad key or value is reported on stderr and the default is kept; the
 * word `help` prints the table, with the values in effect, to stderr.
 * Also here: the stats_print hooks that run when libdeferpool is loaded
 * and unloaded (end of file).
 */
#include "options.h"

#include "deferpool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Written once under dp_opt_once, read-only afterwards. */
static struct dp_options dp_opt = {
    .background_thread = true,
#ifdef DP_DEBUG_DEFAULT
    .debug = DP_POOL_DEBUG,
#else
    .debug = 0,
#endif
    .reclaim_interval_ns = 100000000ull,          /* 100 ms */
    .reclaim_age_ns = DP_DEFAULT_RECLAIM_AGE_NS,  /* 1 s    */
    .populate_bytes = 128u << 10,                 /* 128 KiB */
};
static pthread_once_t dp_opt_once = PTHREAD_ONCE_INIT;

/* A value given as a word: each option of such a kind has a table of
 * the words it accepts, the first word for each value being the one
 * `help` shows.  Constant. */
struct opt_word {
    const char *word;
    int value;
};
static const struct opt_word bool_words[] = {
    {"0", 0}, {"1", 1}, {"false", 0}, {"true", 1}, {NULL, 0}};
static const struct opt_word thp_words[] = {{"auto", DP_THP_AUTO},
                                            {"never", DP_THP_NEVER},
                                            {"default", DP_THP_DEFAULT},
                                            {NULL, 0}};
static const struct opt_word stats_words[] = {
    {"0", DP_SP_OFF},   {"1", DP_SP_TEXT},     {"json", DP_SP_JSON},
    {"false", DP_SP_OFF}, {"true", DP_SP_TEXT}, {"text", DP_SP_TEXT},
    {NULL, 0}};
/* debug: words joined by '+', each adding flags. */
static const struct opt_word debug_words[] = {
    {"0", 0},
    {"1", DP_POOL_DEBUG},
    {"redzone", DP_POOL_REDZONE},
    {"junk", DP_POOL_JUNK},
    {"audit", DP_POOL_AUDIT},
    {"all", DP_POOL_DEBUG | DP_POOL_AUDIT},
    {"false", 0},
    {"true", DP_POOL_DEBUG},
    {NULL, 0}};

enum opt_kind { OPT_BOOL, OPT_MS, OPT_KIB, OPT_THP, OPT_STATS, OPT_DEBUG };

/* Per kind: the accepted words (NULL: a number), what `help` shows, the
 * warning for a bad value, and for a number what one of it is stored as
 * (a period in ns, a size in bytes) and whether 0 is allowed (0 ms is no
 * period; 0 KiB turns population off). */
static const struct opt_kind_info {
    const struct opt_word *words;
    const char *shows;
    const char *bad;
    uint64_t unit;
    bool zero_ok;
} opt_kinds[] = {
    [OPT_BOOL] = {bool_words, "0|1", "bad boolean in"},
    [OPT_MS] = {NULL, "milliseconds", "bad number of milliseconds in",
                1000000u, false},
    [OPT_KIB] = {NULL, "KiB", "bad number of KiB in", 1024u, true},
    [OPT_THP] = {thp_words, "auto|never|default",
                 "bad thp value (auto, never, default) in"},
    [OPT_STATS] = {stats_words, "0|1|json",
                   "bad stats_print value (0, 1, json) in"},
    [OPT_DEBUG] = {debug_words, "0|1|redzone+junk+audit|all",
                   "bad debug value (0, 1, all, or redzone, junk, audit "
                   "joined by +) in"},
};

/* The word for value v, or NULL when it has none. */
static const char *word_of(const struct opt_word *w, int v)
{
    for (; w->word; w++)
        if (w->value == v)
            return w->word;
    return NULL;
}

/* One row per option, indexed by enum dp_opt (options.h): the parser,
 * `help` and the is-set bit all read this table.  Constant. */
static const struct opt_row {
    const char *key;
    enum opt_kind kind;
    size_t off;
    const char *doc;
} opt_table[DP_OPT_COUNT] = {
    [DP_OPT_BACKGROUND_THREAD] = {"background_thread", OPT_BOOL,
     offsetof(struct dp_options, background_thread),
     "start the reclaim thread with the first pool"},
    [DP_OPT_DEBUG] = {"debug", OPT_DEBUG, offsetof(struct dp_options, debug),
     "debug mode for every pool: 1 (DP_POOL_DEBUG: put checks, redzones, "
     "junk), all (and audit), or redzone, junk, audit joined by +"},
    [DP_OPT_RECLAIM_INTERVAL] = {"reclaim_interval_ms", OPT_MS,
     offsetof(struct dp_options, reclaim_interval_ns),
     "reclaim thread period"},
    [DP_OPT_RECLAIM_AGE] = {"reclaim_age_ms", OPT_MS,
     offsetof(struct dp_options, reclaim_age_ns),
     "default age after which an empty page goes back"},
    [DP_OPT_STATS_PRINT] = {"stats_print", OPT_STATS,
     offsetof(struct dp_options, stats_print),
     "print statistics to stderr at exit: 0, 1 (text) or json; every "
     "live pool (libdeferpool), or the drop-in malloc's"},
    [DP_OPT_THP] = {"thp", OPT_THP, offsetof(struct dp_options, thp),
     "auto, never or default: keep transparent huge pages off page and "
     "chunk mappings (never), leave the system's policy (default), or "
     "never when the system's policy is always, with huge pages for the "
     "drop-in malloc's chunks once its heap holds 4 MiB (auto)"},
    [DP_OPT_LEAKS] = {"leaks", OPT_BOOL, offsetof(struct dp_options, leaks),
     "print the leak report of every live debug pool at exit (default: "
     "on when debug includes audit)"},
    [DP_OPT_POPULATE] = {"populate_kib", OPT_KIB,
     offsetof(struct dp_options, populate_bytes),
     "the drop-in malloc faults in the pages of a block of at most this "
     "many KiB with one madvise when they were never touched (0: never)"},
};

/* The system's THP policy (/sys/kernel/mm/transparent_hugepage/enabled):
 * "always" backs every anonymous mapping with huge pages where it can,
 * "madvise" only the ones advised MADV_HUGEPAGE.  Read with plain system
 * calls: this runs inside the drop-in malloc's first call. */
enum thp_sys { THP_SYS_NEVER, THP_SYS_MADVISE, THP_SYS_ALWAYS };

static enum thp_sys thp_policy(void)
{
    char buf[128];
    int fd = open("/sys/kernel/mm/transparent_hugepage/enabled",
                  O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return THP_SYS_NEVER;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return THP_SYS_NEVER;
    buf[n] = 0;
    return strstr(buf, "[always]")    ? THP_SYS_ALWAYS
           : strstr(buf, "[madvise]") ? THP_SYS_MADVISE
                                      : THP_SYS_NEVER;
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
    for (size_t i = 0; i < DP_OPT_COUNT; i++) {
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
        const struct opt_kind_info *k = &opt_kinds[r->kind];
        char *at = (char *)&dp_opt + r->off;
        if (r->kind == OPT_DEBUG) {
            unsigned v = 0;
            for (char *t = buf, *e; t; t = e) {
                if ((e = strchr(t, '+')) != NULL)
                    *e++ = 0;
                const struct opt_word *w = k->words;
                while (w->word && strcmp(w->word, t) != 0)
                    w++;
                if (!w->word) {
                    warn(k->bad, kv, n);
                    return;
                }
                v |= (unsigned)w->value;
            }
            *(unsigned *)at = v;
        } else if (k->words) {
            const struct opt_word *w = k->words;
            while (w->word && strcmp(w->word, buf) != 0)
                w++;
            if (!w->word) {
                warn(k->bad, kv, n);
                return;
            }
            if (r->kind == OPT_BOOL)
                *(bool *)at = w->value;
            else
                *(int *)at = w->value;
        } else {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(buf, &end, 10);
            if (errno || *end || buf[0] == '-' || (v == 0 && !k->zero_ok) ||
                v > UINT64_MAX / k->unit) {
                warn(k->bad, kv, n);
                return;
            }
            *(uint64_t *)at = v * k->unit;
        }
        dp_opt.set |= UINT32_C(1) << i;
        return;
    }
    warn("unknown option", kv, klen);
}

/* The debug option's value v as words. */
static void debug_words_of(unsigned v, char *out, size_t len)
{
    const char *w = word_of(debug_words, (int)v);
    if (w) {
        snprintf(out, len, "%s", w);
        return;
    }
    if (v & DP_POOL_DEBUG)
        v |= DP_POOL_REDZONE | DP_POOL_JUNK;
    snprintf(out, len, "%s%s%s%s%s", v & DP_POOL_REDZONE ? "redzone" : "",
             (v & DP_POOL_REDZONE) && (v & (DP_POOL_JUNK | DP_POOL_AUDIT))
                 ? "+" : "",
             v & DP_POOL_JUNK ? "junk" : "",
             (v & DP_POOL_JUNK) && (v & DP_POOL_AUDIT) ? "+" : "",
             v & DP_POOL_AUDIT ? "audit" : "");
}

/* DEFERPOOL_CONF=help: the table, with the values in effect. */
static void print_help(void)
{
    fprintf(stderr, "deferpool %s: DEFERPOOL_CONF=key:value,key:value "
                    "(docs/tuning.md)\n",
            dp_version());
    for (size_t i = 0; i < DP_OPT_COUNT; i++) {
        const struct opt_row *r = &opt_table[i];
        const struct opt_kind_info *k = &opt_kinds[r->kind];
        const char *at = (const char *)&dp_opt + r->off;
        char val[32];
        if (r->kind == OPT_DEBUG)
            debug_words_of(*(const unsigned *)at, val, sizeof(val));
        else if (!k->words)
            snprintf(val, sizeof(val), "%llu",
                     (unsigned long long)(*(const uint64_t *)at / k->unit));
        else
            snprintf(val, sizeof(val), "%s",
                     word_of(k->words, r->kind == OPT_BOOL ? *(const bool *)at
                                                           : *(const int *)at));
        fprintf(stderr, "  %-20s %-18s now %-8s %s\n", r->key, k->shows, val,
                r->doc);
    }
}

static void parse(void)
{
    const char *s = getenv("DEFERPOOL_CONF");
    bool help = false;
    while (s && *s) {
        size_t n = strcspn(s, ",");
        if (n == 4 && !memcmp(s, "help", 4))
            help = true;
        else if (n)
            set_one(s, n);
        s += n;
        if (*s == ',')
            s++;
    }
    if (!(dp_opt.set & (UINT32_C(1) << DP_OPT_LEAKS)))
        dp_opt.leaks = (dp_opt.debug & DP_POOL_AUDIT) != 0;
    enum thp_sys sys = thp_policy();
    dp_opt.nohuge = dp_opt.thp == DP_THP_NEVER ||
                    (dp_opt.thp == DP_THP_AUTO && sys == THP_SYS_ALWAYS);
    dp_opt.huge_chunks = dp_opt.thp != DP_THP_AUTO ? DP_HUGE_NONE
                         : sys == THP_SYS_MADVISE  ? DP_HUGE_ADVISE
                         : sys == THP_SYS_ALWAYS   ? DP_HUGE_LEAVE
                                                   : DP_HUGE_NONE;
    if (help)
        print_help();
}

#define DP_STR2(x) #x
#define DP_STR(x) DP_STR2(x)

/* Here, at the bottom of the graph, because help prints it. */
const char *dp_version(void)
{
    return DP_STR(DP_VERSION_MAJOR) "." DP_STR(DP_VERSION_MINOR) "." DP_STR(
        DP_VERSION_PATCH);
}

const struct dp_options *dp_options(void)
{
    pthread_once(&dp_opt_once, parse);
    return &dp_opt;
}

