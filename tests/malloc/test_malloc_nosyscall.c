/*
 * test_malloc_nosyscall.c -- free() makes no system call, for any size.
 *
 * A thread that has called prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) may
 * only read, write, _exit and sigreturn; any other system call makes the
 * kernel kill that thread with SIGKILL.  The freeing thread enters strict
 * mode, frees small, medium and large blocks (up to 8 MiB, and enough
 * small ones to overflow its cache and empty pages), stores a flag and
 * leaves with a raw SYS_exit; pthread_join still works (the kernel clears
 * the tid word).  Once the blocks are freed by the thread that allocated
 * them, once by another thread.  Each size is asked for four times:
 * by malloc and at alignments of 128 bytes, a page and 64 KiB.  Some of
 * the large blocks come from the large-block cache (filled beforehand).  Every scenario runs in a forked
 * child that reports through its exit code; a negative control makes one
 * forbidden call to show the harness catches it.
 */
#include <criterion/criterion.h>
#include <deferpool-malloc.h>

#include <errno.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "malloc_testutil.h"

enum { CH_OK = 0, CH_SETUP = 10, CH_PRCTL, CH_KILLED, CH_BOOKS };

static const size_t sizes[] = {
    1,      8,      16,     100,     128,     129,     1000,   4096,
    5000,   16384,  40000,  65536,   65537,   100000,  1 << 20,
    3 << 20, 8 << 20,
};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
#define NSMALL 4000 /* 64-byte objects: overflow the bin, empty pages */
#define NBLK (NSIZES * 4 + NSMALL)
/* The alignment of each round of sizes (0: malloc). */
static const size_t align_of_round[4] = {0, 128, 4096, 65536};

/* Whether a block of round r, size i is a medium or large one. */
static int is_large(int r, size_t i, size_t small_max)
{
    return sizes[i] > small_max || align_of_round[r] > 4096;
}

struct strict {
    void **blk;
    int alloc_here;
    int forbidden;
    int prctl_errno;
    atomic_int reached;
};

static int alloc_all(void **blk)
{
    size_t k = 0;
    for (int r = 0; r < 4; r++)
        for (size_t i = 0; i < NSIZES; i++) {
            if (!align_of_round[r])
                blk[k] = malloc(sizes[i]);
            else if (posix_memalign(&blk[k], align_of_round[r], sizes[i]))
                blk[k] = NULL;
            if (!blk[k])
                return -1;
            memset(blk[k], 0x33, sizes[i] < 4096 ? sizes[i] : 4096);
            k++;
        }
    for (size_t i = 0; i < NSMALL; i++)
        if (!(blk[k++] = malloc(64)))
            return -1;
    return 0;
}

static void *strict_thread(void *arg)
{
    struct strict *s = arg;
    if (s->alloc_here && alloc_all(s->blk) != 0)
        return NULL;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0) {
        s->prctl_errno = errno ? errno : -1;
        return NULL;
    }
    /* Strict mode: no stdio, no pthread_exit, only free. */
    for (size_t i = 0; i < NBLK; i++)
        free(s->blk[i]);
    if (s->forbidden)
        syscall(SYS_getpid);
    atomic_store_explicit(&s->reached, 1, memory_order_seq_cst);
    syscall(SYS_exit, 0);
    return NULL;
}

static int child_main(int alloc_here, int forbidden)
{
    void **blk = calloc(NBLK, sizeof(void *));
    if (!blk)
        return CH_SETUP;
    struct strict s = {.blk = blk, .alloc_here = alloc_here,
                       .forbidden = forbidden};
    /* Fill the large-block cache, so that some of the blocks freed in
     * strict mode were reused from it (and some lost their tail). */
    dp_malloc_stats_t cold;
    dp_malloc_stats_get(&cold);
    size_t nlarge = 0;
    for (int r = 0; r < 4; r++)
        for (size_t i = 0; i < NSIZES; i++)
            nlarge += is_large(r, i, cold.small_max);
    void *warm[NSIZES];
    for (size_t i = 0; i < NSIZES; i++)
        if (!(warm[i] = malloc(sizes[i] > cold.small_max ? 2 * sizes[i] : 1)))
            return CH_SETUP;
    for (size_t i = 0; i < NSIZES; i++)
        free(warm[i]);
    dp_malloc_stats_get(&cold);
    if (!alloc_here && alloc_all(blk) != 0)
        return CH_SETUP;
    dp_malloc_stats_t before, after;
    dp_malloc_stats_get(&before);
    pthread_t t;
    if (pthread_create(&t, NULL, strict_thread, &s) != 0)
        return CH_SETUP;
    pthread_join(t, NULL);
    if (s.prctl_errno)
        return CH_PRCTL;
    if (!atomic_load(&s.reached))
        return CH_KILLED;
    dp_malloc_stats_get(&after);
    /* Every large block freed: none live (they may already be unmapped). */
    if (after.large_inuse != (alloc_here ? before.large_inuse
                                         : before.large_inuse - nlarge) ||
        after.put_provider_calls != 0 ||
        after.large_reused <= cold.large_reused)
        return CH_BOOKS;
    return CH_OK;
}

static void run(int alloc_here, int forbidden, int expect)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(child_main(alloc_here, forbidden));
    int st;
    while (waitpid(pid, &st, 0) < 0)
        cr_assert_eq(errno, EINTR);
    cr_assert(WIFEXITED(st), "child died of signal %d",
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), expect, "child exit %d, expected %d "
                 "(11 prctl, 12 killed by a system call, 13 books)",
                 WEXITSTATUS(st), expect);
}

Test(malloc_nosyscall, free_in_the_allocating_thread_makes_no_syscall)
{
    run(1, 0, CH_OK);
}

Test(malloc_nosyscall, free_in_another_thread_makes_no_syscall)
{
    run(0, 0, CH_OK);
}

Test(malloc_nosyscall, harness_catches_a_forbidden_syscall)
{
    run(0, 1, CH_KILLED);
}
