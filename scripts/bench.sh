#!/usr/bin/env bash
# bench.sh -- build the benchmark suite, run it against every allocator
# found, and print the ratio table (jemalloc = 1.00, measured in the same
# run).  See docs/benchmarks.md.
#
#   scripts/bench.sh            full run (about 5 minutes on 2 cores)
#   DPB_QUICK=1 scripts/bench.sh   smoke run (under a minute; does not
#                                  touch benchmarks/results/latest)
#
# Knobs (environment):
#   DPB_ALLOCATORS  space-separated subset, e.g. "deferpool jemalloc"
#   DPB_MIN_TIME    --benchmark_min_time in seconds        (default 0.2)
#   DPB_REPS        repetitions, one process each, the allocators in
#                   turn (1T and 2T)                        (default 3)
#   DPB_LAT_ROUNDS  latency rounds                          (default 20)
#   DPB_STRACE_ROUNDS  rounds of the syscall-counting run   (default 4)
#   DPB_LAT_OBJECTS objects per latency round               (default 262144)
#   DPB_RSS_MIB     MiB per RSS burst cycle                 (default 256)
#   DPB_RSS_IDLE_MS idle time after each RSS cycle          (default 2000)
#   DPB_DIRECT_ROUNDS  rounds of the direct pairs           (default 7)
#   DPB_DIRECT_PROCS   processes of the direct pairs        (default 3)
#   DPB_NO_STRACE=1 skip the syscall-counting latency run
#   DPB_NO_MACRO=1  skip the drop-in malloc's macro workloads
#                   (benchmarks/macro/run.sh, about 3 minutes)
#
# Output: benchmarks/results/<UTC timestamp>/ (git-ignored; raw JSON/CSV,
# strace logs, PNGs, summary.json, table.md), and a copy of the summary,
# table and plots in benchmarks/results/latest/ (committed, linked from
# docs/benchmarks.md).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

"$root/scripts/setup-deps.sh" bench

if [ -n "${DPB_QUICK:-}" ]; then
    : "${DPB_MIN_TIME:=0.05}" "${DPB_REPS:=1}" "${DPB_LAT_ROUNDS:=4}"
    : "${DPB_STRACE_ROUNDS:=2}"
    : "${DPB_RSS_MIB:=64}" "${DPB_RSS_IDLE_MS:=1500}"
fi
min_time=${DPB_MIN_TIME:-0.2}
reps=${DPB_REPS:-3}
lat_rounds=${DPB_LAT_ROUNDS:-20}
strace_rounds=${DPB_STRACE_ROUNDS:-4}
lat_objects=${DPB_LAT_OBJECTS:-262144}
rss_mib=${DPB_RSS_MIB:-256}
rss_idle=${DPB_RSS_IDLE_MS:-2000}

build=build/bench
opts=(-Dbuildtype=release -Dtests=disabled -Dbenchmarks=enabled)
if [ -f "$build/build.ninja" ]; then
    # --reconfigure re-runs the feature checks (which back-ends exist).
    meson setup --reconfigure "$build" "${opts[@]}" >/dev/null
else
    meson setup "$build" "${opts[@]}" >/dev/null
fi
ninja -C "$build" >/dev/null

bindir=$build/benchmarks
allocs=()
for a in deferpool deferpool-immediate jemalloc glibc mimalloc tcmalloc; do
    [ -x "$bindir/bench-$a" ] || continue
    if [ -n "${DPB_ALLOCATORS:-}" ] && [[ " $DPB_ALLOCATORS " != *" $a "* ]]; then
        continue
    fi
    allocs+=("$a")
done
if [ "${#allocs[@]}" -eq 0 ]; then
    echo "bench.sh: no benchmark executables in $bindir" >&2
    exit 1
fi
[[ " ${allocs[*]} " == *" deferpool "* ]] ||
    echo "bench.sh: warning: no deferpool back-end built" >&2
