#!/bin/sh
# A file-size limit (ulimit -f) on one rank under mpirun. Open MPI's
# MPI_Init sizes a shared-memory file far above a small limit: SIGXFSZ,
# which the programs ignored only from their flag parsing on, killed that
# rank inside MPI_Init (mpirun: "exited on signal 25", status 153, no word
# of ours, nothing written). Now ignored before MPI_Init, the limit is met
# where a full disk is:
#   - vae_mnist with the limit on rank 0 (the writing rank): one line
#     "...: File too large", exit 1, no checkpoint, no temporary left
#   - mlp_mnist (writes no files) with the limit on rank 1: trains, exit 0
# usage: file_limit.sh MPIRUN VAE_MNIST DATA_DIR [MLP_MNIST]
set -u
mpirun=$1
vae=$2
data=$3
mlp=${4:-}
. "$(dirname "$0")/../lib.sh"
run="timeout 120 $mpirun --bind-to none --oversubscribe"
# 100 KB: below Open MPI's shared-memory file, below the checkpoint (600 KB)
limit="ulimit -f 100 && exec \"\$0\" \"\$@\""

small="--epochs 1 --max-batches 2 --batch 64 --hidden 32 --latent 4 --threads 1"
# shellcheck disable=SC2086
$run -np 1 sh -c "$limit" "$vae" $small --data "$data" --out "$tmp/out" : \
    -np 1 "$vae" $small --data "$data" --out "$tmp/out" \
    >/dev/null 2>"$tmp/err"
st=$?
n=$(grep -c '^vae_mnist: ' "$tmp/err")
left=$(find "$tmp/out" -name '*tmp.*' 2>/dev/null)
if [ $st -ne 1 ] || [ "$n" -ne 1 ] ||
    ! grep -q '^vae_mnist: .*checkpoint.safetensors.*File too large' \
        "$tmp/err" || [ -e "$tmp/out/checkpoint.safetensors" ] ||
    [ -n "$left" ]; then
    fail "vae_mnist, ulimit -f on rank 0: exit $st, left '$left': $(cat "$tmp/err")"
else
    echo "ok: vae_mnist, ulimit -f on rank 0: exit 1, $(grep '^vae_mnist: ' "$tmp/err")"
fi

if [ -n "$mlp" ]; then
    msmall="--epochs 1 --max-batches 2 --batch 32 --hidden 16 --threads 1"
    # shellcheck disable=SC2086
    $run -np 1 "$mlp" $msmall --data "$data" : \
        -np 1 sh -c "$limit" "$mlp" $msmall --data "$data" \
        >"$tmp/mlp.out" 2>"$tmp/mlp.err"
    st=$?
    if [ $st -ne 0 ] || ! grep -q '^epoch 1 ' "$tmp/mlp.out"; then
        fail "mlp_mnist, ulimit -f on rank 1: exit $st: $(cat "$tmp/mlp.err")"
    else
        echo "ok: mlp_mnist, ulimit -f on rank 1: trains, exit 0"
    fi
fi

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
