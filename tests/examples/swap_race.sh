#!/bin/sh
# A checkpoint saved over by another process while vae_mnist --resume or
# vae_score reads it (the swap_open shim renames another checkpoint over
# the path just before the Nth open): every run either uses one file
# throughout or stops with one line ("changed while it was being read"),
# never a mix. Before the fix, a swap before the tensors' open resumed with
# one file's position, step and flags and the other's weights and Adam
# state, exit 0.
# usage: swap_race.sh VAE_MNIST VAE_SCORE SHIM MNIST_DIR
set -u
vae=$1
score=$2
shim=$3
mnist=$4
. "$(dirname "$0")/lib.sh"

small="$tmp/small"; dataset "$mnist" "$small" 128 64
fast="--data $small --hidden 16 --latent 2 --batch 32 --threads 1"
expect 0 "$vae" $fast --epochs 1 --out "$tmp/a"
expect 0 "$vae" $fast --epochs 3 --out "$tmp/b"
# an ASan build's runtime wants to come first; the shim only renames
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
refused=0
for at in 1 2 3 4 5; do
    cp "$tmp/a/checkpoint.safetensors" "$tmp/live.safetensors"
    cp "$tmp/b/checkpoint.safetensors" "$tmp/new.safetensors"
    rm -rf "$tmp/o"
    TG_SWAP_PATH="$tmp/live.safetensors" TG_SWAP_SRC="$tmp/new.safetensors" \
        TG_SWAP_AT=$at LD_PRELOAD="$shim" \
        "$vae" $fast --epochs 5 --out "$tmp/o" \
        --resume "$tmp/live.safetensors" >"$tmp/out" 2>"$tmp/err"
    st=$?
    if [ "$st" -eq 2 ]; then
        grep -q 'changed while it was being read' "$tmp/err" &&
            [ "$(wc -l <"$tmp/err")" -eq 1 ] ||
            fail "swap at open $at: exit 2 but: $(cat "$tmp/err")"
        refused=$((refused + 1))
        continue
    fi
    [ "$st" -eq 0 ] || fail "swap at open $at: exit $st: $(cat "$tmp/err")"
    # one file throughout: the one resumed from says where it stood, and
    # the run's result is that file's straight continuation
    if grep -q 'after epoch 1' "$tmp/out"; then from=a; else from=b; fi
    rm -rf "$tmp/ref_$from"
    cp "$tmp/$from/checkpoint.safetensors" "$tmp/ref_$from.safetensors"
    "$vae" $fast --epochs 5 --out "$tmp/ref_$from" \
        --resume "$tmp/ref_$from.safetensors" >/dev/null 2>&1 ||
        fail "reference resume from $from"
    st_data() { n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
    st_data "$tmp/o/checkpoint.safetensors" >"$tmp/d1"
    st_data "$tmp/ref_$from/checkpoint.safetensors" >"$tmp/d2"
    cmp -s "$tmp/d1" "$tmp/d2" ||
        fail "swap at open $at: resumed from $from but trained another model"
    echo "ok: swap at open $at: one file ($from) throughout"
done
[ "$refused" -ge 1 ] || fail "no swap fell between the checks and the load"
# vae_score opens the file the same way
for at in 1 2 3; do
    cp "$tmp/a/checkpoint.safetensors" "$tmp/live.safetensors"
    cp "$tmp/b/checkpoint.safetensors" "$tmp/new.safetensors"
    rm -rf "$tmp/s"
    TG_SWAP_PATH="$tmp/live.safetensors" TG_SWAP_SRC="$tmp/new.safetensors" \
        TG_SWAP_AT=$at LD_PRELOAD="$shim" \
        "$score" --checkpoint "$tmp/live.safetensors" --data "$small" \
        --iwae-k 2 --max-images 4 --near-ood none --bootstrap 10 --samples 2 \
        --threads 1 --out "$tmp/s" >"$tmp/out" 2>"$tmp/err"
    st=$?
    [ "$st" -eq 0 ] || { [ "$st" -eq 2 ] &&
        grep -q 'changed while it was being read' "$tmp/err"; } ||
        fail "vae_score, swap at open $at: exit $st: $(cat "$tmp/err")"
    echo "ok: vae_score, swap at open $at: exit $st"
done
# An IDX file replaced by a FIFO right after a stat of it (the shim renames
# the FIFO over it then): a refusal or a run on the file it opened, never a
# wait for a writer (the IDX reader checked the path with stat, then opened
# it: the open of the FIFO waited for ever)
for at in 1 2 3; do
    rm -rf "$tmp/fd" "$tmp/o"
    cp -r "$small" "$tmp/fd"
    mkfifo "$tmp/fifo"
    TG_SWAP_AFTER_STAT=1 TG_SWAP_PATH="$tmp/fd/train-images-idx3-ubyte" \
        TG_SWAP_SRC="$tmp/fifo" TG_SWAP_AT=$at LD_PRELOAD="$shim" \
        timeout 60 "$vae" --data "$tmp/fd" --hidden 16 --latent 2 --batch 32 \
        --threads 1 --epochs 1 --out "$tmp/o" >"$tmp/out" 2>"$tmp/err"
    st=$?
    rm -f "$tmp/fifo"
    if [ "$st" -eq 0 ] || { [ "$st" -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] &&
        grep -q 'train-images-idx3-ubyte: not a regular file' "$tmp/err"; }; then
        echo "ok: a FIFO renamed over the images after stat $at: exit $st"
    else
        fail "a FIFO renamed over the images after stat $at: exit $st: $(cat "$tmp/err")"
    fi
done

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all swap checks passed"
