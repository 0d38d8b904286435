#!/usr/bin/env bash
# Runs every ```sh block of README.md, in order, in one shell, as a reader
# following along would, but briefly: in a scratch folder laid out like the
# repository (data/, bench/ and the source folders linked, build/ holding the
# library and wrappers of the example programs), where each program gets
# flags that shorten its run appended after the README's own (the last
# value of a flag wins): one epoch of two batches, a few scored images.
# So a renamed flag, a moved file or a wrong path in a README command fails
# here instead of for a reader.
#
# Not run here, because CI runs them elsewhere: `bash .ci/...` and `meson
# ...` lines (.ci/run runs the README's two commands and the sanitizer and
# valgrind setups), and the install-under-a-prefix lines (pkg-config:
# tests/install/run.sh follows them with a temporary prefix). Run when the
# machine can: mpirun lines (mpirun on PATH and a build with MPI), the
# PyTorch peers (an interpreter that imports torch). Fashion-MNIST, when
# Debian's dataset-fashion-mnist is not installed, is replaced by the
# embedded digits; /tmp paths by the scratch folder.
#
# usage: readme_shell.sh SOURCE_ROOT BUILD_ROOT
set -euo pipefail
src=$1 build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for d in data bench autograd nn models; do ln -s "$src/$d" "$work/$d"; done
mkdir -p "$work/build/examples" "$work/tmp"
ln -s "$build/autograd" "$work/build/autograd"
for f in "$build"/libtapegrad.so*; do ln -s "$f" "$work/build/"; done
# The README's first C example is the demo.c its build commands compile.
awk '/^```c$/ { n++; if (n == 1) { keep = 1; next } }
     /^```$/  { keep = 0 }
     keep' "$src/README.md" >"$work/demo.c"

# build/examples/PROG: the real program with brevity flags after the
# README's own.
for exe in "$build"/examples/*; do
    [ -f "$exe" ] && [ -x "$exe" ] || continue
    prog=$(basename "$exe")
    case $prog in
    vae_mnist | mlp_mnist) quick="--epochs 1 --max-batches 2" ;;
    vae_score) quick="--max-images 3 --iwae-k 8 --bootstrap 20 --samples 2 --ref-images 3" ;;
    bnn_mnist) quick="--epochs 1 --max-batches 2 --max-eval 40" ;;
    char_rnn) quick="--epochs 1 --max-batches 2" ;;
    *) quick="" ;;
    esac
    printf '#!/bin/sh\nexec "%s" "$@" %s\n' "$exe" "$quick" \
        >"$work/build/examples/$prog"
    chmod +x "$work/build/examples/$prog"
done

mpi=no
if command -v mpirun >/dev/null && grep -q 'define TG_HAVE_MPI' "$build/tg_config.h"; then
    mpi=yes
fi

# The blocks, continuation lines joined, each line either kept or turned
# into a note of why it is not run here.
fashion=yes
[ -d /usr/share/datasets/fashion-mnist ] || fashion=no
awk -v mpi="$mpi" -v fashion="$fashion" '
    /^```sh$/ { inblock = 1; n++; print "echo \"== README sh block " n "\""; next }
    /^```$/   { inblock = 0; next }
    !inblock  { next }
    {
        line = pending $0
        if (line ~ /\\$/) { pending = substr(line, 1, length(line) - 1) " "; next }
        pending = ""
        skip = ""
        if (line ~ /^[ \t]*(bash \.ci\/|meson )/) skip = "CI runs it (.ci/run)"
        else if (line ~ /pkg-config|^export PKG_CONFIG_PATH/) skip = "tests/install/run.sh follows it"
        else if (line ~ /^[ \t]*mpirun/ && mpi != "yes") skip = "no mpirun or no MPI in this build"
        if (skip != "") { gsub(/\047/, "\047\\\047\047", line); print "echo \047skipped (" skip "): " line "\047"; next }
        gsub(/\/opt\/torchvenv\/bin\/python /, "torch_run /opt/torchvenv/bin/python ", line)
        gsub(/\/tmp\//, "tmp/", line)
        if (fashion != "yes") gsub(/\/usr\/share\/datasets\/fashion-mnist/, "data/mnist", line)
        print line
    }' "$src/README.md" >"$work/blocks.sh"

cat >"$work/run.sh" <<'EOF'
set -euo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# Under AddressSanitizer Open MPI's own start-up allocations are reported as
# leaks (tests/mpi/meson.build): no leak check under mpirun.
mpirun() { ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 command mpirun "$@"; }
# A PyTorch peer (bench/torch_*.py) under interpreter $1, briefly, when it
# has the modules the script needs.
torch_run() {
    local py=$1
    shift
    # the modules the script imports beyond the standard library: torch, and
    # numpy where it uses it (PyPI's torch no longer pulls numpy in)
    local mods=torch
    grep -q '^import numpy' "$1" && mods="torch, numpy"
    if ! command -v "$py" >/dev/null || ! "$py" -c "import $mods" 2>/dev/null; then
        echo "skipped (no $mods for $py): $*"
        return 0
    fi
    local quick="--epochs 1 --max-batches 2"
    [ "$(basename "$1")" = torch_bnn.py ] && quick="$quick --max-eval 40"
    # shellcheck disable=SC2086 # the flags are words
    "$py" "$@" $quick
}
python3() {
    case ${1:-} in
    bench/torch_*.py) torch_run "$(type -P python3)" "$@" ;;
    *) command python3 "$@" ;;
    esac
}
EOF
cat "$work/blocks.sh" >>"$work/run.sh"
cd "$work"
bash run.sh
echo "README sh blocks ok"
