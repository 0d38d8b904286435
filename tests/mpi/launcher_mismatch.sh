#!/bin/sh
# Started by another MPI library's launcher (MPICH's mpiexec, which sets
# PMI_RANK and PMI_SIZE, starting this build): MPI_Init finds a job of one,
# so every process was a job of its own. Each trained alone, one shard (not
# the model N ranks train), into the same --out, and exited 0. Now each
# refuses in tg_dist_init, one line, exit status 2, before anything is
# written (rank 0 at once, a rank r > 0 after 2 s, saying its rank).
# Simulated without mpirun: the launcher's variables, no launcher.
# With another MPI than Open MPI (whose MPI_Init, given PMI_* alone, makes a
# singleton) the test is skipped.
# usage: launcher_mismatch.sh MPIRUN VAE_MNIST MLP_MNIST DATA_DIR
set -u
mpirun=$1
vae=$2
mlp=$3
data=$4
if ! "$mpirun" --version 2>/dev/null | grep -q 'Open MPI'; then
    echo "skipped: $mpirun is not Open MPI's"
    exit 77
fi
. "$(dirname "$0")/../lib.sh"

# check WHAT STATUS NAME RANK_TEXT
check() {
    n=$(grep -c "^$3: started by an MPI launcher as $4 2 processes, but MPI found a job of 1" "$tmp/err")
    if [ "$2" -ne 2 ] || [ "$n" -ne 1 ] || [ "$(wc -l <"$tmp/err")" -ne 1 ]; then
        fail "$1: exit $2: $(cat "$tmp/err")"
    else
        echo "ok: $1: exit 2, $(cut -c1-100 "$tmp/err")..."
    fi
    [ -e "$tmp/out" ] && fail "$1: --out written"
    rm -rf "$tmp/out"
}

small="--epochs 1 --max-batches 2 --batch 32 --hidden 16 --latent 2 --threads 1"
# shellcheck disable=SC2086
PMI_SIZE=2 PMI_RANK=0 timeout 60 "$vae" $small --data "$data" \
    --out "$tmp/out" >/dev/null 2>"$tmp/err"
check "vae_mnist as rank 0 of another MPI's 2" $? vae_mnist "one of"
# shellcheck disable=SC2086
PMI_SIZE=2 PMI_RANK=1 timeout 60 "$vae" $small --data "$data" \
    --out "$tmp/out" >/dev/null 2>"$tmp/err"
check "vae_mnist as rank 1 of another MPI's 2" $? vae_mnist "rank 1 of"
PMI_SIZE=2 PMI_RANK=0 timeout 60 "$mlp" --epochs 1 --max-batches 2 \
    --threads 1 --data "$data" >"$tmp/out.txt" 2>"$tmp/err"
check "mlp_mnist as rank 0 of another MPI's 2" $? mlp_mnist "one of"
[ -s "$tmp/out.txt" ] && fail "mlp_mnist printed: $(cat "$tmp/out.txt")"

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
