/*
 * options.h -- the library's options (lib/options.c), read once from
 * DEFERPOOL_CONF; docs/tuning.md lists them.
 */
#ifndef DP_OPTIONS_H
#define DP_OPTIONS_H

#include "util.h"

enum dp_thp { DP_THP_AUTO, DP_THP_NEVER, DP_THP_DEFAULT };
enum dp_stats_print { DP_SP_OFF, DP_SP_TEXT, DP_SP_JSON };
struct dp_options {
    bool background_thread;  /* auto-start the reclaim thread          */
    bool debug;              /* DP_POOL_DEBUG on every pool            */
    int stats_print;         /* print statistics at exit: enum
                                dp_stats_print                         */
    uint64_t reclaim_interval_ns;
    uint64_t reclaim_age_ns; /* default for attr.reclaim_age_ns        */
    int thp;                 /* enum dp_thp, as set                    */
    bool nohuge;             /* thp resolved: advise MADV_NOHUGEPAGE on
                                mappings smaller than a huge page and
                                on the malloc heap's chunks            */
};
DP_HIDDEN const struct dp_options *dp_options(void);

#endif /* DP_OPTIONS_H */
