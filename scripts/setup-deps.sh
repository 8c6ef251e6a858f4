#!/usr/bin/env bash
# setup-deps.sh [test|bench] -- install the Debian packages deferpool needs.
#
#   test   only what the test suite needs (the default)
#   bench  everything: tests, benchmarks, comparison allocators, plots
#
# Idempotent and quiet: when every package is already installed it prints
# nothing and touches nothing.  Otherwise it runs apt-get once and prints a
# single line naming what it installed.  Uses sudo only when not root.
set -euo pipefail

usage() {
    echo "usage: $0 [test|bench]" >&2
    exit 2
}

# libclang-rt-dev: libFuzzer and clang's sanitizer runtimes (the fuzz mode
# of scripts/test.sh); valgrind: the misuse tests (tests/misuse).
test_pkgs=(meson ninja-build pkg-config gcc g++ clang libclang-rt-dev
           libcriterion-dev python3 cmake systemtap-sdt-dev man-db
           libsqlite3-dev valgrind)
bench_pkgs=(meson ninja-build pkg-config gcc g++ clang libcriterion-dev
            libseccomp-dev libbenchmark-dev libjemalloc-dev libmimalloc-dev
            libgoogle-perftools-dev python3-matplotlib gnuplot-nox strace)

case "${1:-test}" in
    test)  pkgs=("${test_pkgs[@]}") ;;
    bench) pkgs=("${bench_pkgs[@]}") ;;
    -h|--help) usage ;;
    *) usage ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-deps: missing ${missing[*]}, and apt-get is not available;" \
         "install them by hand" >&2
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "setup-deps: missing ${missing[*]}; run as root or install sudo" >&2
        exit 1
    fi
fi

# apt-get -qq is still chatty on stdout (dpkg progress); keep the output for
# a failure only.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${sudo[@]}" apt-get update -qq &&
       "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
       >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup-deps: apt-get failed installing ${missing[*]}" >&2
    exit 1
fi
echo "setup-deps: installed ${missing[*]}"
