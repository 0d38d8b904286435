#!/bin/sh
# Out of memory where the programs read, write or keep their own buffers:
# the fail_alloc_from shim makes the allocations of one size, or every one
# zlib makes, fail. Each run must end as the library's out of memory does:
# one line "<prog>: ... out of memory ...", exit status 1, no temporary
# left, never a segfault or "bad input" (2).
# usage: oom_paths.sh VAE_MNIST VAE_SCORE MLP_MNIST BNN_MNIST CHAR_RNN SHIM
#                     MNIST_DIR TEXT
set -u
vae=$1
score=$2
mlp=$3
bnn=$4
rnn=$5
shim=$6
mnist=$7
text=$8
. "$(dirname "$0")/lib.sh"

# oom WHAT PROG ARGS...: PROG under the shim (TG_FAIL_ALLOC_* set by the
# caller) ends with exit 1 and one line naming out of memory.
oom() {
    what=$1
    shift
    LD_PRELOAD="$shim" "$@" >"$tmp/out" 2>"$tmp/err"
    st=$?
    name=$(basename "$1")
    if [ "$st" -ne 1 ] || [ "$(wc -l <"$tmp/err")" -ne 1 ] ||
        ! grep -q "^$name: .*out of memory" "$tmp/err"; then
        fail "$what: exit $st: $(cat "$tmp/err")"
        return
    fi
    left=$(find "$tmp" -name '*.tapegrad-tmp.*' | head -1)
    [ -z "$left" ] || fail "$what: left $left"
    echo "ok: $what -> $st: $(cat "$tmp/err")"
}

small="$tmp/small"; dataset "$mnist" "$small" 64 997

# bnn_mnist's copy of the test labels (--max-eval 997 of them, 3988 bytes):
# unchecked, a segfault
TG_FAIL_ALLOC_SIZE=3988 oom "bnn_mnist, test labels" "$bnn" --data "$small" \
    --ood-data none --method det --epochs 1 --max-batches 1 --hidden 8 \
    --max-eval 997 --threads 1

# vae_mnist --resume's history of --epochs 37 (75 rows of 72 bytes, 5400):
# unchecked, metrics.csv's rows were read into NULL, a segfault
fast="--data $small --hidden 8 --latent 2 --batch 32 --threads 1"
expect 0 "$vae" $fast --epochs 1 --out "$tmp/r"
TG_FAIL_ALLOC_SIZE=5400 oom "vae_mnist --resume, metrics history" "$vae" \
    $fast --epochs 37 --max-batches 1 --resume "$tmp/r/checkpoint.safetensors" \
    --out "$tmp/r"

# vae_mnist's batch buffer (--batch 31 of 784 floats, 97216 bytes): "cannot
# write OUT: Cannot allocate memory", as if the output folder had failed
TG_FAIL_ALLOC_SIZE=97216 oom "vae_mnist, batch buffer" "$vae" --data "$small" \
    --hidden 8 --latent 2 --batch 31 --epochs 1 --threads 1 --out "$tmp/b"
# the folder it made holds nothing of it: removed, as after bad input or a
# stop (it was left with only its .lock)
[ -e "$tmp/b" ] && fail "vae_mnist, batch buffer: left $tmp/b: $(ls -A "$tmp/b")"

# vae_mnist --resume reading metrics.csv, fdopen out of memory: the
# earlier epochs' rows were dropped from the new metrics.csv, exit 0
expect 0 "$vae" $fast --epochs 2 --out "$tmp/m"
TG_FAIL_ALLOC_AFTER_OPEN=/metrics.csv oom "vae_mnist --resume, metrics.csv" \
    "$vae" $fast --epochs 3 --resume "$tmp/m/checkpoint.safetensors" \
    --out "$tmp/m"
grep -q '^1,' "$tmp/m/metrics.csv" ||
    fail "vae_mnist --resume out of memory dropped epoch 1 from metrics.csv"

# vae_mnist's pictures (zlib's compress2 in the PNG writer) out of memory:
# "cannot write reconstructions.png: write failed", as if the disk had failed
TG_FAIL_ALLOC_FROM=libz.so oom "vae_mnist, PNG" "$vae" $fast --epochs 1 \
    --out "$tmp/p"

# vae_score's complexity L(x) (zlib's compress2) out of memory: it had
# said "unavailable (this build has no zlib)" and exited 0 without the
# S(x), two-sided and DoSE scores. The data is raw IDX: zlib reads none.
TG_FAIL_ALLOC_FROM=libz.so oom "vae_score, complexity" "$score" \
    --checkpoint "$tmp/r/checkpoint.safetensors" --data "$small" \
    --ref-images 20 --iwae-k 2 --bootstrap 10 --max-images 20 --samples 2 \
    --threads 1 --out "$tmp/s"

# Reading the data or a checkpoint out of memory is not bad input (exit 2,
# "corrupt gzip data" or "Cannot allocate memory"): zlib's allocations fail
# in gzopen and inflate on the .gz data; a checkpoint's header, by its size
# (its first 8 bytes, little-endian).
TG_FAIL_ALLOC_FROM=libz.so oom "mlp_mnist, .gz data" "$mlp" --data "$mnist" \
    --epochs 1 --max-batches 1 --hidden 8 --threads 1
TG_FAIL_ALLOC_FROM=libz.so oom "vae_mnist, .gz data" "$vae" --data "$mnist" \
    --hidden 8 --latent 2 --epochs 1 --max-batches 1 --threads 1 --out "$tmp/g"
TG_FAIL_ALLOC_FROM=libz.so oom "bnn_mnist, .gz data" "$bnn" --data "$mnist" \
    --ood-data none --method det --epochs 1 --max-batches 1 --hidden 8 \
    --threads 1
# vae_score's out-of-distribution set (--ood-data, .gz) the same way: it
# had exited 2, as for corrupt data (the in-distribution data is raw)
TG_FAIL_ALLOC_FROM=libz.so oom "vae_score, .gz --ood-data" "$score" \
    --checkpoint "$tmp/r/checkpoint.safetensors" --data "$small" \
    --ood-data "$mnist" --threads 1 --out "$tmp/s3"
header=$(od -An -tu8 -N8 "$tmp/r/checkpoint.safetensors" | tr -d ' ')
TG_FAIL_ALLOC_SIZE=$header oom "vae_score, checkpoint header" "$score" \
    --checkpoint "$tmp/r/checkpoint.safetensors" --data "$small" --threads 1 \
    --out "$tmp/s2"
TG_FAIL_ALLOC_SIZE=$header oom "vae_mnist --resume, checkpoint header" "$vae" \
    $fast --epochs 2 --resume "$tmp/r/checkpoint.safetensors" --out "$tmp/r"
# char_rnn's text buffer (16 MB + 1): it had exited 2, as for bad text
TG_FAIL_ALLOC_SIZE=16777217 oom "char_rnn, text" "$rnn" --text "$text" \
    --epochs 1 --steps 1 --hidden 8 --sample 0 --threads 1

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all out-of-memory checks passed"
