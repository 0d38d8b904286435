#!/bin/sh
# The README's data-parallel example (the C block that calls
# tg_dist_set_shards) alone and under mpirun -np 2, 3, 4: every run prints
# the same fitted line, bit for bit (4 shards: a rank holds 1, 2 or 4).
# usage: readme_dist.sh MPIRUN SOURCE_ROOT BUILD_ROOT CC
set -u
mpirun=$1 src=$2 build=$3 cc=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk -v out="$tmp/ex.c" '
    /^```c$/ { inblock = 1; body = ""; next }
    /^```$/  { if (inblock && body ~ /tg_dist_set_shards/) printf "%s", body > out
               inblock = 0; next }
    inblock  { body = body $0 "\n" }
' "$src/README.md"
[ -s "$tmp/ex.c" ] || { echo "FAIL: no README block calls tg_dist_set_shards"; exit 1; }
$cc -std=c11 -Wall -Wextra -Wpedantic -Werror -I"$src/autograd" \
    -I"$build/autograd" -I"$src/nn" -I"$src/models" "$tmp/ex.c" \
    -L"$build" -ltapegrad -lm -Wl,-rpath,"$build" -o "$tmp/ex" || exit 1
"$tmp/ex" >"$tmp/one" 2>&1 || { echo "FAIL: alone: $(cat "$tmp/one")"; exit 1; }
line() { sed -n 's/^.* shards: //p' "$1"; }
want=$(line "$tmp/one")
[ -n "$want" ] || { echo "FAIL: alone printed $(cat "$tmp/one")"; exit 1; }
echo "alone: $(cat "$tmp/one")"
fails=0
for np in 2 3 4; do
    timeout 60 "$mpirun" --bind-to none --oversubscribe -np $np "$tmp/ex" \
        >"$tmp/np$np" 2>&1
    got=$(line "$tmp/np$np")
    if [ "$got" = "$want" ]; then
        echo "ok: -np $np: $(cat "$tmp/np$np")"
    else
        echo "FAIL: -np $np printed '$(cat "$tmp/np$np")', alone '$want'"
        fails=$((fails + 1))
    fi
done
[ "$fails" -eq 0 ] || exit 1
echo "all ok"
