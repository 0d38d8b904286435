#!/bin/sh
# Feeds vae_mnist and mlp_mnist bad input end to end: data folders, IDX
# files, checkpoints, flags and output folders, each built here in a temp
# folder. Every case checks the exact exit status (2 bad input, 1 an output
# that cannot be written, 3 NaN/Inf), that stderr is exactly one line
# "<prog>: ..." containing the file or flag at fault, and that nothing partial
# is left behind (no output folder after bad input, no temporary files).
#
# usage: bad_input.sh VAE_MNIST MLP_MNIST MNIST_DIR
# WRAP="valgrind --error-exitcode=99 ..." runs every program under a wrapper
# (a wrapper's own report changes the exit status, so it fails the case).
# VERBOSE=1 prints each case's message. QUICK=1 leaves out cases that
# repeat a code path already covered (for slow wrappers: CI's valgrind pass).
set -u
vae=$1
mlp=$2
mnist=$3
wrap=${WRAP:-}
# meson's examples_bad_input_valgrind passes its wrapper as VALGRIND_WRAP and
# runs only when asked (TG_VALGRIND=1: CI), being slow; otherwise it skips.
if [ -n "${VALGRIND_WRAP:-}" ]; then
    [ "${TG_VALGRIND:-0}" = 1 ] || { echo "skipped (TG_VALGRIND=1 runs it)"; exit 77; }
    wrap=$VALGRIND_WRAP
fi
tmp=$(mktemp -d)
trap 'chmod -R u+rwx "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
fails=0
cases=0

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

# expect STATUS MENTION PROG ARGS...: exit status exactly STATUS; when not 0,
# stderr exactly one line "<prog>: ..." that contains MENTION.
expect() {
    want=$1
    mention=$2
    shift 2
    cases=$((cases + 1))
    # shellcheck disable=SC2086
    $wrap "$@" >"$tmp/stdout" 2>"$tmp/stderr"
    got=$?
    name=$(basename "$1")
    shift
    if [ "$got" -ne "$want" ]; then
        fail "$name $* exited $got, expected $want: $(head -c 2000 "$tmp/stderr")"
        return
    fi
    if [ "$want" -eq 0 ]; then
        [ -s "$tmp/stderr" ] && fail "$name $*: stderr not empty: $(cat "$tmp/stderr")"
        return
    fi
    lines=$(wc -l <"$tmp/stderr")
    if [ "$lines" -ne 1 ] || ! grep -q "^$name: " "$tmp/stderr"; then
        fail "$name $*: want one line '$name: ...', got: $(cat "$tmp/stderr")"
    elif ! grep -qF -- "$mention" "$tmp/stderr"; then
        fail "$name $*: message does not name '$mention': $(cat "$tmp/stderr")"
    else
        [ -n "${VERBOSE:-}" ] && echo "ok ($got) $name $*: $(cat "$tmp/stderr")"
    fi
}

# no_output DIR: a refused run left no output folder behind.
no_output() {
    [ -e "$1" ] && fail "partial output left in $1: $(ls -A "$1")"
}

# no_temp DIR: no temporary file of an interrupted write.
no_temp() {
    leftovers=$(find "$1" -name '*tmp.*' 2>/dev/null)
    [ -n "$leftovers" ] && fail "temporary files left: $leftovers"
}

# --- IDX files built from the shipped digits -------------------------------
be32() {
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) \
        $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"
}
raw="$tmp/raw"
mkdir "$raw"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte \
    t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    gzip -dc "$mnist/$f.gz" >"$raw/$f" || { echo "cannot read $mnist/$f.gz"; exit 1; }
done

