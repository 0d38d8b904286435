#!/bin/sh
# Compiles and runs every ```c block of README.md against the built library,
# so the examples a newcomer copies cannot rot.
# usage: readme_examples.sh SOURCE_ROOT BUILD_ROOT CC
set -eu
src=$1 build=$2 cc=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
awk -v dir="$work" '
    /^```c$/ { n++; file = sprintf("%s/example%d.c", dir, n); inblock = 1; next }
    /^```$/  { inblock = 0; next }
    inblock  { print > file }
' "$src/README.md"
count=0
for f in "$work"/example*.c; do
    [ -e "$f" ] || { echo "no C examples found in README.md"; exit 1; }
    # Blocks without main() are fragments: compile them only.
    if grep -q 'int main' "$f"; then
        $cc -std=c11 -Wall -Wextra -Wpedantic -Werror \
            -I"$src/autograd" -I"$build/autograd" -I"$src/nn" -I"$src/models" "$f" \
            -L"$build" -ltapegrad -lm -Wl,-rpath,"$build" -o "$f.exe"
        "$f.exe" > "$f.out"
        echo "$(basename "$f"): $(head -n 3 "$f.out")"
    else
        $cc -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only \
            -I"$src/autograd" -I"$build/autograd" -I"$src/nn" -I"$src/models" "$f"
        echo "$(basename "$f"): compiles"
    fi
    count=$((count + 1))
done
echo "$count README example(s) ok"
