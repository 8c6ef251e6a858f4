/*
 * depot.c -- the thread-cache layer's depot: per pool, a stack of full
 * magazines between the threads' bins and the pages, and a stack of
 * empty ones (Bonwick and Adams' depot).  Pushes and pops are lock-free
 * and make no system call, so a put (and dp_thread_cache_flush) may use
 * both; only a get that makes magazines takes the pool lock.  The
 * reclaim pass trims what no get needed.  docs/design.md, "Thread
 * caches" (The depot).
 */
#include "depot.h"
#include "os.h"
#include "page.h"

#include <string.h>

/* The depot holds at most this many bytes of objects (in whole
 * magazines, at most DP_MAG_MAX - DP_MAG_SLACK of them); a bin that
 * overflows a full depot returns its oldest objects to the pages. */
#define DP_DEPOT_BYTES ((size_t)16 << 20)
/* ... but at least this many magazines, and no more for a
 * DP_IPOOL_SMALLDEPOT pool (types.h). */
#define DP_DEPOT_MIN_MAGS 4
/* Magazines beyond the depot's bound: the bins' spares and those in
 * flight between a bin and the depot. */
#define DP_MAG_SLACK 64
#define DP_MAG_MAX ((uint32_t)DP_MAG_CHUNKS * DP_MAG_PER_CHUNK)

/* depot_count: full magazines in the high bits, their objects in the
 * low DP_DC_SHIFT bits; one RMW updates both. */
#define DP_DC_SHIFT 40
#define DP_DC_MAG ((uint64_t)1 << DP_DC_SHIFT)
#define DP_DC_OBJS (DP_DC_MAG - 1)

static size_t mag_size(const struct dp_pool *p)
{
    size_t s = sizeof(struct dp_mag) + (size_t)p->mag_cap * sizeof(void *);
    return (s + DP_CACHELINE - 1) & ~(size_t)(DP_CACHELINE - 1);
}

/*
 * Chunks.  Magazines are carved from chunks of DP_MAG_PER_CHUNK, each
 * mapped with DP_MAG_DIR bytes ahead of its magazines.  The first
 * chunk's head holds the directory of all chunks (mag_dir), not the
 * pool's struct: that keeps the struct under 1 KiB (create.c) and the
 * malloc's class pools, most of which never make a magazine, on half
 * as many pages.  The directory shares its page with the first
 * magazines, faulted in anyway.
 */
#define DP_MAG_DIR (DP_MAG_CHUNKS * sizeof(char *))

static size_t chunk_len(const struct dp_pool *p)
{
    return DP_MAG_DIR + DP_MAG_PER_CHUNK * mag_size(p);
}

static struct dp_mag *mag_at(struct dp_pool *p, uint32_t idx)
{
    return (struct dp_mag *)(p->mag_dir[idx / DP_MAG_PER_CHUNK] +
                             (idx % DP_MAG_PER_CHUNK) * mag_size(p));
}

struct dp_mag *dp_depot_mag(struct dp_pool *p, uint32_t idx, size_t *size)
{
    *size = mag_size(p);
    return mag_at(p, idx);
}

