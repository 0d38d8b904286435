#!/bin/sh
# Runs the example programs briefly and checks what they promise:
# outputs written, resume continues, bad flags and bad data rejected with one
# line and exit 2, an unwritable output folder with exit 1.
# usage: run_examples.sh VAE_MNIST MLP_MNIST
set -u
vae=$1
mlp=$2
. "$(dirname "$0")/lib.sh"

is_png() {
    [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]
}

# --- vae_mnist: one short epoch, then resume to a second one -----------------
out="$tmp/vae"
expect 0 "$vae" --epochs 1 --max-batches 3 --threads 1 --out "$out"
for f in metrics.csv loss.svg reconstructions.png samples.png \
    checkpoint.safetensors; do
    [ -s "$out/$f" ] || fail "vae_mnist did not write $f"
done
for f in reconstructions.png samples.png; do
    is_png "$out/$f" || fail "$f is not a PNG"
done
grep -q '<svg' "$out/loss.svg" || fail "loss.svg is not an SVG"
[ "$(wc -l <"$out/metrics.csv")" -eq 2 ] || fail "metrics.csv: want 2 lines"
grep -q 'test -ELBO' "$tmp/out" || fail "no per-epoch line: $(cat "$tmp/out")"

expect 0 "$vae" --epochs 2 --max-batches 3 --threads 1 --out "$out" \
    --resume "$out/checkpoint.safetensors"
grep -q 'resumed' "$tmp/out" || fail "resume did not say so"
[ "$(wc -l <"$out/metrics.csv")" -eq 3 ] || fail "metrics.csv after resume"
expect 2 "$vae" --hidden 300 --out "$out" \
    --resume "$out/checkpoint.safetensors"

expect 0 "$vae" --epochs 1 --max-batches 2 --latent 2 --threads 1 \
    --out "$tmp/vae2"
is_png "$tmp/vae2/manifold.png" || fail "latent 2: no manifold.png"

# --- vae_mnist --arch conv: a few steps, resume, the arch checked ----------
expect 0 "$vae" --arch conv --epochs 1 --max-batches 2 --batch 32 \
    --threads 1 --out "$tmp/conv"
grep -q 'model conv' "$tmp/out" || fail "--arch conv: $(cat "$tmp/out")"
is_png "$tmp/conv/samples.png" || fail "--arch conv: no samples.png"
expect 2 "$vae" --batch 32 --out "$tmp/conv" \
    --resume "$tmp/conv/checkpoint.safetensors"
grep -q 'pass --arch conv' "$tmp/err" || fail "arch mismatch: $(cat "$tmp/err")"
expect 0 "$vae" --arch conv --epochs 2 --max-batches 2 --batch 32 \
    --threads 1 --out "$tmp/conv" --resume "$tmp/conv/checkpoint.safetensors"
expect 2 "$vae" --arch conv --hidden 300
expect 2 "$vae" --arch rnn

# --- vae_mnist --likelihood cb: a few steps, resume, the likelihood checked --
expect 0 "$vae" --likelihood cb --epochs 1 --max-batches 2 --threads 1 \
    --out "$tmp/cb"
grep -q 'likelihood cb' "$tmp/out" || fail "--likelihood cb: $(cat "$tmp/out")"
grep -q 'test -ELBO' "$tmp/out" || fail "--likelihood cb: no epoch line"
is_png "$tmp/cb/samples.png" || fail "--likelihood cb: no samples.png"
expect 2 "$vae" --epochs 2 --max-batches 2 --threads 1 --out "$tmp/cb" \
    --resume "$tmp/cb/checkpoint.safetensors"
grep -q 'pass --likelihood cb' "$tmp/err" ||
    fail "likelihood mismatch: $(cat "$tmp/err")"
expect 2 "$vae" --likelihood cb --epochs 3 --max-batches 3 --threads 1 \
    --out "$out" --resume "$out/checkpoint.safetensors"
grep -q 'pass --likelihood bernoulli' "$tmp/err" ||
    fail "likelihood mismatch: $(cat "$tmp/err")"
expect 0 "$vae" --likelihood cb --epochs 2 --max-batches 2 --threads 1 \
    --out "$tmp/cb" --resume "$tmp/cb/checkpoint.safetensors"
grep -q 'resumed' "$tmp/out" || fail "--likelihood cb: resume did not say so"
expect 2 "$vae" --likelihood gaussian
grep -q -- '--likelihood is bernoulli or cb' "$tmp/err" ||
    fail "bad --likelihood: $(cat "$tmp/err")"

# --- vae_mnist: rejected flags and data --------------------------------------
expect 2 "$vae" --batch 0
expect 2 "$vae" --lr -1
expect 2 "$vae" --latent 0
expect 2 "$vae" --epochs abc
expect 2 "$vae" --epochs
expect 2 "$vae" --no-such-flag
expect 2 "$vae" stray-argument
expect 2 "$vae" --data "$tmp/missing" --out "$tmp/o3"
head -c 200 /dev/urandom >"$tmp/junk.safetensors"
expect 2 "$vae" --resume "$tmp/junk.safetensors" --out "$tmp/o4"
: >"$tmp/file"
expect 1 "$vae" --out "$tmp/file/sub"
expect 0 "$vae" --help
expect 0 "$vae" --version

# --- mlp_mnist ---------------------------------------------------------------
expect 0 "$mlp" --epochs 1 --max-batches 3 --threads 1
grep -q 'test accuracy' "$tmp/out" || fail "mlp_mnist: no accuracy line"
expect 2 "$mlp" --hidden 0
expect 2 "$mlp" --lr x
expect 2 "$mlp" --bogus
# one dash on a long option: the message named the argument before it
# (here the program itself)
expect 2 "$mlp" -batch 64
grep -q "unknown option '-batch' (long options take two dashes: '--batch')" \
    "$tmp/err" || fail "-batch: $(cat "$tmp/err")"
expect 2 "$mlp" --threads 1 -x
grep -q "unknown option '-x'" "$tmp/err" || fail "-x: $(cat "$tmp/err")"
expect 2 "$mlp" --data "$tmp/missing"
expect 0 "$mlp" --version

# the GEMM's tuning variables: one that cannot be used says so, once (a
# TG_GEMM_BLOCKS of one number, or with junk after it, was ignored without
# a word); a good one says nothing
for blocks in 256 256,1536x 0,64; do
    TG_GEMM_BLOCKS=$blocks expect 0 "$mlp" --epochs 1 --max-batches 1 \
        --hidden 8 --threads 1
    [ "$(grep -c "^tapegrad: TG_GEMM_BLOCKS=$blocks is not \"kc,nc\"" "$tmp/err")" = 1 ] ||
        fail "TG_GEMM_BLOCKS=$blocks: $(cat "$tmp/err")"
done
TG_GEMM_BLOCKS=256,1536 expect 0 "$mlp" --epochs 1 --max-batches 1 \
    --hidden 8 --threads 1
[ -s "$tmp/err" ] && fail "TG_GEMM_BLOCKS=256,1536: $(cat "$tmp/err")"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all example checks passed"
