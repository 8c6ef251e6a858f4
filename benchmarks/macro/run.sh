#!/usr/bin/env bash
# run.sh -- macro benchmarks of the drop-in malloc (issue 4, "Benchmarks").
#
#   benchmarks/macro/run.sh [outdir [builddir]]
#
# Builds the workload programs of this directory with cc -O2 into builddir
# (default ${TMPDIR:-/tmp}/deferpool-macro), then runs every workload under
# LD_PRELOAD of each allocator found -- glibc (no preload), jemalloc,
# mimalloc, tcmalloc, deferpool -- REPS times (default 2), interleaving the
# allocators.  Each run goes through `/usr/bin/time -f '%e %M %R'` for wall
# seconds, peak RSS and minor page faults; the programs print their own elapsed time, RSS
# after idle and free() latency.  report.py takes the medians and writes
# outdir/results.json, outdir/table.md and outdir/macro.png (ratios to
# jemalloc measured in the same run).  Default outdir:
# benchmarks/macro/results.  About 3 minutes on 2 cores.
#
# Environment:
#   DP_MALLOC_LIB   libdeferpool-malloc.so to measure (default: the first
#                   of build/bench/, /tmp/build-macro/; built into
#                   /tmp/build-macro if neither exists)
#   MACRO_ALLOCATORS  subset, e.g. "deferpool jemalloc mimalloc" (without glibc,
#                   the python and gcc outputs are not checked: glibc's
#                   output is the reference)
#   MACRO_WORKLOADS   subset of the workload names below
#   MACRO_REPS      repetitions (default 2; the median is reported)
#   MACRO_LARSON_REPS  repetitions of larson (default 3 x MACRO_REPS): a
#                   run is 1 s for all five allocators, and its free()
#                   p99.99 rests on ~38 samples per run, so a median of 3
#                   flips between allocators that are close
#   MACRO_SLOW_X    an allocator but deferpool and jemalloc more than this many
#                   times slower than the fastest in a workload's first
#                   repetition runs that workload once (default 3)
#   MACRO_SCALE     work per run (default 1.0)
#   MACRO_IDLE_MS   burst: idle time sampled after the last free (1500;
#                   the RSS-after-idle figure is the 1000 ms reading)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/results}
bld=${2:-${TMPDIR:-/tmp}/deferpool-macro}
reps=${MACRO_REPS:-2}
larson_reps=${MACRO_LARSON_REPS:-$((3 * reps))}
mkdir -p "$out" "$bld"
out=$(cd "$out" && pwd)
rm -rf "$out/raw"
mkdir -p "$out/raw"

if [ ! -x /usr/bin/time ]; then
    echo "run.sh: installing GNU time" >&2
    apt-get install -y -qq time >/dev/null || {
        echo "run.sh: /usr/bin/time is missing (apt-get install time)" >&2
        exit 1
    }
fi

# --- the workload programs -------------------------------------------------
for p in larson prodcons burst realloc_grow realloc_mix large threads_churn \
         xthread_random handover_exit one_to_many fork_exit spawn; do
    if [ ! -x "$bld/$p" ] || [ "$here/$p.c" -nt "$bld/$p" ] ||
       [ "$here/macro.h" -nt "$bld/$p" ]; then
        cc -O2 -std=c11 -Wall -Wextra -pthread -o "$bld/$p" "$here/$p.c"
    fi
done
python3 "$here/gen_c.py" 200 >"$bld/gen.c"
# The interpreter itself: `python3` may be a wrapper script (pyenv's shim
# runs some 40 bash processes before the interpreter), which would make
# the python workload measure fork and process start-up, not Python.  A
# fixed hash seed: the string hashes decide how long dict probes run.
pybin=$(python3 -c 'import sys; print(sys.executable)')