# images FILE COUNT ROWS COLS [SRC]: an IDX3 file of COUNT images, pixels
# taken from SRC (the shipped train images, or zeros when they run out).
images() {
    { printf '\000\000\010\003'; be32 "$2"; be32 "$3"; be32 "$4"
      { tail -c +17 "${5:-$raw/train-images-idx3-ubyte}"; cat /dev/zero; } |
          head -c $(($2 * $3 * $4)); } >"$1"
}
# labels FILE COUNT: an IDX1 file of COUNT labels from the shipped ones.
labels() {
    { printf '\000\000\010\001'; be32 "$2"
      tail -c +9 "$raw/train-labels-idx1-ubyte" | head -c "$2"; } >"$1"
}
# dataset DIR [TRAIN_N TEST_N SIDE]: a small valid data folder.
dataset() {
    mkdir -p "$1"
    images "$1/train-images-idx3-ubyte" "${2:-256}" "${4:-28}" "${4:-28}"
    labels "$1/train-labels-idx1-ubyte" "${2:-256}"
    images "$1/t10k-images-idx3-ubyte" "${3:-64}" "${4:-28}" "${4:-28}"
    labels "$1/t10k-labels-idx1-ubyte" "${3:-64}"
}
good="$tmp/good"
dataset "$good"
# small, fast settings for the runs that train
fast="--data $good --hidden 16 --latent 2 --batch 32 --threads 1"
fast_mlp="--data $good --hidden 16 --batch 32 --threads 1"

