/*
 * dp_internal.h -- an umbrella over the core's layer headers, for the
 * files built on the whole core (lib/malloc/, lib/stats.c,
 * lib/options.c, lib/testhooks.c).  The core's own files include the
 * layer headers they use, so that the includes draw the layer graph
 * (docs/design.md §1).
 */
#ifndef DP_INTERNAL_H
#define DP_INTERNAL_H

#include "deferpool.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "os.h"
#include "options.h"
#include "types.h"
#include "pagemap.h"
#include "page.h"
#include "cache.h"
#include "pool.h"
#include "reclaim.h"
#include "fork.h"

#endif /* DP_INTERNAL_H */
