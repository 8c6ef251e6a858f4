/*
 * backends.c -- one allocator per executable, chosen by DPB_BACKEND_*.
 * See backends.h for why the allocators live in separate processes.
 */
#include "backends.h"

#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t dpb_objsize;

_Noreturn void dpb_oom(void) {
    fprintf(stderr, "dpbench: %s: get of %zu bytes failed\n",
            dpb_backend.name, dpb_objsize);
    abort();
}

/* ===================================================================== */
/* deferpool                                                             */
/* ===================================================================== */
#if defined(DPB_BACKEND_DEFERPOOL)
#include <deferpool.h>
#if defined(DPB_DEFERPOOL_IMMEDIATE)
#include "immediate.h"
#endif

dp_pool_t *dpb_dp_pool;
/*
 * DP_WAITOK is what a user calls from ordinary (non-interrupt) context:
 * like malloc it never fails, and it is the get that pays for returning
 * due empty pages, so measuring it keeps that cost in the numbers.
 * DPB_DEFERPOOL_GET=nowait measures DP_NOWAIT instead.
 */
int dpb_dp_flags = DP_WAITOK;

static int dp_init(const dpb_backend_conf_t *conf) {
    dp_pool_attr_t attr;
    dp_pool_attr_init(&attr);
    if (conf->reclaim_age_ns != 0)
        attr.reclaim_age_ns = conf->reclaim_age_ns;
    const char *g = getenv("DPB_DEFERPOOL_GET");
    if (g != NULL && strcmp(g, "nowait") == 0)
        dpb_dp_flags = DP_NOWAIT;
#if defined(DPB_DEFERPOOL_IMMEDIATE)
    /*
     * Immediate reclamation, for comparison only: a put that empties a
     * page returns it to the provider inside the put (a naive pool; no
     * per-thread caches).  Shows what deferral buys.  The mode is
     * internal: this back-end ("deferpool-immediate") links a private copy
     * of the library (benchmarks/meson.build, immediate.c).
     */
    dpb_dp_pool = dpb_pool_create_immediate("dpbench", conf->objsize, &attr);
#else
    dpb_dp_pool = dp_pool_create("dpbench", conf->objsize, &attr);
#endif
    if (dpb_dp_pool == NULL) {
        perror("dpbench: dp_pool_create");
        return -1;
    }
    return 0;
}
static void dp_fini(void)
{
    if (dp_pool_destroy(dpb_dp_pool) != 0)
        perror("dpbench: dp_pool_destroy");
}
static const char *dp_ver(void) { return dp_version(); }

#if defined(DPB_DEFERPOOL_IMMEDIATE)
#define DPB_NAME "deferpool-immediate"
#define DPB_FLAGS ", creation flag DP_IPOOL_IMMEDIATE"
#else
#define DPB_NAME "deferpool"
#define DPB_FLAGS ""
#endif
const dpb_backend_t dpb_backend = {
    DPB_NAME, dp_init, dp_fini, dp_ver,
    "dp_pool_get(pool, DP_WAITOK) / dp_pool_put(pool, obj), one pool of "
    "the object size" DPB_FLAGS};
#define DPB_LIB "libdeferpool"
#define DPB_ENTRY ((void *)dp_pool_get)

/* ===================================================================== */
/* glibc                                                                 */
/* ===================================================================== */
#elif defined(DPB_BACKEND_GLIBC)
#include <gnu/libc-version.h>

static int gl_init(const dpb_backend_conf_t *conf) {
    (void)conf;
    return 0;
}
static void gl_fini(void) {}
static const char *gl_ver(void) { return gnu_get_libc_version(); }

const dpb_backend_t dpb_backend = {"glibc", gl_init, gl_fini,
                                   gl_ver, "malloc(size) / free(obj)"};
#define DPB_LIB "libc.so"
#define DPB_ENTRY ((void *)malloc)

/* ===================================================================== */
/* jemalloc                                                              */
/* ===================================================================== */
#elif defined(DPB_BACKEND_JEMALLOC)
#include <jemalloc/jemalloc.h>

static int je_init(const dpb_backend_conf_t *conf) {
    (void)conf;
    return 0;
}
static void je_fini(void) {}
static const char *je_ver(void) {
    const char *v = "?";
    size_t len = sizeof(v);
    mallctl("version", &v, &len, NULL, 0);
    return v;
}

const dpb_backend_t dpb_backend = {"jemalloc", je_init,
                                   je_fini, je_ver,
                                   "mallocx(size, 0) / sdallocx(obj, size, 0)"};
#define DPB_LIB "libjemalloc"
#define DPB_ENTRY ((void *)mallocx)

/* ===================================================================== */
/* mimalloc                                                              */
/* ===================================================================== */
#elif defined(DPB_BACKEND_MIMALLOC)
#include <mimalloc.h>

