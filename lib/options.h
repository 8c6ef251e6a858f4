/*
 * options.h -- the library's options (lib/options.c), read once from
 * DEFERPOOL_CONF; docs/tuning.md lists them.  Bottom of the graph: it
 * includes nothing of the library's.
 */
#ifndef DP_OPTIONS_H
#define DP_OPTIONS_H

#include "util.h"

enum dp_thp { DP_THP_AUTO, DP_THP_NEVER, DP_THP_DEFAULT };
/* How the drop-in malloc gets huge pages for its heap's chunks once the
 * heap is big (docs/malloc.md, "Huge chunks"): not at all; by advising
 * MADV_HUGEPAGE (the system's policy is "madvise"); by leaving the chunk
 * to the system (its policy is "always"). */
enum dp_huge_chunks { DP_HUGE_NONE, DP_HUGE_ADVISE, DP_HUGE_LEAVE };
enum dp_stats_print { DP_SP_OFF, DP_SP_TEXT, DP_SP_JSON };

/* The options, one per row of options.c's table, in its order. */
enum dp_opt {
    DP_OPT_BACKGROUND_THREAD,
    DP_OPT_DEBUG,
    DP_OPT_RECLAIM_INTERVAL,
    DP_OPT_RECLAIM_AGE,
    DP_OPT_STATS_PRINT,
    DP_OPT_THP,
    DP_OPT_LEAKS,
    DP_OPT_POPULATE,
    DP_OPT_COUNT
};

/* Written once, under a pthread_once in dp_options(); read-only after. */
struct dp_options {
    bool background_thread;  /* auto-start the reclaim thread          */
    unsigned debug;          /* debug flags for every pool: DP_POOL_DEBUG,
                                DP_POOL_REDZONE, DP_POOL_JUNK,
                                DP_POOL_AUDIT (include/deferpool.h)    */
    bool leaks;              /* leak report of debug pools at exit     */
    int stats_print;         /* print statistics at exit: enum
                                dp_stats_print                         */
    uint64_t reclaim_interval_ns;
    uint64_t reclaim_age_ns; /* default for attr.reclaim_age_ns        */
    int thp;                 /* enum dp_thp, as set                    */
    bool nohuge;             /* thp resolved: advise MADV_NOHUGEPAGE on
                                mappings smaller than a huge page and
                                on the malloc heap's chunks            */
    int huge_chunks;         /* thp resolved: enum dp_huge_chunks      */
    uint64_t populate_bytes; /* the drop-in malloc faults in a block of
                                at most this many bytes with one call
                                when its pages were never touched; 0:
                                never (docs/tuning.md, `populate_kib`) */
    uint32_t set;            /* bit 1 << enum dp_opt: DEFERPOOL_CONF
                                gave the option a value it accepted, so
                                a layer with a default of its own knows
                                whether to use it                      */
};
DP_HIDDEN const struct dp_options *dp_options(void);

/* DEFERPOOL_CONF set option o (with a value it accepted). */
static inline bool dp_option_is_set(enum dp_opt o)
{
    return dp_options()->set & (UINT32_C(1) << o);
}

#endif /* DP_OPTIONS_H */
