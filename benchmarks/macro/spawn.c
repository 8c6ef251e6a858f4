/*
 * spawn.c -- short-lived processes, as a shell script or a build runs
 * them: the parent starts SPAWNS copies of this program one at a time
 * (posix_spawn, the preload inherited through the environment) and waits
 * for each.  A child allocates what a small tool does at start-up (a few
 * hundred blocks of 16 B to 1 KiB, a few of 4 to 16 KiB, as stdio buffers
 * and a parsed command line would be), frees half, prints one line and
 * exits.  What is measured is process start and exit: the allocator's
 * initialisation, and every page it touches in a process that lives a
 * few milliseconds (the children's page faults count with the parent's:
 * wait4 sums them).
 */
#include "macro.h"

#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

enum { CHILD_SMALL = 300, CHILD_LARGE = 4 };

static int child(void)
{
    static void *blk[CHILD_SMALL + CHILD_LARGE];
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    size_t bytes = 0;
    for (int i = 0; i < CHILD_SMALL + CHILD_LARGE; i++) {
        size_t sz = i < CHILD_SMALL ? mb_range(&rng, 16, 1024)
                                    : mb_range(&rng, 4096, 16384);
        char *s = malloc(sz);
        if (s == NULL)
            return 2;
        memset(s, i & 0xff, sz);
        bytes += sz;
        blk[i] = s;
    }
    for (int i = 0; i < CHILD_SMALL + CHILD_LARGE; i += 2)
        free(blk[i]);
    /* A check that the blocks kept their contents. */
    for (int i = 1; i < CHILD_SMALL + CHILD_LARGE; i += 2)
        if (((unsigned char *)blk[i])[0] != (unsigned)(i & 0xff))
            return 3;
    printf("child %zu bytes\n", bytes);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "child"))
        return child();
    size_t spawns = (size_t)(300 * mb_scale());
    if (argc > 1)
        spawns = strtoul(argv[1], NULL, 10);
    /* The children's output goes nowhere: only their exit status counts. */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    char *cargv[] = {"spawn", "child", NULL};
    size_t failed = 0;
    uint64_t t0 = mb_now_ns();
    for (size_t n = 0; n < spawns; n++) {
        pid_t pid;
        int st;
        if (posix_spawn(&pid, "/proc/self/exe", &fa, NULL, cargv,
                        environ) != 0) {
            perror("posix_spawn");
            return 1;
        }
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
            WEXITSTATUS(st) != 0)
            failed++;
    }
    uint64_t t1 = mb_now_ns();
    posix_spawn_file_actions_destroy(&fa);
    printf("MACRO spawns=%zu\nMACRO failed=%zu\n", spawns, failed);
    mb_print_elapsed(t0, t1);
    return failed != 0;
}
