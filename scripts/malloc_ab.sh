#!/usr/bin/env bash
# malloc_ab.sh -- compare builds of a malloc in one process at a time
# (benchmarks/malloc_ab.c), over several processes: prints, per build,
# the mean and the least of each process's best round, ns per pair of
# malloc_loop's `simple` workload.  docs/benchmarks.md, "malloc loops".
#
#   scripts/malloc_ab.sh name=/path/lib.so ...
#
# Knobs (environment): AB_PROCS (default 10), AB_ROUNDS (default 15).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build=build/bench
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dbuildtype=release -Dtests=disabled \
        -Dbenchmarks=enabled >/dev/null
fi
ninja -C "$build" benchmarks/malloc-ab >/dev/null

for ((i = 0; i < ${AB_PROCS:-10}; i++)); do
    "$build/benchmarks/malloc-ab" "$@"
done | awk '{
    if (!($1 in n)) order[++k] = $1
    n[$1]++; s[$1] += $2
    if (!($1 in lo) || $2 < lo[$1]) lo[$1] = $2
} END {
    printf "%-12s %8s %8s   (ns per pair; over %d processes)\n", "build", "mean", "least", n[order[1]]
    for (i = 1; i <= k; i++)
        printf "%-12s %8.3f %8.3f\n", order[i], s[order[i]] / n[order[i]], lo[order[i]]
}'