[[ " ${allocs[*]} " == *" jemalloc "* ]] ||
    echo "bench.sh: warning: no jemalloc back-end: no ratios" >&2

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=benchmarks/results/$stamp
mkdir -p "$out"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${load_before%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    echo "bench.sh: warning: load average $load_before before the run;" \
         "other work on the machine skews the numbers" >&2
fi

# Allocator knobs in the environment change what is measured: record them.
knobs=$(env | grep -E '^(DEFERPOOL_CONF|MALLOC_CONF|JE_MALLOC_CONF|MIMALLOC_[A-Z_]*|TCMALLOC_[A-Z_]*|GLIBC_TUNABLES|MALLOC_[A-Z_]*_)=' || true)
if [ -n "$knobs" ]; then
    echo "bench.sh: warning: allocator settings in the environment:" \
         $knobs >&2
fi

have_strace=0
if [ -z "${DPB_NO_STRACE:-}" ] && command -v strace >/dev/null 2>&1; then
    have_strace=1
elif [ -z "${DPB_NO_STRACE:-}" ]; then
    echo "bench.sh: warning: strace not installed: syscalls during puts" \
         "are not counted" >&2
fi

loadlog() { echo "$(date +%s) $1 $(cut -d' ' -f1 /proc/loadavg)" >>"$out/load.log"; }

t0=$(date +%s)
# run_rounds KIND FILTER NAME...: $reps rounds; each round runs
# bench-NAME once per NAME, in turn, on the benchmarks FILTER selects,
# into bench-NAME.KIND-<round>.json (the floor: floor.KIND-<round>.json).
# One process per repetition, the allocators in turn: load that comes
# and goes -- a busy spell of the host slows whatever runs by a third or
# more -- then falls on every allocator alike instead of on the one
# running, and report.py pairs the ratios by round.
run_rounds() {
    local kind=$1 filter=$2 i a f
    shift 2
    for i in $(seq "$reps"); do
        for a in "$@"; do
            loadlog "$kind-$i-$a"
            if [ "$a" = floor ]; then f=$out/floor.$kind-$i; else f=$out/bench-$a.$kind-$i; fi
            "$bindir/bench-$a" --benchmark_filter="$filter" \
                --benchmark_min_time="$min_time" \
                --benchmark_out="$f.json" \
                --benchmark_out_format=json >"$f.txt" 2>&1
        done
    done
}
# The 2-thread workloads need both cores and vary from process to process
# (heap layout, thread placement, whatever else the machine is doing).
echo "bench.sh: 2-thread workloads, $reps rounds over all allocators" >&2
run_rounds 2t 'threads:2' "${allocs[@]}"
# The 1-thread patterns, with the floor (benchmarks/floor.c): not an
# allocator, the least a called allocator costs here; report.py prints
# it beside the 1T targets, outside the table's allocator columns.
t1_names=("${allocs[@]}")
[ -x "$bindir/bench-floor" ] && t1_names+=(floor)
echo "bench.sh: 1-thread patterns, $reps rounds over ${t1_names[*]}" >&2
run_rounds 1t '^(lifo_pair|batch/)' "${t1_names[@]}"
# Direct pairs (benchmarks/direct_pairs.c): the same four patterns as a
# plain C loop of direct calls, deferpool against mimalloc, tcmalloc and
# jemalloc in one process, best of rounds (about 5 s a process).  Several
# processes: where the address space puts the heaps, caches and stacks
# moves one process's ratios by up to 10%; report.py takes the median.
if [ -x "$bindir/direct-pairs" ] && [ -z "${DPB_ALLOCATORS:-}" ]; then
    direct_procs=${DPB_DIRECT_PROCS:-3}
    if [ -n "${DPB_QUICK:-}" ]; then
        export DPB_DIRECT_ROUNDS=${DPB_DIRECT_ROUNDS:-2}
        direct_procs=${DPB_DIRECT_PROCS:-1}
    fi
    echo "bench.sh: direct pairs, $direct_procs processes" >&2
    for i in $(seq 1 "$direct_procs"); do
        loadlog "direct-pairs-$i"
        "$bindir/direct-pairs" --json "$out/direct-pairs-$i.json" \
            >"$out/direct-pairs-$i.txt"
    done
fi
for a in "${allocs[@]}"; do
    echo "bench.sh: $a" >&2
    loadlog "lat-rss-$a"
    lat_args=(--rounds "$lat_rounds" --objects "$lat_objects")
    "$bindir/latency-$a" "${lat_args[@]}" \
        --json "$out/latency-$a.json" \
        --hist "$out/latency-$a.hist.csv" >"$out/latency-$a.txt"
    if [ "$have_strace" = 1 ]; then
        # A second, separate run only to count syscalls (ptrace slows
        # every syscall; the timed run above is untraced), with fewer
        # rounds: a million puts show whether a put makes any.
        strace -f -ttt -qq -s 96 -o "$out/latency-$a.strace" \
            "$bindir/latency-$a" --rounds "$strace_rounds" \
            --objects "$lat_objects" >/dev/null
    fi
    "$bindir/rss-$a" --mib "$rss_mib" --idle-ms "$rss_idle" \
        --csv "$out/rss-$a.csv" --json "$out/rss-$a.json" >"$out/rss-$a.txt"
done
t1=$(date +%s)
loadlog end
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
load_max=$(awk '$3 > m { m = $3 } END { print m + 0 }' "$out/load.log")

json_str() { # minimal JSON string escaping for the few fields below
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)
dirty=$(git -C "$root" status --porcelain 2>/dev/null | head -c1 | wc -c)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mhz=$(sed -n 's/^cpu MHz[[:space:]]*: //p' /proc/cpuinfo | head -1)
cat >"$out/meta.json" <<EOF
{
  "date_utc": $(json_str "$stamp"),
  "git": $(json_str "$rev$([ "$dirty" -gt 0 ] && echo +dirty)"),
  "command": $(json_str "$(env | grep -E '^DPB_' | sort | tr '\n' ' ')scripts/bench.sh"),
  "cpu": $(json_str "$cpu"),
  "cpu_mhz": $(json_str "$mhz"),
  "nproc": $(nproc),
  "kernel": $(json_str "$(uname -sr)"),
  "distro": $(json_str "$(. /etc/os-release && echo "$PRETTY_NAME")"),
  "compiler": $(json_str "$(cc --version | head -1)"),
  "loadavg_before": $(json_str "$load_before"),
  "loadavg_after": $(json_str "$load_after"),
  "loadavg_1min_max_during": $load_max,
  "benchmark_min_time": $min_time,
  "benchmark_repetitions": $reps,
  "latency_rounds": $lat_rounds,
  "strace_rounds": $strace_rounds,
  "latency_objects": $lat_objects,
  "rss_mib": $rss_mib,
  "rss_idle_ms": $rss_idle,
  "allocator_env": $(json_str "$(echo $knobs)"),
  "syscalls_counted": $([ "$have_strace" = 1 ] && echo true || echo false),
  "run_seconds": $((t1 - t0))
}
EOF

# The report needs matplotlib, which Debian installs for /usr/bin/python3
# (a pyenv or venv python3 earlier in PATH usually lacks it).
py=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
    py=/usr/bin/python3
fi
"$py" benchmarks/report.py "$out"
for f in "$out"/*.strace; do
    [ -e "$f" ] && gzip -f "$f"
done

# The drop-in malloc's macro workloads under LD_PRELOAD (docs/malloc.md):
# the library built above, against the same allocators.  A full run
# refreshes the committed copy in benchmarks/macro/results/.
partial=
if [ -n "${DPB_QUICK:-}" ] || [ -n "${DPB_ALLOCATORS:-}" ]; then
    partial=1
fi
if [ -z "${DPB_NO_MACRO:-}" ] && [ -e "$build/libdeferpool-malloc.so" ]; then
    macro_out=benchmarks/macro/results
    [ -z "$partial" ] || macro_out=$out/macro
    echo
    echo "== drop-in malloc: macro workloads under LD_PRELOAD =="
    DP_MALLOC_LIB="$root/$build/libdeferpool-malloc.so" \
        benchmarks/macro/run.sh "$macro_out" "$root/$build/macro"
fi

if [ -n "$partial" ]; then
    echo "bench.sh: results in $out (partial run: benchmarks/results/latest" \
         "left alone), $((t1 - t0)) s of runs" >&2
    exit 0
fi
latest=benchmarks/results/latest
rm -rf "$latest"
mkdir -p "$latest"
for f in summary.json table.md meta.json latency_cdf.png rss.png; do
    [ -e "$out/$f" ] && cp "$out/$f" "$latest/"
done
echo "bench.sh: results in $out (copied to $latest), $((t1 - t0)) s of runs" >&2
