#!/bin/sh
# A program that must not run as N copies, started by an MPI launcher as one
# of several processes (the launcher's environment says so: Open MPI's
# OMPI_COMM_WORLD_SIZE, PMI's PMI_SIZE as Slurm and MPICH set it), refuses
# with one message and exit 2, writing nothing, instead of doing the whole
# job N times into the same files; as the only process of a launcher it
# runs. Two kinds: any program of a build without MPI (WHY 'no-mpi'), and
# the programs that run as one process in any build (WHY 'one-process').
# usage: launcher_refusal.sh no-mpi|one-process PROGRAM...
set -u
. "$(dirname "$0")/lib.sh"
why=$1
shift
for prog in "$@"; do
    name=$(basename "$prog")
    case $why in
    no-mpi) reason="this build of tapegrad has no MPI" ;;
    *) reason="$name runs as one process" ;;
    esac
    for var in OMPI_COMM_WORLD_SIZE=2 PMI_SIZE=3; do
        env "$var" "$prog" --out "$tmp/out" >"$tmp/stdout" 2>"$tmp/stderr"
        st=$?
        n=$(grep -c "^$name: started by an MPI launcher as one of ${var#*=} processes, but $reason" "$tmp/stderr")
        if [ $st -ne 2 ] || [ "$n" -ne 1 ] ||
            [ "$(wc -l <"$tmp/stderr")" -ne 1 ] || [ -s "$tmp/stdout" ] ||
            [ -e "$tmp/out" ]; then
            fail "$name with $var: exit $st, stderr: $(cat "$tmp/stderr"), stdout: $(head -c 300 "$tmp/stdout")"
        else
            echo "ok: $name with $var: refused, exit 2"
        fi
        rm -rf "$tmp/out"
    done
    # a rank other than 0 refuses too, and speaks only when no rank 0 has
    # ended the job within 2 s (under mpirun, a copy of it as rank 0 does:
    # one line for the job; tests/mpi/mixed_jobs.sh): alone here, it speaks,
    # naming its rank
    for var in OMPI_COMM_WORLD_RANK=1 PMI_RANK=2; do
        env OMPI_COMM_WORLD_SIZE=3 "$var" "$prog" --out "$tmp/out" \
            >"$tmp/stdout" 2>"$tmp/stderr"
        st=$?
        n=$(grep -c "^$name: started by an MPI launcher as rank ${var#*=} of 3 processes, but $reason" "$tmp/stderr")
        if [ $st -ne 2 ] || [ "$n" -ne 1 ] ||
            [ "$(wc -l <"$tmp/stderr")" -ne 1 ] || [ -s "$tmp/stdout" ] ||
            [ -e "$tmp/out" ]; then
            fail "$name with $var: exit $st, stderr: $(cat "$tmp/stderr")"
        else
            echo "ok: $name with $var: refused, naming its rank, exit 2"
        fi
        rm -rf "$tmp/out"
    done
    OMPI_COMM_WORLD_SIZE=1 "$prog" --help >"$tmp/stdout" 2>"$tmp/stderr"
    st=$?
    if [ $st -ne 0 ] || ! grep -q '^usage: ' "$tmp/stdout"; then
        fail "$name as the only process of a launcher: exit $st: $(cat "$tmp/stderr")"
    else
        echo "ok: $name as the only process of a launcher runs"
    fi
done
[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
