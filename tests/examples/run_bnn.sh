#!/bin/sh
# bnn_mnist, briefly: every method on a few batches and 150 test/OOD images
# writes its table and pictures; the same seed gives the same table (all but
# the throughput columns) on 1 and 2 threads; bad flags and data are
# rejected with one line and exit 2, an unwritable --out with exit 1.
# usage: run_bnn.sh BNN_MNIST MNIST_DIR [BNN_OOD DEFAULT_OOD_DIR]
# BNN_OOD is bnn_mnist built with DEFAULT_OOD_DIR as its default OOD folder
# (a path this test may create and remove).
set -u
bnn=$1
data=$2
bnn_ood=${3:-}
default_ood=${4:-}
. "$(dirname "$0")/lib.sh"

# The embedded MNIST doubles as the OOD folder: the test only needs the
# columns filled, not a meaningful AUROC.
# (--samples and --members only where a method that uses them runs: given
# to a run without one, they are refused)
quick="--data $data --ood-data $data --epochs 1 --max-batches 4 --max-eval 150
       --hidden 48 --seed 7"
all="$quick --samples 3 --members 2"
# shellcheck disable=SC2086
expect 0 "$bnn" $all --threads 1 --out "$tmp/pics"
cp "$tmp/out" "$tmp/t1"
for m in det mcdropout bbb ensemble; do
    grep -q "^$m " "$tmp/t1" || fail "no table row for $m"
    grep -q '<svg' "$tmp/pics/reliability_$m.svg" ||
        fail "reliability_$m.svg is not an SVG"
    [ "$(head -c 8 "$tmp/pics/sure_$m.png" | od -An -tx1 | tr -d ' \n')" = \
        89504e470d0a1a0a ] || fail "sure_$m.png is not a PNG"
done
grep -q '<svg' "$tmp/pics/coverage.svg" || fail "coverage.svg is not an SVG"
# the same folder, det alone: the other methods' pictures of the run above
# are removed (they stayed, passing for this run's next to a coverage.svg
# without them); a folder at one of their names is left as it is
cp -r "$tmp/pics" "$tmp/pics_again"
rm "$tmp/pics_again/sure_bbb.png"
mkdir "$tmp/pics_again/sure_bbb.png"
# shellcheck disable=SC2086
expect 0 "$bnn" $quick --method det --threads 1 --out "$tmp/pics_again"
for m in mcdropout bbb ensemble; do
    [ -e "$tmp/pics_again/reliability_$m.svg" ] &&
        fail "reliability_$m.svg of an earlier run left beside det's"
    [ "$m" = bbb ] || [ ! -e "$tmp/pics_again/sure_$m.png" ] ||
        fail "sure_$m.png of an earlier run left beside det's"
done
[ -d "$tmp/pics_again/sure_bbb.png" ] || fail "the folder at sure_bbb.png was removed"
[ -s "$tmp/pics_again/reliability_det.svg" ] && [ -s "$tmp/pics_again/sure_det.png" ] ||
    fail "det's pictures missing: $(ls "$tmp/pics_again")"
# shellcheck disable=SC2086
expect 0 "$bnn" $all --threads 2
cp "$tmp/out" "$tmp/t2"
# the table without its last two columns (throughput)
table() { grep -E '^(det|mcdropout|bbb|ensemble) ' "$1" |
    awk '{ NF -= 2; print }'; }
[ -n "$(table "$tmp/t1")" ] || fail "empty table"
[ "$(table "$tmp/t1")" = "$(table "$tmp/t2")" ] ||
    fail "1 and 2 threads differ: $(table "$tmp/t1") vs $(table "$tmp/t2")"
# a single method runs alone; det has no mutual information column
# shellcheck disable=SC2086
expect 0 "$bnn" $quick --method det --threads 1
[ "$(grep -cE '^(det|mcdropout|bbb|ensemble) ' "$tmp/out")" -eq 1 ] ||
    fail "--method det printed other rows"
# its header shows no other method's settings (S, M and rho were shown as
# if used)
grep -q "S = \|M = \|rho init" "$tmp/out" &&
    fail "--method det shows other methods' settings: $(head -1 "$tmp/out")"
grep -qE '^det +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +- ' "$tmp/out" ||
    fail "det's AUROC-MI should be '-': $(cat "$tmp/out")"

