/*
 * lifo.h -- the one lock-free multi-producer stack of lib/: any thread
 * pushes, one consumer at a time takes the whole stack with an exchange.
 * Used by the pools' pending queues and the spare-pool stack; the layer
 * above may use it for its own queues.  docs/design.md §1.
 *
 * Why no ABA: the consumer never pops one element (which would read a
 * top's next and CAS it in, the pattern ABA breaks); it exchanges the
 * top for NULL.  A push's CAS only compares the top it linked below its
 * own element, so a top that was taken and pushed again in between
 * still makes a correct stack: the pushed element's link is rewritten
 * on each retry.
 */
#ifndef DP_LIFO_H
#define DP_LIFO_H

#include "util.h"

/*
 * Push first..last (already linked among themselves) on the stack whose
 * top is the atomic pointer *top.  set_link(last, old_top) links the
 * chain's last element to the current top: a function or macro, so that
 * the link may be an atomic or a plain field.  order: the CAS's success
 * order (release at least, so the consumer sees the elements' contents).
 */
#define DP_LIFO_PUSH(top, first, last, set_link, order)                      \
    do {                                                                     \
        __typeof__(first) h_ = atomic_load_explicit((top), DP_RLX);          \
        do {                                                                 \
            set_link((last), h_);                                            \
        } while (!atomic_compare_exchange_weak_explicit(                     \
            (top), &h_, (first), (order), DP_RLX));                          \
    } while (0)

/* Take the whole stack (NULL when empty); order: acquire at least. */
#define DP_LIFO_TAKE(top, order) atomic_exchange_explicit((top), NULL, (order))

#endif /* DP_LIFO_H */