# --- the allocators --------------------------------------------------------
dp=${DP_MALLOC_LIB:-}
if [ -z "$dp" ]; then
    for c in "$root/build/bench/libdeferpool-malloc.so" \
             /tmp/build-macro/libdeferpool-malloc.so; do
        if [ -e "$c" ]; then dp=$c; break; fi
    done
fi
if [ -z "$dp" ]; then
    echo "run.sh: building libdeferpool-malloc.so in /tmp/build-macro" >&2
    meson setup /tmp/build-macro "$root" -Dbuildtype=release \
        -Dtests=disabled -Dbenchmarks=disabled >/dev/null
    ninja -C /tmp/build-macro >/dev/null
    dp=/tmp/build-macro/libdeferpool-malloc.so
fi
dp=$(readlink -f "$dp")
if [ -n "$(find "$root/lib" "$root/include" -newer "$dp" -type f 2>/dev/null | head -1)" ]; then
    echo "run.sh: warning: $dp is older than the sources in lib/ or include/" >&2
fi
# The stats line proves the preload takes effect.
if ! DEFERPOOL_CONF=stats_print:1 LD_PRELOAD=$dp /bin/echo 2>&1 |
        grep -q 'deferpool-malloc'; then
    echo "run.sh: $dp does not take effect under LD_PRELOAD" >&2
    exit 1
fi

lib=/usr/lib/x86_64-linux-gnu
declare -A preload=([glibc]="" [deferpool]="$dp")
[ -e $lib/libjemalloc.so.2 ] && preload[jemalloc]=$lib/libjemalloc.so.2
[ -e $lib/libmimalloc.so.2 ] && preload[mimalloc]=$lib/libmimalloc.so.2
[ -e $lib/libtcmalloc_minimal.so.4 ] &&
    preload[tcmalloc]=$lib/libtcmalloc_minimal.so.4
allocs=()
for a in glibc jemalloc mimalloc tcmalloc deferpool; do
    [ -n "${preload[$a]+set}" ] || continue
    if [ -n "${MACRO_ALLOCATORS:-}" ] &&
       [[ " $MACRO_ALLOCATORS " != *" $a "* ]]; then
        continue
    fi
    allocs+=("$a")
done
[ -n "${preload[jemalloc]+set}" ] ||
    echo "run.sh: warning: jemalloc not installed: no ratios" >&2

knobs=$(env | grep -E '^(DEFERPOOL_CONF|MALLOC_CONF|MIMALLOC_[A-Z_]*|TCMALLOC_[A-Z_]*|GLIBC_TUNABLES)=' || true)
[ -z "$knobs" ] ||
    echo "run.sh: warning: allocator settings in the environment:" $knobs >&2

# --- the workloads: name and command ---------------------------------------
workloads=(larson prodcons one_to_many xthread_random handover_exit
           threads_churn fork spawn burst realloc realloc_mix large python
           gcc)
if [ -n "${MACRO_WORKLOADS:-}" ]; then
    read -r -a workloads <<<"$MACRO_WORKLOADS"