for prog in "$vae" "$mlp"; do
    p=$(basename "$prog")
    o="$tmp/out_$p"
    out=""
    [ "$p" = vae_mnist ] && out="--out $o"

    # --- data folders ------------------------------------------------------
    expect 2 "$tmp/missing" "$prog" --data "$tmp/missing" $out
    : >"$tmp/plainfile"
    expect 2 "$tmp/plainfile" "$prog" --data "$tmp/plainfile" $out
    # test images of another geometry, the same pixel count (14x56)
    d="$tmp/$p.wide"; dataset "$d"
    images "$d/t10k-images-idx3-ubyte" 64 14 56
    expect 2 "14x56" "$prog" --data "$d" $out
    if [ "$p" = mlp_mnist ]; then # vae_mnist needs none (run_vae_score.sh)
        d="$tmp/$p.nolabels"; dataset "$d"; rm "$d/t10k-labels-idx1-ubyte"
        expect 2 "t10k-labels-idx1-ubyte" "$prog" --data "$d" $out
    fi
    d="$tmp/$p.locked"; dataset "$d"; chmod 000 "$d"
    if ! ls "$d" >/dev/null 2>&1; then # root reads it anyway: skip
        expect 2 "$d" "$prog" --data "$d" $out
    fi
    chmod 755 "$d"
    d="$tmp/$p.unreadable"; dataset "$d"
    chmod 000 "$d/train-images-idx3-ubyte"
    if ! cat "$d/train-images-idx3-ubyte" >/dev/null 2>&1; then
        expect 2 "train-images-idx3-ubyte" "$prog" --data "$d" $out
    fi
    # unreadable even for root: reading /proc/self/mem at 0 fails (EIO)
    d="$tmp/$p.eio"; dataset "$d"; rm "$d/train-images-idx3-ubyte"
    ln -s /proc/self/mem "$d/train-images-idx3-ubyte"
    expect 2 "train-images-idx3-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.fifo"; dataset "$d"; rm "$d/t10k-images-idx3-ubyte"
    mkfifo "$d/t10k-images-idx3-ubyte"
    expect 2 "t10k-images-idx3-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.dangling"; dataset "$d"; rm "$d/train-labels-idx1-ubyte"
    ln -s "$tmp/nowhere" "$d/train-labels-idx1-ubyte"
    expect 2 "train-labels-idx1-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.dirfile"; dataset "$d"; rm "$d/train-images-idx3-ubyte"
    mkdir "$d/train-images-idx3-ubyte"
    expect 2 "train-images-idx3-ubyte" "$prog" --data "$d" $out

    # --- IDX contents ------------------------------------------------------
    # (the same loader serves both programs: QUICK tests it through vae_mnist)
    d="$tmp/$p.count"; dataset "$d"; labels "$d/train-labels-idx1-ubyte" 255
    expect 2 "train-labels-idx1-ubyte" "$prog" --data "$d" $out
    # a model past a tg_params' reservation (512 M floats): mlp_mnist
    # aborted in tg_params_add (128x128 images, --hidden 65536)
    d="$tmp/$p.big"; dataset "$d" 8 8 128
    expect 2 "--hidden 65536" "$prog" --data "$d" --hidden 65536 $out
    # a batch buffer of --batch x pixels floats past 4 GiB: --batch 65536
    # of 2896x2896 images asked malloc for 2 TiB (ASan's abort; mlp_mnist
    # wrote to the NULL it got)
    d="$tmp/$p.bigbatch"; dataset "$d" 2 1 2896
    small_model="--hidden 1"
    [ "$p" = vae_mnist ] && small_model="--hidden 0 --latent 1"
    expect 2 "--batch 65536" "$prog" --data "$d" $small_model --batch 65536 $out
    rm -r "$d"
    d="$tmp/$p.sizes"; dataset "$d"
    images "$d/t10k-images-idx3-ubyte" 64 32 32
    expect 2 "$d" "$prog" --data "$d" $out
    if [ -z "${QUICK:-}" ] || [ "$p" = vae_mnist ]; then
    d="$tmp/$p.magic"; dataset "$d"
    { printf '\000\000\011\003'; tail -c +5 "$good/train-images-idx3-ubyte"; } \
        >"$d/train-images-idx3-ubyte"
    expect 2 "train-images-idx3-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.magic2"; dataset "$d"
    { printf 'PK\003\004'; tail -c +5 "$good/t10k-labels-idx1-ubyte"; } \
        >"$d/t10k-labels-idx1-ubyte"
    expect 2 "t10k-labels-idx1-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.trunc"; dataset "$d"
    head -c 5000 "$good/train-images-idx3-ubyte" >"$d/train-images-idx3-ubyte"
    expect 2 "train-images-idx3-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.trunchdr"; dataset "$d"
    head -c 10 "$good/train-labels-idx1-ubyte" >"$d/train-labels-idx1-ubyte"
    expect 2 "train-labels-idx1-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.empty"; dataset "$d"; : >"$d/t10k-images-idx3-ubyte"
    expect 2 "t10k-images-idx3-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.trailing"; dataset "$d"
    printf 'junk' >>"$d/t10k-images-idx3-ubyte"
    expect 2 "t10k-images-idx3-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.dims"; dataset "$d"
    { printf '\000\000\010\002'; be32 256; be32 784
      tail -c +17 "$good/train-images-idx3-ubyte"; } >"$d/train-images-idx3-ubyte"
    expect 2 "train-images-idx3-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.huge"; dataset "$d"
    { printf '\000\000\010\003'; be32 4000000000; be32 65535; be32 65535; } \
        >"$d/train-images-idx3-ubyte"
    expect 2 "train-images-idx3-ubyte" "$prog" --data "$d" $out
    d="$tmp/$p.gz"; dataset "$d"; rm "$d/t10k-images-idx3-ubyte"
    gzip -c "$good/t10k-images-idx3-ubyte" | head -c 300 \
        >"$d/t10k-images-idx3-ubyte.gz"
    expect 2 "t10k-images-idx3-ubyte" "$prog" --data "$d" $out
    # a link loop is that, not "neither ... nor ....gz found"
    d="$tmp/$p.loop"; dataset "$d"; rm "$d/t10k-images-idx3-ubyte"
    ln -s loop2 "$d/t10k-images-idx3-ubyte"
    ln -s t10k-images-idx3-ubyte "$d/loop2"
    expect 2 "symbolic links" "$prog" --data "$d" $out
    fi
    [ "$p" = vae_mnist ] && no_output "$o"

    # --- flags ---------------------------------------------------------------
    flags='"--batch 0" "--batch -5" "--batch 12x" "--batch 99999999999" \
        "--batch 0x10" "--lr -1" "--lr 0" "--lr nan" "--lr inf" "--lr 1e9" \
        "--lr 1e-3x" "--lr 1e-50" "--lr 0x1p-3" "--epochs -3" "--epochs 0" \
        "--epochs ten" \
        "--threads -1" "--threads 2000" "--seed -1" \
        "--seed 99999999999999999999" "--max-batches 0" "--hidden -1"'
    [ -n "${QUICK:-}" ] && flags='"--batch 0" "--lr 1e-3x" "--seed -1"'
    eval "set -- $flags"
    for bad in "$@"; do
        set -- $bad
        expect 2 "$1" "$prog" $out "$@"
    done
    expect 2 "--epochs" "$prog" $out --epochs " 5"
    # a line break in an argument stays on the one line (it made two)
    expect 2 "--epochs" "$prog" $out --epochs "$(printf '1\nx')"
    expect 2 "--batch" "$prog" $out --batch ""
    expect 2 "--frobnicate" "$prog" --frobnicate 1
    expect 2 "--epochs" "$prog" --epochs
    expect 2 "stray" "$prog" stray
    [ "$p" = vae_mnist ] && no_output "$o"
