#!/bin/sh
# Under mpirun, rank 0 draws the progress bar when mpirun's stderr is a
# terminal (a pseudo-terminal from script(1) here), and nothing when it is a
# pipe or a file.
# usage: progress_tty.sh MPIRUN VAE_MNIST DATA_DIR
set -u
mpirun=$1
vae=$2
data=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! command -v script >/dev/null; then
    echo "script(1) not found (util-linux): skipped"
    exit 77
fi
small="--epochs 1 --max-batches 6 --batch 101 --hidden 64 --latent 4"
cmd="timeout --foreground 120 $mpirun --bind-to none --oversubscribe -np 2"
cmd="$cmd $vae $small --threads 1 --data $data"
fails=0
script -qec "$cmd --out $tmp/tty" "$tmp/typescript" >/dev/null 2>&1 ||
    { echo "FAIL: run on a terminal: $(cat "$tmp/typescript")"; fails=1; }
if grep -q '\] 6/6  loss' "$tmp/typescript"; then
    echo "ok: on a terminal, the bar is drawn"
else
    echo "FAIL: no progress bar on a terminal: $(cat "$tmp/typescript")"
    fails=1
fi
$cmd --out "$tmp/pipe" >"$tmp/log" 2>&1 ||
    { echo "FAIL: run into a file: $(cat "$tmp/log")"; fails=1; }
if grep -q '\] [0-9]*/6  loss' "$tmp/log"; then
    echo "FAIL: progress bar drawn into a file: $(cat "$tmp/log")"
    fails=1
else
    echo "ok: into a file, no bar"
fi
exit $fails
