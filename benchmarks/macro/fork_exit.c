/*
 * fork_exit.c -- a program that forks a lot, as shells and build tools
 * do: a parent holding a heap of HEAP small blocks of mixed sizes forks
 * FORKS children, one at a time.  Each child makes CHILD_ALLOCS small
 * allocations and frees them (a subshell running a builtin) and exits;
 * the parent allocates and frees a little while the child runs and then
 * waits for it.  What is measured is the fork, the child's life and its
 * exit: an allocator's fork handlers, and every page it writes after
 * the fork, which the kernel copies (the page faults of the children
 * count with the parent's).  The parent's heap is checked at the end.
 */
#include "macro.h"

#include <sys/wait.h>
#include <unistd.h>

enum { HEAP = 4000, CHILD_ALLOCS = 50, PARENT_ALLOCS = 20 };

static void *_Atomic heap[HEAP];

int main(int argc, char **argv)
{
    size_t forks = (size_t)(300 * mb_scale());
    if (argc > 1)
        forks = strtoul(argv[1], NULL, 10);
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < HEAP; i++) {
        size_t sz = mb_range(&rng, 16, 640);
        void *p = malloc(sz);
        if (p == NULL)
            abort();
        mb_stamp(p, sz);
        atomic_store(&heap[i], p);
    }
    for (size_t i = 0; i < HEAP; i += 3) { /* holes, as a real heap has */
        free(atomic_load(&heap[i]));
        atomic_store(&heap[i], NULL);
    }
    size_t failed = 0;
    uint64_t t0 = mb_now_ns();
    for (size_t n = 0; n < forks; n++) {
        pid_t pid = fork();
        if (pid < 0)
            abort();
        if (pid == 0) {
            for (int j = 0; j < CHILD_ALLOCS; j++) {
                size_t sz = mb_range(&rng, 16, 512);
                char *s = malloc(sz);
                if (s == NULL)
                    _exit(2);
                mb_stamp(s, sz);
                if (mb_stamp_bad(s))
                    _exit(3);
                free(s);
            }
            exit(0); /* atexit handlers and destructors run, as in a shell */
        }
        for (int j = 0; j < PARENT_ALLOCS; j++) {
            char *s = malloc(mb_range(&rng, 16, 512));
            if (s == NULL)
                abort();
            s[0] = 1;
            free(s);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
            WEXITSTATUS(st) != 0)
            failed++;
    }
    uint64_t t1 = mb_now_ns();
    size_t bad = mb_free_stamped(heap, HEAP);
    mb_print_elapsed(t0, t1);
    printf("MACRO forks=%zu\nMACRO failed=%zu\nMACRO corrupt=%zu\n", forks,
           failed, bad);
    return bad != 0 || failed != 0;
}
