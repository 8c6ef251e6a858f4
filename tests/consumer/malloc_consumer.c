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
    int ok = dp_malloc_stats_get(&st) == 0 && st.small_objs_inuse >= 1;
    puts(ok ? s : "FAIL");
    free(s);
    return !ok;
}
