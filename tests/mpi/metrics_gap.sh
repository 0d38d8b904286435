#!/bin/sh
# vae_mnist saves an epoch's checkpoint before the metrics.csv that
# describes it. A run stopped between the two (rank 0 killed, or ended by
# mpirun when another rank died or was timed out) left a checkpoint after
# epoch 1 and no row for epoch 1, and the run resumed from it wrote a
# metrics.csv without that row for good. The checkpoint now carries the
# row: resumed from it (-np 2, and -np 1), metrics.csv has every epoch's
# row, as the straight run's (the last column, samples/s, is a timing).
# The stop is reproduced by removing metrics.csv after the first epoch.
# usage: metrics_gap.sh MPIRUN VAE_MNIST DATA_DIR
set -u
mpirun=$1
vae=$2
data=$3
. "$(dirname "$0")/../lib.sh"
run="timeout 120 $mpirun --bind-to none --oversubscribe"
tiny="--max-batches 4 --batch 32 --hidden 16 --latent 2 --threads 1 --data $data"

# shellcheck disable=SC2086
$run -np 2 "$vae" $tiny --epochs 2 --out "$tmp/ref" >"$tmp/ref.log" 2>&1 ||
    fail "straight run: $(cat "$tmp/ref.log")"
cut -d, -f1-8 "$tmp/ref/metrics.csv" >"$tmp/want"
for np in 2 1; do
    out="$tmp/cut$np"
    # shellcheck disable=SC2086
    $run -np 2 "$vae" $tiny --epochs 1 --out "$out" >"$out.log" 2>&1 ||
        fail "first epoch: $(cat "$out.log")"
    rm -f "$out/metrics.csv" # stopped before writing it
    cp "$out/checkpoint.safetensors" "$tmp/epoch1.safetensors"
    # shellcheck disable=SC2086
    $run -np $np "$vae" $tiny --epochs 2 --out "$out" \
        --resume "$tmp/epoch1.safetensors" >"$out.log" 2>&1 ||
        fail "-np $np resume: $(cat "$out.log")"
    cut -d, -f1-8 "$out/metrics.csv" >"$tmp/have"
    if cmp -s "$tmp/want" "$tmp/have"; then
        echo "ok: -np $np resumed without epoch 1's row: metrics.csv has it"
    else
        fail "-np $np resumed without epoch 1's row: metrics.csv is
$(cat "$out/metrics.csv"), the straight run's
$(cat "$tmp/ref/metrics.csv")"
    fi
    cmp -s "$tmp/ref/checkpoint.safetensors" "$out/checkpoint.safetensors" ||
        fail "-np $np resumed: another checkpoint than the straight run's"
done

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
