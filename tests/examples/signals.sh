#!/bin/sh
# Signals the example programs meet outside Ctrl-C: each case failed
# before its fix.
# usage: signals.sh VAE_MNIST VAE_SCORE BNN_MNIST MNIST_DIR
set -u
vae=$1
score=$2
bnn=$3
mnist=$4
. "$(dirname "$0")/lib.sh"

small="$tmp/small"; dataset "$mnist" "$small" 64 64
fast="--hidden 16 --latent 2 --batch 32 --threads 1"
expect 0 "$vae" $fast --data "$small" --epochs 1 --out "$tmp/ck"
ck="$tmp/ck/checkpoint.safetensors"
score_args="--checkpoint $ck --data $small --near-ood hflip --iwae-k 2
    --max-images 4 --samples 2 --bootstrap 10 --ref-images 10 --threads 1"

# 1. SIGHUP (the terminal or ssh session closed) while vae_mnist writes a
#    checkpoint: it stops as on Ctrl-C: the outputs finish, exit 130, one
#    line with the resume command, which works (SIGHUP had killed it, exit
#    129, no word, the temporary checkpoint left behind)
# shellcheck disable=SC2086
if signalled_mid_write SIGHUP 130 "$tmp/hup" "$vae" $fast --data "$small" \
    --epochs 2 --out "$tmp/hup"; then
    [ "$(wc -l <"$tmp/err")" -eq 1 ] ||
        fail "SIGHUP: want one line on stderr, got: $(cat "$tmp/err")"
    grep -q '^vae_mnist: interrupted after step .*; resume with: ' "$tmp/err" ||
        fail "SIGHUP: no resume command: $(cat "$tmp/err")"
    cmd=$(sed -n 's/^.*; resume with: //p' "$tmp/err")
    bash -c "$cmd" >"$tmp/out" 2>&1 || fail "the printed command failed: $cmd"
    # under nohup (SIGHUP ignored) the run goes on to its end
    if sh -c 'trap "" HUP; exec "$@"' sh strace -f -o /dev/null \
        -e trace=fsync -e inject=fsync:signal=SIGHUP:when=1 "$vae" $fast \
        --data "$small" --epochs 2 --out "$tmp/nohup" >/dev/null 2>"$tmp/err"
    then
        echo "ok: vae_mnist with SIGHUP ignored (nohup) trains on -> 0"
    else
        fail "vae_mnist under nohup stopped on SIGHUP: $(cat "$tmp/err")"
    fi
    # vae_score ends on SIGHUP (nothing to save) without its temporary
    # shellcheck disable=SC2086
    signalled_mid_write SIGHUP 129 "$tmp/hup_score" "$score" $score_args \
        --out "$tmp/hup_score"
fi

# 2. a file-size limit (ulimit -f BLOCKS) reached while writing an output
#    in OUT: "PATH: ... File too large" on one line, exit 1, no
#    temporary left, as on a full disk (SIGXFSZ had killed each program,
#    exit 153, no word, the temporary left behind)
file_limit() {
    blocks=$1 out=$2
    shift 2
    rm -rf "$out"
    (ulimit -f "$blocks" && exec "$@") >/dev/null 2>"$tmp/err"
    st=$?
    name=$(basename "$1")
    if [ "$st" -ne 1 ] || [ "$(wc -l <"$tmp/err")" -ne 1 ] ||
        ! grep -q "^$name: .*File too large" "$tmp/err"; then
        fail "$name under ulimit -f $blocks exited $st: $(cat "$tmp/err")"
    else
        echo "ok: $name under ulimit -f $blocks -> 1: $(cat "$tmp/err")"
    fi
    left=$(find "$out" -name '*tmp.*')
    [ -z "$left" ] || fail "$name under ulimit -f $blocks left $left"
}
# shellcheck disable=SC2086
file_limit 40 "$tmp/fsz" "$vae" $fast --data "$small" --epochs 1 \
    --out "$tmp/fsz"
# shellcheck disable=SC2086
file_limit 4 "$tmp/fsz_score" "$score" $score_args --out "$tmp/fsz_score"
file_limit 4 "$tmp/fsz_bnn" "$bnn" --data "$small" --ood-data "$small" \
    --method det --epochs 1 --max-batches 2 --max-eval 32 --hidden 16 \
    --threads 1 --out "$tmp/fsz_bnn"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all signal checks passed"
