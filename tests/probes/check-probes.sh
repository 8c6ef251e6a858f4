#!/usr/bin/env bash
# check-probes.sh TUNING_MD LIB... -- every static probe that
# docs/tuning.md's table lists is in each library's ELF notes (readelf -n),
# with provider "deferpool"; the malloc's own probes (malloc_*) only in
# libdeferpool-malloc.  Exit 77 (skipped) when the build has no probes
# (<sys/sdt.h> not found: DP_PROBES=0).
set -euo pipefail
[ "${DP_PROBES:-1}" = 1 ] || { echo "skipped: built without <sys/sdt.h>"; exit 77; }
doc=$1
shift
# The table rows of the "Static probes" section only.
want=$(awk '/^## Static probes/ { f = 1; next } /^## / { f = 0 }
            f && /^\| `[a-z_]+` \|/ { s = $2; gsub(/`/, "", s); print s }' "$doc" | sort -u)
[ -n "$want" ] || { echo "no probe table in $doc" >&2; exit 1; }
status=0
for lib in "$@"; do
    notes=$(readelf -n "$lib")
    have=$(printf '%s\n' "$notes" | awk '/Provider:/ { p = $2 } /Name:/ && p == "deferpool" { print $2 }' | sort -u)
    for probe in $want; do
        case "$probe:$(basename "$lib")" in
            malloc_*:libdeferpool-malloc*) ;;
            malloc_*) continue ;;
        esac
        grep -qx "$probe" <<<"$have" || { echo "$lib: no probe deferpool:$probe" >&2; status=1; }
    done
    for probe in $have; do
        grep -qx "$probe" <<<"$want" || { echo "$lib: probe deferpool:$probe is not documented in $doc" >&2; status=1; }
    done
    echo "$lib: $(wc -w <<<"$have") probes"
done
exit $status