done

# --- vae_mnist only: model flags, checkpoints, outputs ---------------------
o="$tmp/vae_out"
# (--hidden 65536 --latent 4096: each within its limit, together 900 M
# parameters: was an abort in tg_vae_new)
for bad in "--latent 0" "--latent 99999" "--hidden 99999999" \
    "--hidden 65536 --latent 4096" \
    "--checkpoint-every 0" "--checkpoint-every x"; do
    set -- $bad
    expect 2 "$1" "$vae" --out "$o" "$@"
done
expect 2 "--data" "$vae" --data "" --out "$o"
# an empty path names nothing: refused as such (it read "<prog>: : No such
# file or directory")
expect 2 "--resume is empty" "$vae" --resume "" --out "$o"
expect 2 "--data is empty" "$mlp" --data ""
expect 2 "--out" "$vae" --out ""
# an --out too long for the files' paths: refused before training (it
# trained, then failed writing the first file with the path cut off)
expect 1 "at most" "$vae" --epochs 1 --out "$tmp/$(printf '%04050d' 0)"
no_output "$o"

# A good checkpoint to spoil.
ck="$tmp/ck/checkpoint.safetensors"
expect 0 "" "$vae" $fast --epochs 1 --max-batches 2 --out "$tmp/ck"
hdr=$(od -An -tu8 -N8 "$ck" | tr -d ' ')

expect 2 "$tmp/nock" "$vae" $fast --resume "$tmp/nock" --out "$o"
expect 2 "$tmp/ck" "$vae" $fast --resume "$tmp/ck" --out "$o"
expect 2 "--hidden" "$vae" --data "$good" --hidden 17 --latent 2 --batch 32 \
    --resume "$ck" --out "$o"
expect 2 "--latent" "$vae" --data "$good" --hidden 16 --latent 3 --batch 32 \
    --resume "$ck" --out "$o"
expect 2 "--batch" "$vae" --data "$good" --hidden 16 --latent 2 --batch 33 \
    --resume "$ck" --out "$o"
