#!/bin/sh
# Runs libFuzzer targets for a given time each, one after the other.
#   tests/fuzz/run.sh TARGET|all SECONDS [extra libFuzzer flags...]
# TARGET: idx, idx_gz or safetensors. The build dir is $FUZZ_BUILD
# (default build-fuzz at the top of the tree, configured with
# CC=clang meson setup build-fuzz -Dfuzzing=true). New inputs go to
# $FUZZ_BUILD/fuzz-corpus/TARGET (the checked-in seeds are read, never
# written); crashes to $FUZZ_BUILD/fuzz-artifacts/TARGET/; the log to
# $FUZZ_BUILD/fuzz-logs/TARGET.log. Prints executions and coverage per
# target; exits 1 if any target found a crash.
# Extra flags, e.g. -jobs=2 -workers=2 (logs then in fuzz-N.log files in the
# current directory) or -fork=2, are passed through.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
if [ $# -lt 2 ]; then
    echo "usage: $0 idx|idx_gz|safetensors|all SECONDS [libFuzzer flags]" >&2
    exit 2
fi
which=$1
secs=$2
shift 2
case $secs in
    ''|*[!0-9]*) echo "$0: SECONDS must be a whole number, got '$secs'" >&2
                 exit 2 ;;
esac
if [ "$which" = all ]; then
    gz=idx_gz # only built with zlib
    grep -q 'fuzz_idx_gz:' "$build/build.ninja" 2>/dev/null || gz=
    set -- idx $gz safetensors -- "$@"
else
    set -- "$which" -- "$@"
fi
targets=
while [ "$1" != -- ]; do targets="$targets $1"; shift; done
shift

meson compile -C "$build" $(for t in $targets; do printf 'fuzz_%s ' "$t"; done) \
    >/dev/null || { echo "$0: building the fuzz targets in $build failed" >&2
                    exit 2; }
status=0
for t in $targets; do
    exe=$build/tests/fuzz/fuzz_$t
    if [ ! -x "$exe" ]; then
        echo "$0: $exe not built (idx_gz needs zlib)" >&2
        status=2
        continue
    fi
    work=$build/fuzz-corpus/$t
    art=$build/fuzz-artifacts/$t
    log=$build/fuzz-logs/$t.log
    mkdir -p "$work" "$art" "$build/fuzz-logs"
    dict=
    [ -f "$here/$t.dict" ] && dict=-dict=$here/$t.dict
    rc=0
    "$exe" "$work" "$here/corpus/$t" -max_total_time="$secs" \
        -print_final_stats=1 -timeout=10 -max_len=4096 \
        -artifact_prefix="$art/" $dict "$@" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
            awk '{s += $1} END {print s + 0}')
    last=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n 1 |
           sed -n 's/.*\(cov: [0-9]* ft: [0-9]*\).*/\1/p')
    persec=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    echo "fuzz_$t: ${secs}s, $execs executions (${persec:-?}/s), ${last:-no coverage line}, log $log"
    if [ $rc -ne 0 ]; then
        echo "fuzz_$t: FAILED (exit $rc); inputs in $art:" >&2
        ls "$art" >&2
        grep -m 3 -E 'ERROR|runtime error|SUMMARY' "$log" >&2 || true
        status=1
    fi
done
exit $status
