/*
 * annotate.c -- the reports of an AddressSanitizer build that ASan
 * cannot make itself (annotate.h; docs/design.md, "Sanitizers and
 * Valgrind"): a double put, and the objects never put, listed at exit
 * as LeakSanitizer lists leaked blocks.  Empty in other builds.
 */
#include "annotate.h"

#if DP_AN_ASAN
#include "pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void dp_an_double_put(const struct dp_pool *p, const void *obj)
{
    fprintf(stderr,
            "deferpool: pool '%s': double put of %p (the object is not "
            "out: put twice, or never handed out)\n",
            p->name, obj);
    __sanitizer_print_stack_trace();
    abort();
}

/* LeakSanitizer's switch: detect_leaks=0 in ASAN_OPTIONS or LSAN_OPTIONS
 * turns the report off too. */
static bool leaks_off(void)
{
    const char *vars[] = {"ASAN_OPTIONS", "LSAN_OPTIONS"};
    for (int i = 0; i < 2; i++) {
        const char *s = getenv(vars[i]);
        const char *f = s ? strstr(s, "detect_leaks=") : NULL;
        if (f && (f[13] == '0' || f[13] == 'f'))
            return true;
    }
    return false;
}

struct leaks {
    uint64_t objs, bytes, pools;
};

/* An object is out when its first byte is addressable: a free object,
 * and a slot never handed out, are poisoned whole (annotate.h). */
static void report_list(struct dp_pool *p, struct dp_list *l,
                        struct leaks *lk, bool *named)
{
    for (struct dp_page *pg = l->head; pg; pg = pg->next) {
        for (uint32_t i = 0; i < pg->bump; i++) {
            char *o = dp_pg_slots(p, pg) + (size_t)i * p->slotsize;
            if (__asan_address_is_poisoned(o))
                continue;
            if (!*named) {
                lk->pools++;
                *named = true;
            }
            lk->objs++;
            lk->bytes += p->objsize;
            fprintf(stderr, "Object %p of pool '%s' (%zu bytes) never put\n",
                    (void *)o, p->name, p->objsize);
        }
    }
}

static void report_pool(struct dp_pool *p, void *arg)
{
    if (!p->leak_report || pthread_mutex_trylock(p->lock) != 0)
        return;
    bool named = false;
    report_list(p, &p->partial, arg, &named);
    report_list(p, &p->full, arg, &named);
    pthread_mutex_unlock(p->lock);
}

static void leak_check_at_exit(void)
{
    if (leaks_off())
        return;
    struct leaks lk = {0, 0, 0};
    dp_registry_each(report_pool, &lk);
    if (!lk.objs)
        return;
    fprintf(stderr,
            "==%d==ERROR: deferpool (AddressSanitizer build): %llu object(s) "
            "never put\n"
            "SUMMARY: deferpool: %llu byte(s) leaked in %llu object(s) of %llu "
            "pool(s)\n",
            (int)getpid(), (unsigned long long)lk.objs,
            (unsigned long long)lk.bytes, (unsigned long long)lk.objs,
            (unsigned long long)lk.pools);
    /* The exit status LeakSanitizer gives a leak (its exitcode flag's
     * default).  LeakSanitizer's own check ran already: its atexit
     * handler comes before the libraries' destructors. */
    _exit(23);
}

__attribute__((destructor)) static void dp_an_at_exit(void)
{
    leak_check_at_exit();
}
#endif
