/*
 * reclaim.h -- the reclaim layer (reclaim.c), above the pools: the
 * reclaim pass over every pool and the background thread that runs it
 * (the public calls are in deferpool.h).  docs/design.md, "Reclamation".
 */
#ifndef DP_RECLAIM_H
#define DP_RECLAIM_H

#include "util.h"

/* Start the thread if it is not running; warn once if it cannot be. */
DP_HIDDEN void dp_reclaim_autostart(void);
/* dp_reclaim_stop() was called, and dp_reclaim_start() not since: a layer
 * above that starts the thread lazily (the drop-in malloc) leaves it
 * stopped. */
DP_HIDDEN bool dp_reclaim_stopped(void);
/* A layer above the pools (the malloc's deferred large blocks) hooks
 * into every reclaim pass: fn runs with no lock held and returns the
 * number of pages it gave back.  One hook; NULL removes it. */
DP_HIDDEN void dp_reclaim_set_hook(size_t (*fn)(void));
/* Fork (fork.c lists the order): prepare takes dp_rt.ctl then dp_rt.lock;
 * parent releases them; child resets the thread's state, releases them
 * and, if the thread ran, makes a start due (pool.h, dp_reclaim_due). */
DP_HIDDEN void dp_reclaim_atfork_prepare(void);
DP_HIDDEN void dp_reclaim_atfork_parent(void);
DP_HIDDEN void dp_reclaim_atfork_child(void);

#endif /* DP_RECLAIM_H */
