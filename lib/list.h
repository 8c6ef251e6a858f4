/*
 * list.h -- the one intrusive doubly-linked list of lib/, as jemalloc's
 * ql.h: an element carries its own next/prev pointers (named by the
 * caller, so an element may sit on several lists), the list a typed
 * head, a tail and a count (DP_LIST_TYPE).  Used by the pool's page lists, the pool registry
 * and the thread-cache list.  Not thread-safe: the owner of the list's
 * lock calls these.  docs/design.md §1.
 */
#ifndef DP_LIST_H
#define DP_LIST_H

#include <stddef.h>

/* Define `struct name`, a list of `elem` (a struct type). */
#define DP_LIST_TYPE(name, elem)                                             \
    struct name {                                                            \
        elem *head, *tail; /* first and last element; NULL when empty */     \
        size_t n;          /* elements on the list                     */    \
    }

/* Put e first on l; e's link fields are e->next and e->prev. */
#define DP_LIST_PUSH_HEAD(l, e, next, prev)                                  \
    do {                                                                     \
        __typeof__(l) l_ = (l);                                            \
        __typeof__(e) e_ = (e), h_ = l_->head;                               \
        e_->prev = NULL;                                                     \
        e_->next = h_;                                                       \
        if (h_)                                                              \
            h_->prev = e_;                                                   \
        else                                                                 \
            l_->tail = e_;                                                   \
        l_->head = e_;                                                       \
        l_->n++;                                                             \
    } while (0)

/* Put e last on l. */
#define DP_LIST_PUSH_TAIL(l, e, next, prev)                                  \
    do {                                                                     \
        __typeof__(l) l_ = (l);                                            \
        __typeof__(e) e_ = (e), t_ = l_->tail;                               \
        e_->next = NULL;                                                     \
        e_->prev = t_;                                                       \
        if (t_)                                                              \
            t_->next = e_;                                                   \
        else                                                                 \
            l_->head = e_;                                                   \
        l_->tail = e_;                                                       \
        l_->n++;                                                             \
    } while (0)

/* Take e off l and clear its links. */
#define DP_LIST_REMOVE(l, e, next, prev)                                     \
    do {                                                                     \
        __typeof__(l) l_ = (l);                                            \
        __typeof__(e) e_ = (e);                                              \
        if (e_->prev)                                                        \
            e_->prev->next = e_->next;                                       \
        else                                                                 \
            l_->head = e_->next;                                             \
        if (e_->next)                                                        \
            e_->next->prev = e_->prev;                                       \
        else                                                                 \
            l_->tail = e_->prev;                                             \
        e_->next = e_->prev = NULL;                                          \
        l_->n--;                                                             \
    } while (0)

#endif /* DP_LIST_H */
