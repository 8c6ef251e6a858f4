#!/usr/bin/env bash
# check.sh BUILDDIR -- does the *installed* library work for an outsider?
#
# Installs BUILDDIR with `meson install --destdir` into a temporary
# directory, then builds consumer.c and example.c (the README example) with
# nothing but `pkg-config --cflags --libs deferpool` pointed into that
# destdir, runs them, and expects consumer to print "ok".  Also checks that
# README.md still shows example.c verbatim.  Silent on success.
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

out=$(env -u LD_LIBRARY_PATH -u LD_PRELOAD "$tmp/example" 2>&1) ||
    fail "example exited with an error: $out"

# README.md shows example.c: keep them identical so the README compiles.
if [ -f "$root/README.md" ]; then
    awk '/^<!-- example: tests\/consumer\/example.c -->$/ { want = 1; next }
         want && /^```c$/ { inblock = 1; next }
         inblock && /^```$/ { exit }
         inblock { print }' "$root/README.md" >"$tmp/readme-example.c"
    cmp -s "$tmp/readme-example.c" "$here/example.c" ||
        fail "README.md example differs from tests/consumer/example.c"
fi
