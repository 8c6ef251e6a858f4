/*
 * latency.c -- latency-<allocator>: how long each single put takes while
 * pages empty after an idle gap.
 *
 * Each round gets N 64-byte objects, sleeps a random 50-200 ms (so time-
 * based purging -- jemalloc's decay, mimalloc's delayed purge, deferpool's
 * reclaim age -- has something to act on), then puts all N in the order
 * they were got, timing every put on its own (timing.h).  The put phase
 * is bracketed by two marker writes to /dev/null:
 *     dpb-latency free-begin round=R tid=T
 *     dpb-latency free-end round=R tid=T
 * Run under strace -f, everything thread T does between them is a system
 * call made by a put (report.py counts them); nothing else in the phase
 * enters the kernel on purpose.
 *
 * Latencies are kept exactly (cycles, as uint32) in memory that comes from
 * mmap, not from the allocator under test; percentiles are exact.
 */
#include "backends.h"
#include "timing.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DIRECT 65536 /* cycle values below this are counted directly */

static void *xmmap(size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        perror("latency: mmap");
        exit(2);
    }
    return p;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Exact order statistics from a direct count table plus sorted spill. */
typedef struct {
    uint64_t *count; /* [DIRECT] */
    uint32_t *big;   /* sorted values >= DIRECT */
    size_t nbig, n;
} dist_t;

static uint32_t dist_at(const dist_t *d, uint64_t rank) { /* 0-based */
    uint64_t acc = 0;
    for (uint32_t v = 0; v < DIRECT; v++) {
        acc += d->count[v];
        if (acc > rank)
            return v;
    }
    return d->big[rank - acc];
}

static uint32_t dist_q(const dist_t *d, double q) {
    uint64_t rank = (uint64_t)ceil(q * (double)d->n);
    if (rank > 0)
        rank--;
    if (rank >= d->n)
        rank = d->n - 1;
    return dist_at(d, rank);
}

/* Histogram for plotting: values rounded to 3 significant digits (ns). */
static void write_hist(FILE *f, const dist_t *d, double tpn) {
    fprintf(f, "ns,count\n");
    double cur = -1;
    uint64_t cnt = 0;
    for (size_t i = 0, v = 0; v < DIRECT || i < d->nbig;) {
        double ns;
        uint64_t c;
        if (v < DIRECT) {
            c = d->count[v];
            ns = v / tpn;
            v++;
            if (c == 0)
                continue;
        } else {
            c = 1;
            ns = d->big[i++] / tpn;
        }
        double mag = ns < 1 ? 1 : pow(10, floor(log10(ns)) - 2);
        double r = round(ns / mag) * mag;
        if (r != cur) {
            if (cnt)
                fprintf(f, "%.6g,%" PRIu64 "\n", cur, cnt);
            cur = r;
            cnt = 0;
        }
        cnt += c;
    }
    if (cnt)
        fprintf(f, "%.6g,%" PRIu64 "\n", cur, cnt);
}

/* One write(2) and nothing else: formatting happens in user space first
 * (dprintf would add fstat/ioctl/lseek calls inside the phase). */
static void mark(int fd, const char *what, long round, long tid) {
    char buf[96];
    int n = snprintf(buf, sizeof(buf), "dpb-latency %s round=%ld tid=%ld\n",
                     what, round, tid);
    if (write(fd, buf, (size_t)n) != n)
        abort();
}

static void usage(void) {
    fprintf(stderr,
            "usage: latency-%s [--rounds R] [--objects N] [--idle-min-ms A]\n"
            "         [--idle-max-ms B] [--seed S] [--json FILE] [--hist FILE]\n",
            dpb_backend.name);
    exit(2);
}

