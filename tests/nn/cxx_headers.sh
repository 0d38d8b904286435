#!/bin/sh
# The public headers from C++ (they declare extern "C" for it): tapegrad.h
# and its macros compile warning-free under -Wall -Wextra -Wpedantic for
# C++11, C++17 and C++20. TG_META_INIT was a C designated initializer,
# which g++ before C++20 flags as an extension and every standard as
# missing initializers.
# usage: cxx_headers.sh SOURCE_ROOT BUILD_ROOT CXX
set -eu
src=$1 build=$2 cxx=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/use.cpp" <<'CPP'
#include <tapegrad.h>

int main()
{
    tg_meta meta = TG_META_INIT;
    tg_meta_set(&meta, "model", "cxx");
    tg_conv2d_args args = {};
    args.relu = true;
    return meta.n == 1 && args.relu ? 0 : 1;
}
CPP
for std in c++11 c++17 c++20; do
    if ! "$cxx" -std=$std -x c++ -fsyntax-only /dev/null 2>/dev/null; then
        echo "skipped: $cxx does not know -std=$std"
        continue
    fi
    "$cxx" -std=$std -Wall -Wextra -Wpedantic -Werror -fsyntax-only \
        -I"$src/autograd" -I"$build/autograd" -I"$src/nn" -I"$src/models" \
        "$work/use.cpp"
    echo "ok: $std"
done
