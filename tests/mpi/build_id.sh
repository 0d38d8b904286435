#!/bin/sh
# The ranks of an MPI job compare their build's identity (tg_build_id.h,
# from nn/build_id.sh). It was git describe --dirty alone: every build of a
# commit with uncommitted changes was "<commit>-dirty", whatever the
# changes, so ranks of two such builds (a changed kernel on one) trained
# together, silently another model. Now a dirty tree's changes are hashed:
#   - a clean tree: the commit alone; a changed one: "-dirty+<hash>", a
#     different hash for different changes, the same for the same changes
#   - the library's tg_build_id.h holds what the script says of its source
# usage: build_id.sh BUILD_ID_SH SOURCE_ROOT BUILD_ROOT
set -u
script=$1
src=$2
build=$3
. "$(dirname "$0")/../lib.sh"

if ! command -v git >/dev/null; then
    echo "git not found: skipped"
    exit 77
fi
git init -q "$tmp/repo"
echo 'float k = 1.0f;' >"$tmp/repo/kernel.c"
git -C "$tmp/repo" add kernel.c
git -C "$tmp/repo" -c user.name=t -c user.email=t@t commit -qm one
id() { sh "$script" "$tmp/repo"; }
clean=$(id)
case $clean in
*dirty* | "") fail "a clean tree: '$clean'" ;;
*) echo "ok: a clean tree: $clean" ;;
esac
echo 'float k = 2.0f;' >"$tmp/repo/kernel.c"
a=$(id)
echo 'float k = 3.0f;' >"$tmp/repo/kernel.c"
b=$(id)
git -C "$tmp/repo" add kernel.c # staged, not committed: still a change
b_staged=$(id)
echo 'float k = 2.0f;' >"$tmp/repo/kernel.c"
a_again=$(id)
case $a in
"$clean-dirty+"????????) echo "ok: a changed tree: $a" ;;
*) fail "a changed tree: '$a' (clean: '$clean')" ;;
esac
[ "$a" != "$b" ] || fail "two different changes, one identity: '$a'"
[ "$b" = "$b_staged" ] || fail "staging changed the identity: '$b', '$b_staged'"
[ "$a" = "$a_again" ] || fail "the same change, two identities: '$a', '$a_again'"

# dist.c compares the first 29 characters of the identity: with a tag,
# git describe gave "<tag>-<n>-g<commit>-dirty+<hash>", whose hash fell
# past them, and ranks of two builds with different changes trained
# together again
git -C "$tmp/repo" -c user.name=t -c user.email=t@t tag -a -m r \
    v0.1.0-release-candidate
echo 'float k = 2.0f;' >"$tmp/repo/kernel.c"
a=$(id)
echo 'float k = 3.0f;' >"$tmp/repo/kernel.c"
b=$(id)
if [ "$(echo "$a" | cut -c1-29)" = "$(echo "$b" | cut -c1-29)" ]; then
    fail "a tagged tree: two changes alike in dist.c's 29 characters: '$a', '$b'"
else
    echo "ok: a tagged tree: '$a', '$b'"
fi

# the library's identity is the script's for its source tree
want=$(sh "$script" "$src" 2>/dev/null) || want=unknown
have=$(sed -n 's/^#define TG_BUILD_ID "\(.*\)"$/\1/p' "$build/nn/tg_build_id.h")
if [ "$have" = "$want" ]; then
    echo "ok: the library's build id: $have"
else
    fail "the library's build id is '$have', its source tree's '$want'"
fi

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
