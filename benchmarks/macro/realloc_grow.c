/*
 * realloc_grow.c -- realloc-heavy: strings grown step by step from 16 B
 * to 1 MiB.  LIVE strings grow side by side (so a neighbour often sits
 * where a block would like to grow), each step adding 1/8 of the size plus
 * 16 bytes and writing the new bytes, so each string takes ~100 reallocs.
 * A string's contents are checked when it reaches 1 MiB, then it is freed
 * and a new one starts at 16 B.
 */
#include "macro.h"

enum { LIVE = 16, MAXSZ = 1 << 20 };

int main(int argc, char **argv)
{
    size_t strings = (size_t)(1500 * mb_scale());
    unsigned char *s[LIVE];
    size_t len[LIVE], done = 0, started = 0, reallocs = 0, bad = 0;

    if (argc > 1)
        strings = strtoul(argv[1], NULL, 10);
    uint64_t t0 = mb_now_ns();
    for (int i = 0; i < LIVE; i++) {
        s[i] = malloc(16);
        memset(s[i], (int)started, 16);
        len[i] = 16;
        started++;
    }
    while (done < strings) {
        for (int i = 0; i < LIVE; i++) {
            size_t nl = len[i] + len[i] / 8 + 16;
            if (nl > MAXSZ)
                nl = MAXSZ;
            unsigned char *p = realloc(s[i], nl);
            if (p == NULL) {
                fprintf(stderr, "realloc_grow: realloc(%zu) failed\n", nl);
                return 1;
            }
            reallocs++;
            unsigned char tag = p[0];
            memset(p + len[i], tag, nl - len[i]);
            s[i] = p;
            len[i] = nl;
            if (nl == MAXSZ) {
                for (size_t k = 0; k < MAXSZ; k += 4093)
                    bad += p[k] != tag;
                bad += p[MAXSZ - 1] != tag;
                free(p);
                done++;
                s[i] = malloc(16);
                memset(s[i], (int)(started & 0xff), 16);
                len[i] = 16;
                started++;
            }
        }
    }
    for (int i = 0; i < LIVE; i++)
        free(s[i]);
    uint64_t t1 = mb_now_ns();
    mb_print_elapsed(t0, t1);
    printf("MACRO reallocs=%zu\nMACRO corrupt=%zu\n", reallocs, bad);
    return bad != 0;
}
