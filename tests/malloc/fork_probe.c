/*
 * fork_probe.c -- a program for test_malloc_fork, run under LD_PRELOAD of
 * libdeferpool-malloc.so: its pthread_atfork handlers allocate (small,
 * medium and large blocks) and free, and it forks while a second thread
 * allocates.  FORK_PROBE_ORDER=before registers the handlers from a
 * constructor, before the program's first malloc; =after, once malloc is
 * in use.  Exit 0 when the child and the parent each ran their two
 * handlers and could allocate; otherwise the number of the failed step.
 * A hang is the caller's to catch.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_uint calls;
static atomic_int stop;

static void *use(size_t n)
{
    char *p = malloc(n);
    if (!p)
        _exit(10);
    memset(p, 0x5a, n < 4096 ? n : 4096);
    return p;
}

static void handler(void)
{
    void *a = use(100), *b = use(40 << 10), *c = use(300 << 10),
         *d = use(4 << 20);
    free(a);
    free(b);
    free(c);
    free(d);
    atomic_fetch_add(&calls, 1);
}

__attribute__((constructor)) static void early(void)
{
    const char *o = getenv("FORK_PROBE_ORDER");
    if (o && !strcmp(o, "before") &&
        pthread_atfork(handler, handler, handler) != 0)
        _exit(11);
}

static void *churn(void *arg)
{
    (void)arg;
    size_t sizes[] = {24, 3000, 20 << 10, 200 << 10, 3 << 20};
    unsigned i = 0;
    while (!atomic_load(&stop)) {
        void *p = use(sizes[i++ % 5]);
        free(p);
    }
    return NULL;
}

int main(void)
{
    const char *o = getenv("FORK_PROBE_ORDER");
    if (!o)
        return 12;
    free(use(64));
    if (!strcmp(o, "after") && pthread_atfork(handler, handler, handler) != 0)
        return 13;
    pthread_t t;
    if (pthread_create(&t, NULL, churn, NULL) != 0)
        return 14;
    for (int r = 0; r < 20; r++) {
        atomic_store(&calls, 0);
        pid_t pid = fork();
        if (pid < 0)
            return 15;
        if (pid == 0) {
            if (atomic_load(&calls) != 2) /* prepare, child */
                _exit(16);
            for (int i = 0; i < 100; i++)
                free(use((size_t)(i + 1) * 1000));
            _exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid)
            return 17;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 18;
        if (atomic_load(&calls) != 2) /* prepare, parent */
            return 19;
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    return 0;
}
