#!/bin/sh
# Exact resume of vae_mnist after a crash and after Ctrl-C.
#  1. An uninterrupted run (2 epochs, a checkpoint every 25 batches).
#  2. The same run killed with SIGKILL once a mid-epoch checkpoint exists,
#     then resumed from it: the final tensors (the safetensors data section)
#     must be bit-identical to run 1's.
#  3. The same run sent SIGINT: exit 130, one line on stderr with the resume
#     command; running that command gives run 1's tensors again.
#  4. A run stopped after an epoch and resumed with a larger --epochs: the
#     same checkpoint, metrics.csv and pictures as one never stopped; loss.svg
#     too, whose scale came from the earlier epochs' losses as metrics.csv
#     rounds them (4 decimals) in the resumed run but unrounded in the other
#     (seed 57 here: a grid line 136.7 against 136.6).
#  5. A resume under other GEMM numerics (TG_GEMM_KERNEL=portable here) goes
#     on with a note naming both (it went on without a word, so its bits
#     parted from the first run's unexplained); under the same, no note.
# usage: resume.sh VAE_MNIST MNIST_DIR
set -u
vae=$1
mnist=$2
tmp=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
fails=0
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

args="--data $mnist --epochs 2 --hidden 50 --latent 8 --batch 32 --threads 1
      --checkpoint-every 25"

# tensors FILE: the data section of a safetensors file (after the 8-byte
# length and the JSON header).
tensors() {
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    tail -c +$((9 + n)) "$1"
}
# meta FILE KEY: a metadata value from the JSON header.
meta() {
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    head -c $((8 + n)) "$1" | tail -c +9 | tr ',' '\n' |
        sed -n "s/^.*\"$2\":\"\\([^\"]*\\)\".*$/\\1/p" | head -n 1
}
# wait_for FILE PID: until FILE exists (or PID ended); 0 if it exists.
wait_for() {
    i=0
    while [ ! -e "$1" ] && kill -0 "$2" 2>/dev/null && [ $i -lt 6000 ]; do
        sleep 0.01
        i=$((i + 1))
    done
    [ -e "$1" ]
}
same_tensors() {
    tensors "$1" >"$tmp/t1"
    tensors "$2" >"$tmp/t2"
    [ -s "$tmp/t1" ] && cmp -s "$tmp/t1" "$tmp/t2"
}

# --- 1. uninterrupted ---------------------------------------------------------
# shellcheck disable=SC2086
"$vae" $args --out "$tmp/ref" >"$tmp/ref.log" 2>&1 ||
    { echo "FAIL: reference run: $(cat "$tmp/ref.log")"; exit 1; }
ref="$tmp/ref/checkpoint.safetensors"
[ "$(meta "$ref" epoch)" = 2 ] || fail "reference run did not finish epoch 2"

# --- 2. SIGKILL mid-epoch, resume ---------------------------------------------
ck="$tmp/kill/checkpoint.safetensors"
# shellcheck disable=SC2086
"$vae" $args --out "$tmp/kill" >"$tmp/kill.log" 2>&1 &
pid=$!
pids="$pid"
wait_for "$ck" "$pid" || fail "no checkpoint appeared"
kill -STOP "$pid" 2>/dev/null
pos="epoch $(meta "$ck" epoch), batch_in_epoch $(meta "$ck" batch_in_epoch)"
kill -KILL "$pid" 2>/dev/null
wait "$pid"
status=$?
[ "$status" -eq 137 ] || fail "SIGKILL: exit status $status, expected 137"
echo "killed with SIGKILL; last checkpoint at $pos"
[ "$(meta "$ck" batch_in_epoch)" != 0 ] ||
    fail "the checkpoint is not mid-epoch ($pos): the test did not test"
ls "$tmp/kill" | grep -q tmp && echo "note: a temporary checkpoint was left by the kill: $(ls "$tmp/kill")"
# shellcheck disable=SC2086
"$vae" $args --out "$tmp/kill" --resume "$ck" >"$tmp/resume.log" 2>&1 ||
    fail "resume failed: $(cat "$tmp/resume.log")"
grep 'resumed from' "$tmp/resume.log"
if same_tensors "$ref" "$ck"; then
    echo "SIGKILL + resume: tensors bit-identical to the uninterrupted run"
    cmp -s "$ref" "$ck" && echo "(the whole checkpoint files are identical)"
else
    fail "SIGKILL + resume: tensors differ from the uninterrupted run"
fi
# the per-epoch losses too (samples/s, the last column, is a timing)
cut -d, -f1-8 "$tmp/ref/metrics.csv" >"$tmp/m1"
cut -d, -f1-8 "$tmp/kill/metrics.csv" >"$tmp/m2"
cmp -s "$tmp/m1" "$tmp/m2" || fail "metrics.csv differs after resume"

