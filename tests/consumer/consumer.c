/* The smallest program against the installed library, compiled as C11,
 * C99 and C++11 by tests/consumer/check.sh. */
#include <deferpool.h>
#include <stdio.h>

int main(void)
{
    dp_pool_t *pool = dp_pool_create("consumer", 64, NULL);
    void *obj = pool ? dp_pool_get(pool, DP_WAITOK) : NULL;
    dp_pool_stats_t st;
    int ok = obj != NULL && dp_pool_stats(pool, &st) == 0 && st.objs_inuse == 1;
    dp_pool_put(pool, obj);
    ok = ok && dp_pool_stats(pool, &st) == 0 && st.objs_inuse == 0 && st.puts == 1;
    ok = dp_pool_destroy(pool) == 0 && ok;
    puts(ok ? "ok" : "FAIL");
    return !ok;
}
