# Sourced by the example drivers: a temporary folder ($tmp, removed on
# exit), a failure count ($fails) with fail() (../lib.sh), and expect().
. "$(dirname "$0")/../lib.sh"

# expect STATUS PROG ARGS...: exit status STATUS and, when not 0, exactly one
# line on stderr that starts with the program's name. Leaves the program's
# stdout in $tmp/out and stderr in $tmp/err.
expect() {
    want=$1
    shift
    "$@" >"$tmp/out" 2>"$tmp/err"
    got=$?
    if [ "$got" -ne "$want" ]; then
        fail "$* exited $got, expected $want: $(cat "$tmp/err")"
        return
    fi
    if [ "$want" -ne 0 ]; then
        lines=$(wc -l <"$tmp/err")
        name=$(basename "$1")
        if [ "$lines" -ne 1 ] || ! grep -q "^$name: " "$tmp/err"; then
            fail "$* should print one line '$name: ...', got: $(cat "$tmp/err")"
        fi
    fi
    echo "ok: $* -> $got"
}

# stopped_mid_write OUT PROG ARGS...: PROG, writing its outputs into the
# folder OUT (ARGS name it), stopped by SIGINT at its first and at its third
# fsync (an output being committed; strace's fault injection) exits 130 and
# leaves no temporary in OUT. Skipped where strace cannot trace.
stopped_mid_write() {
    signalled_mid_write SIGINT 130 "$@"
}

# signalled_mid_write SIG STATUS OUT PROG ARGS...: as stopped_mid_write,
# with signal SIG and exit status STATUS; stderr is left in $tmp/err.
# Returns 1 when skipped.
# asan_no_leaks: $ASAN_OPTIONS with leak detection off, for a program run
# under strace (LeakSanitizer cannot work under ptrace: it aborts at exit).
asan_no_leaks() {
    echo "${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
}
signalled_mid_write() {
    sig=$1 want=$2 out=$3
    shift 3
    if ! strace -f -o /dev/null -e trace=fsync true 2>/dev/null; then
        echo "skip: strace cannot trace here (the $sig case)"
        return 1
    fi
    for when in 1 3; do
        rm -rf "$out"
        before=$fails
        ASAN_OPTIONS=$(asan_no_leaks) strace -f -o /dev/null -e trace=fsync \
            -e inject=fsync:signal=$sig:when=$when "$@" \
            >/dev/null 2>"$tmp/err"
        st=$?
        [ "$st" -eq "$want" ] ||
            fail "$(basename "$1") sent $sig at fsync $when exited $st, want $want: $(cat "$tmp/err")"
        left=$(find "$out" -name '*tmp.*')
        [ -z "$left" ] || fail "$(basename "$1") sent $sig at fsync $when left $left"
        [ "$fails" -eq "$before" ] &&
            echo "ok: $(basename "$1") sent $sig at fsync $when -> $st"
    done
}

# mentions TEXT: the last expect's stderr contains TEXT.
mentions() {
    grep -qF -- "$1" "$tmp/err" || fail "stderr does not mention '$1': $(cat "$tmp/err")"
}

# --- small IDX data sets built from the shipped digits (MNIST_DIR) ---------
be32() {
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) \
        $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"
}
# dataset MNIST_DIR DIR TRAIN_N TEST_N [LABEL]: an IDX folder of 28x28
# digits (LABEL, when given, replaces every label).
dataset() {
    mkdir -p "$2"
    for s in train:$3 t10k:$4; do
        set_name=${s%%:*} n=${s#*:}
        { printf '\000\000\010\003'; be32 "$n"; be32 28; be32 28
          gzip -dc "$1/train-images-idx3-ubyte.gz" | tail -c +17 |
              head -c $((n * 784)); } >"$2/$set_name-images-idx3-ubyte"
        { printf '\000\000\010\001'; be32 "$n"
          if [ -n "${5:-}" ]; then
              head -c "$n" /dev/zero | tr '\0' "$(printf '\\%03o' "$5")"
          else
              gzip -dc "$1/train-labels-idx1-ubyte.gz" | tail -c +9 | head -c "$n"
          fi; } >"$2/$set_name-labels-idx1-ubyte"
    done
}

# regeom IMAGES_IDX ROWS COLS: the same pixels declared as ROWS x COLS images
# (ROWS * COLS = 784: the same byte count, another geometry).
regeom() {
    { head -c 8 "$1"; be32 "$2"; be32 "$3"; tail -c +17 "$1"; } >"$1.regeom"
    mv "$1.regeom" "$1"
}

# --- safetensors checkpoints -----------------------------------------------
# st_meta FILE KEY: a metadata value.
st_meta() {
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    head -c $((8 + n)) "$1" | tail -c +9 | tr ',' '\n' |
        sed -n "s/^.*\"$2\":\"\\([^\"]*\\)\".*$/\\1/p" | head -n 1
}
# st_set_meta FILE KEY VALUE OUT: FILE with metadata KEY set to VALUE (the
# header rewritten, its length word updated).
st_set_meta() {
    st_edit_header "$1" "s/\"$2\":\"[^\"]*\"/\"$2\":\"$3\"/" "$4"
}
# st_edit_header FILE SED_SCRIPT OUT: FILE with its JSON header edited by
# SED_SCRIPT (padded to 8 bytes, its length word updated) and without the
# library's checksum (its key renamed), which covers the metadata: an
# edited file is another writer's, whose values the checks behind the
# checksum meet.
st_edit_header() {
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    head -c $((8 + n)) "$1" | tail -c +9 | sed "$2" |
        sed 's/"tapegrad.checksum"/"nochecks.checksum"/; s/ *$//' \
        >"$tmp/st_hdr"
    while [ $(($(wc -c <"$tmp/st_hdr") % 8)) -ne 0 ]; do
        printf ' ' >>"$tmp/st_hdr"
    done
    m=$(wc -c <"$tmp/st_hdr")
    { for i in 0 1 2 3 4 5 6 7; do
          printf "$(printf '\\%03o' $((m >> (8 * i) & 255)))"
      done
      cat "$tmp/st_hdr"
      tail -c +$((9 + n)) "$1"; } >"$3"
}
# st_poke FILE TENSOR_BYTE_OFFSET BYTES: overwrites data bytes (printf
# escapes) at an offset into the data section.
st_poke() {
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    printf "$3" | dd of="$1" bs=1 seek=$((8 + n + $2)) conv=notrunc 2>/dev/null
}
# st_uncheck FILE: FILE without the library's data checksum (its key
# renamed), as a file another writer made: the value checks behind it
# (finite weights, Adam's v >= 0) are then what a damaged value meets.
st_uncheck() {
    st_edit_header "$1" 's/"tapegrad.checksum"/"nochecks.checksum"/' \
        "$tmp/st_unchecked"
    mv "$tmp/st_unchecked" "$1"
}
# st_offset FILE TENSOR: the byte offset of TENSOR in the data section.
st_offset() {
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    head -c $((8 + n)) "$1" | tail -c +9 | grep -o "\"$2\":{[^}]*}" |
        sed 's/.*"data_offsets":\[\([0-9]*\),.*/\1/'
}
