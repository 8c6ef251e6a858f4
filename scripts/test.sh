#!/usr/bin/env bash
# test.sh [plain|asan|tsan|fuzz|all] -- set up, build and run the test suite.
#
#   plain  optimised debug build, then the installed-library consumer check
#   asan   AddressSanitizer + UndefinedBehaviorSanitizer
#   tsan   ThreadSanitizer
#   fuzz   the libFuzzer harnesses of tests/fuzz/ (clang, ASan+UBSan), each
#          for a bounded number of runs from tests/fuzz/corpus/
#   all    plain, asan, tsan and fuzz in that order: the default, and
#          what CI runs (.ci/run)
#
# Each mode builds in build/test-<mode> (reconfigured when it exists, wiped
# when its compiler or options changed) and ends with one line
# "<mode>: N passed, N failed", counted from Criterion's "Synthesis:" lines;
# a test executable that dies or times out without one counts as 1 failed.
# "all" ends with "total: N passed, N failed".  The exit status is non-zero
# when anything failed.
#
# The suite cannot shrink unnoticed: every Test( declared in
# tests/test_*.c and tests/malloc/test_*.c must have run (passed, failed
# or skipped) in each mode, except the files a mode does not build
# (sanitizer_skips below).  A shortfall is printed per file and counted
# as failed tests.
#
# Tests divide their iteration counts by DP_TEST_SCALE, exported here:
# plain 1, asan 4, tsan 10.  The fuzz mode counts each fuzzer as one test;
# DP_FUZZ_RUNS overrides its number of runs (fuzz_runs below).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

usage() {
    echo "usage: $0 [plain|asan|tsan|fuzz|all]" >&2
    exit 2
}

mode=${1:-all}
case "$mode" in
    plain|asan|tsan|fuzz|all) ;;
    *) usage ;;