# bbb with KL warm-up and two posterior samples per step: the same row on
# 1 and 2 threads
# shellcheck disable=SC2086
expect 0 "$bnn" $quick --method bbb --samples 3 --kl-warmup 1 --train-samples 2 --threads 1
cp "$tmp/out" "$tmp/w1"
# shellcheck disable=SC2086
expect 0 "$bnn" $quick --method bbb --samples 3 --kl-warmup 1 --train-samples 2 --threads 2
[ -n "$(table "$tmp/w1")" ] && [ "$(table "$tmp/w1")" = "$(table "$tmp/out")" ] ||
    fail "bbb with warm-up: 1 and 2 threads differ: $(table "$tmp/w1")"
[ "$(table "$tmp/w1")" != "$(grep '^bbb ' "$tmp/t1" | awk '{ NF -= 2; print }')" ] ||
    fail "--kl-warmup 1 --train-samples 2 changed nothing"
# the default rho init: -3.6 - lr x steps (0.05 x 2 epochs x 4 batches)
# shellcheck disable=SC2086
expect 0 "$bnn" $quick --method bbb --samples 2 --lr 0.05 --epochs 2
grep -q "bbb rho init -4.00," "$tmp/out" ||
    fail "default rho init should be -4.00: $(head -1 "$tmp/out")"
# shellcheck disable=SC2086
expect 0 "$bnn" $quick --method bbb --samples 3 --rho-init -5
grep -q "bbb rho init -5.00," "$tmp/out" ||
    fail "--rho-init -5 not shown: $(head -1 "$tmp/out")"

expect 0 "$bnn" --help
expect 0 "$bnn" --version
expect 2 "$bnn" --method bayes
expect 2 "$bnn" --samples 0
expect 2 "$bnn" --dropout 1
expect 2 "$bnn" --rho-init x
expect 2 "$bnn" --kl-warmup -1
expect 2 "$bnn" --train-samples 0
expect 2 "$bnn" --train-samples 65
expect 2 "$bnn" --members 0
# a method's own flag given to a run that does not train that method:
# refused (it was ignored, the header showing its value as if used)
one="--data $data --ood-data none --epochs 1 --max-batches 1 --max-eval 20
     --hidden 16 --threads 1"
# shellcheck disable=SC2086
expect 2 "$bnn" $one --method det --dropout 0.5
mentions "--dropout is for --method mcdropout, which this run does not train"
# shellcheck disable=SC2086
expect 2 "$bnn" $one --method det --method ensemble --samples 3
mentions "--samples is for --method mcdropout or bbb"
# shellcheck disable=SC2086
expect 2 "$bnn" $one --method mcdropout --rho-init -5
mentions "--rho-init is for --method bbb"
# shellcheck disable=SC2086
expect 2 "$bnn" $one --method bbb --members 3
mentions "--members is for --method ensemble"
# shellcheck disable=SC2086
expect 2 "$bnn" $one --method det --kl-warmup 0
# ... and taken where one of them runs
# shellcheck disable=SC2086
expect 0 "$bnn" $one --method det --method bbb --samples 2 --rho-init -5 \
    --prior-scale 0.5 --kl-warmup 1 --train-samples 2
# 784-H-H-10 with H = 65536 (its largest --hidden): 4.3 G parameters, past
# a tg_params' reservation: was an abort in tg_params_add
expect 2 "$bnn" --data "$data" --hidden 65536 --method det
grep -q -- "--hidden 65536" "$tmp/err" || fail "--hidden 65536: $(cat "$tmp/err")"
expect 2 "$bnn" --no-such-flag
expect 2 "$bnn" --epochs
expect 2 "$bnn" stray
expect 2 "$bnn" --data "$tmp/missing"
expect 2 "$bnn" --data "$data" --ood-data "$tmp/missing"
mkdir -p "$tmp/junk"
head -c 100 /dev/urandom >"$tmp/junk/t10k-images-idx3-ubyte"
expect 2 "$bnn" --data "$data" --ood-data "$tmp/junk"
# an OOD set without labels (a folder, or its images file by any name)
mkdir -p "$tmp/unlab"
cp "$data/t10k-images-idx3-ubyte.gz" "$tmp/unlab/"
for o in "$tmp/unlab" "$tmp/unlab/t10k-images-idx3-ubyte.gz"; do
    expect 0 "$bnn" --data "$data" --ood-data "$o" --method det --epochs 1 \
        --max-batches 2 --max-eval 100 --hidden 16 --threads 1
    grep -qF "OOD: $o (100 images)" "$tmp/out" || fail "unlabelled OOD $o: $(head -1 "$tmp/out")"
    grep -Eq '^det .* 0\.[0-9]{4} +- ' "$tmp/out" || fail "unlabelled OOD $o: no AUROC: $(cat "$tmp/out")"
