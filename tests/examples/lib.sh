# Sourced by the example drivers: a temporary folder ($tmp, removed on
# exit), a failure count ($fails) with fail(), and expect().
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

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
