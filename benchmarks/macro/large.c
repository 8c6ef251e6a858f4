/*
 * large.c -- large blocks: malloc/free of 128 KiB .. 8 MiB (log-uniform),
 * touching one byte per 4 KiB page.  A working set of LIVE blocks; each
 * step frees a random one and allocates a new one in its place.
 */
#include "macro.h"

enum { LIVE = 8 };

int main(int argc, char **argv)
{
    size_t steps = (size_t)(3000 * mb_scale());
    uint64_t rng = 7;
    char *b[LIVE] = {0};
    size_t sz[LIVE] = {0}, bad = 0;

    if (argc > 1)
        steps = strtoul(argv[1], NULL, 10);
    uint64_t t0 = mb_now_ns();
    for (size_t s = 0; s < steps + LIVE; s++) {
        size_t i = s < LIVE ? s : (size_t)(mb_rand(&rng) % LIVE);
        if (b[i] != NULL) {
            bad += b[i][sz[i] - 1] != (char)sz[i];
            free(b[i]);
        }
        /* 2^17 .. 2^23 bytes, log-uniform, any byte count in between. */
        unsigned e = 17 + (unsigned)(mb_rand(&rng) % 6);
        size_t n = ((size_t)1 << e) + (size_t)(mb_rand(&rng) % ((size_t)1 << e));
        b[i] = malloc(n);
        if (b[i] == NULL) {
            fprintf(stderr, "large: malloc(%zu) failed\n", n);
            return 1;
        }
        for (size_t k = 0; k < n; k += 4096)
            b[i][k] = 1;
        b[i][n - 1] = (char)n;
        sz[i] = n;
    }
    for (size_t i = 0; i < LIVE; i++)
        free(b[i]);
    uint64_t t1 = mb_now_ns();
    mb_print_elapsed(t0, t1);
    printf("MACRO corrupt=%zu\n", bad);
    return bad != 0;
}