done
: >"$tmp/file"
# shellcheck disable=SC2086
expect 1 "$bnn" $quick --method det --out "$tmp/file/sub"
# a picture's path taken by a folder: the message names the file, and the
# folder is left as it is
mkdir -p "$tmp/pdir/coverage.svg"
# shellcheck disable=SC2086
expect 1 "$bnn" $quick --method det --out "$tmp/pdir"
[ -d "$tmp/pdir/coverage.svg" ] || fail "the folder at coverage.svg was replaced"
grep -q "coverage.svg: it is a folder; not replaced" "$tmp/err" ||
    fail "unwritable picture not named: $(cat "$tmp/err")"
# ... before training (it trained, wrote det's pictures, then refused)
[ -e "$tmp/pdir/reliability_det.svg" ] &&
    fail "bnn_mnist wrote reliability_det.svg, then refused coverage.svg"
# a prior so narrow that its KL overflows: blamed, not the rate
# shellcheck disable=SC2086
expect 3 "$bnn" $quick --method bbb --prior-scale 1e-30
grep -q "prior-scale" "$tmp/err" ||
    fail "--prior-scale 1e-30: $(cat "$tmp/err")"

# a rate whose last step overflows the weights (every loss finite): the
# predictions are Inf/NaN, stopped with status 3 (tg_predictive aborted on
# them: "tapegrad: predictive: ... p[0] = -nan", status 134)
# shellcheck disable=SC2086
expect 3 "$bnn" $quick --method bbb --lr 1e6 --max-batches 1 --threads 1
mentions "predictions are not finite"

# bench/bnn_val_split.py (the tuning split): 8,000 + 1,000 of the 9,000
# training digits, which bnn_mnist reads as train and test
if command -v python3 >/dev/null 2>&1; then
    split=$(dirname "$0")/../../bench/bnn_val_split.py
    python3 "$split" "$data" "$tmp/val" >/dev/null ||
        fail "bnn_val_split.py failed"
    # shellcheck disable=SC2086
    expect 0 "$bnn" $quick --data "$tmp/val" --method det --threads 1
    grep -q "8000 train / 150 test images" "$tmp/out" ||
        fail "the split should hold 8000 training images: $(head -1 "$tmp/out")"
fi

# a label outside 0..9: refused naming the labels file read, raw or .gz
# (the message named the data folder, for the test set's labels too)
bad="$tmp/badlabels"; dataset "$data" "$bad" 64 64 12
expect 2 "$bnn" --data "$bad" --ood-data none --method det --epochs 1 \
    --max-batches 1
mentions "$bad/train-labels-idx1-ubyte: label 12 of image 0"
dataset "$data" "$tmp/badtest" 64 64
dataset "$data" "$tmp/labels12" 64 64 12
gzip -c "$tmp/labels12/t10k-labels-idx1-ubyte" \
    >"$tmp/badtest/t10k-labels-idx1-ubyte.gz"
rm "$tmp/badtest/t10k-labels-idx1-ubyte"
expect 2 "$bnn" --data "$tmp/badtest" --ood-data none --method det \
    --epochs 1 --max-batches 1
mentions "$tmp/badtest/t10k-labels-idx1-ubyte.gz: label 12 of image 0"

# OOD images of another geometry with the same number of pixels: refused
# (only the pixel count was compared)
wide="$tmp/wide"; dataset "$data" "$wide" 64 64
regeom "$wide/t10k-images-idx3-ubyte" 14 56
expect 2 "$bnn" --data "$data" --ood-data "$wide" --epochs 1 --max-batches 1
mentions "14x56"
# the same from a folder whose name holds a line break: one line (the
# name was printed raw)
cp -r "$wide" "$tmp/wi
de"
expect 2 "$bnn" --data "$data" --ood-data "$tmp/wi
de" --epochs 1 --max-batches 1
mentions "wi?de: images are 14x56"