void dp_depot_init(struct dp_pool *p)
{
    atomic_store_explicit(&p->depot_full, 0, DP_RLX);
    atomic_store_explicit(&p->depot_empty, 0, DP_RLX);
    atomic_store_explicit(&p->depot_count, 0, DP_RLX);
    atomic_store_explicit(&p->depot_low, 0, DP_RLX);
    atomic_store_explicit(&p->mag_short, 0, DP_RLX);
    atomic_store_explicit(&p->depot_since, 0, DP_RLX);
    p->depot_nper = 0;
    p->mags = 0;
    p->mag_dir = NULL;
    /* A magazine is a refill's worth: what an empty bin would take from
     * the pages, and what a full one can give without running dry.  A
     * pool with the full depot takes two refills' worth where a bin's
     * soft limit holds two such magazines (bin_shed's bound): a live set
     * past the bin then pays half as many depot operations and slow
     * paths per object (docs/design.md §13, the cost model).  The
     * malloc's class pools (small depots) keep one refill's worth. */
    p->mag_cap = p->tcidx < 0 ? 0 : p->tc_batch;
    if (p->mag_cap && !(p->flags & DP_IPOOL_SMALLDEPOT) &&
        2 * p->mag_cap <= p->tc_soft / 2)
        p->mag_cap *= 2;
    if (!p->mag_cap) {
        p->depot_max = 0;
        return;
    }
    size_t m = p->flags & DP_IPOOL_SMALLDEPOT
                   ? DP_DEPOT_MIN_MAGS
                   : DP_DEPOT_BYTES / p->slotsize / p->mag_cap;
    size_t hi = DP_MAG_MAX - DP_MAG_SLACK;
    p->depot_max = m < DP_DEPOT_MIN_MAGS ? DP_DEPOT_MIN_MAGS
                   : m > hi             ? (uint32_t)hi
                                        : (uint32_t)m;
}

/*
 * Both stacks are Treiber stacks whose top word holds the top
 * magazine's index plus one (0: empty) in its low half and a version in
 * its high half, bumped by every push and pop.  The version is what
 * makes the pop ABA-safe: a popper that read top m and m's link, and
 * then lost the race, finds a different version even when m has since
 * been popped, reused and pushed back on top.  Magazines are never
 * unmapped while the pool lives, so reading a stale m's link is safe
 * (its value is then discarded by the failed CAS).  The push's release
 * CAS publishes the magazine's contents; every store to a top word is
 * an RMW, so a popper's acquire load of it sees every push before it.
 */
#define TOP(ver, idx1) (((uint64_t)(ver) << 32) | (idx1))

static void stack_push(_Atomic uint64_t *top, struct dp_mag *m)
{
    uint64_t t = atomic_load_explicit(top, DP_RLX);
    do {
        atomic_store_explicit(&m->next, (uint32_t)t, DP_RLX);
    } while (!atomic_compare_exchange_weak_explicit(
        top, &t, TOP((t >> 32) + 1, m->idx + 1), memory_order_release,
        DP_RLX));
}

static struct dp_mag *stack_pop(struct dp_pool *p, _Atomic uint64_t *top)
{
    uint64_t t = atomic_load_explicit(top, memory_order_acquire);
    for (;;) {
        uint32_t i1 = (uint32_t)t;
        if (!i1)
            return NULL;
        struct dp_mag *m = mag_at(p, i1 - 1);
        uint32_t next = atomic_load_explicit(&m->next, DP_RLX);
        if (atomic_compare_exchange_weak_explicit(
                top, &t, TOP((t >> 32) + 1, next), memory_order_acquire,
                memory_order_acquire))
            return m;
    }
}

bool dp_depot_push(struct dp_pool *p, struct dp_mag *m)
{
    uint64_t c = atomic_load_explicit(&p->depot_count, DP_RLX);
    if ((c >> DP_DC_SHIFT) >= p->depot_max)
        return false;
    /* Counted before it is visible, so a pop never takes the count below
     * zero; statistics may see it a moment early. */
    atomic_fetch_add_explicit(&p->depot_count, DP_DC_MAG + m->n, DP_RLX);
    stack_push(&p->depot_full, m);
    return true;
}

struct dp_mag *dp_depot_pop(struct dp_pool *p)
{
    if (!(uint32_t)atomic_load_explicit(&p->depot_full, DP_RLX))
        return NULL;
    struct dp_mag *m = stack_pop(p, &p->depot_full);
    if (m) {
        uint64_t c = atomic_fetch_sub_explicit(&p->depot_count,
                                               DP_DC_MAG + m->n, DP_RLX);
        /* The ageing rule's low-water mark: the depot never went below
         * depot_low magazines since the last trim.  A racy minimum; a
         * lost update only trims less. */
        uint32_t left = (uint32_t)(c >> DP_DC_SHIFT) - 1;
        if (left < atomic_load_explicit(&p->depot_low, DP_RLX))
            atomic_store_explicit(&p->depot_low, left, DP_RLX);
    }
    return m;
}

