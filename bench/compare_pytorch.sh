#!/usr/bin/env bash
# bench/compare_pytorch.sh: VAE training throughput of vae_mnist against the
# PyTorch peers (bench/torch_vae.py: the same 784-400-20 VAE, batch 128,
# Adam) on the same data, alternating the programs, ROUNDS rounds each.
# Prints each configuration's median samples/s and the ratios.
#
# usage: bench/compare_pytorch.sh [BUILD_DIR] [EPOCHS] [ROUNDS] [ARCH]
# ARCH mlp (default) or conv: the convolutional VAE (vae_mnist --arch conv
# against bench/torch_conv_vae.py, the same architecture and init).
# Peers: Debian's python3-torch (/usr/bin/python3) and, when present, a
# PyPI torch in $TORCH_PYTHON (default /opt/torchvenv/bin/python), each at
# 1 and 2 threads. A missing peer is skipped with a note.
set -euo pipefail
case ${1:-} in
-h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-$root/build}
[ -x "$build/examples/vae_mnist" ] || {
    echo "compare_pytorch.sh: no $build/examples/vae_mnist: BUILD_DIR is a" \
        "meson build folder (see --help)" >&2
    exit 2
}
epochs=${2:-3}
rounds=${3:-3}
arch=${4:-mlp}
case $arch in
mlp) peer=$here/torch_vae.py ;;
conv) peer=$here/torch_conv_vae.py ;;
*) echo "compare_pytorch.sh: ARCH is mlp or conv, not '$arch'" >&2; exit 2 ;;
esac
data=$root/data/mnist
pypi=${TORCH_PYTHON:-/opt/torchvenv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

declare -A samples   # config -> space-separated samples/s, one per round
configs=()
add() { configs+=("$1"); samples[$1]=""; }

# Median over the epochs of one run's samples/s (the first epoch included:
# both sides pay their warm-up the same way).
ours() {
    "$build/examples/vae_mnist" --arch "$arch" --epochs "$epochs" --threads "$1" \
        --out "$out/ours" 2>/dev/null |
        awk '/samples\/s/ { for (i = 1; i < NF; i++) if ($(i+1) == "samples/s") print $i }' |
        sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}
torch() {
    "$1" "$peer" --data "$data" --epochs "$epochs" --threads "$2" |
        awk '{ for (i = 1; i < NF; i++) if ($(i+1) == "samples/s") print $i }' |
        sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

have_debian=0 have_pypi=0
/usr/bin/python3 -c 'import torch' 2>/dev/null && have_debian=1
[ -x "$pypi" ] && "$pypi" -c 'import torch' 2>/dev/null && have_pypi=1
for t in 1 2; do add "tapegrad $t thr"; done
if [ $have_debian = 1 ]; then
    v=$(/usr/bin/python3 -c 'import torch; print(torch.__version__)')
    for t in 1 2; do add "torch $v (Debian) $t thr"; done
else
    echo "note: Debian's python3-torch not installed: apt-get install -y python3-torch"
fi
if [ $have_pypi = 1 ]; then
    pv=$("$pypi" -c 'import torch; print(torch.__version__)')
    for t in 1 2; do add "torch $pv (PyPI) $t thr"; done
else
    echo "note: no PyPI torch at $pypi (python3 -m venv DIR && DIR/bin/pip install torch numpy; TORCH_PYTHON=DIR/bin/python)"
fi

echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(date -u +%F)"
echo "$arch VAE, $epochs epochs per run, $rounds rounds, programs alternated"
for r in $(seq "$rounds"); do
    for c in "${configs[@]}"; do
        t=${c##* thr}; t=${c% thr}; t=${t##* }
        case $c in
        tapegrad*) v=$(ours "$t") ;;
        *Debian*) v=$(torch /usr/bin/python3 "$t") ;;
        *PyPI*) v=$(torch "$pypi" "$t") ;;
        esac
        samples[$c]="${samples[$c]} $v"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
best_peer=0 best_peer_name="" ours_best=0
printf '\n%-34s %12s   %s\n' "configuration" "samples/s" "rounds"
for c in "${configs[@]}"; do
    m=$(echo "${samples[$c]}" | median)
    printf '%-34s %12.0f  %s\n' "$c" "$m" "${samples[$c]}"
    case $c in
    tapegrad*) awk -v m="$m" -v b="$ours_best" 'BEGIN { exit !(m > b) }' && ours_best=$m ;;
    *) awk -v m="$m" -v b="$best_peer" 'BEGIN { exit !(m > b) }' && { best_peer=$m; best_peer_name=$c; } ;;
    esac
done
if [ -n "$best_peer_name" ]; then
    printf '\nbest tapegrad / fastest peer (%s): %.2fx\n' "$best_peer_name" \
        "$(awk -v a="$ours_best" -v b="$best_peer" 'BEGIN { print a / b }')"
fi