# images taller than wide, with --out: sure_det.png draws each digit as
# 56x14 (it read them as 56x56, past the end of the test images: ASan's
# heap-buffer-overflow, and wrong pictures without ASan)
tall="$tmp/tall"; dataset "$data" "$tall" 64 2
regeom "$tall/t10k-images-idx3-ubyte" 56 14
regeom "$tall/train-images-idx3-ubyte" 56 14
expect 0 "$bnn" --data "$tall" --ood-data none --method det --epochs 1 \
    --max-batches 1 --hidden 16 --threads 1 --out "$tmp/tall_out"
# PNG width and height: 2 x (14*2 + 6 + 10*6) + 4*6 by 2 x (56*2 + 6) + 6
wh=$(od -An -tu1 -j16 -N8 "$tmp/tall_out/sure_det.png" 2>/dev/null | tr -s ' ')
[ "$wh" = " 0 0 0 212 0 0 0 242" ] ||
    fail "sure_det.png of 56x14 digits is not 212x242: $wh"

# the default OOD folder (never asked for) of another geometry than the
# training data: skipped with a note (it failed the run); --ood-data none
# skips any; an empty --ood-data is refused (it read "bnn_mnist: : No such
# file or directory")
wide2="$tmp/wide2"; dataset "$data" "$wide2" 300 64
regeom "$wide2/t10k-images-idx3-ubyte" 14 56
regeom "$wide2/train-images-idx3-ubyte" 14 56
expect 0 "$bnn" --data "$wide2" --method det --epochs 1 --max-batches 1 \
    --max-eval 20 --hidden 16 --threads 1
if [ -d /usr/share/datasets/fashion-mnist ]; then
    mentions "(the default OOD set) has 28x28 images"
fi
grep -q "OOD: none" "$tmp/out" || fail "14x56 data: $(head -1 "$tmp/out")"
expect 0 "$bnn" --data "$data" --ood-data none --method det --epochs 1 \
    --max-batches 1 --max-eval 20 --hidden 16 --threads 1
grep -q "OOD: none (0 images)" "$tmp/out" ||
    fail "--ood-data none: $(head -1 "$tmp/out")"
expect 2 "$bnn" --ood-data ""
mentions "--ood-data is empty"

