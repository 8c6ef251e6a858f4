/*
 * test_malloc_programs.c -- real programs under LD_PRELOAD of
 * libdeferpool-malloc.so, each checked for the right output: python3
 * (PYTHONMALLOC=malloc) building a 200k-entry dict, gcc compiling and
 * linking a C file, sort of a large file, and a multi-threaded C++
 * program (tests/malloc/mt_churn.cc).  Output is compared with the same
 * command run without the preload; DEFERPOOL_CONF=stats_print:1 makes
 * every preloaded process print its statistics at exit, which proves the
 * preload took effect, and each must report that no free() called the
 * provider.  A missing program skips its test.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/dpm-programs-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static const char *lib(void)
{
    const char *l = getenv("DP_MALLOC_LIB");
    cr_assert(l && access(l, R_OK) == 0, "DP_MALLOC_LIB not set or unreadable");
    return l;
}

static int have(const char *prog)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    return b;
}

/* Run `cmd` (a shell command) with and without the preload; stdout of
 * both must match (and be non-empty), the preloaded run must succeed and
 * must have printed deferpool-malloc statistics. */
static void same_output(const char *name, const char *cmd)
{
    char full[4096], out0[256], out1[256], err1[256];
    snprintf(out0, sizeof(out0), "%s/%s.plain", dir, name);
    snprintf(out1, sizeof(out1), "%s/%s.dp", dir, name);
    snprintf(err1, sizeof(err1), "%s/%s.err", dir, name);
    snprintf(full, sizeof(full), "cd '%s' && ( %s ) > '%s'", dir, cmd, out0);
    cr_assert_eq(system(full), 0, "without preload: %s", cmd);
    snprintf(full, sizeof(full),
             "cd '%s' && DEFERPOOL_CONF=stats_print:1 LD_PRELOAD='%s' "
             "sh -c '%s' > '%s' 2> '%s'",
             dir, lib(), cmd, out1, err1);
    int rc = system(full);
    char *e = slurp(err1);
    cr_assert_eq(rc, 0, "with preload: %s\nstderr:\n%.2000s", cmd, e);
    cr_assert_not_null(strstr(e, "deferpool-malloc"),
                       "the preload did not take effect:\n%.2000s", e);
    /* Each preloaded process printed its statistics: in every one of
     * them, no free() called the provider. */
    static const char key[] = "provider calls from free: ";
    int reports = 0;
    for (const char *k = strstr(e, key); k; k = strstr(k + 1, key)) {
        char *end;
        unsigned long long calls = strtoull(k + sizeof(key) - 1, &end, 10);
        cr_assert_neq(end, k + sizeof(key) - 1, "no number after: %.60s", k);
        cr_assert_eq(calls, 0, "%llu provider calls from free:\n%.2000s",
                     calls, e);
        reports++;
    }
    cr_assert_gt(reports, 0, "no statistics printed:\n%.2000s", e);
    char *a = slurp(out0), *b = slurp(out1);
    cr_assert_gt(strlen(a), 0);
    cr_assert_str_eq(a, b, "%s: output differs", name);
    free(a);
    free(b);
    free(e);
}

TestSuite(malloc_programs, .init = setup, .fini = teardown, .timeout = 100);

Test(malloc_programs, python3_dict_of_200k_entries)
{
    if (!have("python3"))
        cr_skip_test("python3 not found");
    same_output("python",
                "PYTHONMALLOC=malloc python3 -c \"\n"
                "d = {}\n"
                "for i in range(200000): d[str(i) * 3] = [i, str(i)]\n"
                "s = sum(len(k) + v[0] for k, v in d.items())\n"
                "del d\n"
                "l = [bytes(i % 5000) for i in range(20000)]\n"
                "print(s, sum(map(len, l)))\"");
}

Test(malloc_programs, gcc_compiles_a_program_that_runs)
{
    if (!have("gcc"))
        cr_skip_test("gcc not found");
    char path[128];
    snprintf(path, sizeof(path), "%s/hello.c", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("#include <stdio.h>\n#include <stdlib.h>\n"
          "static int fib(int n) { return n < 2 ? n : fib(n-1) + fib(n-2); }\n"
          "int main(void) { char *p = malloc(100); snprintf(p, 100, \"%d\", "
          "fib(20)); puts(p); free(p); return 0; }\n",
          f);
    fclose(f);
    /* The compiler (driver, cc1, as, collect2, ld) runs preloaded; the
     * binary it built runs plainly in both cases. */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "cd '%s' && gcc -O2 -o hello-dp hello.c", dir);
    char full[1024];
    snprintf(full, sizeof(full), "LD_PRELOAD='%s' sh -c '%s'", lib(), cmd);
    cr_assert_eq(system(full), 0, "gcc under preload failed");
    snprintf(full, sizeof(full), "cd '%s' && ./hello-dp > hello.out", dir);
    cr_assert_eq(system(full), 0);
    snprintf(path, sizeof(path), "%s/hello.out", dir);
    char *out = slurp(path);
    cr_assert_str_eq(out, "6765\n");
    free(out);
    /* And the stats of the preloaded compiler show up. */
    same_output("gcc", "gcc -O2 -o hello-2 hello.c && ./hello-2");
}

Test(malloc_programs, sort_of_a_large_file)
{
    if (!have("sort"))
        cr_skip_test("sort not found");
    char path[128];
    snprintf(path, sizeof(path), "%s/input.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    unsigned long long x = 88172645463325252ull;
    for (int i = 0; i < 300000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        fprintf(f, "%llx %d %.*s\n", x, i, (int)(x % 40), 
                "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH");
    }
    fclose(f);
    same_output("sort", "LC_ALL=C sort --parallel=2 -S 32M input.txt");
}

Test(malloc_programs, multithreaded_cpp_new_delete_string_vector)
{
    const char *prog = getenv("DP_MALLOC_MT_CHURN");
    if (!prog || access(prog, X_OK) != 0)
        cr_skip_test("no C++ compiler: mt_churn not built");
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s 20000", prog);
    same_output("mt_churn", cmd);
}