fi
cmd_of() {
    case $1 in
    larson) echo "$bld/larson" ;;
    prodcons) echo "$bld/prodcons" ;;
    burst) echo "$bld/burst" ;;
    realloc) echo "$bld/realloc_grow" ;;
    realloc_mix) echo "$bld/realloc_mix" ;;
    threads_churn) echo "$bld/threads_churn" ;;
    xthread_random) echo "$bld/xthread_random" ;;
    handover_exit) echo "$bld/handover_exit" ;;
    one_to_many) echo "$bld/one_to_many" ;;
    fork) echo "$bld/fork_exit" ;;
    spawn) echo "$bld/spawn" ;;
    large) echo "$bld/large" ;;
    python) echo "env PYTHONMALLOC=malloc PYTHONHASHSEED=0 $pybin $here/pywork.py ${MACRO_SCALE:-1}" ;;
    gcc) echo "gcc -O2 -S $bld/gen.c -o /dev/stdout" ;;
    *) echo "run.sh: unknown workload $1" >&2; exit 1 ;;
    esac
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${load_before%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    echo "run.sh: warning: load average $load_before before the run;" \
         "other work on the machine skews the numbers" >&2
fi
t0=$(date +%s)
date_start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
fail=0
reps_of() { if [ "$1" = larson ]; then echo "$larson_reps"; else echo "$reps"; fi; }
# An allocator other than deferpool and jemalloc (the ratios' reference)
# that took more than slow_x times the fastest allocator's wall time in a
# workload's first repetition runs it once: further runs cannot change a
# comparison with it, and such runs (glibc's prodcons, realloc and large,
# tcmalloc's spawn) were a sixth of the macro workloads' time.
slow_x=${MACRO_SLOW_X:-3}
wall_of() { tail -1 "$out/raw/$1.$2.1.time" | cut -d' ' -f1; }
once() { # once ALLOC WORKLOAD: true if ALLOC runs WORKLOAD only once
    local a=$1 w=$2 b best=
    [ "$a" != deferpool ] && [ "$a" != jemalloc ] || return 1
    for b in "${allocs[@]}"; do
        local t; t=$(wall_of "$b" "$w")
        if [ -z "$best" ] || awk -v x="$t" -v y="$best" 'BEGIN{exit !(x < y)}'; then
            best=$t
        fi
    done
    awk -v x="$(wall_of "$a" "$w")" -v y="$best" -v k="$slow_x" \
        'BEGIN{exit !(x > k * y)}'
}
max_reps=$((larson_reps > reps ? larson_reps : reps))
for r in $(seq 1 "$max_reps"); do
    for w in "${workloads[@]}"; do
        [ "$r" -le "$(reps_of "$w")" ] || continue
        for a in "${allocs[@]}"; do
            if [ "$r" -gt 1 ] && once "$a" "$w"; then continue; fi
            f=$out/raw/$a.$w.$r
            # shellcheck disable=SC2046
            if ! /usr/bin/time -f '%e %M %R' -o "$f.time" \
                    env LD_PRELOAD="${preload[$a]}" $(cmd_of "$w") \
                    >"$f.out" 2>"$f.err"; then
                echo "run.sh: $a $w (rep $r) failed, see $f.err" >&2
                fail=1
            fi
            # The real programs' output must not depend on the allocator.
            if [ "$w" = python ] || [ "$w" = gcc ]; then
                md5sum <"$f.out" | cut -d' ' -f1 >"$f.md5"
                rm -f "$f.out"
            fi
        done
        echo "run.sh: rep $r/$(reps_of "$w") $w done ($(($(date +%s) - t0)) s)" >&2
    done
done
t1=$(date +%s)

cat >"$out/meta.json" <<EOF2
{
  "date_utc": "$date_start",
  "date_end_utc": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "git": "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)",
  "command": "$(echo $(env | grep -E '^(MACRO_|DP_MALLOC_LIB=)' | sort) benchmarks/macro/run.sh ${1:-})",
  "nproc": $(nproc),
  "cpu": "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)",
  "kernel": "$(uname -sr)",
  "distro": "$(. /etc/os-release && echo "$PRETTY_NAME")",
  "deferpool_lib": "$dp",
  "allocators": "${allocs[*]}",
  "workloads": "${workloads[*]}",
  "reps": $reps,
  "larson_reps": $larson_reps,
  "slow_x": $slow_x,
  "scale": ${MACRO_SCALE:-1},
  "idle_ms": ${MACRO_IDLE_MS:-1500},
  "allocator_env": "$(echo $knobs)",
  "loadavg_before": "$load_before",
  "loadavg_after": "$(cut -d' ' -f1-3 /proc/loadavg)",
  "run_seconds": $((t1 - t0))
}
EOF2

py=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
    py=/usr/bin/python3
fi
"$py" "$here/report.py" "$out"
echo "run.sh: results in $out ($((t1 - t0)) s of runs)" >&2
exit $fail
