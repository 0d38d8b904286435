#!/bin/sh
# A job whose rank 0 runs vae_mnist and whose rank 1 runs a program that
# refuses to run as one of several processes (bnn_mnist, vae_score): rank 1
# refused, but only rank 0 of a job spoke, and rank 0 (vae_mnist, waiting
# in MPI_Init) never could: the job stopped, exit 2, without a word of
# ours. Now a refusing rank > 0 speaks when the job is still running 2 s
# on, naming its rank; in a job of copies of it rank 0 has ended the job
# by then: still one line.
# usage: mixed_jobs.sh MPIRUN VAE_MNIST DATA_DIR ONE_PROCESS_PROGRAM...
set -u
mpirun=$1
vae=$2
data=$3
shift 3
. "$(dirname "$0")/../lib.sh"
run="timeout 60 $mpirun --bind-to none --oversubscribe"

# check WHAT STATUS NAME RANK_TEXT: exit 2 (not the timeout), one line of
# NAME's refusal on stderr, saying RANK_TEXT
check() {
    n=$(grep -c "^$3: started by an MPI launcher as $4 2 processes" "$tmp/err")
    all=$(grep -c 'started by an MPI launcher' "$tmp/err")
    if [ "$2" -ne 2 ] || [ "$n" -ne 1 ] || [ "$all" -ne 1 ]; then
        fail "$1: exit $2: $(cat "$tmp/err")"
    else
        echo "ok: $1: exit 2, $(grep 'started by an MPI launcher' "$tmp/err" | cut -c1-90)..."
    fi
}

small="--epochs 1 --max-batches 2 --batch 32 --hidden 16 --latent 2 --threads 1"
for prog in "$@"; do
    name=$(basename "$prog")
    # shellcheck disable=SC2086
    $run -np 1 "$vae" $small --data "$data" --out "$tmp/out" : \
        -np 1 "$prog" --out "$tmp/out1" >/dev/null 2>"$tmp/err"
    check "vae_mnist with $name as rank 1" $? "$name" "rank 1 of"
    [ -e "$tmp/out" ] && fail "vae_mnist with $name as rank 1: --out written"
    $run -np 2 "$prog" --out "$tmp/out2" >/dev/null 2>"$tmp/err"
    check "two copies of $name" $? "$name" "one of"
done

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
