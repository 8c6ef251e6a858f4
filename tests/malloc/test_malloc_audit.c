/*
 * test_malloc_audit.c -- the malloc's debug mode with audit, chosen word
 * by word (DEFERPOOL_CONF=debug:redzone+junk+audit, tests/malloc/
 * meson.build): a bad free's report carries the stacks of the block's
 * last malloc and free, and the leak report at exit (on by default with
 * audit) groups the blocks never freed by allocation stack.  The stacks
 * name this file's mta_* helpers: global, not inlined, no tail calls,
 * and the program is linked with -rdynamic.
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <deferpool.h>
#include <malloc.h>

#include "../testutil.h"

#define NOINL __attribute__((noinline, visibility("default")))
#define NOTAIL() __asm__ volatile("" ::: "memory")

NOINL void *mta_allocator(size_t n)
{
    void *p = malloc(n);
    NOTAIL();
    return p;
}

NOINL void mta_freer(void *p)
{
    free(p);
    NOTAIL();
}

static void double_free(void *arg)
{
    (void)arg;
    void *p = mta_allocator(40);
    mta_freer(p);
    free(p);
}

Test(malloc_audit, a_double_free_shows_the_stacks_of_the_last_malloc_and_free)
{
    const char *const want[] = {"double put of", "last get:", "last put:",
                                NULL};
    char out[16384];
    cr_assert(tu_expect_abort(double_free, NULL, want, out, sizeof(out)),
              "%s", out);
    const char *g = strstr(out, "last get:"), *f = strstr(out, "last put:");
    const char *a = strstr(g, "mta_allocator");
    cr_assert(a && a < f, "no mta_allocator in the malloc's stack:\n%s", out);
    cr_assert_not_null(strstr(f, "mta_freer"),
                       "no mta_freer in the free's stack:\n%s", out);
}

/* A child that leaks 5 blocks of 200 bytes from one call site and exits:
 * its report at exit, read through a pipe. */
Test(malloc_audit, the_leak_report_at_exit_groups_blocks_by_allocation_stack)
{
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        for (int i = 0; i < 5; i++)
            if (!mta_allocator(200))
                _exit(3);
        exit(0); /* destructors: the leak report */
    }
    close(fd[1]);
    static char out[1 << 16];
    size_t have = 0;
    ssize_t r;
    while ((r = read(fd[0], out + have, sizeof(out) - 1 - have)) > 0)
        have += (size_t)r;
    out[have] = 0;
    close(fd[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %d\n%s", st,
              out);
    /* The group of 5 in the pool of the class of 200 bytes (named after
     * its size, which malloc_usable_size reports) is the one whose stack
     * names mta_allocator. */
    void *probe = malloc(200);
    char name[64];
    snprintf(name, sizeof(name), "pool 'malloc-%zu'",
             malloc_usable_size(probe));
    free(probe);
    const char *pool = strstr(out, name);
    cr_assert_not_null(pool, "no report for %s:\n%s", name, out);
    const char *g = strstr(pool, "  5 object(s):");
    cr_assert_not_null(g, "no group of 5:\n%s", out);
    const char *next = strstr(g + strlen("  5 object(s):"), " object(s):");
    const char *fn = strstr(g, "mta_allocator");
    cr_assert(fn && (!next || fn < next),
              "the group of 5 does not name mta_allocator:\n%s", out);
}
