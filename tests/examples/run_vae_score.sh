#!/bin/sh
# vae_score on a tiny checkpoint: outputs written (tables, convergence,
# pictures) with plausible content, the reference statistics and
# in-distribution results identical with and without --ood-data, AUROC
# tables printed, bad flags and files rejected with one line and exit 2.
# usage: run_vae_score.sh VAE_MNIST VAE_SCORE DATA_DIR
set -u
vae=$1
score=$2
data=$3
. "$(dirname "$0")/lib.sh"

expect 0 "$vae" --epochs 1 --max-batches 3 --hidden 32 --latent 2 \
    --threads 1 --out "$tmp/model"
ck="$tmp/model/checkpoint.safetensors"
[ -s "$ck" ] || fail "no checkpoint"

common="--checkpoint $ck --data $data --iwae-k 20 --max-images 60 --threads 1"
expect 0 "$score" $common --out "$tmp/alone"
cp "$tmp/out" "$tmp/alone.txt"
expect 0 "$score" $common --ood-data "$data" --out "$tmp/both"
cp "$tmp/out" "$tmp/both.txt"
# --ood-data none is the default (as bnn_mnist takes it): the same scores
expect 0 "$score" $common --ood-data none --out "$tmp/none"
cmp -s "$tmp/alone/scores.csv" "$tmp/none/scores.csv" ||
    fail "--ood-data none: scores differ from the run without the flag"

for f in scores.csv ood_metrics.csv convergence.csv ood_hist.svg \
    uncertainty.png latent.svg; do
    [ -s "$tmp/both/$f" ] || fail "vae_score did not write $f"
done
[ "$(head -c 8 "$tmp/both/uncertainty.png" | od -An -tx1 | tr -d ' \n')" = \
    89504e470d0a1a0a ] || fail "uncertainty.png is not a PNG"
grep -q '<svg' "$tmp/both/ood_hist.svg" || fail "ood_hist.svg is not an SVG"
grep -q 'share of images' "$tmp/both/ood_hist.svg" || fail "ood_hist.svg: no y label"
grep -q '&gt;' "$tmp/both/ood_hist.svg" || fail "ood_hist.svg: no overflow bins"
# sets: in 60, ref 60, ood 60, rot90 60, hflip 60, and the header
[ "$(wc -l <"$tmp/both/scores.csv")" -eq 301 ] || fail "scores.csv: want 301 lines"
[ "$(grep -c '^ref,' "$tmp/both/scores.csv")" -eq 60 ] || fail "scores.csv: no reference rows"
# 7 scores for each of 3 OOD sets; the interval holds the AUROC
[ "$(wc -l <"$tmp/both/ood_metrics.csv")" -eq 22 ] || fail "ood_metrics.csv: want 22 lines"
awk -F, 'NR > 1 && !($6 <= $5 && $5 <= $7 && $8 >= 0 && $8 <= 1 &&
    $9 > 0 && $9 <= 1) { bad = 1; print } END { exit bad }' \
    "$tmp/both/ood_metrics.csv" || fail "ood_metrics.csv: implausible row"
awk -F, 'NR > 1 && !($6 >= 1 && $6 <= 20 && $10 >= 0 && $10 <= 1) {
    bad = 1; print } END { exit bad }' "$tmp/both/convergence.csv" ||
    fail "convergence.csv: ESS outside [1, k] or share outside [0, 1]"
grep -q 'convergence: ESS mean' "$tmp/both.txt" || fail "no convergence line"

# what the in-distribution set gives must not depend on the OOD set
for pat in '^reference' '^  ELBO' 'in-distribution [0-9]'; do
    a=$(grep "$pat" "$tmp/alone.txt" | head -1 | sed 's/ [0-9.]* s,.*//; s/\(in-distribution [0-9.]*\),.*/\1/')
    b=$(grep "$pat" "$tmp/both.txt" | head -1 | sed 's/ [0-9.]* s,.*//; s/\(in-distribution [0-9.]*\),.*/\1/')
    [ -n "$a" ] || fail "no line matching '$pat': $(cat "$tmp/alone.txt")"
    [ "$a" = "$b" ] || fail "'$pat' differs with --ood-data: '$a' vs '$b'"
