#!/bin/sh
# Source coverage of the readers reached by a corpus: builds each target
# with clang's -fprofile-instr-generate (no sanitizers), replays the
# checked-in corpus plus what run.sh collected in $FUZZ_BUILD/fuzz-corpus,
# and prints llvm-cov's per-file report.
#   tests/fuzz/coverage.sh [OUTDIR]   (default /tmp/tg-fuzz-cov)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
out=${1:-/tmp/tg-fuzz-cov}
mkdir -p "$out"
lib="status.c idx.c safetensors.c safetensors_write.c checkpoint.c
     checkpoint_meta.c params.c optim.c"
srcs="$root/autograd/tensor.c"
for f in $lib; do srcs="$srcs $root/nn/$f"; done
targets="idx safetensors"
grep -q '^#define TG_HAVE_ZLIB' "$build/tg_config.h" && targets="idx idx_gz safetensors"
for t in $targets; do
    clang -std=c11 -D_POSIX_C_SOURCE=200809L -DIDX_FIRST_CHUNK=64 -O1 \
        -fsanitize=fuzzer \
        -fprofile-instr-generate -fcoverage-mapping -I"$build" -I"$root/nn" \
        -I"$root/autograd" -o "$out/cov_$t" "$here/fuzz_$t.c" \
        "$here/fuzz_file.c" $srcs -lz -lm
    mkdir -p "$build/fuzz-corpus/$t"
    rm -f "$out/$t.profraw"
    LLVM_PROFILE_FILE="$out/$t.profraw" "$out/cov_$t" \
        "$build/fuzz-corpus/$t" "$here/corpus/$t" -runs=0 >/dev/null 2>&1
done
# Per function, both IDX targets together; the readers' functions are the
# ones to look at (tg_mnist_load and saving are not fuzzed).
report() { # profile objects... -- files...
    prof=$1 objs=$2; shift 2
    while [ "$1" != -- ]; do objs="$objs -object $1"; shift; done
    shift
    llvm-cov report $objs -instr-profile="$prof" -show-functions "$@" |
        grep -v '^-'
}
llvm-profdata merge -o "$out/idx.profdata" "$out"/idx*.profraw
echo "== fuzz_idx + fuzz_idx_gz"
report "$out/idx.profdata" "$out"/cov_idx* -- "$root/nn/idx.c"
llvm-profdata merge -o "$out/st.profdata" "$out/safetensors.profraw"
echo "== fuzz_safetensors"
report "$out/st.profdata" "$out/cov_safetensors" -- "$root/nn/safetensors.c" \
    "$root/nn/checkpoint.c" "$root/nn/checkpoint_meta.c"