# the default OOD folder: absent, skipped without a word; there but
# damaged (a truncated images file, raw or .gz, a labels file that does
# not match, no images file at all), refused before training with one
# line naming the file (it was skipped in silence); whole, scored
if [ -n "$bnn_ood" ]; then
    # run by the name it speaks with, as expect wants
    mkdir -p "$tmp/bin"
    ln -s "$(cd "$(dirname "$bnn_ood")" && pwd)/$(basename "$bnn_ood")" \
        "$tmp/bin/bnn_mnist"
    ood_run() {
        expect "$1" "$tmp/bin/bnn_mnist" --data "$data" --method det --epochs 1 \
            --max-batches 1 --max-eval 20 --hidden 16 --threads 1
    }
    # damaged FILE: the default set is the embedded digits' test set, FILE
    # in it cut to 300 bytes
    damaged() {
        rm -rf "$default_ood"
        mkdir -p "$default_ood"
        cp "$data/t10k-images-idx3-ubyte.gz" "$data/t10k-labels-idx1-ubyte.gz" \
            "$default_ood/"
        case $1 in
        *.gz) head -c 300 "$data/$1" >"$default_ood/$1" ;;
        *) rm "$default_ood/$1.gz"
           gzip -dc "$data/$1.gz" | head -c 300 >"$default_ood/$1" ;;
        esac
    }
    rm -rf "$default_ood"
    ood_run 0
    grep -q "OOD: none (0 images)" "$tmp/out" ||
        fail "absent default OOD set: $(head -1 "$tmp/out")"
    [ -s "$tmp/err" ] && fail "absent default OOD set: $(cat "$tmp/err")"
    for f in t10k-images-idx3-ubyte t10k-images-idx3-ubyte.gz \
        t10k-labels-idx1-ubyte; do
        damaged "$f"
        ood_run 2
        mentions "$default_ood/$f: "
        mentions "(the default OOD set"
        [ -s "$tmp/out" ] && fail "damaged $f: ran on: $(head -1 "$tmp/out")"
    done
    rm -rf "$default_ood"
    mkdir -p "$default_ood"
    ood_run 2
    mentions "t10k-images-idx3-ubyte"
    cp "$data/t10k-images-idx3-ubyte.gz" "$data/t10k-labels-idx1-ubyte.gz" \
        "$default_ood/"
    ood_run 0
    grep -qF "OOD: $default_ood (20 images)" "$tmp/out" ||
        fail "whole default OOD set: $(head -1 "$tmp/out")"
    # 14x14 training images with the 28x28 test set: refused with one line
    # (the note that the 28x28 default OOD set is skipped came first)
    mkdir -p "$tmp/odd14"
    { printf '\0\0\10\3\0\0\0\1\0\0\0\16\0\0\0\16'
      head -c 196 /dev/zero; } >"$tmp/odd14/train-images-idx3-ubyte"
    printf '\0\0\10\1\0\0\0\1\0' >"$tmp/odd14/train-labels-idx1-ubyte"
    cp "$data/t10k-images-idx3-ubyte.gz" "$data/t10k-labels-idx1-ubyte.gz" \
        "$tmp/odd14/"
    expect 2 "$tmp/bin/bnn_mnist" --data "$tmp/odd14" --method det \
        --epochs 1 --max-batches 1 --max-eval 20 --hidden 16 --threads 1
    mentions "images are 28x28, the training images 14x14"
    # 14x14 test images too, and an --out that cannot be made: one line
    # (the note came first), and the note itself when the run goes on
    cp "$tmp/odd14/train-images-idx3-ubyte" "$tmp/odd14/t10k-images-idx3-ubyte"
    cp "$tmp/odd14/train-labels-idx1-ubyte" "$tmp/odd14/t10k-labels-idx1-ubyte"
    rm "$tmp/odd14/"*.gz
    : >"$tmp/odd14_file"
    expect 1 "$tmp/bin/bnn_mnist" --data "$tmp/odd14" --method det \
        --epochs 1 --max-batches 1 --hidden 16 --threads 1 \
        --out "$tmp/odd14_file/sub"
    mentions "odd14_file/sub"
    expect 0 "$tmp/bin/bnn_mnist" --data "$tmp/odd14" --method det \
        --epochs 1 --max-batches 1 --hidden 16 --threads 1
    mentions "(the default OOD set) has 28x28 images"
    rm -rf "$default_ood"
fi
expect 2 "$bnn" --out ""
mentions "--out is empty"

# pictures that cannot be written: one line, at the first (it went on
# training the other methods and printed a line per picture)
mkdir -p "$tmp/pics2/reliability_det.svg" "$tmp/pics2/sure_mcdropout.png"
expect 1 "$bnn" --data "$data" --ood-data none --method all --members 2 \
    --epochs 1 --max-batches 1 --max-eval 20 --samples 2 --hidden 16 \
    --threads 1 --out "$tmp/pics2"
mentions "reliability_det.svg"

# a stop signal while a picture or table is written leaves no temporary
# (reliability_det.svg's and sure_det.png's stayed)
stopped_mid_write "$tmp/stop" "$bnn" --data "$data" --ood-data none \
    --method det --epochs 1 --max-batches 1 --max-eval 20 --hidden 16 \
    --threads 1 --out "$tmp/stop"

# 10,000 MC-dropout samples of the 1,000 test images (400 MB) under a
# 500 MB address-space limit: one line and status 1 (was "tapegrad:
# bnn_mnist: out of memory" and SIGABRT). Not under ASan, whose shadow
# memory needs terabytes.
if grep -q __asan_init "$bnn"; then
    echo "skip: out-of-memory case under AddressSanitizer"
else
    (ulimit -v 500000 && exec "$bnn" --data "$data" --ood-data none \
        --method mcdropout --samples 10000 --epochs 1 --max-batches 1 \
        --threads 1 --out "$tmp/oom") >"$tmp/out" 2>"$tmp/err"
    st=$?
    if [ "$st" -ne 1 ] || [ "$(wc -l <"$tmp/err")" -ne 1 ] ||
        ! grep -q "^bnn_mnist: .*out of memory" "$tmp/err"; then
        fail "bnn_mnist --samples 10000 in 500 MB exited $st: $(cat "$tmp/err")"
    fi
fi

[ "$fails" -eq 0 ] || exit 1
