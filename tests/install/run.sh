#!/bin/sh
# The README's install notes, followed for a non-system prefix: install the
# library into a temporary prefix, find it with pkg-config (the .pc is in the
# multiarch libdir), build the README's first C example and its attention
# example (which calls libm) against it with the flags and rpath the README
# gives, run them. The library alone is compiled.
# usage: tests/install/run.sh   (from anywhere; about 20 s on 2 cores)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
# the build folder right under the temporary root: shallower than the
# source's nn/ (see the identity check below)
build=$(mktemp -d)
trap 'rm -rf "$tmp" "$build"' EXIT
prefix=$tmp/prefix
meson setup "$build" "$root" --prefix="$prefix" -Dtests=false \
    >"$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log"; exit 1; }
meson compile -C "$build" tapegrad >"$tmp/compile.log" 2>&1 ||
    { cat "$tmp/compile.log"; exit 1; }
meson install -C "$build" --no-rebuild --quiet
# This build folder is outside the tree: vcs_tag ran build_id.sh by a path
# relative to the build folder, from the source's nn/, which missed the
# script for a build folder shallower than nn/, and such a build got the
# identity 'unknown' (so ranks of two builds passed as one)
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1 &&
    grep -q '^#define TG_BUILD_ID "unknown"' "$build/nn/tg_build_id.h"; then
    echo "FAIL: an out-of-tree build's identity is 'unknown'"
    exit 1
fi
pc=$(find "$prefix" -name tapegrad.pc)
[ -n "$pc" ] || { echo "FAIL: no tapegrad.pc under $prefix"; exit 1; }
echo "tapegrad.pc: ${pc#"$prefix"/}"
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
awk '/^```c$/ { n++; if (n == 1) { keep = 1; next } }
     /^```$/  { keep = 0 }
     keep' "$root/README.md" >"$tmp/demo.c"
libdir=$(pkg-config --variable=libdir tapegrad)
# shellcheck disable=SC2046 # pkg-config's words are meant to split
cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$tmp/demo.c" \
    $(pkg-config --cflags --libs tapegrad) -Wl,-rpath,"$libdir" \
    -o "$tmp/demo"
out=$("$tmp/demo")
echo "demo: $out"
case $out in
f\ =*) echo "ok: the README example builds and runs against $prefix" ;;
*) echo "FAIL: unexpected output"; exit 1 ;;
esac
# The attention example calls sqrtf: the README's line adds -lm (the .pc
# has it in Libs.private only), which this build needs.
awk '/^### Batched products: attention/ { sec = 1 }
     sec && /^```c$/ { keep = 1; next }
     keep && /^```$/ { exit }
     keep' "$root/README.md" >"$tmp/attention.c"
grep -q sqrtf "$tmp/attention.c" ||
    { echo "FAIL: no attention example in README.md"; exit 1; }
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$tmp/attention.c" \
    $(pkg-config --cflags --libs tapegrad) -lm -Wl,-rpath,"$libdir" \
    -o "$tmp/attention"
"$tmp/attention" >/dev/null ||
    { echo "FAIL: the attention example's gradient check"; exit 1; }
echo "ok: the attention example builds with -lm and passes its check"