# --- 3. SIGINT: checkpoint, exit 130, printed resume command ------------------
# an output folder whose name holds a line break, a space and a quote: the
# message stays one line (the path was printed raw, and shell-quoted over
# two lines in the command) and the printed command still works (in bash:
# the break is written $'\n')
int="$tmp/in
t 'x"
ck="$int/checkpoint.safetensors"
# shellcheck disable=SC2086
"$vae" $args --out "$int" >"$tmp/int.log" 2>"$tmp/int.err" &
pid=$!
pids="$pid"
wait_for "$ck" "$pid" || fail "no checkpoint appeared before SIGINT"
kill -INT "$pid" 2>/dev/null
wait "$pid"
status=$?
[ "$status" -eq 130 ] || fail "SIGINT: exit status $status, expected 130"
[ "$(wc -l <"$tmp/int.err")" -eq 1 ] ||
    fail "SIGINT: want one line on stderr, got: $(cat "$tmp/int.err")"
cat "$tmp/int.err"
grep -q '^vae_mnist: interrupted after step .*; resume with: ' "$tmp/int.err" ||
    fail "SIGINT: no resume command"
cmd=$(sed -n 's/^.*; resume with: //p' "$tmp/int.err")
bash -c "$cmd" >"$tmp/int2.log" 2>&1 || fail "the printed command failed: $cmd"
same_tensors "$ref" "$ck" &&
    echo "SIGINT + printed command: tensors bit-identical to the uninterrupted run" ||
    fail "SIGINT + resume: tensors differ from the uninterrupted run"

# --- 4. stopped after epoch 1, resumed to epoch 3 ----------------------------
staged="--data $mnist --hidden 16 --latent 2 --batch 32 --threads 1
        --max-batches 20 --seed 57"
# shellcheck disable=SC2086
"$vae" $staged --epochs 3 --out "$tmp/whole" >"$tmp/whole.log" 2>&1 ||
    fail "3 epochs: $(cat "$tmp/whole.log")"
# shellcheck disable=SC2086
"$vae" $staged --epochs 1 --out "$tmp/staged" >"$tmp/staged.log" 2>&1 ||
    fail "1 epoch: $(cat "$tmp/staged.log")"
# shellcheck disable=SC2086
"$vae" $staged --epochs 3 --out "$tmp/staged" \
    --resume "$tmp/staged/checkpoint.safetensors" >"$tmp/staged.log" 2>&1 ||
    fail "resumed to 3 epochs: $(cat "$tmp/staged.log")"
for f in checkpoint.safetensors loss.svg reconstructions.png samples.png \
    manifold.png; do
    cmp -s "$tmp/whole/$f" "$tmp/staged/$f" ||
        fail "stopped after epoch 1 and resumed: $f differs"
done
cut -d, -f1-8 "$tmp/whole/metrics.csv" >"$tmp/m1"
cut -d, -f1-8 "$tmp/staged/metrics.csv" >"$tmp/m2"
cmp -s "$tmp/m1" "$tmp/m2" ||
    fail "stopped after epoch 1 and resumed: metrics.csv differs"

quick="--data $mnist --hidden 8 --latent 2 --batch 32 --threads 1
       --max-batches 2 --out $tmp/num"
# shellcheck disable=SC2086
"$vae" $quick --epochs 1 >"$tmp/out" 2>"$tmp/err" || fail "numerics: first run"
# shellcheck disable=SC2086
"$vae" $quick --epochs 2 --resume "$tmp/num/checkpoint.safetensors" \
    >/dev/null 2>"$tmp/err" || fail "numerics: same-numerics resume failed"
[ -s "$tmp/err" ] && fail "numerics: a resume under the same numerics said: $(cat "$tmp/err")"
# (the portable kernel runs on every CPU; a CPU whose default it is skips)
if grep -q 'gemm portable' "$tmp/out"; then
    echo "skip: the default GEMM kernel is the portable one here"
else
    # shellcheck disable=SC2086
    TG_GEMM_KERNEL=portable "$vae" $quick --epochs 3 \
        --resume "$tmp/num/checkpoint.safetensors" >/dev/null 2>"$tmp/err" ||
        fail "numerics: the portable resume failed: $(cat "$tmp/err")"
    grep -q "^vae_mnist: note: .* was saved under GEMM numerics '.*', this process computes with 'portable" "$tmp/err" ||
        fail "numerics: no note on a resume under other numerics: $(cat "$tmp/err")"
fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "resume checks passed"
