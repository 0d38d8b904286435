#!/bin/sh
# A rank whose program is of another build than its library (a program of
# one build run with LD_LIBRARY_PATH naming another build's library) is
# refused in tg_dist_init, one line, exit status 2: the ranks compared the
# library's build alone, so it passed and trained with its own code (a
# model no one build trains, exit 0). A program of the library's build, or
# one that does not say its build, runs as before. Then vae_mnist: a job
# of its copies runs (it names its build, the library's). And programs
# whose names differ past their 20th character are two programs.
# usage: program_build.sh MPIRUN PROGRAM_BUILD VAE_MNIST DATA_DIR
set -u
mpirun=$1
prog=$2
vae=$3
data=$4
. "$(dirname "$0")/../lib.sh"
run="timeout 60 $mpirun --bind-to none --oversubscribe"

# refused WHAT STATUS RANK
refused() {
    n=$(grep -c "^program_build: rank $3 runs .* every rank must run the same program of the same build; stopped$" "$tmp/err")
    if [ "$2" -ne 2 ] || [ "$n" -ne 1 ] ||
        [ "$(grep -c '^program_build: ' "$tmp/err")" -ne 1 ] ||
        grep -q 'same build$' "$tmp/out"; then
        fail "$1: exit $2: $(cat "$tmp/err")"
    else
        echo "ok: $1: exit 2, $(grep '^program_build: ' "$tmp/err")"
    fi
}

# runs WHAT STATUS NP
runs() {
    if [ "$2" -ne 0 ] || [ "$(grep -c 'same build$' "$tmp/out")" -ne "$3" ]; then
        fail "$1: exit $2: $(cat "$tmp/out" "$tmp/err")"
    else
        echo "ok: $1: $3 ranks ran"
    fi
}

$run -np 1 "$prog" lib : -np 1 "$prog" other-build >"$tmp/out" 2>"$tmp/err"
refused "rank 1's program of another build" $? 1
grep -q "its program built from other-build" "$tmp/err" ||
    fail "rank 1's program's build not named: $(cat "$tmp/err")"
$run -np 1 "$prog" other-build : -np 1 "$prog" lib >"$tmp/out" 2>"$tmp/err"
refused "rank 0's program of another build" $? 1
grep -q "a program of another build than its library" "$tmp/err" ||
    fail "rank 0's mixed build not said: $(cat "$tmp/err")"
$run -np 1 "$prog" - : -np 1 "$prog" other-build >"$tmp/out" 2>"$tmp/err"
refused "rank 1's program of another build, rank 0's silent" $? 1
$run -np 1 "$prog" lib : -np 1 "$prog" - >"$tmp/out" 2>"$tmp/err"
runs "the library's build and a program that does not say" $? 2
$run -np 2 "$prog" other-build >"$tmp/out" 2>"$tmp/err"
runs "every rank of one mixed build" $? 2
# two programs whose names part after 20 characters (links to this one
# under two names): they had passed as one program
for v in 1 2; do
    ln -s "$prog" "$tmp/train_my_model_version_$v"
done
$run -np 1 "$tmp/train_my_model_version_1" lib : \
    -np 1 "$tmp/train_my_model_version_2" lib >"$tmp/out" 2>"$tmp/err"
st=$?
n=$(grep -c '^train_my_model_version_2: rank 1 runs .*every rank must run the same program' "$tmp/err")
if [ $st -ne 2 ] || [ "$n" -ne 1 ] || grep -q 'same build$' "$tmp/out"; then
    fail "two programs named alike past 20 characters: exit $st: $(cat "$tmp/err")"
else
    echo "ok: two programs named alike past 20 characters: exit 2, one line"
fi
$run -np 2 "$tmp/train_my_model_version_1" lib >"$tmp/out" 2>"$tmp/err"
runs "two copies of a program with a long name" $? 2
$run -np 2 "$vae" --epochs 1 --max-batches 1 --batch 32 --hidden 16 \
    --latent 2 --threads 1 --data "$data" --out "$tmp/vae" \
    >"$tmp/out" 2>"$tmp/err" ||
    fail "vae_mnist -np 2: $(cat "$tmp/err")"

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
