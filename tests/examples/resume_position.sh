#!/bin/sh
# vae_mnist --resume refuses a checkpoint whose training position contradicts
# itself (step, batch_in_epoch, epoch_seen, the epoch's sums and noise
# stream, a missing key): exit 2, one line naming the file and the key. Each
# refused case resumed with exit 0 before, training a different model (step
# 1000 or 0 after 4 steps; a batch claimed done without its step; a
# mid-epoch file without batch_in_epoch restarting its epoch; epoch_kl
# -1e300 printed as the train -ELBO). Checkpoints real runs write (after an
# epoch, on SIGINT mid-epoch, from an older format, after --max-batches
# changed) still resume.
# usage: resume_position.sh VAE_MNIST MNIST_DIR
set -u
vae=$1
mnist=$2
. "$(dirname "$0")/lib.sh"
pid=""
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

fast="--data $mnist --hidden 16 --latent 2 --batch 32 --threads 1"
q="$fast --max-batches 4"

# refuse FILE KEY ARGS...: resuming FILE exits 2 naming FILE and KEY, and
# leaves no output folder.
refuse() {
    f=$1 key=$2
    shift 2
    rm -rf "$tmp/o"
    expect 2 "$vae" "$@" --out "$tmp/o" --resume "$f"
    mentions "$f: metadata '$key'"
    [ -e "$tmp/o" ] && fail "a refused resume of $f left $tmp/o"
}
# st_del FILE KEY OUT: FILE without metadata KEY.
st_del() {
    st_edit_header "$1" "s/\"$2\":\"[^\"]*\",//" "$3"
    [ -z "$(st_meta "$3" "$2")" ] || fail "st_del: $2 still in $3"
}

# --- after an epoch of 4 batches (epoch 1, batch_in_epoch 0, step 4) ---------
expect 0 "$vae" $q --epochs 1 --out "$tmp/e1"
ck="$tmp/e1/checkpoint.safetensors"
[ "$(st_meta "$ck" step)" = 4 ] || fail "epoch 1 of 4 batches: step $(st_meta "$ck" step)"
[ "$(st_meta "$ck" epoch_batches_max)" = 4 ] ||
    fail "epoch_batches_max is '$(st_meta "$ck" epoch_batches_max)', not 4"
cp "$ck" "$tmp/good.safetensors"
ck="$tmp/good.safetensors"
expect 0 "$vae" $q --epochs 2 --out "$tmp/ok1" --resume "$ck"

# the step count (both keys, agreeing) beyond 1 epoch x 4 batches, or 0
for s in 1000 5 0; do
    st_set_meta "$ck" step $s "$tmp/s.1"
    st_set_meta "$tmp/s.1" optim.step $s "$tmp/step$s.safetensors"
    refuse "$tmp/step$s.safetensors" step $q --epochs 2
done
# a batch of epoch 2 claimed done (its samples and sums too), no step taken
st_set_meta "$ck" batch_in_epoch 1 "$tmp/b.1"
st_set_meta "$tmp/b.1" epoch_seen 32 "$tmp/b.2"
st_set_meta "$tmp/b.2" epoch_rec 0x1p+13 "$tmp/b.3"
st_set_meta "$tmp/b.3" epoch_kl 0x1p+4 "$tmp/b1.safetensors"
refuse "$tmp/b1.safetensors" noise_rng $q --epochs 2
# ... and with the step taken: the noise stream is still epoch 1's end
st_set_meta "$tmp/b1.safetensors" step 5 "$tmp/b.4"
st_set_meta "$tmp/b.4" optim.step 5 "$tmp/b1s.safetensors"
refuse "$tmp/b1s.safetensors" noise_rng $q --epochs 2
# the whole of epoch 2 claimed done (batch_in_epoch 4 of 4: 0 steps ran)
st_set_meta "$ck" batch_in_epoch 4 "$tmp/b.1"
st_set_meta "$tmp/b.1" epoch_seen 128 "$tmp/b4.safetensors"
refuse "$tmp/b4.safetensors" step $q --epochs 2
# sums with no sample seen
st_set_meta "$ck" epoch_kl -1e300 "$tmp/kl.safetensors"
refuse "$tmp/kl.safetensors" epoch_kl $q --epochs 2
# keys every checkpoint of this version writes
st_del "$ck" step "$tmp/nostep.safetensors"
refuse "$tmp/nostep.safetensors" step $q --epochs 2
st_del "$ck" holdout "$tmp/nohold.safetensors"
refuse "$tmp/nohold.safetensors" holdout $q --epochs 2
st_set_meta "$ck" epoch_batches_max 0 "$tmp/ebm0.safetensors"
refuse "$tmp/ebm0.safetensors" epoch_batches_max $q --epochs 2

