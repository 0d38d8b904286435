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
# the readers and what they call, as tests/fuzz/meson.build lists them
lib="status.c idx.c safetensors.c safetensors_read.c safetensors_write.c
     checkpoint.c meta.c checkpoint_match.c files.c params.c optim.c"
srcs="$root/autograd/tensor.c $root/autograd/threads.c"
for f in $lib; do srcs="$srcs $root/nn/$f"; done
targets="idx safetensors"
grep -q '^#define TG_HAVE_ZLIB' "$build/tg_config.h" && targets="idx idx_gz safetensors"
# params.c and threads.c call OpenMP when the build has it
omp=
grep -q '^#define TG_HAVE_OPENMP' "$build/tg_config.h" && omp=-fopenmp
for t in $targets; do
    clang -std=c11 -D_POSIX_C_SOURCE=200809L -DIDX_FIRST_CHUNK=64 -O1 \
        -fsanitize=fuzzer $omp \
        -fprofile-instr-generate -fcoverage-mapping -I"$build" \
        -I"$build/autograd" -I"$root/nn" \
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
    "$root/nn/safetensors_read.c" "$root/nn/checkpoint.c" "$root/nn/meta.c" \
    "$root/nn/checkpoint_match.c"
