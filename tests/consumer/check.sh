#!/usr/bin/env bash
# check.sh BUILDDIR -- does the *installed* library work for an outsider?
#
# Installs BUILDDIR with `meson install --destdir` into a temporary
# directory, then builds consumer.c and example.c (the README example) with
# nothing but `pkg-config --cflags --libs deferpool` pointed into that
# destdir, runs them, and expects consumer to print "ok".  Then, against
# the same destdir:
#   - pkg-config --static, for deferpool.pc and deferpool-malloc.pc:
#     the programs link the archives (-Wl,-Bstatic) and load no deferpool
#     shared library; malloc_consumer's malloc is deferpool's;
#   - CMake: tests/consumer/cmake uses find_package(deferpool) and links
#     each imported target;
#   - man: `man deferpool`, `man dp_pool_get` find the installed pages;
#   - Meson: examples/meson-subproject, with subprojects/deferpool being
#     this source tree, builds, runs and installs its app and nothing of
#     deferpool.
# Also checks that README.md still shows example.c verbatim.  Silent on
# success.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 BUILDDIR" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "$1" && pwd)

fail() {
    echo "consumer check: $*" >&2
    exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/deferpool-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/dest

meson install -C "$build" --no-rebuild --destdir "$dest" --quiet >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "meson install failed"; }

pc=$(find "$dest" -name deferpool.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || fail "no deferpool.pc installed under $dest"
libdir=$(dirname "$(dirname "$pc")")

# The .pc file names the real prefix; the sysroot maps it into the destdir.
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
export PKG_CONFIG_SYSROOT_DIR=$dest
unset PKG_CONFIG_LIBDIR
flags=$(pkg-config --cflags --libs deferpool) || fail "pkg-config failed"
case "$flags" in
    *"$dest"*) ;;
    *) fail "pkg-config flags do not point into the destdir: $flags" ;;
esac

for prog in consumer example; do
    # shellcheck disable=SC2086 # flags is a word list
    "${CC:-cc}" -std=c11 -Wall -Wextra -Werror -pedantic \
        "$here/$prog.c" -o "$tmp/$prog" $flags -Wl,-rpath,"$libdir" ||
        fail "$prog.c does not compile against the installed header/library"
    # Must resolve to the installed copy, not a build tree or the system.
    libs=$(ldd "$tmp/$prog") || fail "ldd $prog failed"
    case "$libs" in
        *"$libdir/libdeferpool"*) ;;
        *) fail "$prog does not load libdeferpool from $libdir: $libs" ;;
    esac
done

out=$(env -u LD_LIBRARY_PATH -u LD_PRELOAD "$tmp/consumer" 2>&1) ||
    fail "consumer exited with an error: $out"
[ "$out" = ok ] || fail "consumer printed '$out', expected 'ok'"

# The header is C99 and C++11 too: consumer.c compiles cleanly as both
# (a C++ compiler is optional) and runs.
# shellcheck disable=SC2086 # flags is a word list
"${CC:-cc}" -std=c99 -Wall -Wextra -Werror -pedantic \
    "$here/consumer.c" -o "$tmp/consumer-c99" $flags -Wl,-rpath,"$libdir" ||
    fail "consumer.c does not compile as C99 against the installed header"
out=$(env -u LD_LIBRARY_PATH -u LD_PRELOAD "$tmp/consumer-c99" 2>&1) ||
    fail "consumer-c99 exited with an error: $out"
[ "$out" = ok ] || fail "consumer-c99 printed '$out', expected 'ok'"
if command -v "${CXX:-c++}" >/dev/null 2>&1; then
    # shellcheck disable=SC2086 # flags is a word list
    "${CXX:-c++}" -std=c++11 -Wall -Wextra -Werror -pedantic -x c++ \
        "$here/consumer.c" -x none -o "$tmp/consumer-cxx" $flags \
        -Wl,-rpath,"$libdir" ||
        fail "consumer.c does not compile as C++11 against the installed header"
    out=$(env -u LD_LIBRARY_PATH -u LD_PRELOAD "$tmp/consumer-cxx" 2>&1) ||
        fail "consumer-cxx exited with an error: $out"
    [ "$out" = ok ] || fail "consumer-cxx printed '$out', expected 'ok'"
fi

out=$(env -u LD_LIBRARY_PATH -u LD_PRELOAD "$tmp/example" 2>&1) ||
    fail "example exited with an error: $out"

# Runs a program built here and expects it to print "ok".
run_ok() {
    local out
    out=$(env -u LD_LIBRARY_PATH -u LD_PRELOAD "$1" 2>&1) ||
        fail "$1 exited with an error: $out"
    [ "$out" = ok ] || fail "$1 printed '$out', expected 'ok'"
}

# ---- man pages: `man deferpool`, and a page per function ----------------
page=$(find "$dest" -name deferpool.3 -path '*/man3/*' | head -n 1)
[ -n "$page" ] || fail "no man3/deferpool.3 installed under $dest"
manroot=$(dirname "$(dirname "$page")")
for topic in deferpool dp_pool_get dp_stats_print; do
    out=$(MANPATH=$manroot MAN_KEEP_STDERR=1 MANWIDTH=80 man "$topic" 2>&1) ||
        fail "man $topic does not find the installed page: $out"
    grep -q 'dp_pool_put' <<<"$out" || fail "man $topic does not show deferpool(3)"
done
if [ -f "$libdir/libdeferpool-malloc.so" ]; then
    MANPATH=$manroot man -w deferpool-malloc >/dev/null 2>&1 ||
        fail "man deferpool-malloc does not find the installed page"
