/*
 * malloc_info_prog.c -- for test_malloc_observe.py: allocates small and
 * large blocks, writes malloc_info(0, stderr) (unbuffered: stdio
 * allocates nothing), then prints dp_malloc_stats_get() on stdout as
 * key=value lines from a static buffer, so that the two describe the
 * same heap.  Run with DEFERPOOL_CONF=background_thread:0.
 */
#include <deferpool-malloc.h>

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    static char obuf[1 << 16];
    setvbuf(stdout, obuf, _IOFBF, sizeof(obuf));
    static void *keep[1000];
    for (int i = 0; i < 1000; i++)
        keep[i] = malloc(16 + (size_t)(i % 40) * 24);
    void *big[4];
    for (int i = 0; i < 4; i++)
        big[i] = malloc((size_t)(i + 1) << 16);
    free(big[1]);
    for (int i = 0; i < 1000; i += 3)
        free(keep[i]);
    if (malloc_info(1, stderr) != -1 || errno != EINVAL)
        return 2;
    if (malloc_info(0, stderr) != 0)
        return 3;
    dp_malloc_stats_t t;
    if (dp_malloc_stats_get(&t) != 0)
        return 4;
#define F(x) printf(#x "=%llu\n", (unsigned long long)t.x)
    F(small_max); F(small_classes); F(small_objs_inuse); F(small_bytes_inuse);
    F(small_objs_cached); F(small_pages); F(small_pages_empty);
    F(small_bytes_mapped); F(small_pages_freed); F(large_inuse);
    F(large_bytes_inuse); F(large_queued); F(large_cached); F(large_maps);
    F(large_unmaps); F(large_reused); F(put_provider_calls);
#undef F
    fflush(stdout);
    return 0;
}