int main(int argc, char **argv) {
    long rounds = 20, nobj = 262144, idle_min = 50, idle_max = 200;
    uint64_t seed = 1;
    const char *json = NULL, *hist = NULL;
    static const struct option opts[] = {
        {"rounds", 1, 0, 'r'},      {"objects", 1, 0, 'n'},
        {"idle-min-ms", 1, 0, 'a'}, {"idle-max-ms", 1, 0, 'b'},
        {"seed", 1, 0, 's'},        {"json", 1, 0, 'j'},
        {"hist", 1, 0, 'h'},        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r': rounds = atol(optarg); break;
        case 'n': nobj = atol(optarg); break;
        case 'a': idle_min = atol(optarg); break;
        case 'b': idle_max = atol(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 0); break;
        case 'j': json = optarg; break;
        case 'h': hist = optarg; break;
        default: usage();
        }
    }
    if (rounds < 1 || nobj < 1 || idle_min < 0 || idle_max < idle_min)
        usage();

    char desc[512];
    dpb_backend_setup(64, 0, desc, sizeof(desc));
    int marker = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (marker < 0) {
        perror("latency: /dev/null");
        return 2;
    }
    long tid = syscall(SYS_gettid);
    double tpn = dpb_tsc_per_ns();

    size_t total = (size_t)rounds * (size_t)nobj;
    void **objs = xmmap((size_t)nobj * sizeof(void *));
    uint32_t *lat = xmmap(total * sizeof(uint32_t));

    /* Cost of the timing itself: an empty bracket, same code shape. */
    uint32_t ovh[4096];
    for (int i = 0; i < 4096; i++) {
        uint64_t t0 = dpb_tsc_begin();
        uint64_t t1 = dpb_tsc_end();
        ovh[i] = (uint32_t)(t1 - t0);
    }
    qsort(ovh, 4096, sizeof(*ovh), cmp_u32);

    size_t k = 0;
    for (long r = 0; r < rounds; r++) {
        for (long i = 0; i < nobj; i++) {
            void *p = dpb_get();
            if (p == NULL)
                dpb_oom();
            *(volatile uint64_t *)p = (uint64_t)i;
            objs[i] = p;
        }
        uint64_t idle = (uint64_t)idle_min +
                        (idle_max > idle_min
                             ? dpb_rand(&seed) % (uint64_t)(idle_max - idle_min + 1)
                             : 0);
        dpb_sleep_ns(idle * 1000000u);

        mark(marker, "free-begin", r, tid);
        for (long i = 0; i < nobj; i++) {
            void *p = objs[i];
            uint64_t t0 = dpb_tsc_begin();
            dpb_put(p);
            uint64_t t1 = dpb_tsc_end();
            uint64_t d = t1 - t0;
            lat[k++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        }
        mark(marker, "free-end", r, tid);
    }

    dist_t d = {.n = total};
    d.count = xmmap(DIRECT * sizeof(uint64_t));
    d.big = lat; /* compact the spill in place */
    long double sum = 0;
    uint64_t over1 = 0, over10 = 0, over100 = 0;
    for (size_t i = 0; i < total; i++) {
        uint32_t v = lat[i];
        double ns = v / tpn;
        sum += ns;
        over1 += ns > 1e3;
        over10 += ns > 1e4;
        over100 += ns > 1e5;
        if (v < DIRECT)
            d.count[v]++;
        else
            d.big[d.nbig++] = v;
    }
    qsort(d.big, d.nbig, sizeof(*d.big), cmp_u32);

#define NS(q) (dist_q(&d, q) / tpn)
    double p50 = NS(0.5), p90 = NS(0.9), p99 = NS(0.99), p999 = NS(0.999),
           p9999 = NS(0.9999), mx = dist_at(&d, total - 1) / tpn;
    printf("%-10s puts=%zu p50=%.1f p99=%.1f p99.9=%.1f p99.99=%.1f "
           "max=%.1f ns (timer overhead p50 %.1f ns)\n",
           dpb_backend.name, total, p50, p99, p999, p9999, mx, ovh[2048] / tpn);

    if (json != NULL) {
        FILE *f = fopen(json, "w");
        if (f == NULL) {
            fprintf(stderr, "latency: %s: %s\n", json, strerror(errno));
            return 2;
        }
        fprintf(f,
                "{\n  \"allocator\": \"%s\",\n  \"version\": \"%s\",\n"
                "  \"api\": \"%s\",\n  \"wiring\": \"%s\",\n"
                "  \"objsize\": 64,\n  \"rounds\": %ld,\n  \"objects\": %ld,\n"
                "  \"idle_ms\": [%ld, %ld],\n  \"puts\": %zu,\n"
                "  \"tsc_per_ns\": %.6f,\n  \"timer_overhead_ns_p50\": %.2f,\n"
                "  \"mean_ns\": %.2f,\n  \"p50_ns\": %.2f,\n  \"p90_ns\": %.2f,\n"
                "  \"p99_ns\": %.2f,\n  \"p999_ns\": %.2f,\n"
                "  \"p9999_ns\": %.2f,\n  \"max_ns\": %.2f,\n"
                "  \"over_1us\": %" PRIu64 ",\n  \"over_10us\": %" PRIu64 ",\n"
                "  \"over_100us\": %" PRIu64 "\n}\n",
                dpb_backend.name, dpb_backend.version(), dpb_backend.how, desc, rounds, nobj, idle_min,
                idle_max, total, tpn, ovh[2048] / tpn,
                (double)(sum / (long double)total), p50, p90, p99, p999, p9999,
                mx, over1, over10, over100);
        fclose(f);
    }
    if (hist != NULL) {
        FILE *f = fopen(hist, "w");
        if (f == NULL) {
            fprintf(stderr, "latency: %s: %s\n", hist, strerror(errno));
            return 2;
        }
        write_hist(f, &d, tpn);
        fclose(f);
    }
    dpb_backend.fini();
    return 0;
}
