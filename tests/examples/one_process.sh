#!/bin/sh
# Programs that run as one process (bnn_mnist, vae_score, char_rnn), started
# by an MPI launcher as one of several processes (the launcher's
# environment says so: OMPI_COMM_WORLD_SIZE, PMI_SIZE), refuse with one
# message and exit 2, writing nothing: N copies would each do the whole job
# into the same files. As the only process of a launcher they run.
# usage: one_process.sh PROGRAM...
set -u
. "$(dirname "$0")/lib.sh"
for prog in "$@"; do
    name=$(basename "$prog")
    for var in OMPI_COMM_WORLD_SIZE=2 PMI_SIZE=3; do
        env "$var" "$prog" --out "$tmp/out" >"$tmp/stdout" 2>"$tmp/stderr"
        st=$?
        n=$(grep -c "^$name: started by an MPI launcher as one of ${var#*=} processes, but $name runs as one process" "$tmp/stderr")
        if [ $st -ne 2 ] || [ "$n" -ne 1 ] || [ "$(wc -l <"$tmp/stderr")" -ne 1 ] ||
            [ -s "$tmp/stdout" ] || [ -e "$tmp/out" ]; then
            fail "$name with $var: exit $st, stderr: $(cat "$tmp/stderr"), stdout: $(head -c 300 "$tmp/stdout")"
        else
            echo "ok: $name with $var: refused, exit 2"
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