expect 2 "--seed" "$vae" $fast --seed 7 --resume "$ck" --out "$o"
# the learning rate is the checkpoint's too (another --lr went on silently)
expect 2 "pass --lr 0.001" "$vae" $fast --lr 0.002 --resume "$ck" --out "$o"
expect 2 "--holdout" "$vae" $fast --holdout 5 --resume "$ck" --out "$o"
# metadata a run cannot have written: named, not turned into a hint (each
# edit keeps the header's length)
spoil() { # spoil NAME FROM TO: $ck with the text FROM replaced by TO and
    # without its checksum (so the value checks behind it are what meet it)
    sed "s/$2/$3/; s/\"tapegrad.checksum\"/\"nochecks.checksum\"/" "$ck" \
        >"$tmp/$1.safetensors"
    cmp -s "$ck" "$tmp/$1.safetensors" && fail "spoil $1: '$2' not in $ck"
}
spoil lrnan '"lr":"0.00100000005"' '"lr":"nan          "'
expect 2 "'lr'" "$vae" $fast --resume "$tmp/lrnan.safetensors" --out "$o"
spoil lrneg '"lr":"0.00100000005"' '"lr":"-0.0010000000"'
expect 2 "'lr'" "$vae" $fast --resume "$tmp/lrneg.safetensors" --out "$o"
# a line break and an escape sequence in a value: one line, '?' for each
spoil lrnl '"lr":"0.00100000005"' '"lr":"1\\n2\\u001b[3m"'
expect 2 "'lr'" "$vae" $fast --resume "$tmp/lrnl.safetensors" --out "$o"
grep -q "1?2?\[3m" "$tmp/stderr" || fail "lrnl: $(cat -A "$tmp/stderr")"
# a double above 0 that is the float 0 (was taken, then asked for --lr 0)
spoil lrtiny '"lr":"0.00100000005"' '"lr":"1e-50        "'
expect 2 "'lr'" "$vae" $fast --resume "$tmp/lrtiny.safetensors" --out "$o"
spoil batch0 '"batch":"32"' '"batch":"00"'
expect 2 "'batch'" "$vae" $fast --resume "$tmp/batch0.safetensors" --out "$o"
spoil hold '"holdout":"0"' '"holdout":"-"'
expect 2 "'holdout'" "$vae" $fast --resume "$tmp/hold.safetensors" --out "$o"
spoil shards '"shards":"1"' '"shards":"0"'
expect 2 "'shards'" "$vae" $fast --resume "$tmp/shards.safetensors" --out "$o"
# metadata of another model than the tensors (hidden 17 over weights of
# 16): named as such, not turned into a hint ('pass --hidden 17', which the
# tensors then refused)
spoil hid17 '"hidden":"16"' '"hidden":"17"'
expect 2 "its metadata describe that model (mlp, input 784, hidden 17" \
    "$vae" $fast --resume "$tmp/hid17.safetensors" --out "$o"
# weights that are finite but overflow the loss at once (encoder.fc1's
# weight on the centre pixel set to 1e30): the line says the checkpoint may
# be at fault (it only said to try a smaller --lr)
if command -v python3 >/dev/null 2>&1; then
    python3 - "$ck" "$tmp/huge.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
at = 8 + n + json.loads(raw[8:8 + n])["encoder.fc1.weight"]["data_offsets"][0]
at += 4 * (14 * 28 + 14)
# without the library's data checksum (renamed, the same length): a file
# another writer made, whose values the run meets
hdr = raw[8:8 + n].replace(b'"tapegrad.checksum"', b'"nochecks.checksum"')
open(sys.argv[2], "wb").write(raw[:8] + hdr + raw[8 + n:at] +
                              struct.pack("<f", 1e30) + raw[at + 4:])
PY
    expect 3 "its weights may be at fault" "$vae" $fast --resume \
        "$tmp/huge.safetensors" --out "$tmp/huge_out"
    rm -rf "$tmp/huge_out"
    # ... and with --skip-nonfinite, every step skipped from the resume on:
    # a whole epoch (8 batches), or 10 in a row (larger data) said only to
    # try a smaller --lr
    expect 3 "none taken since $tmp/huge.safetensors: its weights may be" \
        "$vae" $fast --skip-nonfinite --resume "$tmp/huge.safetensors" \
        --out "$tmp/huge_out"
    rm -rf "$tmp/huge_out"
    expect 3 "(10 in a row, none taken): its weights may be at fault" \
        "$vae" --data "$mnist" --allow-data-change --hidden 16 --latent 2 \
        --batch 32 --threads 1 --skip-nonfinite --resume \
        "$tmp/huge.safetensors" --out "$tmp/huge_out"
    rm -rf "$tmp/huge_out"
    # the same from a path with a line break: still one line (the path was
    # printed raw)
    cp "$tmp/huge.safetensors" "$tmp/huge
2.safetensors"
    expect 3 "huge?2.safetensors" "$vae" $fast --resume "$tmp/huge
2.safetensors" --out "$tmp/huge_out"
    rm -rf "$tmp/huge_out"
fi
spoil step '"step":"2"' '"step":"9"'
expect 2 "optim.step" "$vae" $fast --resume "$tmp/step.safetensors" --out "$o"
spoil nodata '"data":' '"dat_":'
expect 2 "allow-data-change" "$vae" $fast --resume "$tmp/nodata.safetensors" --out "$o"
# a seed of 2^63 or more reads back as itself (it was saved as -1)
big=18446744073709551615
expect 0 "" "$vae" $fast --seed $big --epochs 1 --max-batches 1 --out "$tmp/bigseed"
expect 2 "pass --seed $big" "$vae" $fast --epochs 2 --max-batches 1 \
    --resume "$tmp/bigseed/checkpoint.safetensors" --out "$tmp/bigseed"
