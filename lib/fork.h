/*
 * fork.h -- the fork layer (fork.c), the top of the core: the atfork
 * handlers of every layer, called in one order, and the hook through
 * which the malloc joins them.  docs/design.md, "Fork".
 */
#ifndef DP_FORK_H
#define DP_FORK_H

#include "util.h"

/* The layer above joins the fork handlers (fork.c lists the order):
 * lock_outer after the caches are claimed and before dp_rt.ctl,
 * lock_leaf after the cache lock; in the child, child() runs with every
 * lock held, after the claimed caches were flushed (their ext lists
 * handed to the layer).  Set once, from a constructor; l must stay
 * valid. */
struct dp_fork_layer {
    void (*lock_outer)(void);
    void (*unlock_outer)(void);
    void (*lock_leaf)(void);
    void (*unlock_leaf)(void);
    void (*child)(void);
};
DP_HIDDEN void dp_fork_set_layer(const struct dp_fork_layer *l);
/* Register the fork handlers (once; a constructor does it at load, and
 * pool creation again for a static link). */
DP_HIDDEN void dp_fork_install(void);

#endif /* DP_FORK_H */
