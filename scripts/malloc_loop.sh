#!/usr/bin/env bash
# malloc_loop.sh -- run benchmarks/malloc_loop.c against the drop-in malloc
# and every system allocator found, by LD_PRELOAD, interleaved (one process
# per allocator per round), and print the best of the rounds per
# allocator and workload.  docs/benchmarks.md, "malloc loops".
#
#   scripts/malloc_loop.sh [workload...]   default: pair simple bignum threads
#                                          medium medium1
#
# Knobs (environment): ML_ROUNDS (default 7), ML_SCALE (default 1),
# ML_ALLOCATORS (default "deferpool glibc jemalloc mimalloc tcmalloc"; an
# entry name=/path/to/lib.so adds another build, e.g. an older one).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build=build/bench
opts=(-Dbuildtype=release -Dtests=disabled -Dbenchmarks=enabled)
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "${opts[@]}" >/dev/null
fi
ninja -C "$build" benchmarks/malloc_loop libdeferpool-malloc.so.0.1.0 >/dev/null

prog=$build/benchmarks/malloc_loop
libdir=/usr/lib/x86_64-linux-gnu
declare -A lib=(
    [deferpool]=$root/$build/libdeferpool-malloc.so
    [glibc]=
    [jemalloc]=$libdir/libjemalloc.so.2
    [mimalloc]=$libdir/libmimalloc.so.2
    [tcmalloc]=$libdir/libtcmalloc_minimal.so.4
)
allocs=()
for a in ${ML_ALLOCATORS:-deferpool glibc jemalloc mimalloc tcmalloc}; do
    if [[ $a == *=* ]]; then
        lib[${a%%=*}]=${a#*=}
        a=${a%%=*}
    fi
    allocs+=("$a")
done
rounds=${ML_ROUNDS:-7}
scale=${ML_SCALE:-1}
works=("$@")
[ ${#works[@]} -gt 0 ] || works=(pair simple bignum threads medium medium1)

declare -A best
for ((r = 0; r < rounds; r++)); do
    for w in "${works[@]}"; do
        for a in "${allocs[@]}"; do
            l=${lib[$a]}
            [ -z "$l" ] || [ -e "$l" ] || continue
            v=$(LD_PRELOAD=$l "$prog" "$w" "$scale" | awk '{print $2}')
            k="$w/$a"
            if [ -z "${best[$k]:-}" ] ||
               awk -v a="$v" -v b="${best[$k]}" 'BEGIN{exit !(a < b)}'; then
                best[$k]=$v
            fi
        done
    done
done

printf '%-8s' workload
for a in "${allocs[@]}"; do printf '%11s' "$a"; done
printf '   (best of %d; pair/simple/medium/medium1: ns per malloc+free, bignum/threads: ms)\n' "$rounds"
for w in "${works[@]}"; do
    printf '%-8s' "$w"
    for a in "${allocs[@]}"; do printf '%11s' "${best[$w/$a]:--}"; done
    printf '\n'
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
