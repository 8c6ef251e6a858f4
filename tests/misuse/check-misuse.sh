#!/usr/bin/env bash
# check-misuse.sh TOOL CASE PROG -- run one misuse case of PROG
# (misuse.c) and check that TOOL reports it: TOOL is "asan" (PROG built
# with AddressSanitizer, run as is) or "valgrind" (PROG run under
# memcheck).  The case "ok" must produce no report at all.  Exit 77
# (skipped) when valgrind is not installed.
set -uo pipefail
tool=$1 case=$2 prog=$3
out=$(mktemp)
trap 'rm -f "$out"' EXIT

case $tool in
    asan)
        # abort_on_error=0: a report exits with exitcode, not SIGABRT
        # (no core dump); LeakSanitizer stays on.
        ASAN_OPTIONS=halt_on_error=1:abort_on_error=0:detect_leaks=1 \
            "$prog" "$case" >"$out" 2>&1
        rc=$?
        ;;
    valgrind)
        command -v valgrind >/dev/null || { echo "skipped: no valgrind"; exit 77; }
        valgrind -q --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite --show-leak-kinds=definite \
            "$prog" "$case" >"$out" 2>&1
        rc=$?
        ;;
    *)
        echo "unknown tool $tool" >&2
        exit 2
        ;;
esac

fail=0
want() { # the output must contain this fixed string
    grep -qF -- "$1" "$out" || { echo "missing from the output: $1" >&2; fail=1; }
}
wantre() { # ... or match this extended regular expression
    grep -qE -- "$1" "$out" || { echo "missing from the output: /$1/" >&2; fail=1; }
}
shun() { # the output must not contain this regular expression
    ! grep -qE -- "$1" "$out" || { echo "unexpected in the output: /$1/" >&2; fail=1; }
}
status() { # the exit status must be (0) or must not be (!0) zero
    if [ "$1" = 0 ] && [ "$rc" -ne 0 ]; then
        echo "exit status $rc, expected 0" >&2; fail=1
    elif [ "$1" = '!0' ] && [ "$rc" -eq 0 ]; then
        echo "exit status 0, expected a failure" >&2; fail=1
    fi
}

case $tool:$case in
    asan:ok)
        status 0; want ok; shun 'ERROR|deferpool:|never put' ;;
    asan:write_after_put)
        status '!0'; want 'ERROR: AddressSanitizer: use-after-poison'
        want 'WRITE of size 1'; wantre '#0 .* in main .*misuse\.c' ;;
    asan:read_after_put)
        status '!0'; want 'ERROR: AddressSanitizer: use-after-poison'
        want 'READ of size 1'; wantre '#0 .* in main .*misuse\.c' ;;
    asan:double_put)
        status '!0'; wantre "deferpool: pool 'misuse': double put of 0x[0-9a-f]+"
        wantre '#[0-9]+ .* in main .*misuse\.c' ;;
    asan:overflow)
        status '!0'; want 'ERROR: AddressSanitizer: use-after-poison'
        want 'WRITE of size 1'; wantre '#0 .* in main .*misuse\.c' ;;
    asan:uninit)
        # ASan does not detect uninitialised reads; as its malloc does,
        # the object comes filled with 0xbe instead of the last user's data.
        status 0; want 'uninitialised read: 0xbebebebebebebebe'; shun stale ;;
    asan:leak)
        [ "$rc" -eq 23 ] || { echo "exit status $rc, expected 23" >&2; fail=1; }
        want 'ERROR: deferpool (AddressSanitizer build): 1 object(s) never put'
        wantre "Object 0x[0-9a-f]+ of pool 'misuse' \(48 bytes\) never put" ;;
    valgrind:ok)
        status 0; want ok
        shun 'Invalid|uninitialised|definitely lost|Mismatched|overlap' ;;
    valgrind:write_after_put)
        status '!0'; want 'Invalid write of size 1'
        want "inside a block of size 48 free'd"; wantre 'by 0x[0-9A-F]+: main \(misuse\.c' ;;
    valgrind:read_after_put)
        status '!0'; want 'Invalid read of size 1'
        want "inside a block of size 48 free'd" ;;
    valgrind:double_put)
        status '!0'; want 'Invalid free()'
        want "0 bytes inside a block of size 48 free'd" ;;
    valgrind:overflow)
        status '!0'; want 'Invalid write of size 1'; wantre 'at 0x[0-9A-F]+: main \(misuse\.c' ;;
    valgrind:uninit)
        status '!0'; want 'Conditional jump or move depends on uninitialised value(s)' ;;
    valgrind:leak)
        status '!0'; want '48 bytes in 1 blocks are definitely lost' ;;
    *)
        echo "unknown case $tool:$case" >&2; exit 2 ;;
esac

if [ "$fail" -ne 0 ]; then
    echo "--- $tool $case: output (exit status $rc) ---" >&2
    head -n 60 "$out" >&2
    exit 1
fi
echo "$tool $case: reported as expected"