esac
[ $# -le 1 ] || usage

./scripts/setup-deps.sh test || exit 1

total_pass=0
total_fail=0
status=0
failures=""     # "<mode>: <what>" lines, printed again before the totals

# Print "<label>: P passed, F failed" and add to the totals.
report() {
    echo "$1: $2 passed, $3 failed"
    total_pass=$((total_pass + $2))
    total_fail=$((total_fail + $3))
    [ "$3" -eq 0 ] || status=1
}

# Count results in a meson testlog.txt: prints "passed failed".  One section
# per test executable, opened by a "==== i/N ====" rule.  Criterion's
# "Failing" already includes "Crashing" (a crashed test is a failed test),
# so failed = Tested - Passing, never less than Failing.
count_results() {
    sed 's/\x1b\[[0-9;]*m//g' "$1" | awk '
        function flush() {
            if (!intest) return
            if (syn) {
                pass += sp; fail += sf
                # All tests passed, yet the executable failed (a sanitizer
                # report at exit, say): count the executable as failed.
                if (res != "exit status 0" && sf == 0) fail++
            } else if (res == "exit status 0") {
                pass++                  # a test that is not Criterion
            } else if (res != "exit status 77") {
                fail++                  # died, timed out, never reported
            }
            intest = 0
        }
        /^=+ [0-9]+\/[0-9]+ =+$/ { flush(); intest = 1; syn = 0; res = ""; body = 0; next }
        /^Summary of Failures:$/ || /^Ok: +[0-9]+ *$/ { flush(); next }
        intest && !body && /^result:/ { sub(/^result: */, ""); sub(/ *$/, ""); res = $0; next }
        intest && /^-+ (stdout|stderr|output) -+$/ { body = 1; next }
        intest && /Synthesis: Tested:/ {
            t = p = f = 0
            for (i = 1; i <= NF; i++) {
                if ($i == "Tested:")  t = $(i + 1) + 0
                if ($i == "Passing:") p = $(i + 1) + 0
                if ($i == "Failing:") f = $(i + 1) + 0
            }
            syn = 1; sp = p; sf = (t - p > f) ? t - p : f
            next
        }
        END { flush(); printf "%d %d\n", pass, fail }'
}

# Print what failed in a meson testlog.txt, one line each: Criterion's
# "[FAIL]" lines (with their assertion messages) and each executable whose
# result is neither success nor skip.
list_failures() {
    sed 's/\x1b\[[0-9;]*m//g' "$1" | awk '
        /^=+ [0-9]+\/[0-9]+ =+$/ { exe = ""; next }
        /^test: / && exe == "" { sub(/^test: */, ""); exe = $0; next }
        /^result:/ {
            r = $0; sub(/^result: */, "", r); sub(/ *$/, "", r)
            if (r != "exit status 0" && r != "exit status 77") print exe ": " r
            next
        }
        /^\[----\] .*(Assertion Failed|Unexpected signal)/ { inmsg = 1 }
        inmsg && /^\[----\] / { print "  " $0; next }
        /^\[FAIL\] / { print "  " $0; inmsg = 0; next }
        /ERROR: (Address|Thread|UndefinedBehavior|Leak)Sanitizer|^SUMMARY: |^watchdog: / { print "  " $0 }
    ' | head -n 60
}

# Print "<executable> <tests run>" for each test executable in a meson
# testlog.txt: Criterion's "Tested:" (which leaves skipped tests out) plus
# its "[SKIP]" lines (the tests run with --verbose).
count_run() {
    sed 's/\x1b\[[0-9;]*m//g' "$1" | awk '
        function flush() { if (exe != "") run[exe] += t + sk; exe = "" }
        /^=+ [0-9]+\/[0-9]+ =+$/ { flush(); intest = 1; t = 0; sk = 0; next }
        /^Summary of Failures:$/ || /^Ok: +[0-9]+ *$/ { flush(); intest = 0; next }
        intest && /^command:/ {
            for (i = NF; i > 0; i--)
                if ($i ~ /\/tests\/(malloc\/)?test_[A-Za-z0-9_]+$/) {
                    exe = $i; sub(/.*\//, "", exe); break
                }
            next
        }
        intest && /Synthesis: Tested:/ {
            for (i = 1; i <= NF; i++) if ($i == "Tested:") t += $(i + 1)
            next
        }
        intest && /^\[SKIP\] / { sk++ }
        END { flush(); for (e in run) print e, run[e] }'
}

# Test files a sanitizer build does not build (tests/malloc/meson.build):
# programs, thp, populate and huge run programs under LD_PRELOAD of
# libdeferpool-malloc.so, which such builds leave out; fork forks from a
# threaded parent whose child starts threads, which neither sanitizer
# supports.
sanitizer_skips=" tests/malloc/test_malloc_programs.c tests/malloc/test_malloc_thp.c tests/malloc/test_malloc_populate.c tests/malloc/test_malloc_huge.c tests/malloc/test_malloc_fork.c "

# Compare the tests declared in the sources with those run in mode $1
# (testlog $2).  Prints each shortfall; echoes the number of tests missing.
missing_tests() {
    local m=$1 log=$2 src exe declared ran missing=0
    declare -A run=()
    if [ -f "$log" ]; then
        while read -r exe ran; do
            run[$exe]=$ran
        done < <(count_run "$log")
    fi
    for src in tests/test_*.c tests/malloc/test_*.c; do
        if [ "$m" != plain ] && [[ $sanitizer_skips == *" $src "* ]]; then
            continue
        fi
        exe=$(basename "$src" .c)
        declared=$(grep -c '^Test(' "$src")
        ran=${run[$exe]:-0}
        if [ "$ran" -lt "$declared" ]; then
            echo "$m: $src declares $declared tests, $ran ran" >&2
            missing=$((missing + declared - ran))
        fi
    done
    echo "$missing"
}

# --- ThreadSanitizer and Criterion ----------------------------------------
# Real Criterion cannot start under TSan (Snaipe/Criterion#274: its
# sandbox arena lands in TSan's reserved address range).  tests/meson.build
# therefore builds TSan test executables against tests/tsan-criterion, a
# Criterion-compatible fork-per-test runner that prints the same
# "Synthesis:" line; nothing special is needed here.

# meson setup, reusing build/test-<mode> when its compiler and options are
# unchanged (fast incremental rebuilds), wiping it when they changed.
configure() {
    local dir=$1 cc=$2
    shift 2
    local stamp="cc=$cc $*"
    if [ -f "$dir/meson-private/coredata.dat" ]; then
        if [ "$(cat "$dir/.dp-test-config" 2>/dev/null)" = "$stamp" ]; then
            CC=$cc meson setup --reconfigure "$dir" "$@" >/dev/null ||
                CC=$cc meson setup --wipe "$dir" "$@" || return 1
        else
            CC=$cc meson setup --wipe "$dir" "$@" || return 1
        fi
    else
        rm -rf "$dir"
        CC=$cc meson setup "$dir" "$@" || return 1
    fi
    printf '%s\n' "$stamp" >"$dir/.dp-test-config"
}

run_mode() {
    local m=$1 dir=build/test-$1 cc=${CC:-gcc} scale rc counts missing
    local -a opts=(-Dtests=enabled -Dbenchmarks=disabled -Db_sanitize=none)
    local -a envs=()

    echo "=== $m: build/test-$m"
    case "$m" in
        plain)
            scale=1
            ;;
        asan)
            scale=4
            opts=(-Dtests=enabled -Dbenchmarks=disabled
                  "-Db_sanitize=address,undefined" -Db_lundef=false)
            envs=("ASAN_OPTIONS=halt_on_error=1:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
                  "UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}")
            ;;
        tsan)
            scale=10
            opts=(-Dtests=enabled -Dbenchmarks=disabled
                  -Db_sanitize=thread -Db_lundef=false)
            envs=("TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}")
            ;;
    esac

    if ! configure "$dir" "$cc" "${opts[@]}"; then
        echo "$m: meson setup failed" >&2
        report "$m" 0 1
        return
    fi
    if ! ninja -C "$dir"; then
        echo "$m: build failed" >&2
        report "$m" 0 1
        return
    fi

    rm -f "$dir/meson-logs/testlog.txt"
    env DP_TEST_SCALE="$scale" "${envs[@]}" \
        meson test -C "$dir" -v --print-errorlogs --num-processes 1
    rc=$?
    [ "$rc" -eq 0 ] || status=1

    if [ "$m" = plain ]; then
        if tests/consumer/check.sh "$dir"; then
            report consumer 1 0
        else
            report consumer 0 1
        fi
    fi

    if [ -f "$dir/meson-logs/testlog.txt" ]; then
        counts=$(count_results "$dir/meson-logs/testlog.txt")
    elif [ "$rc" -eq 0 ]; then
        counts="0 0"        # no tests defined yet
    else
        counts="0 1"        # meson test did not get as far as a log
    fi
    # meson test failed but the log shows no failure: do not print a clean
    # line for a failed run.
    if [ "$rc" -ne 0 ] && [ "${counts#* }" = 0 ]; then
        counts="${counts% *} 1"
    fi
    missing=$(missing_tests "$m" "$dir/meson-logs/testlog.txt")
    if [ "$missing" -gt 0 ]; then
        echo "$m: $missing declared tests did not run" >&2
        counts="${counts% *} $((${counts#* } + missing))"
    fi
    if [ "${counts#* }" -ne 0 ] && [ -f "$dir/meson-logs/testlog.txt" ]; then
        failures+=$(list_failures "$dir/meson-logs/testlog.txt" |
                    sed "s/^/$m: /")$'\n'
    fi
    report "$m" "${counts% *}" "${counts#* }"
}