done
grep '^in,' "$tmp/alone/scores.csv" >"$tmp/a.csv"
grep '^in,' "$tmp/both/scores.csv" >"$tmp/b.csv"
cmp -s "$tmp/a.csv" "$tmp/b.csv" || fail "in-distribution scores differ with --ood-data"
for s in '-ELBO' '-log p(x)' 'S(x)' '|S| two-sided' '|L| two-sided' \
    '-LR background' 'DoSE (-log2 p, L)'; do
    grep -F -- "  $s " "$tmp/both.txt" |
        grep -Eq '^  .* [01]\.[0-9]{4} \[[01]\.[0-9]{4}, [01]\.[0-9]{4}\] [01]\.[0-9]{4} [01]\.[0-9]{4}$' ||
        fail "no AUROC row for $s: $(cat "$tmp/both.txt")"
done
# the same images scored as "OOD" (other noise): no better than chance
auc=$(grep '^ood,neg_log_px,' "$tmp/both/ood_metrics.csv" | cut -d, -f5)
awk -v a="$auc" 'BEGIN { exit !(a > 0.35 && a < 0.65) }' ||
    fail "same data as OOD: AUROC of -log p(x) is $auc, want about 0.5"
# the reference from the test set instead, and no near-OOD sets
expect 0 "$score" $common --reference test --near-ood none --out "$tmp/reftest"
grep -q 'reference (in-distribution test set, n = 60)' "$tmp/out" ||
    fail "--reference test: $(cat "$tmp/out")"
[ "$(wc -l <"$tmp/reftest/scores.csv")" -eq 61 ] || fail "--near-ood none: want 61 lines"

# a checkpoint trained with --holdout: the reference is its held-out images
expect 0 "$vae" --holdout 40 --epochs 1 --max-batches 2 --hidden 16 --latent 2 \
    --threads 1 --out "$tmp/ho"
grep -q '8960 train' "$tmp/out" || fail "--holdout 40: $(cat "$tmp/out")"
expect 0 "$score" --checkpoint "$tmp/ho/checkpoint.safetensors" --data "$data" \
    --iwae-k 4 --max-images 60 --near-ood none --threads 1 --out "$tmp/hosc"
grep -q '^ref: 40 images, training images 8960..8999 .*held out of training' \
    "$tmp/out" || fail "--holdout reference: $(cat "$tmp/out")"
grep -q '^reference (training images, held out of training, n = 40)' \
    "$tmp/out" || fail "--holdout reference summary: $(cat "$tmp/out")"
grep -q 'seen in training' "$tmp/both.txt" || fail "no 'seen in training' note"
# without --holdout the summary says so too (it read "held-out training
# images" while the ref line said "seen in training")
grep -q '^reference (training images, seen in training, n = ' "$tmp/both.txt" ||
    fail "reference summary: $(grep '^reference' "$tmp/both.txt")"
expect 2 "$vae" --holdout 9000 --epochs 1 --out "$tmp/ho2"
# ... scored on other data: its last images were called "held out of
# training" (the data's fingerprint was not compared); now a note, and the
# reference is said to be other data
dataset "$data" "$tmp/other" 200 60 3
expect 0 "$score" --checkpoint "$tmp/ho/checkpoint.safetensors" \
    --data "$tmp/other" --iwae-k 2 --max-images 60 --near-ood none \
    --bootstrap 10 --samples 2 --threads 1 --out "$tmp/hoother"
grep -q "^note: .* was trained on other data" "$tmp/out" ||
    fail "no note of other data: $(cat "$tmp/out")"
grep -q "^ref: .*not the checkpoint's training data" "$tmp/out" ||
    fail "--holdout checkpoint on other data: $(cat "$tmp/out")"
