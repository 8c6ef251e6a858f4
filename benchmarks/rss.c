/*
 * rss.c -- rss-<allocator>: resident memory over time for a bursty load.
 *
 * Timeline (defaults): 0.5 s idle baseline; then, per cycle, get 256 MiB
 * of 64-byte objects in 4 bursts 100 ms apart, hold 200 ms, put them all,
 * and idle 2 s; 2 cycles.  A sampler thread reads /proc/self/statm every
 * 50 ms.  Objects are chained through their first word, so the program
 * holds no pointer array: the RSS is the allocator's (plus a constant for
 * the binary and its libraries, visible in the baseline).
 *
 * deferpool's pool gets reclaim_age_ns = --reclaim-age-ms (default 500 ms,
 * against the library default of 1 s) so that its reclaim thread's return
 * to the low-water mark falls well inside the idle window; the other
 * allocators run with their defaults.
 */
#include "backends.h"
#include "timing.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { PH_BASELINE, PH_ALLOC, PH_HOLD, PH_FREE, PH_IDLE };
static const char *const phase_name[] = {"baseline", "alloc", "hold", "free",
                                         "idle"};

typedef struct {
    uint32_t t_ms, phase, cycle;
    uint64_t rss_kib;
} sample_t;

static _Atomic int phase = PH_BASELINE;
static _Atomic int cycle_no = 0;
static _Atomic int stop = 0;
static sample_t *samples; /* from mmap, not from the allocator under test */
static size_t nsamples, maxsamples;
static uint64_t t_start, sample_ns;
static int statm_fd;
static uint64_t page_kib;

