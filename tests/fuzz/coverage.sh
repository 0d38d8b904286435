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
for t in idx idx_gz safetensors; do
    [ "$t" = idx_gz ] && ! grep -q 'TG_HAVE_ZLIB 1' "$build/tg_config.h" &&
        continue
    clang -std=c11 -D_POSIX_C_SOURCE=200809L -DIDX_FIRST_CHUNK=64 -O1 \
        -fsanitize=fuzzer \
        -fprofile-instr-generate -fcoverage-mapping -I"$build" -I"$root/nn" \
        -I"$root/autograd" -o "$out/cov_$t" "$here/fuzz_$t.c" \
        "$here/fuzz_file.c" $srcs -lz -lm
    mkdir -p "$build/fuzz-corpus/$t"
    LLVM_PROFILE_FILE="$out/$t.profraw" "$out/cov_$t" \
        "$build/fuzz-corpus/$t" "$here/corpus/$t" -runs=0 >/dev/null 2>&1
    llvm-profdata merge -o "$out/$t.profdata" "$out/$t.profraw"
    case $t in
        idx*) files="$root/nn/idx.c" ;;
        *) files="$root/nn/safetensors.c $root/nn/checkpoint.c
                  $root/nn/checkpoint_meta.c" ;;
    esac
    echo "== fuzz_$t"
    llvm-cov report "$out/cov_$t" -instr-profile="$out/$t.profdata" $files |
        grep -v '^-'
done