struct dp_mag *dp_depot_pop_empty(struct dp_pool *p)
{
    if (!(uint32_t)atomic_load_explicit(&p->depot_empty, DP_RLX))
        return NULL;
    return stack_pop(p, &p->depot_empty);
}

void dp_depot_give_empty(struct dp_pool *p, struct dp_mag *m)
{
    m->n = 0;
    stack_push(&p->depot_empty, m);
}

struct dp_mag *dp_depot_stock(struct dp_pool *p, uint32_t k, bool mine)
{
    struct dp_mag *own = NULL;
    char *chunk = NULL;
    /* The caller's own from the empty stack if it holds one: threads
     * that exit give their spares back there, and a thread that starts
     * would otherwise make a new one per pool it uses, memory touched
     * for good (a page per four magazines or so).  The k for the puts
     * are new: mag_short counts puts that found the stack empty. */
    if (mine && (own = dp_depot_pop_empty(p)) != NULL)
        mine = false;
    uint32_t want = k + (mine ? 1 : 0);
    if (!want)
        return own;
    pthread_mutex_lock(p->lock);
    while (want && p->mags < p->depot_max + DP_MAG_SLACK) {
        uint32_t c = p->mags / DP_MAG_PER_CHUNK;
        if (p->mag_dir && p->mag_dir[c]) {
            struct dp_mag *m = mag_at(p, p->mags);
            m->idx = p->mags++;
            m->n = 0;
            /* Its last slot too: every page it spans is faulted in here,
             * not by the put that sheds into it (cache.c, "Faults"). */
            m->o[p->mag_cap - 1] = NULL;
            want--;
            if (mine && !own)
                own = m;
            else
                dp_depot_give_empty(p, m);
            continue;
        }
        if (chunk) {
            if (!p->mag_dir)
                p->mag_dir = (char **)(void *)chunk;
            p->mag_dir[c] = chunk + DP_MAG_DIR;
            chunk = NULL;
            continue;
        }
        /* No system call under the pool lock. */
        pthread_mutex_unlock(p->lock);
        chunk = dp_os_map(chunk_len(p));
        pthread_mutex_lock(p->lock);
        if (!chunk)
            break;
    }
    pthread_mutex_unlock(p->lock);
    if (chunk) /* another get mapped the chunk meanwhile */
        dp_os_unmap(chunk, chunk_len(p));
    return own;
}

/*
 * The ageing rule: umem's working set, over a sliding window of the
 * pool's page age.  The window is cut into periods of at least
 * age_ns / (DP_DEPOT_PERIODS - 1), each with the fewest full magazines
 * the depot held during it (gets lower depot_low as they pop).  The
 * fewest over the periods that overlap the last age_ns were not needed
 * for a whole age: that many may go.  A pass closes the current period
 * once it is long enough, so an idle depot is trimmed between one age
 * and one age plus a period (plus a pass interval) after its last use.
 * Returns the magazines to return.  Pool lock held (the window).
 */
