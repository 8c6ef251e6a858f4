/*
 * floor.c -- the floor: the least any allocator called through a shared
 * library can cost on the 1-thread patterns of bench_single.c.  Not an
 * allocator anyone could use, and not part of deferpool.
 *
 * Each thread keeps an unbounded stack of free pointers (grown by mmap)
 * and carves new objects from 16 MiB mmap'd chunks.  A get pops, a put
 * pushes: no size classes, no page headers, no locks, no handshake with
 * anyone, no bound on what it keeps, and it never gives memory back.  A
 * put of an object another thread got just pushes it here, so objects
 * drift between threads and memory only grows: scripts/bench.sh runs only
 * the 1-thread patterns with it.
 *
 * What every allocator in the table pays and the floor pays too: a call
 * through the PLT and a return, each way; a TLS access from a shared
 * library; the stack top's store-to-load round trip from one call to the
 * next; the harness's own loop and its write to each object.  What the
 * floor measures is therefore how far down a ratio to jemalloc can go on
 * this machine with these patterns (docs/benchmarks.md, "The floor").
 */
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#define DPB_FLOOR_CHUNK ((size_t)16 << 20)

/* Everything is per thread (initial-exec TLS: one segment-relative load,
 * as deferpool's own cache pointer). */
#define TLS __thread __attribute__((tls_model("initial-exec")))
static TLS void **stk;       /* free objects, [0, n) */
static TLS size_t n, cap;
static TLS char *bump, *end; /* the current chunk's uncarved rest */
static size_t objsize = 64;  /* set once, before any get */

void dpb_floor_init(size_t size)
{
    objsize = (size + 15) & ~(size_t)15;
}

static void *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

__attribute__((noinline)) static void *get_slow(void)
{
    if ((size_t)(end - bump) < objsize) {
        if (!(bump = map(DPB_FLOOR_CHUNK)))
            return NULL;
        end = bump + DPB_FLOOR_CHUNK;
    }
    void *p = bump;
    bump += objsize;
    return p;
}

/* The stack is full: a stack twice as big (the old one is left mapped;
 * the floor never gives memory back). */
__attribute__((noinline)) static void put_slow(void *p)
{
    size_t nc = cap ? 2 * cap : (size_t)1 << 16;
    void **s = map(nc * sizeof(void *));
    if (!s)
        return; /* the object is dropped: the floor may leak */
    for (size_t i = 0; i < n; i++)
        s[i] = stk[i];
    stk = s;
    cap = nc;
    stk[n++] = p;
}

void *dpb_floor_get(void)
{
    if (n)
        return stk[--n];
    return get_slow();
}

void dpb_floor_put(void *p)
{
    if (n < cap) {
        stk[n++] = p;
        return;
    }
    put_slow(p);
}
