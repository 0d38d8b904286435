#!/bin/sh
# Signals the example programs meet outside Ctrl-C: each case failed
# before its fix.
# usage: signals.sh VAE_MNIST VAE_SCORE BNN_MNIST MLP_MNIST CHAR_RNN MNIST_DIR
set -u
vae=$1
score=$2
bnn=$3
mlp=$4
rnn=$5
mnist=$6
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
    if ASAN_OPTIONS=$(asan_no_leaks) sh -c 'trap "" HUP; exec "$@"' sh \
        strace -f -o /dev/null \
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

# 3. a closed stdout (| head): SIGPIPE is ignored. Where the results are
#    files (vae_mnist, vae_score, bnn_mnist --out) the run goes on: one
#    note on stderr, exit 0, every file written (SIGPIPE had killed them,
#    exit 141, no word: vae_mnist's later epochs trained, never saved).
#    Where stdout is the result (mlp_mnist, char_rnn, bnn_mnist without
#    --out), one line and exit 1 at once (141, no word); a full disk
#    (/dev/full) too (it was exit 0, the lines lost without a word).
# piped WANT PROG ARGS...: PROG's stdout a pipe whose reader has gone (as
# after "| head -n 1" has read its line; closed before PROG starts, so that
# no timing decides which write fails first); PROG exits WANT with one
# line on stderr about standard output.
mkfifo "$tmp/fifo"
piped() {
    want=$1
    shift
    name=$(basename "$1")
    exec 4<>"$tmp/fifo" # both ends: the next open does not wait
    exec 5>"$tmp/fifo"
    exec 4<&- # the only reader gone
    "$@" >&5 2>"$tmp/err"
    st=$?
    exec 5>&-
    if [ "$st" -ne "$want" ] || [ "$(wc -l <"$tmp/err")" -ne 1 ] ||
        ! grep -q "^$name: .*standard output" "$tmp/err"; then
        fail "$name, stdout a closed pipe, exited $st, want $want: $(cat "$tmp/err")"
    else
        echo "ok: $name, stdout a closed pipe -> $st: $(cat "$tmp/err")"
    fi
}
# shellcheck disable=SC2086
piped 0 "$vae" $fast --data "$small" --epochs 3 --out "$tmp/pipe"
[ "$(st_meta "$tmp/pipe/checkpoint.safetensors" epoch)" = 3 ] ||
    fail "vae_mnist, stdout closed: the checkpoint is not of epoch 3"
[ "$(cut -d, -f1 "$tmp/pipe/metrics.csv" | tr '\n' ' ')" = "epoch 1 2 3 " ] ||
    fail "vae_mnist, stdout closed: metrics.csv: $(cat "$tmp/pipe/metrics.csv")"
# shellcheck disable=SC2086
piped 0 "$score" $score_args --out "$tmp/pipe_score"
[ -s "$tmp/pipe_score/scores.csv" ] && [ -s "$tmp/pipe_score/uncertainty.png" ] ||
    fail "vae_score, stdout closed: outputs missing: $(ls "$tmp/pipe_score")"
bnn_quick="--data $small --ood-data $small --method det --epochs 1
    --max-batches 2 --max-eval 32 --hidden 16 --threads 1"
# shellcheck disable=SC2086
piped 0 "$bnn" $bnn_quick --out "$tmp/pipe_bnn"
[ -s "$tmp/pipe_bnn/coverage.svg" ] ||
    fail "bnn_mnist --out, stdout closed: outputs missing: $(ls "$tmp/pipe_bnn")"
# shellcheck disable=SC2086
piped 1 "$bnn" $bnn_quick
mentions "Broken pipe"
# shellcheck disable=SC2086
piped 1 "$mlp" --data "$small" --epochs 3 --hidden 16 --threads 1
mentions "Broken pipe"
rnn_quick="--epochs 3 --steps 4 --hidden 16 --seq 12 --batch 8 --threads 1"
# shellcheck disable=SC2086
piped 1 "$rnn" $rnn_quick
mentions "Broken pipe"
if [ -w /dev/full ]; then
    # --help and --version too: their text is the output (exit 0 before)
    for run in "$mlp --data $small --epochs 1 --hidden 16 --threads 1" \
        "$rnn $rnn_quick" "$vae --help" "$score --version"; do
        # shellcheck disable=SC2086
        $run >/dev/full 2>"$tmp/err"
        st=$?
        [ "$st" -eq 1 ] && grep -q "No space left on device" "$tmp/err" ||
            fail "$run >/dev/full exited $st: $(cat "$tmp/err")"
    done
