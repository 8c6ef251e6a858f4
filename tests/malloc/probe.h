/*
 * probe.h -- for the probe programs that the malloc's tests run under
 * LD_PRELOAD of the drop-in malloc (thp_probe.c, populate_probe.c,
 * huge_probe.c), which link nothing but libc and libdl.
 */
#ifndef DP_MALLOC_PROBE_H
#define DP_MALLOC_PROBE_H

#include "deferpool-malloc.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The kernel's VmFlags line, from /proc/self/smaps, of the mapping that
 * holds p, into out; false when no mapping holds p. */
static inline int pr_vmflags(const void *p, char *out, size_t n)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return 0;
    char line[1024];
    int in = 0, found = 0;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char c;
        /* A mapping's first line: "lo-hi perms ...". */
        if (sscanf(line, "%lx-%lx %c", &lo, &hi, &c) == 3) {
            in = a >= lo && a < hi;
            continue;
        }
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, n, "%s", line);
            found = 1;
            break;
        }
    }
    fclose(f);
    return found;
}

/* dp_malloc_stats_get(out) of the preloaded library, which the probe
 * does not link: 0, or -1 when there is none. */
static inline int pr_stats(dp_malloc_stats_t *out)
{
    int (*get)(dp_malloc_stats_t *) = (int (*)(dp_malloc_stats_t *))dlsym(
        RTLD_DEFAULT, "dp_malloc_stats_get");
    return get ? get(out) : -1;
}

#endif
