/*
 * bench_suite.c -- what bench-<allocator> runs: set up the one back-end,
 * record how it is wired in the JSON context, register the bodies.
 */
#include "bench.h"

#include <stdio.h>

void dpb_suite_register(void) {
    char desc[512], buf[64];
    dpb_backend_setup(DPB_OBJSIZE, 0, desc, sizeof(desc));
    dpb_add_context("dpb_allocator", dpb_backend.name);
    dpb_add_context("dpb_allocator_version", dpb_backend.version());
    dpb_add_context("dpb_api", dpb_backend.how);
    dpb_add_context("dpb_wiring", desc);
    snprintf(buf, sizeof(buf), "%d", DPB_OBJSIZE);
    dpb_add_context("dpb_objsize", buf);
    dpb_register_single();
    dpb_register_threads();
}
