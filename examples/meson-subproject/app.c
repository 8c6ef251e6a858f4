/* examples/meson-subproject: deferpool as a Meson subproject. */
#include <deferpool.h>
#include <stdio.h>

int main(void)
{
    dp_pool_t *pool = dp_pool_create("app", 128, NULL);
    void *obj = pool ? dp_pool_get(pool, DP_WAITOK) : NULL;
    if (obj == NULL)
        return 1;
    dp_pool_put(pool, obj);
    if (dp_pool_destroy(pool) != 0)
        return 1;
    puts("ok");
    return 0;
}