expect 0 "" "$vae" $fast --seed $big --epochs 2 --max-batches 1 \
    --resume "$tmp/bigseed/checkpoint.safetensors" --out "$tmp/bigseed"
d="$tmp/vae.side32"; dataset "$d" 256 64 32
expect 2 "$d" "$vae" $fast --data "$d" --resume "$ck" --out "$o"
head -c 4000 "$ck" >"$tmp/trunc.safetensors"
expect 2 "trunc.safetensors" "$vae" $fast --resume "$tmp/trunc.safetensors" --out "$o"
head -c $((8 + hdr + 100)) "$ck" >"$tmp/truncdata.safetensors"
expect 2 "truncdata.safetensors" "$vae" $fast --resume "$tmp/truncdata.safetensors" --out "$o"
head -c 5 "$ck" >"$tmp/tiny.safetensors"
expect 2 "tiny.safetensors" "$vae" $fast --resume "$tmp/tiny.safetensors" --out "$o"
: >"$tmp/empty.safetensors"
expect 2 "empty.safetensors" "$vae" $fast --resume "$tmp/empty.safetensors" --out "$o"
head -c 3000 /dev/urandom >"$tmp/junk.safetensors"
expect 2 "junk.safetensors" "$vae" $fast --resume "$tmp/junk.safetensors" --out "$o"
sed 's/"shape":\[16,784\]/"shape":\[16,785\]/' "$ck" >"$tmp/shape.safetensors"
expect 2 "shape.safetensors" "$vae" $fast --resume "$tmp/shape.safetensors" --out "$o"
sed 's/"data_offsets":\[0,/"data_offsets":\[4,/' "$ck" >"$tmp/offs.safetensors"
expect 2 "offs.safetensors" "$vae" $fast --resume "$tmp/offs.safetensors" --out "$o"
sed 's/"__metadata__":{/"__metadata__":[/' "$ck" >"$tmp/json.safetensors"
expect 2 "json.safetensors" "$vae" $fast --resume "$tmp/json.safetensors" --out "$o"
sed 's/"noise_rng":"./"noise_rng":"z/; s/"tapegrad.checksum"/"nochecks.checksum"/' "$ck" >"$tmp/rng.safetensors"
expect 2 "noise_rng" "$vae" $fast --resume "$tmp/rng.safetensors" --out "$o"
sed 's/"epoch":"1"/"epoch":"x"/; s/"tapegrad.checksum"/"nochecks.checksum"/' "$ck" >"$tmp/epoch.safetensors"
expect 2 "epoch" "$vae" $fast --resume "$tmp/epoch.safetensors" --out "$o"
sed 's/"batch_in_epoch":"0"/"batch_in_epoch":"-"/; s/"tapegrad.checksum"/"nochecks.checksum"/' "$ck" >"$tmp/pos.safetensors"
expect 2 "batch_in_epoch" "$vae" $fast --resume "$tmp/pos.safetensors" --out "$o"
cp "$ck" "$tmp/nan.safetensors"
printf '\377\377\377\177' | dd of="$tmp/nan.safetensors" bs=1 seek=$((8 + hdr)) \
    conv=notrunc 2>/dev/null
expect 2 "nan.safetensors" "$vae" $fast --resume "$tmp/nan.safetensors" --out "$o"
no_output "$o"

# Outputs that cannot be written: exit 1, no temporary files left.
: >"$tmp/afile"
expect 1 "$tmp/afile" "$vae" $fast --epochs 1 --max-batches 1 --out "$tmp/afile/sub"
expect 1 "$tmp/afile" "$vae" $fast --epochs 1 --max-batches 1 --out "$tmp/afile"
expect 1 "/proc/tapegrad" "$vae" $fast --epochs 1 --max-batches 1 --out /proc/tapegrad/x
o="$tmp/ro"; mkdir "$o"; chmod 555 "$o"
if ! : 2>/dev/null >"$o/probe"; then # root writes anyway: skip
    expect 1 "$o" "$vae" $fast --epochs 1 --max-batches 1 --out "$o"
