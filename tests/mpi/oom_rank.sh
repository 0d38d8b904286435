#!/bin/sh
# Out of memory on one rank of a vae_mnist job (the fail_alloc_from shim
# preloaded into that rank alone): the job ends (no hang, not by the
# timeout), with one line naming the rank and out of memory, a non-zero
# status, no temporary left and no checkpoint but a whole one.
# usage: oom_rank.sh MPIRUN VAE_MNIST SHIM DATA_DIR
set -u
mpirun=$1
vae=$2
shim=$3
data=$4
. "$(dirname "$0")/../lib.sh"
run="timeout 120 $mpirun --bind-to none --oversubscribe"

# only.sh RANK VAR=VALUE -- PROG ARGS: the shim and VAR on that rank only
cat >"$tmp/only.sh" <<EOF
#!/bin/sh
if [ "\${OMPI_COMM_WORLD_RANK:-}" = "\$1" ]; then
    export LD_PRELOAD="$shim" "\$2"
fi
shift 3
exec "\$@"
EOF
chmod +x "$tmp/only.sh"

# oom NAME NP RANK VAR=VALUE WHAT ARGS...: rank RANK of NP runs out of
# memory (VAR=VALUE) in WHAT
oom() {
    name=$1 np=$2 rank=$3 var=$4 what=$5
    shift 5
    $run -np "$np" "$tmp/only.sh" "$rank" "$var" -- "$vae" "$@" \
        --out "$tmp/$name" >"$tmp/$name.out" 2>"$tmp/$name.err"
    st=$?
    n=$(grep -c '^vae_mnist: ' "$tmp/$name.err")
    line=$(grep '^vae_mnist: ' "$tmp/$name.err")
    left=$(find "$tmp/$name" -name '*.tapegrad-tmp.*' 2>/dev/null | head -n 1)
    if [ $st -eq 0 ] || [ $st -eq 124 ] || [ "$n" -ne 1 ] ||
        ! echo "$line" | grep -q "^vae_mnist: rank $rank: $what: .*out of memory"; then
        fail "$name: exit $st: $(cat "$tmp/$name.err")"
    elif [ -n "$left" ]; then
        fail "$name: left $left"
    else
        echo "ok: $name: exit $st, $line"
    fi
}

small="--hidden 8 --batch 32 --epochs 1 --max-batches 3 --threads 1"
# reading the data: zlib's allocations on the .gz files
oom gz-rank1 2 1 TG_FAIL_ALLOC_FROM=libz.so "$data/train-images-idx3-ubyte.gz" \
    $small --latent 2 --data "$data"
oom gz-rank2 3 2 TG_FAIL_ALLOC_FROM=libz.so "$data/train-images-idx3-ubyte.gz" \
    $small --latent 2 --data "$data"
# evaluation's noise (1000 test images x --latent 7 floats: 28000 bytes),
# after checkpoints every batch: the last one is whole and resumes
oom eval-rank1 2 1 TG_FAIL_ALLOC_SIZE=28000 evaluation $small --latent 7 \
    --checkpoint-every 1 --data "$data"
if [ -e "$tmp/eval-rank1/checkpoint.safetensors" ]; then
    "$vae" $small --latent 7 --shards 2 --epochs 2 --data "$data" \
        --out "$tmp/resumed" --resume "$tmp/eval-rank1/checkpoint.safetensors" \
        >"$tmp/resumed.log" 2>&1 ||
        fail "the checkpoint left by eval-rank1 does not resume: $(cat "$tmp/resumed.log")"
else
    fail "eval-rank1: no checkpoint of the batches before"
fi
oom eval-rank0 3 0 TG_FAIL_ALLOC_SIZE=28000 evaluation $small --latent 7 \
    --data "$data"
# rank 0 made --out and wrote nothing there yet: the folder goes (a rank > 0
# running out leaves it with its .lock: mpirun ends rank 0)
[ -e "$tmp/eval-rank0" ] &&
    fail "eval-rank0: left $tmp/eval-rank0: $(ls -A "$tmp/eval-rank0")"

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
