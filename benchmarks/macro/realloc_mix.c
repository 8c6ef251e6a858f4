/*
 * realloc_mix.c -- many string builders, many growth policies.  BUILDERS
 * strings grow side by side, in turn, by realloc; builder i uses policy
 * i % 4: exact fit (+ 1 to 256 bytes), +64 B steps, x1.5, x2.  A string
 * that reaches its cap (16 KiB to 4 MiB, drawn per string) is checked
 * and freed, and a new one starts at 16 B.  One step in 32 shrinks a
 * string to between a quarter and the whole of its length.  Every byte
 * appended is written (memset, with the string's tag); the first and
 * last bytes are checked after each realloc, every 4093rd at the end.
 */
#include "macro.h"

enum { BUILDERS = 64 };

struct sb {
    unsigned char *p;
    size_t len, cap, max;
    unsigned char tag;
};

static size_t next_cap(int policy, size_t cap, uint64_t *rng)
{
    switch (policy) {
    case 0: return cap + mb_range(rng, 1, 256);
    case 1: return cap + 64;
    case 2: return cap + cap / 2 + 1;
    default: return cap * 2;
    }
}

int main(int argc, char **argv)
{
    size_t strings = (size_t)(2500 * mb_scale());
    struct sb s[BUILDERS];
    uint64_t rng = 7;
    size_t done = 0, started = 0, reallocs = 0, bad = 0;

    if (argc > 1)
        strings = strtoul(argv[1], NULL, 10);
    uint64_t t0 = mb_now_ns();
    for (int i = 0; i < BUILDERS; i++) {
        s[i].cap = 16;
        s[i].len = 1;
        s[i].max = (size_t)16384 << mb_range(&rng, 0, 8);
        s[i].tag = (unsigned char)started++;
        s[i].p = malloc(s[i].cap);
        s[i].p[0] = s[i].tag;
    }
    while (done < strings) {
        for (int i = 0; i < BUILDERS; i++) {
            struct sb *b = &s[i];
            size_t nc;
            if (mb_rand(&rng) % 32 == 0 && b->len > 64) {
                nc = mb_range(&rng, b->len / 4, b->len);
                b->len = nc;
            } else {
                nc = next_cap(i % 4, b->cap, &rng);
            }
            unsigned char *p = realloc(b->p, nc);
            if (p == NULL) {
                fprintf(stderr, "realloc_mix: realloc(%zu) failed\n", nc);
                return 1;
            }
            reallocs++;
            bad += p[0] != b->tag || p[b->len - 1] != b->tag;
            memset(p + b->len, b->tag, nc - b->len);
            b->p = p;
            b->len = b->cap = nc;
            if (nc >= b->max) {
                for (size_t k = 0; k < nc; k += 4093)
                    bad += p[k] != b->tag;
                bad += p[nc - 1] != b->tag;
                free(p);
                done++;
                b->cap = 16;
                b->len = 1;
                b->max = (size_t)16384 << mb_range(&rng, 0, 8);
                b->tag = (unsigned char)started++;
                b->p = malloc(b->cap);
                b->p[0] = b->tag;
            }
        }
    }
    for (int i = 0; i < BUILDERS; i++)
        free(s[i].p);
    uint64_t t1 = mb_now_ns();
    mb_print_elapsed(t0, t1);
    printf("MACRO reallocs=%zu\nMACRO corrupt=%zu\n", reallocs, bad);
    return bad != 0;
}
