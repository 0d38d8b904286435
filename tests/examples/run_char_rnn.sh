#!/bin/sh
# char_rnn runs briefly (a few seconds): the loss falls from epoch 1 to the
# last, a sample is printed, GRU, LSTM and attention all train, the same
# seed gives the same output on 1 and 2 threads; bad flags and texts: one line, exit 2.
# usage: run_char_rnn.sh CHAR_RNN SHRINK_SHIM
set -u
rnn=$1
shrink=$2
. "$(dirname "$0")/lib.sh"

small="--epochs 3 --steps 12 --hidden 24 --seq 12 --batch 8 --sample 60"

# loss_falls: the last epoch's loss is below the first one's.
loss_falls() {
    first=$(sed -n 's/^epoch 1: loss \([0-9.]*\) .*/\1/p' "$tmp/out")
    last=$(sed -n 's/^epoch [0-9]*: loss \([0-9.]*\) .*/\1/p' "$tmp/out" |
        tail -n 1)
    [ -n "$first" ] && [ -n "$last" ] ||
        fail "$1: no epoch lines: $(cat "$tmp/out")"
    awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' ||
        fail "$1: loss did not fall ($first -> $last)"
    grep -q '^sample' "$tmp/out" || fail "$1: no sample printed"
}

# shellcheck disable=SC2086
expect 0 "$rnn" $small --threads 1
loss_falls gru
cp "$tmp/out" "$tmp/gru1"
# shellcheck disable=SC2086
expect 0 "$rnn" $small --threads 2
cmp -s "$tmp/out" "$tmp/gru1" || fail "1 and 2 threads differ"
# shellcheck disable=SC2086
expect 0 "$rnn" $small --cell lstm --threads 1
loss_falls lstm
# attention (batched matmul over 4 heads, permute, a causal mask): trains,
# samples, the same bits on 1 and 2 threads; --seq 1 (one position) too
# shellcheck disable=SC2086
expect 0 "$rnn" $small --cell attention --threads 1
loss_falls attention
grep -q 'attention 24' "$tmp/out" || fail "attention: not named: $(head -n 1 "$tmp/out")"
cp "$tmp/out" "$tmp/attn1"
# shellcheck disable=SC2086
expect 0 "$rnn" $small --cell attention --threads 2
cmp -s "$tmp/out" "$tmp/attn1" || fail "attention: 1 and 2 threads differ"
expect 0 "$rnn" --cell attention --epochs 1 --steps 2 --hidden 6 --seq 1 --batch 3 --sample 5
# a text of control bytes only: the sample shows them escaped, never raw
# (ESC sequences reached the terminal)
printf '\033\001\002\033[2J\007\177' >"$tmp/ctrl.txt"
for i in 1 2 3 4 5 6; do cat "$tmp/ctrl.txt" "$tmp/ctrl.txt" >"$tmp/c2"; mv "$tmp/c2" "$tmp/ctrl.txt"; done
# shellcheck disable=SC2086
expect 0 "$rnn" $small --text "$tmp/ctrl.txt" --threads 1
grep -q '\\x1b' "$tmp/out" || fail "control bytes not escaped: $(cat "$tmp/out")"
if LC_ALL=C grep -q "$(printf '\033')" "$tmp/out"; then fail "raw ESC in the sample"; fi

# an attention model past what a parameter set holds: refused (aborted in
# tg_params_add), and a sample whose reader is gone stops at once (it went
# on sampling: hours for --sample 1048576 at a long --seq)
expect 2 "$rnn" --cell attention --hidden 8192 --seq 2 --batch 1
mentions "more than a parameter set holds"
timeout 60 "$rnn" --cell attention --epochs 1 --steps 2 --hidden 8 --seq 64 \
    --batch 2 --sample 1048576 2>"$tmp/err" | head -c 100 >/dev/null
st=$(grep -c 'Broken pipe' "$tmp/err")
[ "$st" -eq 1 ] || fail "sampling into a closed pipe: $(cat "$tmp/err")"

expect 0 "$rnn" --help
expect 0 "$rnn" --version
expect 2 "$rnn" --no-such-flag
expect 2 "$rnn" --cell rnn
expect 2 "$rnn" --steps 0
expect 2 "$rnn" --text ""
mentions "--text is empty"
expect 2 "$rnn" --hidden x
# a sampling flag with sampling off (it was ignored without a word)
expect 2 "$rnn" --sample 0 --temperature 0.5
mentions "--temperature is for sampling, which --sample 0 turns off"
# sizes the flags allow but no memory holds: refused, not an out-of-memory
# abort
expect 2 "$rnn" --batch 65536 --seq 4096 --hidden 8192
expect 2 "$rnn" stray
expect 2 "$rnn" --text "$tmp/missing.txt"
printf 'abc' >"$tmp/short.txt"
expect 2 "$rnn" --text "$tmp/short.txt"
expect 2 "$rnn" --text "$tmp"
# a FIFO: refused at once (opening it waited for a writer for ever)
mkfifo "$tmp/fifo.txt"
timeout 30 "$rnn" --text "$tmp/fifo.txt" >"$tmp/out" 2>"$tmp/err"
st=$?
[ $st -eq 2 ] || fail "char_rnn --text FIFO: exit $st, want 2: $(cat "$tmp/err")"
mentions "not a regular file"
# a text truncated while it is read (the shrink_file shim, right after
# char_rnn's fstat of it): refused (a prefix of it trained, exit 0); a
# /proc file, whose size reads 0, still trains
cp "$(dirname "$0")/../../data/text/sonnets.txt" "$tmp/shrinks.txt"
# (an ASan build's runtime wants to come first; the shim only truncates)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
    TG_SHRINK_PATH="$tmp/shrinks.txt" TG_SHRINK_SIZE=100 LD_PRELOAD="$shrink" \
    "$rnn" --text "$tmp/shrinks.txt" --epochs 1 --steps 2 --hidden 8 --seq 4 \
    --batch 2 --sample 0 >"$tmp/out" 2>"$tmp/err"
st=$?
[ $st -eq 2 ] || fail "char_rnn, text truncated while read: exit $st, want 2: $(cat "$tmp/out" "$tmp/err")"
mentions "shrank while reading"
expect 0 "$rnn" --text /proc/self/status --epochs 1 --steps 2 --hidden 8 \
    --seq 4 --batch 2 --sample 0

[ "$fails" -eq 0 ] || exit 1
