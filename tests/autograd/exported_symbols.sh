#!/bin/sh
# libtapegrad.so exports the tg_ API and nothing else: an unprefixed
# helper (record, grad_of, ...) would be bound to, or replaced by, any
# function of the same name in a user's program. Nor does a tg_ function
# the installed headers do not declare (tg_st_open, tg_par_begin, ...: the
# library's internals, hidden by its internal headers): a program could call
# it, or replace it by defining its own, and the library would call that.
# usage: exported_symbols.sh NM LIBRARY PUBLIC_HEADER...
set -eu
nm=$1 lib=$2
shift 2
syms=$("$nm" -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }')
[ -n "$syms" ] || { echo "no dynamic symbols read from $lib"; exit 1; }
echo "$syms" | grep -q '^tg_backward$' || { echo "tg_backward not exported"; exit 1; }
bad=$(echo "$syms" | grep -v -E '^(tg|TG)_' || true)
if [ -n "$bad" ]; then
    echo "exported without the tg_ prefix:"
    echo "$bad"
    exit 1
fi
declared=$(cat "$@" | grep -oE '\b(tg|TG)_[A-Za-z0-9_]+' | sort -u)
internal=$(echo "$syms" | sort -u | grep -vxF "$declared" || true)
if [ -n "$internal" ]; then
    echo "exported but in no installed header:"
    echo "$internal"
    exit 1
fi
echo "$(echo "$syms" | wc -l) symbols exported, all tg_/TG_ and declared in the installed headers"
