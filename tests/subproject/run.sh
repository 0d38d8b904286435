#!/bin/sh
# tapegrad as a meson subproject of another project (dependency('tapegrad')):
# it builds the library only (no examples, tests or benchmarks), does not
# pick up MPI unless asked, and a program links and runs against it.
# usage: tests/subproject/run.sh   (from anywhere; about 30 s on 2 cores)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$root/tests/subproject/meson.build" "$root/tests/subproject/consumer.c" \
    "$tmp/"
mkdir "$tmp/subprojects"
ln -s "$root" "$tmp/subprojects/tapegrad"
cd "$tmp"
# the subproject even when a tapegrad is installed on the system
meson setup build --force-fallback-for=tapegrad >setup.log 2>&1 ||
    { cat setup.log; exit 1; }
meson compile -C build >compile.log 2>&1 || { cat compile.log; exit 1; }
build/consumer
fails=0
for prog in vae_mnist mlp_mnist vae_step test_ops; do
    if grep -q "\"name\": \"$prog\"" build/meson-info/intro-targets.json; then
        echo "FAIL: the subproject defines $prog (only the library is wanted)"
        fails=1
    fi
done
if grep -q '^#define TG_HAVE_MPI' build/subprojects/tapegrad/tg_config.h; then
    echo "FAIL: the subproject picked up MPI without being asked"
    fails=1
fi
[ "$fails" -eq 0 ] && echo "ok: library only, no MPI"
exit "$fails"
