#include <deferpool.h>
#include <stdio.h>

struct conn { int fd; char buf[252]; };

int main(void)
{
    dp_pool_attr_t attr;
    dp_pool_attr_init(&attr);
    attr.lowat = 2;          /* keep two empty pages ready */
    attr.max_pages = 64;     /* hard limit */
    dp_pool_t *conns = dp_pool_create("conn", sizeof(struct conn), &attr);
    if (conns == NULL || dp_pool_prime(conns, 32) != 0)
        return 1;            /* 32 objects now wait for DP_NOWAIT gets */

    struct conn *c = dp_pool_get(conns, DP_NOWAIT | DP_ZERO); /* never sleeps */
    if (c == NULL)
        c = dp_pool_get(conns, DP_WAITOK); /* may sleep, may reclaim */
    c->fd = -1;
    dp_pool_put(conns, c);   /* never blocks: no lock, no syscall, no provider */

    dp_pool_stats_t st;
    dp_pool_stats(conns, &st);
    printf("%s: %llu gets, %llu pages\n", st.name,
           (unsigned long long)st.gets, (unsigned long long)st.pages);
    return dp_pool_destroy(conns) == 0 ? 0 : 1;
}