fi
rm -f "$o/probe"
o="$tmp/ckdir"; mkdir -p "$o/checkpoint.safetensors"
expect 1 "checkpoint.safetensors" "$vae" $fast --epochs 1 --max-batches 1 --out "$o"
no_temp "$o"
o="$tmp/csvdir"; mkdir -p "$o/metrics.csv"
expect 1 "metrics.csv" "$vae" $fast --epochs 1 --max-batches 1 --out "$o"
no_temp "$o"
o="$tmp/pngdir"; mkdir -p "$o/samples.png"
expect 1 "samples.png" "$vae" $fast --epochs 1 --max-batches 1 --out "$o"
no_temp "$o"

# --- NaN/Inf: exit 3 naming the step and tensor, nothing non-finite saved --
o="$tmp/nan_fresh"
expect 3 "step 2 " "$vae" $fast --lr 1e6 --epochs 1 --out "$o"
[ -e "$o/checkpoint.safetensors" ] && fail "a blown-up run saved a checkpoint"
no_temp "$o"
# resumed at --lr 1e6 (the checkpoint says so: its lr edited, same length)
mkdir -p "$tmp/nan_resume"
sed 's/"lr":"0.00100000005"/"lr":"1000000.00000"/; s/"tapegrad.checksum"/"nochecks.checksum"/' "$ck" \
    >"$tmp/nan_resume/checkpoint.safetensors"
cp "$tmp/nan_resume/checkpoint.safetensors" "$tmp/ck.before"
expect 3 "weight" "$vae" $fast --lr 1e6 --epochs 2 --out "$tmp/nan_resume" \
    --resume "$tmp/nan_resume/checkpoint.safetensors"
cmp -s "$tmp/ck.before" "$tmp/nan_resume/checkpoint.safetensors" ||
    fail "the checkpoint changed although training blew up"
# --skip-nonfinite: one wild step wrecks the weights (finite, test -ELBO
# ~1e33) and every later step is skipped; the wreck used to be saved over
# the good checkpoint
cp "$tmp/ck.before" "$tmp/ck.before2"
expect 3 "far above" "$vae" $fast --lr 1e6 --epochs 2 --max-batches 4 \
    --skip-nonfinite --out "$tmp/nan_resume" \
    --resume "$tmp/nan_resume/checkpoint.safetensors"
grep -q "skipped 3 non-finite steps" "$tmp/stdout" ||
    fail "--skip-nonfinite did not count: $(cat "$tmp/stdout")"
cmp -s "$tmp/ck.before2" "$tmp/nan_resume/checkpoint.safetensors" ||
    fail "--skip-nonfinite saved a wrecked model over the checkpoint"
expect 3 "no checkpoint written" "$vae" $fast --lr 1e6 --epochs 1 \
    --max-batches 4 --skip-nonfinite --out "$tmp/nan_skip"
[ -e "$tmp/nan_skip/checkpoint.safetensors" ] &&
    fail "--skip-nonfinite saved a wrecked model"
# a rate that stays finite still trains and saves
expect 0 "" "$vae" $fast --lr 1e-2 --epochs 1 --max-batches 4 \
    --skip-nonfinite --out "$tmp/skip_ok"
[ -e "$tmp/skip_ok/checkpoint.safetensors" ] || fail "no checkpoint saved"
# mlp_mnist's gradients stay bounded (softmax_xent's d/dlogits lies in
# [-1, 1]), so even --lr 1e6 trains to finite garbage and exits 0. It used
# to stop at step 2 on an Inf that softmax_xent's backward made from a
# log-sum-exp rounded to float (exp(x - lse) with lse below the max logit);
# the NaN/Inf stop itself is covered by the VAE cases above and tests/nn.
expect 0 "" "$mlp" $fast_mlp --lr 1e6 --epochs 1
# a label outside 0..9: refused naming the labels file read, raw or .gz
# (the message named the data folder)
d="$tmp/lab_train"; dataset "$d"
{ printf '\000\000\010\001'; be32 256
  head -c 256 /dev/zero | tr '\0' '\014'; } >"$d/train-labels-idx1-ubyte"
