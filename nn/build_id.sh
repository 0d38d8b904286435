#!/bin/sh
# The build's identity for tg_build_id.h (meson's vcs_tag): the commit, as
# git describe --dirty gives it, and for a tree with uncommitted changes a
# hash of them (git diff HEAD): two builds of one commit with different
# changes are two builds (both were "<commit>-dirty", and the ranks of an
# MPI job accepted each other). The commit alone, not a tag's name: dist.c
# compares the first 29 characters, and "<tag>-<n>-g<commit>-dirty+<hash>"
# put the hash past them. Fails outside a checkout (vcs_tag's fallback,
# "unknown", then stands).
# usage: build_id.sh SOURCE_DIR
set -e
id=$(git -C "$1" describe --always --dirty --abbrev=12 --exclude='*')
case $id in
*-dirty)
    diff=$(git -C "$1" diff HEAD --binary --no-ext-diff |
        git -C "$1" hash-object --stdin)
    id="$id+$(echo "$diff" | cut -c1-8)"
    ;;
esac
echo "$id"
