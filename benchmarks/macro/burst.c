/*
 * burst.c -- bursty grow-and-shrink, and the RSS left after an idle period.
 *
 * A round allocates ~512 MiB (MACRO_SCALE scales it) in blocks of 16 B to
 * 32 KiB (four in five at most 512 B), writes every byte, then frees them
 * all in a shuffled order.  Three rounds.  Then the program sleeps for
 * MACRO_IDLE_MS (default 1500 ms), reading VmRSS every 100 ms; the
 * headline figure is rss_idle_kib, the reading 1000 ms after the last
 * free, and rss_end_kib is the last one.  Nothing allocates while idle.
 * The pointer table is mmap'd without MAP_POPULATE (only its used ~2 MiB is resident) and
 * unmapped before the idle period, so it is not in the idle RSS.
 */
#include "macro.h"

int main(int argc, char **argv)
{
    size_t target = (size_t)(512.0 * mb_scale() * 1048576);
    const char *e = getenv("MACRO_IDLE_MS");
    long idle_ms = e != NULL ? strtol(e, NULL, 10) : 1500;
    uint64_t rng = 42;
    size_t cap, n = 0;
    void **ptr;
    uint32_t *perm;
    long rss_base, rss_full = 0;

    if (argc > 1)
        target = strtoull(argv[1], NULL, 10) << 20;
    cap = target / 16 + 1;
    rss_base = mb_rss_kib();
    ptr = mb_map(cap * sizeof(void *), 0);
    perm = mb_map(cap * sizeof(uint32_t), 0);

    uint64_t t0 = mb_now_ns();
    for (int round = 0; round < 3; round++) {
        size_t total = 0;
        n = 0;
        while (total < target) {
            size_t sz = mb_rand(&rng) % 5 != 0 ? mb_range(&rng, 16, 512)
                                              : mb_range(&rng, 513, 32768);
            ptr[n] = malloc(sz);
            if (ptr[n] == NULL) {
                fprintf(stderr, "burst: malloc(%zu) failed\n", sz);
                return 1;
            }
            memset(ptr[n], round + 1, sz);
            total += sz;
            n++;
        }
        if (round == 0)
            rss_full = mb_rss_kib();
        for (size_t i = 0; i < n; i++)
            perm[i] = (uint32_t)i;
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = (size_t)(mb_rand(&rng) % (i + 1));
            uint32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (size_t i = 0; i < n; i++)
            free(ptr[perm[i]]);
    }
    uint64_t t1 = mb_now_ns();
    munmap(ptr, cap * sizeof(void *));
    munmap(perm, cap * sizeof(uint32_t));

    /* Nothing in the idle period allocates: the readings are kept in an
     * array and printed afterwards (stdout's buffer is a malloc). */
    long rss_free = mb_rss_kib(), rss = rss_free;
    static long series[1000];
    int ns = 0;
    for (long ms = 100; ms <= idle_ms && ns < 1000; ms += 100) {
        usleep(100000);
        rss = series[ns++] = mb_rss_kib();
    }
    printf("MACRO blocks_per_round=%zu\n", n);
    printf("MACRO rss_base_kib=%ld\nMACRO rss_full_kib=%ld\n"
           "MACRO rss_after_free_kib=%ld\n",
           rss_base, rss_full, rss_free);
    printf("MACRO rss_series_kib=0:%ld", rss_free);
    for (int i = 0; i < ns; i++)
        printf(",%d:%ld", (i + 1) * 100, series[i]);
    printf("\n");
    /* The headline: 1 s after the last free (issue 4's definition). */
    printf("MACRO rss_idle_kib=%ld\n", ns >= 10 ? series[9] : rss);
    printf("MACRO rss_end_kib=%ld\nMACRO idle_ms=%d\n", rss, ns * 100);
    mb_print_elapsed(t0, t1);
    return 0;
}