expect 2 "$d/train-labels-idx1-ubyte: label 12 of image 0" "$mlp" --data "$d"
d="$tmp/lab_test"; dataset "$d"
{ printf '\000\000\010\001'; be32 64
  head -c 64 /dev/zero | tr '\0' '\014'; } | gzip -c \
    >"$d/t10k-labels-idx1-ubyte.gz"
rm "$d/t10k-labels-idx1-ubyte"
expect 2 "$d/t10k-labels-idx1-ubyte.gz: label 12" "$mlp" --data "$d"

# --- and the good runs still work ------------------------------------------
d="$tmp/side32"; dataset "$d" 256 64 32
expect 0 "" "$vae" $fast --data "$d" --epochs 1 --max-batches 2 --out "$tmp/s32"
expect 0 "" "$mlp" $fast_mlp --data "$d" --epochs 1 --max-batches 2
# images 28 x 20: the pictures are tiles of that shape (they were skipped
# while the "wrote" line listed them, and pictures left from an earlier
# run described another model)
d="$tmp/rect"; mkdir -p "$d"
images "$d/train-images-idx3-ubyte" 256 28 20
labels "$d/train-labels-idx1-ubyte" 256
images "$d/t10k-images-idx3-ubyte" 64 28 20
labels "$d/t10k-labels-idx1-ubyte" 64
expect 0 "" "$vae" $fast --data "$d" --epochs 1 --max-batches 2 --out "$tmp/rect_out"
for f in reconstructions samples manifold; do
    # PNG width and height (bytes 17-24): 16 x (2*20 + 1) + 1 by 2 x 2 x (2*28 + 1) + 1
    wh=$(od -An -tu1 -j16 -N8 "$tmp/rect_out/$f.png" 2>/dev/null | tr -s ' ')
    [ -n "$wh" ] || fail "no $f.png for 28x20 images"
    [ $f = reconstructions ] && [ "$wh" != " 0 0 2 145 0 0 0 229" ] &&
        fail "reconstructions.png of 28x20 tiles is not 657x229: $wh"
done

# a model too large for the memory the system allows (1 GB of address
# space here): one line and status 1 (mlp_mnist aborted: the parameter
# set's smaller reservation read as misuse). Not under a wrapper or ASan.
if [ -z "$wrap" ] && ! grep -q __asan_init "$mlp"; then
    cases=$((cases + 1))
    (ulimit -v 1000000 && exec "$mlp" --data "$mnist" --hidden 65536 \
        --batch 4096 --epochs 1 --threads 1) >"$tmp/stdout" 2>"$tmp/stderr"
    st=$?
    if [ "$st" -ne 1 ] || [ "$(wc -l <"$tmp/stderr")" -ne 1 ] ||
        ! grep -q "^mlp_mnist: .*out of memory" "$tmp/stderr"; then
        fail "mlp_mnist --hidden 65536 in 1 GB exited $st: $(cat "$tmp/stderr")"
    fi
    # the batch buffer alone past it: --batch 65536 of 128x128 images is
    # 4 GiB (its malloc's NULL was written to: SIGSEGV, status 139)
    cases=$((cases + 1))
    d="$tmp/bigbuf"; dataset "$d" 8 8 128
    (ulimit -v 1000000 && exec "$mlp" --data "$d" --hidden 1 --batch 65536 \
        --epochs 1 --threads 1) >"$tmp/stdout" 2>"$tmp/stderr"
    st=$?
    if [ "$st" -ne 1 ] || [ "$(wc -l <"$tmp/stderr")" -ne 1 ] ||
        ! grep -q "^mlp_mnist: .*out of memory" "$tmp/stderr"; then
        fail "mlp_mnist --batch 65536 in 1 GB exited $st: $(cat "$tmp/stderr")"
    fi
fi

echo "$cases cases, $fails failed"
[ "$fails" -eq 0 ]