static uint32_t depot_idle_locked(struct dp_pool *p, uint64_t now)
{
    uint64_t age = p->age_ns, since = atomic_load_explicit(&p->depot_since,
                                                            DP_RLX);
    if (now - since >= age / (DP_DEPOT_PERIODS - 1)) {
        uint32_t have = (uint32_t)(atomic_load_explicit(&p->depot_count,
                                                        DP_RLX) >>
                                   DP_DC_SHIFT);
        uint32_t low = atomic_exchange_explicit(&p->depot_low, have, DP_RLX);
        /* A pop between the count's load and the exchange: the new
         * period starts at what it left (racy; a miss trims one more). */
        uint32_t left = (uint32_t)(atomic_load_explicit(&p->depot_count,
                                                        DP_RLX) >>
                                   DP_DC_SHIFT);
        if (left < have)
            atomic_store_explicit(&p->depot_low, left, DP_RLX);
        memmove(p->depot_min + 1, p->depot_min,
                (DP_DEPOT_PERIODS - 1) * sizeof(p->depot_min[0]));
        memmove(p->depot_t + 1, p->depot_t,
                (DP_DEPOT_PERIODS - 1) * sizeof(p->depot_t[0]));
        p->depot_min[0] = low < have ? low : have;
        p->depot_t[0] = since;
        if (p->depot_nper < DP_DEPOT_PERIODS)
            p->depot_nper++;
        atomic_store_explicit(&p->depot_since, now, DP_RLX);
        since = now;
    }
    /* The periods kept must reach an age back: DP_DEPOT_PERIODS of them,
     * each at least age / (DP_DEPOT_PERIODS - 1) long, always do. */
    uint32_t n = p->depot_nper;
    if (!n || now - p->depot_t[n - 1] < age)
        return 0;
    uint32_t k = atomic_load_explicit(&p->depot_low, DP_RLX);
    uint64_t end = since; /* period i ends where period i - 1 began */
    for (uint32_t i = 0; i < n && now - end < age; i++) {
        if (p->depot_min[i] < k)
            k = p->depot_min[i];
        end = p->depot_t[i];
    }
    /* What goes was counted in every period: it is not there now. */
    for (uint32_t i = 0; i < n; i++)
        p->depot_min[i] = p->depot_min[i] > k ? p->depot_min[i] - k : 0;
    return k;
}

size_t dp_depot_drain(struct dp_pool *p, bool all, uint64_t now)
{
    if (!p->mag_cap)
        return 0;
    uint32_t k = UINT32_MAX;
    if (!all) {
        pthread_mutex_lock(p->lock);
        k = depot_idle_locked(p, now);
        pthread_mutex_unlock(p->lock);
    }
    size_t n = 0;
    uint32_t mags = 0;
    struct dp_mag *m;
    while (k && (m = stack_pop(p, &p->depot_full)) != NULL) {
        atomic_fetch_sub_explicit(&p->depot_count, DP_DC_MAG + m->n, DP_RLX);
        dp_page_put_array(p, m->o, m->n);
        n += m->n;
        dp_depot_give_empty(p, m);
        mags++;
        k--;
    }
    /* The current period's fewest, less what went (the popped magazines
     * were among them). */
    uint32_t low = atomic_load_explicit(&p->depot_low, DP_RLX);
    while (mags && !atomic_compare_exchange_weak_explicit(
                       &p->depot_low, &low, low > mags ? low - mags : 0,
                       DP_RLX, DP_RLX))
        ;
    return n;
}

uint64_t dp_depot_objects(struct dp_pool *p)
{
    return atomic_load_explicit(&p->depot_count, DP_RLX) & DP_DC_OBJS;
}

void dp_depot_fini(struct dp_pool *p)
{
    if (!p->mag_cap)
        return;
    size_t len = chunk_len(p);
    pthread_mutex_lock(p->lock);
    /* The first chunk, which holds the directory, last. */
    for (uint32_t c = DP_MAG_CHUNKS; p->mag_dir && c-- > 0;)
        if (p->mag_dir[c])
            dp_os_unmap(p->mag_dir[c] - DP_MAG_DIR, len);
    p->mag_dir = NULL;
    p->mags = 0;
    atomic_store_explicit(&p->depot_empty, 0, DP_RLX);
    atomic_store_explicit(&p->depot_full, 0, DP_RLX);
    atomic_store_explicit(&p->depot_count, 0, DP_RLX);
    pthread_mutex_unlock(p->lock);
}