static int mi_init(const dpb_backend_conf_t *conf) {
    (void)conf;
    return 0;
}
static void mi_fini(void) {}
static const char *mi_ver(void) {
    static char buf[16];
    int v = mi_version();
    snprintf(buf, sizeof(buf), "%d.%d.%d", v / 100, v / 10 % 10, v % 10);
    return buf;
}

const dpb_backend_t dpb_backend = {"mimalloc", mi_init,
                                   mi_fini, mi_ver,
                                   "mi_malloc(size) / mi_free(obj)"};
#define DPB_LIB "libmimalloc"
#define DPB_ENTRY ((void *)mi_malloc)

/* ===================================================================== */
/* tcmalloc (gperftools, minimal)                                        */
/* ===================================================================== */
#elif defined(DPB_BACKEND_TCMALLOC)
#include <gperftools/tcmalloc.h>

static int tc_init(const dpb_backend_conf_t *conf) {
    (void)conf;
    return 0;
}
static void tc_fini(void) {}
static const char *tc_ver(void) {
    int a, b;
    const char *c;
    return tc_version(&a, &b, &c);
}

const dpb_backend_t dpb_backend = {"tcmalloc", tc_init,
                                   tc_fini, tc_ver,
                                   "tc_malloc(size) / tc_free(obj)"};
#define DPB_LIB "libtcmalloc"
#define DPB_ENTRY ((void *)tc_malloc)

/* ===================================================================== */
/* the floor (floor.c): a reference point, not an allocator              */
/* ===================================================================== */
#elif defined(DPB_BACKEND_FLOOR)

static int fl_init(const dpb_backend_conf_t *conf) {
    dpb_floor_init(conf->objsize);
    return 0;
}
static void fl_fini(void) {}
static const char *fl_ver(void) { return "floor.c"; }

const dpb_backend_t dpb_backend = {"floor", fl_init, fl_fini, fl_ver,
                                   "dpb_floor_get() / dpb_floor_put(obj)"};
#define DPB_LIB "libdpb-floor"
#define DPB_ENTRY ((void *)dpb_floor_get)

#else
#error "define exactly one DPB_BACKEND_* (meson does)"
#endif

/* ===================================================================== */
/* Wiring checks                                                         */
/* ===================================================================== */

static const char *const allocator_libs[] = {"libjemalloc", "libmimalloc",
                                              "libtcmalloc", "libdeferpool"};

static int foreign_cb(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    const char **bad = arg;
    for (size_t i = 0; i < sizeof(allocator_libs) / sizeof(*allocator_libs);
         i++) {
        if (strstr(info->dlpi_name, allocator_libs[i]) != NULL &&
            strstr(info->dlpi_name, DPB_LIB) == NULL) {
            *bad = info->dlpi_name;
            return 1;
        }
    }
    return 0;
}

static const char *object_of(void *fn) {
    Dl_info di;
    if (fn == NULL || dladdr(fn, &di) == 0 || di.dli_fname == NULL)
        return "?";
    return di.dli_fname;
}

_Noreturn static void wiring_fail(const char *what) {
    fprintf(stderr, "dpbench: %s: %s; refusing to measure\n",
            dpb_backend.name, what);
    exit(2);
}

void dpb_backend_check(char *desc, size_t len) {
    const char *pre = getenv("LD_PRELOAD");
    if (pre != NULL && pre[0] != '\0')
        wiring_fail("LD_PRELOAD is set");

    const char *bad = NULL;
    dl_iterate_phdr(foreign_cb, &bad);
    if (bad != NULL)
        wiring_fail("another allocator library is loaded");

    /* The back-end's entry point must live in the back-end's library. */
    const char *entry_obj = object_of(DPB_ENTRY);
    if (strstr(entry_obj, DPB_LIB) == NULL)
        wiring_fail("back-end entry point is not in " DPB_LIB);

    /* Where the malloc this binary calls resolves, against libc's own. */
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    void *libc_malloc = libc ? dlsym(libc, "malloc") : NULL;
    void *libc_free = libc ? dlsym(libc, "free") : NULL;
    void *used_malloc = (void *)malloc, *used_free = (void *)free;
    const char *malloc_obj = object_of(used_malloc);
#if defined(DPB_BACKEND_GLIBC)
    if (libc_malloc == NULL || used_malloc != libc_malloc ||
        used_free != libc_free || strstr(malloc_obj, "libc.so") == NULL)
        wiring_fail("malloc/free do not resolve to libc.so.6's own");
#endif
    snprintf(desc, len, "get -> %s; malloc -> %s%s", entry_obj, malloc_obj,
             used_malloc == libc_malloc && used_free == libc_free
                 ? " (glibc's own)"
                 : " (interposed)");
    if (libc != NULL)
        dlclose(libc);
}

void dpb_backend_setup(size_t size, uint64_t reclaim_age_ns, char *desc,
                       size_t len) {
    dpb_backend_check(desc, len);
    dpb_objsize = size;
    dpb_backend_conf_t conf = {size, reclaim_age_ns};
    if (dpb_backend.init(&conf) != 0)
        exit(2);
}
