#!/usr/bin/env bash
# check-man.sh SRCDIR -- the man pages cover the public API and render.
#
# For include/deferpool.h -> man/deferpool.3 and include/deferpool-malloc.h
# -> man/deferpool-malloc.3: every exported function has an entry (a .TP
# line followed by ".BR name ()") and a SYNOPSIS line, the page describes
# no function the header lacks, man/meson.build installs a man3 link for
# exactly those functions, and docs/api.md has a section for every
# function of deferpool.h.  Both pages render with `man -l` and with
# groff -ww without a warning.
set -euo pipefail
src=$1
status=0
bad() { echo "check-man: $*" >&2; status=1; }

# Functions a header exports: the name before "(" in each declaration
# that carries the API macro.
exported() {
    tr '\n' ' ' <"$1" | grep -oE "$2"'[^;]*;' |
        grep -oE '\b(dp_[a-z0-9_]+)[[:space:]]*\(' | tr -d '( ' | sort -u
}

# "linkname.3" names of a meson list variable in man/meson.build.
meson_list() {
    awk -v v="$1" '$0 ~ "^"v" = \\[" { f = 1; next } f && /^\]/ { f = 0 }
                   f' "$src/man/meson.build" | grep -oE "'[a-z0-9_]+'" | tr -d "'" | sort -u
}

check_page() {
    local header=$1 macro=$2 page=$3 list=$4 fns entries synopsis
    fns=$(exported "$src/include/$header" "$macro")
    [ -n "$fns" ] || { bad "no functions found in $header"; return; }
    entries=$(awk 'prev == ".TP" && /^\.BR [a-z0-9_]+ \(\)$/ { print $2 } { prev = $0 }' \
        "$src/man/$page" | sort -u)
    synopsis=$(awk '/^\.SH SYNOPSIS/ { f = 1; next } /^\.SH / { f = 0 } f' "$src/man/$page")
    for f in $fns; do
        grep -qx "$f" <<<"$entries" || bad "$page has no entry for $f (from $header)"
        grep -qE "\\b$f\\(" <<<"$synopsis" || bad "$page: $f is not in the SYNOPSIS"
    done
    for f in $entries; do
        grep -qx "$f" <<<"$fns" || bad "$page describes $f, which $header does not export"
    done
    [ "$(meson_list "$list")" = "$fns" ] ||
        bad "man/meson.build $list differs from the functions of $header"
    # Rendering: man's own run (stderr kept), and groff with all warnings.
    local out
    out=$(MAN_KEEP_STDERR=1 LC_ALL=C.UTF-8 MANWIDTH=80 \
          man --warnings -l "$src/man/$page" 2>&1 >/dev/null) ||
        bad "man -l $page failed"
    [ -z "$out" ] || bad "man -l $page warns: $out"
    out=$(groff -man -Tutf8 -ww -z "$src/man/$page" 2>&1) || bad "groff $page failed"
    [ -z "$out" ] || bad "groff -ww $page warns: $out"
}

command -v man >/dev/null || { bad "man is not installed (scripts/setup-deps.sh installs man-db)"; exit 1; }
check_page deferpool.h DP_API deferpool.3 dp_man_functions
check_page deferpool-malloc.h DP_MALLOC_API deferpool-malloc.3 dp_man_malloc_functions

# docs/api.md: the same functions as deferpool.h, in its ### headings.
api=$(grep -E '^### ' "$src/docs/api.md" | grep -oE '\bdp_[a-z0-9_]+\b' |
      grep -vE '_t$' | sort -u)
[ "$api" = "$(exported "$src/include/deferpool.h" DP_API)" ] ||
    bad "docs/api.md headings and deferpool.h differ: $(diff <(echo "$api") \
        <(exported "$src/include/deferpool.h" DP_API) | grep '^[<>]' | tr '\n' ' ')"
[ $status = 0 ] && echo "man pages: ok"
exit $status
