/*
 * probes.h -- static probes (USDT) in the slow paths, for perf, bpftrace
 * and SystemTap.  With <sys/sdt.h> (Debian: systemtap-sdt-dev) found at
 * configure time, each DP_PROBE is one nop plus an ELF note naming the
 * probe and where its arguments live: no cost until a tracer attaches.
 * Without it, DP_PROBE expands to nothing.  The probes, their arguments
 * and examples: docs/tuning.md, "Static probes".  Provider "deferpool".
 */
#ifndef DP_PROBES_H
#define DP_PROBES_H

/* Who handed pages back to the provider (the `by` argument). */
enum dp_probe_by {
    DP_BY_GET = 1,       /* a DP_WAITOK get, at most reclaim_budget pages */
    DP_BY_RECLAIM = 2,   /* dp_pool_reclaim()                            */
    DP_BY_THREAD = 3,    /* the reclaim thread's pass                     */
    DP_BY_STEP = 4,      /* dp_reclaim_step()                             */
    DP_BY_DESTROY = 5,   /* dp_pool_destroy()                             */
    DP_BY_IMMEDIATE = 6, /* a put on a DP_IPOOL_IMMEDIATE pool            */
};

/* DP_PROBES_ON: 1 when probes are compiled in, so that a value computed
 * only for a probe (a duration) costs nothing without them. */
#if defined(DP_HAVE_SDT)
#define SDT_USE_VARIADIC 1
#include <sys/sdt.h>
#define DP_PROBES_ON 1
#define DP_PROBE(name, ...) STAP_PROBEV(deferpool, name, __VA_ARGS__)
#else
#define DP_PROBES_ON 0
#define DP_PROBE(name, ...) ((void)0)
#endif

#endif /* DP_PROBES_H */
