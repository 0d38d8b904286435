#!/bin/sh
# A rank > 0 holds its stderr while the flags are parsed, so that only the
# lowest failing rank speaks. It was held in tmpfile(), in /tmp, and sent
# to /dev/null when that failed: a rank whose /tmp was full or read-only,
# alone with a bad flag, stopped the job (exit status 2) without a word.
# Now it is held in memory (memfd), and when nothing can hold it the rank
# speaks for itself. no_tmp.so makes tmpfile fail (and memfd_create too
# with TG_NO_MEMFD).
# usage: held_stderr.sh MPIRUN VAE_MNIST MLP_MNIST NO_TMP_SO DATA_DIR
set -u
mpirun=$1
vae=$2
mlp=$3
shim=$4
data=$5
. "$(dirname "$0")/../lib.sh"
run="timeout 60 $mpirun --bind-to none --oversubscribe"

# check WHAT STATUS NAME: exit 2, one line of NAME naming rank 1's flag
check() {
    n=$(grep -c "^$3: .*--epochs" "$tmp/err")
    if [ "$2" -ne 2 ] || [ "$n" -ne 1 ] ||
        [ "$(grep -c "^$3: " "$tmp/err")" -ne 1 ]; then
        fail "$1: exit $2, $n lines: $(cat "$tmp/err")"
    else
        echo "ok: $1: exit 2, $(grep "^$3: " "$tmp/err")"
    fi
    [ -e "$tmp/out" ] && fail "$1: --out written"
    rm -rf "$tmp/out"
}

small="--epochs 1 --max-batches 2 --batch 32 --hidden 16 --latent 2 --threads 1"
for memfd in "" 1; do
    what="no temporary file${memfd:+ nor memfd}"
    # shellcheck disable=SC2086
    $run -np 1 "$vae" $small --data "$data" --out "$tmp/out" : \
        -np 1 env LD_PRELOAD="$shim" ${memfd:+TG_NO_MEMFD=1} "$vae" $small \
        --data "$data" --out "$tmp/out" --epochs 1x >/dev/null 2>"$tmp/err"
    check "vae_mnist, rank 1 with $what and a bad --epochs" $? vae_mnist
    $run -np 1 "$mlp" --epochs 1 --max-batches 2 --data "$data" : \
        -np 1 env LD_PRELOAD="$shim" ${memfd:+TG_NO_MEMFD=1} "$mlp" \
        --epochs 0 --max-batches 2 --data "$data" >/dev/null 2>"$tmp/err"
    check "mlp_mnist, rank 1 with $what and a bad --epochs" $? mlp_mnist
done

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