grep -q 'held out of training\|seen in training' "$tmp/out" &&
    fail "other data called held out or seen: $(cat "$tmp/out")"

# images that are all alike (black): the typicality fit fails, naming the
# reference images and what to do (it read "vae_score: typicality: feature 0
# of 20 examples is constant")
black="$tmp/black"; mkdir -p "$black"
for set in train:300 t10k:60; do
    n=${set#*:}
    { printf '\000\000\010\003'; be32 "$n"; be32 28; be32 28
      head -c $((n * 784)) /dev/zero; } >"$black/${set%:*}-images-idx3-ubyte"
    { printf '\000\000\010\001'; be32 "$n"; head -c "$n" /dev/zero; } \
        >"$black/${set%:*}-labels-idx1-ubyte"
done
expect 2 "$score" --checkpoint "$ck" --data "$black" --iwae-k 2 \
    --max-images 20 --near-ood none --samples 1 --threads 1 --out "$tmp/black_o"
mentions "the reference images (training images 280..299 of $black"
mentions "cannot fit the typicality scores"
# which statistic is the same for all (it said "feature 0 is constant")
mentions "the compressed length L(x) is the same for all of them"
# bad input leaves no output folder (its .lock kept the rmdir from
# removing it); one that was there before is left
[ -e "$tmp/black_o" ] && fail "vae_score left $tmp/black_o: $(ls -A "$tmp/black_o")"
mkdir "$tmp/black_kept"
expect 2 "$score" --checkpoint "$ck" --data "$black" --iwae-k 2 \
    --max-images 20 --near-ood none --samples 1 --threads 1 \
    --out "$tmp/black_kept"
[ -d "$tmp/black_kept" ] || fail "vae_score removed a folder it did not create"

# k = 1: no standard error, and none claimed (the max read 0 beside a
# mean of nan)
expect 0 "$score" --checkpoint "$ck" --data "$data" --iwae-k 1 \
    --max-images 4 --near-ood none --samples 1 --threads 1 --out "$tmp/k1"
awk -F, 'NR > 1 && !($11 == "nan" && $12 == "nan") { bad = 1; print }
    END { exit bad }' "$tmp/k1/convergence.csv" ||
    fail "k = 1: standard errors should be nan: $(cat "$tmp/k1/convergence.csv")"
# ... and the report says why, not "standard error mean nan max nan nats"
grep -q 'nan' "$tmp/out" && fail "k = 1: nan in the report: $(grep nan "$tmp/out")"
grep -q 'no log p(x) standard error at k = 1' "$tmp/out" ||
    fail "k = 1: the report does not say there is no standard error"

# an output name taken by a folder: refused before scoring, nothing else
# replaced (it scored every set, wrote four files, then failed on
# scores.csv)
mkdir -p "$tmp/taken/scores.csv"
expect 1 "$score" $common --out "$tmp/taken"
mentions "scores.csv: it is a folder; not replaced"
[ -e "$tmp/taken/ood_metrics.csv" ] && fail "vae_score wrote ood_metrics.csv, then refused"
grep -q "ELBO" "$tmp/out" && fail "vae_score scored, then refused"

# rejected flags and files
expect 2 "$score"
expect 2 "$score" --checkpoint ""
mentions "--checkpoint is empty"
expect 2 "$score" --checkpoint "$ck" --iwae-k 0
expect 2 "$score" --checkpoint "$ck" --iwae-k many
expect 2 "$score" --checkpoint "$ck" --max-images -3
# too few reference images for --max-images: the message blamed the
# training set (256 images and more) instead of the flag
expect 2 "$score" --checkpoint "$ck" --data "$data" --max-images 2 \
    --out "$tmp/few"
mentions "--max-images 2"
[ -e "$tmp/few" ] && fail "vae_score left an output folder"
expect 2 "$score" --checkpoint "$ck" --ref-images 2
# the same with --reference test: refused before scoring (it scored every
# set, then failed to fit "images that differ", leaving a folder)
dataset "$data" "$tmp/two" 300 2
expect 2 "$score" --checkpoint "$ck" --data "$tmp/two" --reference test \
    --iwae-k 2 --threads 1 --out "$tmp/few"
mentions "has 2 images, fewer than 3"
[ -e "$tmp/few" ] && fail "vae_score left an output folder"
# a test set of blank images as the reference: L(x) is constant, refused,
# offering the other reference (it offered --reference test, the one used)
dataset "$data" "$tmp/blank" 300 5
{ printf '\000\000\010\003'; be32 5; be32 28; be32 28
  head -c $((5 * 784)) /dev/zero; } >"$tmp/blank/t10k-images-idx3-ubyte"
expect 2 "$score" --checkpoint "$ck" --data "$tmp/blank" --reference test \
    --iwae-k 2 --samples 1 --threads 1 --out "$tmp/blank_out"
mentions "or --reference train)"
[ -e "$tmp/blank_out" ] && fail "vae_score left an output folder"
expect 2 "$score" --checkpoint "$ck" --frobnicate
expect 2 "$score" --checkpoint "$ck" stray
expect 2 "$score" --checkpoint "$ck" --near-ood rot45
# an empty item in the list (a trailing comma, two in a row; a leading
# one and no item at all were refused already): refused before scoring
# (the empty item was skipped and the run went on)
for near in 'rot90,' 'rot90,,hflip' 'hflip,rot90,' ',hflip' ''; do
    expect 2 "$score" --checkpoint "$ck" --data "$data" --near-ood "$near" \
        --iwae-k 2 --max-images 4 --samples 1 --threads 1 --out "$tmp/near"
    mentions "--near-ood"
    [ -e "$tmp/near" ] && fail "vae_score --near-ood '$near' left an output folder"
done
expect 2 "$score" --checkpoint "$ck" --reference both
expect 2 "$score" --checkpoint "$ck" --min-ess -1
expect 2 "$score" --checkpoint "$tmp/missing.safetensors"
head -c 300 /dev/urandom >"$tmp/junk.safetensors"
expect 2 "$score" --checkpoint "$tmp/junk.safetensors"
expect 2 "$score" --checkpoint "$ck" --data "$tmp/missing" --out "$tmp/o"
expect 2 "$score" --checkpoint "$ck" --ood-data "$tmp/missing" --out "$tmp/o"
# an OOD set without labels, as a folder or as its images file under any
# name (EMNIST's): scored, its label column empty; labels that are there
# must match (it refused every folder without labels)
mkdir -p "$tmp/unlab"
cp "$data/t10k-images-idx3-ubyte.gz" "$tmp/unlab/"
cp "$data/t10k-images-idx3-ubyte.gz" "$tmp/emnist-letters-test-images-idx3-ubyte.gz"
for o in "$tmp/unlab" "$tmp/emnist-letters-test-images-idx3-ubyte.gz"; do
    expect 0 "$score" $common --near-ood none --ood-data "$o" --out "$tmp/unl"
    grep -q "^ood: 60 images" "$tmp/out" || fail "unlabelled OOD set $o: $(cat "$tmp/out")"
    [ "$(grep -c '^ood,[0-9]*,,' "$tmp/unl/scores.csv")" -eq 60 ] ||
        fail "unlabelled OOD set $o: scores.csv rows: $(grep '^ood' "$tmp/unl/scores.csv" | head -2)"
done
grep -q "the images of $tmp/emnist" "$tmp/out" || fail "OOD file: $(cat "$tmp/out")"
head -c 100 /dev/urandom >"$tmp/unlab/t10k-labels-idx1-ubyte"
expect 2 "$score" $common --ood-data "$tmp/unlab" --out "$tmp/o"
mentions "t10k-labels-idx1-ubyte"
expect 0 "$score" --help
expect 0 "$score" --version

# a conv checkpoint is scored the same way
expect 0 "$vae" --arch conv --epochs 1 --max-batches 2 --batch 32 --latent 2 \
    --threads 1 --out "$tmp/conv"
expect 0 "$score" --checkpoint "$tmp/conv/checkpoint.safetensors" \
    --data "$data" --ood-data "$data" --iwae-k 4 --max-images 20 \
    --samples 4 --threads 1 --out "$tmp/conv_score"
grep -q 'model conv' "$tmp/out" || fail "conv score: $(cat "$tmp/out")"
grep -q 'AUROC' "$tmp/out" || fail "conv score: no AUROC table"

# a continuous Bernoulli checkpoint: scored with its own likelihood, whose
# log p(x) is a log density (above the Bernoulli's log probability)
expect 0 "$vae" --likelihood cb --epochs 1 --max-batches 3 --hidden 32 \
    --latent 2 --threads 1 --out "$tmp/cb"
expect 0 "$score" --checkpoint "$tmp/cb/checkpoint.safetensors" \
    --data "$data" --iwae-k 4 --max-images 20 --samples 4 --threads 1 \
    --out "$tmp/cb_score"
grep -q 'likelihood cb' "$tmp/out" || fail "cb score: $(cat "$tmp/out")"
grep -q 'per-pixel continuous Bernoullis' "$tmp/out" ||
    fail "cb score: the background model is not a CB: $(cat "$tmp/out")"
[ -s "$tmp/cb_score/scores.csv" ] || fail "cb score: no scores.csv"
# the same file with its 'likelihood' key lost (renamed, the header's
# length kept): refused, as vae_mnist --resume refuses it (was scored as a
# Bernoulli model)
sed 's/"likelihood":"cb"/"likelihoox":"cb"/; s/"tapegrad.checksum"/"nochecks.checksum"/' "$tmp/cb/checkpoint.safetensors" \
    >"$tmp/cb_nolik.safetensors"
cmp -s "$tmp/cb/checkpoint.safetensors" "$tmp/cb_nolik.safetensors" &&
    fail "no likelihood key to remove in the cb checkpoint"
expect 2 "$score" --checkpoint "$tmp/cb_nolik.safetensors" --data "$data" \
    --iwae-k 2 --max-images 4 --threads 1 --out "$tmp/cb_nolik"
mentions "'likelihood'"

# A data folder without labels files: the VAE uses none. vae_mnist trains
# and vae_score scores (latent.svg in one colour, the label column empty);
# both had refused for want of train-labels-idx1-ubyte. A file given as the
# folder is refused (it would be both the training and the test set).
dataset "$data" "$tmp/nolabels" 200 60
rm "$tmp/nolabels"/*-labels-idx1-ubyte
expect 0 "$vae" --data "$tmp/nolabels" --epochs 1 --hidden 16 --latent 2 \
    --batch 32 --threads 1 --out "$tmp/nolabels_model"
expect 0 "$score" --checkpoint "$tmp/nolabels_model/checkpoint.safetensors" \
    --data "$tmp/nolabels" --iwae-k 2 --max-images 20 --samples 2 \
    --bootstrap 10 --threads 1 --out "$tmp/nolabels_scores"
[ -s "$tmp/nolabels_scores/latent.svg" ] || fail "no labels: no latent.svg"
grep -q '^in,0,,' "$tmp/nolabels_scores/scores.csv" ||
    fail "no labels: scores.csv row: $(sed -n 2p "$tmp/nolabels_scores/scores.csv")"
expect 2 "$vae" --data "$tmp/nolabels/train-images-idx3-ubyte" --epochs 1 \
    --out "$tmp/nolabels_file"
mentions "not a directory"
expect 2 "$score" --checkpoint "$tmp/nolabels_model/checkpoint.safetensors" \
    --data "$tmp/nolabels/t10k-images-idx3-ubyte" --out "$tmp/nolabels_file"
mentions "not a directory"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all vae_score checks passed"