# --- fuzz: tests/fuzz/ -----------------------------------------------------
# Runs per fuzzer, sized to one to two minutes each on the CI machine
# (2 cores; docs/design.md, "Fuzzing"; docs/benchmarks.md, History).  New inputs go to a scratch directory in
# the build; the corpus in the repository is only read.
declare -A fuzz_runs=([fuzz_pool]=40000 [fuzz_malloc]=16000)

run_fuzz() {
    local dir=build/test-fuzz f log rc pass=0 fail=0 scratch
    echo "=== fuzz: $dir"
    if ! configure "$dir" "${FUZZ_CC:-clang}" -Dfuzzers=enabled \
            -Dtests=disabled -Dbenchmarks=disabled -Db_sanitize=none; then
        echo "fuzz: meson setup failed" >&2
        failures+="fuzz: meson setup failed"$'\n'
        report fuzz 0 1
        return
    fi
    if ! ninja -C "$dir" tests/fuzz/fuzz_pool tests/fuzz/fuzz_malloc; then
        echo "fuzz: build failed" >&2
        failures+="fuzz: build failed"$'\n'
        report fuzz 0 1
        return
    fi
    for f in fuzz_pool fuzz_malloc; do
        log=$dir/meson-logs/$f.log
        scratch=$dir/fuzz-corpus/$f
        rm -rf "$scratch" && mkdir -p "$scratch" "$dir/fuzz-artifacts"
        echo "--- $f: ${DP_FUZZ_RUNS:-${fuzz_runs[$f]}} runs from tests/fuzz/corpus/$f"
        env ASAN_OPTIONS="abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
            UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
            "$dir/tests/fuzz/$f" -runs="${DP_FUZZ_RUNS:-${fuzz_runs[$f]}}" \
            -max_len=512 -print_final_stats=1 \
            -artifact_prefix="$dir/fuzz-artifacts/$f-" \
            "$scratch" "tests/fuzz/corpus/$f" >"$log" 2>&1
        rc=$?
        grep -E '^INFO: Seed:|^Done [0-9]+ runs|^stat::number_of_executed_units' "$log"
        if [ "$rc" -eq 0 ]; then
            pass=$((pass + 1))
        else
            fail=$((fail + 1))
            echo "fuzz: $f failed (exit $rc), log $log" >&2
            grep -E '^fuzz_[a-z]+: |ERROR: |^SUMMARY: |Test unit written to' "$log" | head -n 20 >&2
            failures+="fuzz: $f: exit $rc, $(grep -m1 -E '^fuzz_[a-z]+: |^SUMMARY: ' "$log")"$'\n'
            failures+="fuzz:   $(grep -m1 -o 'Test unit written to .*' "$log")"$'\n'
        fi
    done
    report fuzz "$pass" "$fail"
}

if [ "$mode" = all ]; then
    for m in plain asan tsan; do
        run_mode "$m"
    done
    run_fuzz
    if [ -n "$failures" ]; then
        echo "what failed:"
        printf '%s' "$failures"
    fi
    echo "total: $total_pass passed, $total_fail failed"
elif [ "$mode" = fuzz ]; then
    run_fuzz
    if [ -n "$failures" ]; then
        echo "what failed:"
        printf '%s' "$failures"
    fi
else
    run_mode "$mode"
fi
exit "$status"