fi

# 4. started with stdout closed (>&-): as a closed pipe, a note on stderr,
#    exit 0, the files written. The output folder's .lock, opened first,
#    had taken stdout's number: the progress lines (bnn_mnist's table) went
#    into it, over the PID it holds, and no note was given.
# closed PROG ARGS... (ARGS end with --out DIR)
closed() {
    name=$(basename "$1")
    eval "out=\${$#}"
    "$@" >&- 2>"$tmp/err"
    st=$?
    if [ "$st" -ne 0 ] || [ "$(wc -l <"$tmp/err")" -ne 1 ] ||
        ! grep -q "^$name: note: cannot write standard output" "$tmp/err"; then
        fail "$name, stdout closed, exited $st: $(cat "$tmp/err")"
    elif ! grep -qx '[0-9]*' "$out/.lock"; then
        fail "$name, stdout closed: $out/.lock holds: $(head -c 300 "$out/.lock")"
    else
        echo "ok: $name, stdout closed -> $st: $(cat "$tmp/err")"
    fi
}
# shellcheck disable=SC2086
closed "$vae" $fast --data "$small" --epochs 1 --out "$tmp/closed_vae"
# shellcheck disable=SC2086
closed "$bnn" $bnn_quick --out "$tmp/closed_bnn"

# 5. stopped (SIGTERM) before writing anything, in an --out folder the run
#    created: the folder is removed, and the parents it made for it (as
#    mkdir -p), as bad input found late removes them; folders that were
#    there before stay (vae_score and bnn_mnist left the new folder holding
#    only their .lock, and the new parents of a nested --out). The signal
#    comes at the unlink of the writability probe, the last step of
#    preparing the folder.
# stopped_early PROG ARGS... (ARGS end with --out TOP/new/out): TOP absent,
# TOP there (TOP stays, TOP/new goes), TOP/new/out there (it stays)
stopped_early() {
    name=$(basename "$1")
    eval "out=\${$#}"
    top=${out%/new/out}
    for pre in none top out; do
        rm -rf "$top"
        case $pre in
        top) mkdir "$top" ;;
        out) mkdir -p "$out" ;;
        esac
        ASAN_OPTIONS=$(asan_no_leaks) strace -f -o /dev/null \
            -e trace=unlink,unlinkat \
            -e inject=unlink,unlinkat:signal=SIGTERM:when=1 "$@" \
            >/dev/null 2>"$tmp/err"
        st=$?
        if [ "$st" -ne 143 ]; then
            fail "$name, SIGTERM while preparing --out ($pre there), exited $st: $(cat "$tmp/err")"
        elif [ "$pre" = none ] && [ -e "$top" ]; then
            fail "$name, SIGTERM while preparing a new --out left: $(find "$top")"
        elif [ "$pre" = top ] && { [ ! -d "$top" ] || [ -e "$top/new" ]; }; then
            fail "$name, SIGTERM while preparing --out ($pre there) left: $(find "$top")"
        elif [ "$pre" = out ] && [ ! -d "$out" ]; then
            fail "$name, SIGTERM while preparing --out (there before) removed it"
        else
            echo "ok: $name, SIGTERM while preparing --out ($pre there) -> $st"
        fi
    done
}
if strace -f -o /dev/null -e trace=unlink true 2>/dev/null; then
    # shellcheck disable=SC2086
    stopped_early "$score" $score_args --out "$tmp/early_score/new/out"
    # shellcheck disable=SC2086
    stopped_early "$bnn" $bnn_quick --out "$tmp/early_bnn/new/out"
else
    echo "skip: strace cannot trace here (the early-stop case)"
fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all signal checks passed"
