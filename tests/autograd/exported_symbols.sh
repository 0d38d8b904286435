#!/bin/sh
# libtapegrad.so exports the tg_ API and nothing else: an unprefixed
# helper (record, grad_of, ...) would be bound to, or replaced by, any
# function of the same name in a user's program.
# usage: exported_symbols.sh NM LIBRARY
set -eu
nm=$1 lib=$2
syms=$("$nm" -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }')
[ -n "$syms" ] || { echo "no dynamic symbols read from $lib"; exit 1; }
echo "$syms" | grep -q '^tg_backward$' || { echo "tg_backward not exported"; exit 1; }
bad=$(echo "$syms" | grep -v -E '^(tg|TG)_' || true)
if [ -n "$bad" ]; then
    echo "exported without the tg_ prefix:"
    echo "$bad"
    exit 1
fi
echo "$(echo "$syms" | wc -l) symbols exported, all tg_/TG_"