# older files resume as they did: without epoch_batches_max (no upper bound
# on the step then: an earlier run may have had more batches per epoch), or
# from before mid-epoch positions and the keys that came after them
st_del "$ck" epoch_batches_max "$tmp/noebm.safetensors"
expect 0 "$vae" $q --epochs 2 --out "$tmp/ok2" --resume "$tmp/noebm.safetensors"
[ -z "$(st_meta "$tmp/ok2/checkpoint.safetensors" epoch_batches_max)" ] ||
    fail "a run resumed from a file without epoch_batches_max wrote one"
cp "$ck" "$tmp/old.safetensors"
for k in batch_in_epoch epoch_seen epoch_skipped epoch_rec epoch_kl noise_rng \
    shards holdout arch likelihood epoch_batches_max guard; do
    st_del "$tmp/old.safetensors" $k "$tmp/old.1"
    mv "$tmp/old.1" "$tmp/old.safetensors"
done
expect 0 "$vae" $q --epochs 2 --out "$tmp/ok3" --resume "$tmp/old.safetensors"

# --max-batches changed between runs: 3, then 4, then 2 (the epochs' step
# counts differ; epoch_batches_max keeps the most)
expect 0 "$vae" $fast --max-batches 3 --epochs 1 --out "$tmp/mb"
mb="$tmp/mb/checkpoint.safetensors"
expect 0 "$vae" $fast --max-batches 4 --epochs 2 --out "$tmp/mb" --resume "$mb"
[ "$(st_meta "$mb" step)/$(st_meta "$mb" epoch_batches_max)" = 7/4 ] ||
    fail "after 3 + 4 batches: step/epoch_batches_max $(st_meta "$mb" step)/$(st_meta "$mb" epoch_batches_max), not 7/4"
expect 0 "$vae" $fast --max-batches 2 --epochs 3 --out "$tmp/mb" --resume "$mb"

# --- mid-epoch, as SIGINT leaves it ------------------------------------------
mid="$tmp/int/checkpoint.safetensors"
# shellcheck disable=SC2086
"$vae" $fast --epochs 1 --checkpoint-every 2 --out "$tmp/int" \
    >"$tmp/int.log" 2>"$tmp/int.err" &
pid=$!
i=0
while [ ! -e "$mid" ] && kill -0 "$pid" 2>/dev/null && [ $i -lt 6000 ]; do
    sleep 0.01
    i=$((i + 1))
done
kill -INT "$pid" 2>/dev/null
wait "$pid"
status=$?
pid=""
[ "$status" -eq 130 ] || fail "SIGINT: exit $status, expected 130: $(cat "$tmp/int.err")"
b=$(st_meta "$mid" batch_in_epoch)
echo "interrupted at batch_in_epoch $b, step $(st_meta "$mid" step)"
if [ "$status" -eq 130 ] && [ -n "$b" ] && [ "$b" != 0 ]; then
    cp "$mid" "$tmp/mid.safetensors"
    mid="$tmp/mid.safetensors"
    st_del "$mid" batch_in_epoch "$tmp/nobie.safetensors"
    refuse "$tmp/nobie.safetensors" batch_in_epoch $fast --epochs 1
    st_set_meta "$mid" epoch_seen $((32 * b - 1)) "$tmp/seen.safetensors"
    refuse "$tmp/seen.safetensors" epoch_seen $fast --epochs 1
    st_set_meta "$mid" epoch_rec 1e308 "$tmp/rec.safetensors"
    refuse "$tmp/rec.safetensors" epoch_rec $fast --epochs 1
    st_set_meta "$mid" epoch_rec -1 "$tmp/recneg.safetensors"
    refuse "$tmp/recneg.safetensors" epoch_rec $fast --epochs 1
    st_set_meta "$mid" epoch_kl -1e300 "$tmp/klneg.safetensors"
    refuse "$tmp/klneg.safetensors" epoch_kl $fast --epochs 1
    st_set_meta "$mid" epoch_batches_max "$b" "$tmp/ebm.safetensors"
    refuse "$tmp/ebm.safetensors" batch_in_epoch $fast --epochs 1
    st_set_meta "$mid" noise_rng \
        0000000000000001000000000000000000000000000000000000000000000000 \
        "$tmp/rng.safetensors"
    refuse "$tmp/rng.safetensors" noise_rng $fast --epochs 1
    expect 0 "$vae" $fast --epochs 1 --out "$tmp/ok4" --resume "$mid"
else
    fail "SIGINT left no mid-epoch checkpoint: the mid-epoch cases did not run"
fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "resume position checks passed"