fi

# ---- pkg-config --static, both .pc files --------------------------------
have_malloc=0
[ -f "$libdir/pkgconfig/deferpool-malloc.pc" ] && have_malloc=1
static_pairs="deferpool:consumer"
[ "$have_malloc" = 1 ] && static_pairs="$static_pairs deferpool-malloc:malloc_consumer"
for pair in $static_pairs; do
    pc_name=${pair%%:*} prog=${pair#*:}
    cflags=$(pkg-config --cflags "$pc_name") || fail "pkg-config --cflags $pc_name failed"
    slibs=$(pkg-config --static --libs "$pc_name") ||
        fail "pkg-config --static --libs $pc_name failed"
    # Every -lNAME of ours must name an installed archive.
    for l in $slibs; do
        case "$l" in
            -ldeferpool*)
                [ -f "$libdir/lib${l#-l}.a" ] ||
                    fail "pkg-config --static --libs $pc_name names $l, but $libdir/lib${l#-l}.a is not installed"
                ;;
        esac
    done
    # shellcheck disable=SC2086 # word lists
    "${CC:-cc}" -std=c11 -Wall -Wextra -Werror $cflags "$here/$prog.c"         -o "$tmp/$prog-static" -Wl,-Bstatic $slibs -Wl,-Bdynamic ||
        fail "$prog.c does not link with pkg-config --static --libs $pc_name"
    case "$(ldd "$tmp/$prog-static")" in
        *libdeferpool*) fail "$prog-static loads a deferpool shared library" ;;
    esac
    run_ok "$tmp/$prog-static"
done
# A static program prints its pools at exit too (options.c is always
# linked): the JSON parses.
out=$(DEFERPOOL_CONF=stats_print:json "$tmp/consumer-static" 2>&1 >/dev/null) ||
    fail "consumer-static with stats_print:json failed"
python3 -c 'import json, sys; d = json.loads(sys.argv[1]); assert "pools" in d["deferpool"]' "$out" ||
    fail "consumer-static with stats_print:json printed '$out'"


# ---- CMake find_package --------------------------------------------------
if ! command -v cmake >/dev/null 2>&1; then
    fail "cmake is not installed (scripts/setup-deps.sh installs it)"
fi
hdr=$(find "$dest" -name deferpool.h -path '*/include/*' | head -n 1)
prefix_dir=$(dirname "$(dirname "$hdr")")
cmake -S "$here/cmake" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix_dir"     -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 ||
    { cat "$tmp/cmake.log" >&2; fail "cmake find_package(deferpool) failed"; }
cmake --build "$tmp/cmake-build" >"$tmp/cmake-build.log" 2>&1 ||
    { cat "$tmp/cmake-build.log" >&2; fail "the CMake consumer does not build"; }
cmake_progs="consumer consumer_static"
[ "$have_malloc" = 1 ] && cmake_progs="$cmake_progs malloc_consumer malloc_consumer_static"
for prog in $cmake_progs; do
    [ -x "$tmp/cmake-build/$prog" ] || fail "CMake did not build $prog"
    libs=$(ldd "$tmp/cmake-build/$prog") || fail "ldd $prog failed"
    case "$prog:$libs" in
        *_static:*libdeferpool*) fail "CMake $prog loads a deferpool shared library" ;;
        *_static:*) ;;
        *:*"$libdir/libdeferpool"*) ;;
        *) fail "CMake $prog does not load libdeferpool from $libdir: $libs" ;;
    esac
    run_ok "$tmp/cmake-build/$prog"
done

# ---- Meson subproject: installs nothing of deferpool -----------------------
parent=$tmp/parent
cp -r "$root/examples/meson-subproject" "$parent"
ln -s "$root" "$parent/subprojects/deferpool"
env -u PKG_CONFIG_PATH -u PKG_CONFIG_SYSROOT_DIR \
    meson setup --force-fallback-for=deferpool "$tmp/parent-build" "$parent" \
    >"$tmp/parent.log" 2>&1 ||
    { cat "$tmp/parent.log" >&2; fail "meson setup of the subproject example failed"; }
grep -q 'Executing subproject deferpool' "$tmp/parent.log" ||
    fail "the subproject example did not use subprojects/deferpool"
ninja -C "$tmp/parent-build" >>"$tmp/parent.log" 2>&1 ||
    { cat "$tmp/parent.log" >&2; fail "the subproject example does not build"; }
run_ok "$tmp/parent-build/app"
meson install -C "$tmp/parent-build" --no-rebuild --destdir "$tmp/parent-dest"     --quiet >>"$tmp/parent.log" 2>&1 ||
    { cat "$tmp/parent.log" >&2; fail "meson install of the subproject example failed"; }
installed=$(cd "$tmp/parent-dest" && find . -type f -o -type l | sort)
case "$installed" in
    *$'\n'*|'') fail "the subproject example installed '$installed', expected bin/app only" ;;
    */bin/app) ;;
    *) fail "the subproject example installed '$installed', expected bin/app only" ;;
esac

# README.md shows example.c: keep them identical so the README compiles.
if [ -f "$root/README.md" ]; then
    awk '/^<!-- example: tests\/consumer\/example.c -->$/ { want = 1; next }
         want && /^```c$/ { inblock = 1; next }
         inblock && /^```$/ { exit }
         inblock { print }' "$root/README.md" >"$tmp/readme-example.c"
    cmp -s "$tmp/readme-example.c" "$here/example.c" ||
        fail "README.md example differs from tests/consumer/example.c"
fi
