#!/bin/sh
# The README's install notes, followed for a non-system prefix: install the
# library into a temporary prefix, find it with pkg-config (the .pc is in the
# multiarch libdir), build the README's first C example against it with the
# rpath the README gives, run it. The library alone is compiled.
# usage: tests/install/run.sh   (from anywhere; about 20 s on 2 cores)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
meson setup "$tmp/build" "$root" --prefix="$prefix" -Dtests=false \
    >"$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log"; exit 1; }
meson compile -C "$tmp/build" tapegrad >"$tmp/compile.log" 2>&1 ||
    { cat "$tmp/compile.log"; exit 1; }
meson install -C "$tmp/build" --no-rebuild --quiet
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
