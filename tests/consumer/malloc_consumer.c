/* Linked with `pkg-config --static --libs deferpool-malloc`, or the CMake
 * target deferpool::malloc_static: malloc must be deferpool's.
 * tests/consumer/check.sh. */
#include <deferpool-malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    char *s = malloc(100);
    if (s == NULL)
        return 1;
    strcpy(s, "ok");
    dp_malloc_stats_t st;
    memset(&st, 0xa5, sizeof st);
    int ok = dp_malloc_stats_get(&st) == 0 && st.small_objs_inuse >= 1;
    /* The reserved space for later fields reads 0 (docs/api.md,
     * "Compatibility"). */
    for (size_t i = 0; i < sizeof st.reserved / sizeof st.reserved[0]; i++)
        ok = ok && st.reserved[i] == 0;
    puts(ok ? s : "FAIL");
    free(s);
    return !ok;
}
