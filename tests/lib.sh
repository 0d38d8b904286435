# Sourced by the shell drivers of tests/examples (through its lib.sh) and
# tests/mpi: a temporary folder ($tmp, removed on exit) and a failure count
# ($fails) with fail().
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}
