/*
 * ring.h -- a bounded single-producer/single-consumer ring of pointers,
 * used to hand objects to the thread that frees them.
 *
 * Ordering: the producer writes the slot, then publishes it with a release
 * store of tail; the consumer's acquire load of tail makes the slot (and
 * the object's contents) visible before it reads them.  Symmetrically the
 * consumer releases head after reading the slot, so the producer never
 * overwrites a slot still being read.  Each side caches the other's index
 * and rereads it only when the ring looks full/empty, so the shared lines
 * move between cores only when they must.  Indices grow without wrapping
 * back (64-bit), so a ring needs no reset between benchmark runs: draining
 * it leaves head == tail.
 */
#ifndef DPB_RING_H
#define DPB_RING_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DPB_RING_SIZE 1024 /* power of two */

typedef struct dpb_ring {
    struct {
        _Alignas(64) _Atomic uint64_t tail; /* written by the producer   */
        uint64_t head_cache;                /* producer's view of head   */
    } p;
    struct {
        _Alignas(64) _Atomic uint64_t head; /* written by the consumer   */
        uint64_t tail_cache;                /* consumer's view of tail   */
    } c;
    _Alignas(64) void *slot[DPB_RING_SIZE];
} dpb_ring_t;

static inline bool dpb_ring_push(dpb_ring_t *r, void *obj) {
    uint64_t t = atomic_load_explicit(&r->p.tail, memory_order_relaxed);
    if (t - r->p.head_cache == DPB_RING_SIZE) {
        r->p.head_cache = atomic_load_explicit(&r->c.head,
                                               memory_order_acquire);
        if (t - r->p.head_cache == DPB_RING_SIZE)
            return false;
    }
    r->slot[t & (DPB_RING_SIZE - 1)] = obj;
    atomic_store_explicit(&r->p.tail, t + 1, memory_order_release);
    return true;
}

static inline void *dpb_ring_pop(dpb_ring_t *r) {
    uint64_t h = atomic_load_explicit(&r->c.head, memory_order_relaxed);
    if (h == r->c.tail_cache) {
        r->c.tail_cache = atomic_load_explicit(&r->p.tail,
                                               memory_order_acquire);
        if (h == r->c.tail_cache)
            return NULL;
    }
    void *obj = r->slot[h & (DPB_RING_SIZE - 1)];
    atomic_store_explicit(&r->c.head, h + 1, memory_order_release);
    return obj;
}

/*
 * Wait step for a full/empty ring: pause, and every 256th time yield the
 * CPU.  The yield only matters when the machine has fewer free cores than
 * benchmark threads (then pure spinning would burn whole time slices
 * waiting for a thread that is not running); it is outside the measured
 * allocator calls either way.
 */
static inline void dpb_cpu_relax(unsigned *spins) {
    if ((++*spins & 255) == 0)
        sched_yield();
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

#endif /* DPB_RING_H */
