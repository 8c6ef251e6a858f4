#!/bin/sh
# static-malloc.sh OUT.a SHARED.so ARCHIVE... -- libdeferpool-malloc.a.
#
# Links the archives (lib/malloc.c and the private copy of the core) into
# one relocatable object, as mimalloc's mimalloc.o, and keeps global only
# the symbols the shared library exports: the malloc family and
# deferpool-malloc.h.  The core's symbols become local, so the archive
# never clashes with libdeferpool, exactly as --exclude-libs makes the
# .so.  Run by meson (meson.build, "drop-in malloc").
set -eu
out=$1 so=$2
shift 2
tmp=$out.tmp
rm -rf "$tmp" "$out"
mkdir "$tmp"
nm -D --defined-only "$so" | awk '$2 ~ /^[TWiV]$/ { print $3 }' |
    sed 's/@.*//' | sort -u >"$tmp/keep"
[ -s "$tmp/keep" ] || { echo "static-malloc.sh: no exports in $so" >&2; exit 1; }
${LD:-ld} -r -o "$tmp/deferpool-malloc.o" --whole-archive "$@"
${OBJCOPY:-objcopy} --keep-global-symbols="$tmp/keep" "$tmp/deferpool-malloc.o"
${AR:-ar} rcs "$out" "$tmp/deferpool-malloc.o"
rm -rf "$tmp"