static uint64_t rss_kib(void) {
    char buf[128];
    ssize_t n = pread(statm_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    strtoull(buf, &end, 10); /* size */
    return strtoull(end, NULL, 10) * page_kib;
}

static void *sampler(void *arg) {
    (void)arg;
    uint64_t next = t_start;
    while (!atomic_load(&stop) && nsamples < maxsamples) {
        uint64_t now = dpb_now_ns();
        samples[nsamples++] = (sample_t){
            (uint32_t)((now - t_start) / 1000000u), (uint32_t)atomic_load(&phase),
            (uint32_t)atomic_load(&cycle_no), rss_kib()};
        next += sample_ns;
        now = dpb_now_ns();
        if (next > now)
            dpb_sleep_ns(next - now);
    }
    return NULL;
}

static void usage(void) {
    fprintf(stderr,
            "usage: rss-%s [--mib M] [--cycles C] [--bursts B]\n"
            "         [--burst-gap-ms G] [--hold-ms H] [--idle-ms I]\n"
            "         [--baseline-ms L] [--sample-ms S] [--reclaim-age-ms A]\n"
            "         [--csv FILE] [--json FILE]\n",
            dpb_backend.name);
    exit(2);
}

int main(int argc, char **argv) {
    long mib = 256, cycles = 2, bursts = 4, gap_ms = 100, hold_ms = 200,
         idle_ms = 2000, base_ms = 500, smp_ms = 50, age_ms = 500;
    const char *csv = NULL, *json = NULL;
    static const struct option opts[] = {
        {"mib", 1, 0, 'm'},        {"cycles", 1, 0, 'c'},
        {"bursts", 1, 0, 'b'},     {"burst-gap-ms", 1, 0, 'g'},
        {"hold-ms", 1, 0, 'h'},    {"idle-ms", 1, 0, 'i'},
        {"baseline-ms", 1, 0, 'l'}, {"sample-ms", 1, 0, 's'},
        {"reclaim-age-ms", 1, 0, 'a'}, {"csv", 1, 0, 'C'},
        {"json", 1, 0, 'J'},       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': mib = atol(optarg); break;
        case 'c': cycles = atol(optarg); break;
        case 'b': bursts = atol(optarg); break;
        case 'g': gap_ms = atol(optarg); break;
        case 'h': hold_ms = atol(optarg); break;
        case 'i': idle_ms = atol(optarg); break;
        case 'l': base_ms = atol(optarg); break;
        case 's': smp_ms = atol(optarg); break;
        case 'a': age_ms = atol(optarg); break;
        case 'C': csv = optarg; break;
        case 'J': json = optarg; break;
        default: usage();
        }
    }
    if (mib < 1 || cycles < 1 || bursts < 1 || smp_ms < 1 || age_ms < 0)
        usage();

    char desc[512];
    dpb_backend_setup(64, (uint64_t)age_ms * 1000000u, desc, sizeof(desc));

    statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (statm_fd < 0) {
        perror("rss: /proc/self/statm");
        return 2;
    }
    page_kib = (uint64_t)sysconf(_SC_PAGESIZE) / 1024u;
    sample_ns = (uint64_t)smp_ms * 1000000u;
    long total_ms = base_ms + cycles * (bursts * gap_ms + hold_ms + idle_ms) +
                    cycles * 20000; /* slack for slow get/put phases */
    maxsamples = (size_t)(total_ms / smp_ms + 16);
    samples = mmap(NULL, maxsamples * sizeof(sample_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (samples == MAP_FAILED) {
        perror("rss: mmap");
        return 2;
    }

    size_t per_burst = (size_t)mib * 1024 * 1024 / 64 / (size_t)bursts;
    t_start = dpb_now_ns();
    pthread_t th;
    if (pthread_create(&th, NULL, sampler, NULL) != 0) {
        perror("rss: pthread_create");
        return 2;
    }
    dpb_sleep_ns((uint64_t)base_ms * 1000000u);

    uint64_t free_end_ms[64] = {0}, free_ms[64] = {0}, alloc_ms[64] = {0};
    for (long cy = 0; cy < cycles; cy++) {
        atomic_store(&cycle_no, (int)cy);
        void *head = NULL;
        atomic_store(&phase, PH_ALLOC);
        uint64_t t0 = dpb_now_ns();
        for (long bu = 0; bu < bursts; bu++) {
            for (size_t i = 0; i < per_burst; i++) {
                void **p = dpb_get();
                if (p == NULL)
                    dpb_oom();
                *p = head;
                head = p;
            }
            if (bu + 1 < bursts)
                dpb_sleep_ns((uint64_t)gap_ms * 1000000u);
        }
        atomic_store(&phase, PH_HOLD);
        dpb_sleep_ns((uint64_t)hold_ms * 1000000u);
        atomic_store(&phase, PH_FREE);
        uint64_t t1 = dpb_now_ns();
        while (head != NULL) {
            void *next = *(void **)head;
            dpb_put(head);
            head = next;
        }
        uint64_t t2 = dpb_now_ns();
        if (cy < 64) {
            alloc_ms[cy] = (t1 - t0) / 1000000u;
            free_ms[cy] = (t2 - t1) / 1000000u;
            free_end_ms[cy] = (t2 - t_start) / 1000000u;
        }
        atomic_store(&phase, PH_IDLE);
        dpb_sleep_ns((uint64_t)idle_ms * 1000000u);
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);

    /* Summary: baseline (median-free: the last baseline sample), peak,
     * RSS at the end of each idle window, and how long after the puts
     * ended RSS first came within 10% of (peak - baseline) of baseline. */
    uint64_t base = 0, peak = 0;
    for (size_t i = 0; i < nsamples; i++) {
        if (samples[i].phase == PH_BASELINE)
            base = samples[i].rss_kib;
        if (samples[i].rss_kib > peak)
            peak = samples[i].rss_kib;
    }
    uint64_t settle_limit = base + (peak - base) / 10;

    if (csv != NULL) {
        FILE *f = fopen(csv, "w");
        if (f == NULL) {
            fprintf(stderr, "rss: %s: %s\n", csv, strerror(errno));
            return 2;
        }
        fprintf(f, "t_ms,rss_kib,phase,cycle\n");
        for (size_t i = 0; i < nsamples; i++)
            fprintf(f, "%u,%llu,%s,%u\n", samples[i].t_ms,
                    (unsigned long long)samples[i].rss_kib,
                    phase_name[samples[i].phase], samples[i].cycle);
        fclose(f);
    }

    FILE *f = json ? fopen(json, "w") : NULL;
    if (json != NULL && f == NULL) {
        fprintf(stderr, "rss: %s: %s\n", json, strerror(errno));
        return 2;
    }
    if (f != NULL)
        fprintf(f,
                "{\n  \"allocator\": \"%s\",\n  \"version\": \"%s\",\n"
                "  \"wiring\": \"%s\",\n  \"mib\": %ld,\n  \"cycles\": %ld,\n"
                "  \"bursts\": %ld,\n  \"idle_ms\": %ld,\n"
                "  \"reclaim_age_ms\": %ld,\n  \"sample_ms\": %ld,\n"
                "  \"baseline_kib\": %llu,\n  \"peak_kib\": %llu,\n"
                "  \"cycle\": [",
                dpb_backend.name, dpb_backend.version(), desc, mib, cycles, bursts, idle_ms,
                age_ms, smp_ms, (unsigned long long)base,
                (unsigned long long)peak);
    printf("%-10s baseline %llu KiB, peak %llu KiB\n", dpb_backend.name,
           (unsigned long long)base, (unsigned long long)peak);
    for (long cy = 0; cy < cycles && cy < 64; cy++) {
        uint64_t idle_end = 0, cpeak = 0;
        long settle = -1;
        for (size_t i = 0; i < nsamples; i++) {
            if (samples[i].cycle != (uint32_t)cy)
                continue;
            if (samples[i].phase != PH_BASELINE &&
                samples[i].rss_kib > cpeak)
                cpeak = samples[i].rss_kib;
            if (samples[i].phase == PH_IDLE) {
                idle_end = samples[i].rss_kib;
                if (settle < 0 && samples[i].rss_kib <= settle_limit)
                    settle = (long)samples[i].t_ms - (long)free_end_ms[cy];
            }
        }
        if (settle < 0 && idle_end <= settle_limit)
            settle = 0;
        char st[32] = "null";
        if (settle >= 0)
            snprintf(st, sizeof(st), "%ld", settle);
        printf("  cycle %ld: get %llu ms, put %llu ms, peak %llu KiB, "
               "end of idle %llu KiB, settled (ms after the puts): %s\n",
               cy, (unsigned long long)alloc_ms[cy],
               (unsigned long long)free_ms[cy], (unsigned long long)cpeak,
               (unsigned long long)idle_end, st);
        if (f != NULL)
            fprintf(f,
                    "%s\n    {\"get_ms\": %llu, \"put_ms\": %llu, "
                    "\"peak_kib\": %llu, \"idle_end_kib\": %llu, "
                    "\"settle_ms\": %s}",
                    cy ? "," : "", (unsigned long long)alloc_ms[cy],
                    (unsigned long long)free_ms[cy],
                    (unsigned long long)cpeak, (unsigned long long)idle_end,
                    st);
    }
    if (f != NULL) {
        fprintf(f, "\n  ]\n}\n");
        fclose(f);
    }
    dpb_backend.fini();
    return 0;
}
