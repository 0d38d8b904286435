#!/bin/sh
# vae_mnist under mpirun -np 2: stop signals at the phases the loop tests of
# run_mpi.sh do not reach, and a resume with another number of ranks.
#   - SIGTERM at the start (each rank signalled as soon as it catches
#     SIGTERM, while it starts MPI, parses flags and reads data): every rank
#     stops after the first step, exit 130, one message, no MPI error
#   - SIGTERM while rank 0 writes the epoch-end checkpoint (its temporary file
#     exists): same, and the checkpoint is whole: bit-identical to a straight
#     run's of as many epochs, no temporary left behind
#   - a -np 2 checkpoint resumed with -np 1 and -np 3: the shards (2) come
#     from the checkpoint, and the run ends bit for bit as the straight -np 2
#     run (with -np 3 a note says rank 2 has no rows)
# Signals go to the ranks directly (mpirun forwards them late).
# usage: signals.sh MPIRUN VAE_MNIST CK_DIFF DATA_DIR
set -u
mpirun=$1
vae=$2
ck_diff=$3
data=$4
. "$(dirname "$0")/../lib.sh"
run="timeout 120 $mpirun --bind-to none --oversubscribe"

# ranks PID: the PIDs of the ranks of the mpirun started as PID (by timeout)
ranks() {
    launcher=$(pgrep -P "$1" | head -n 1)
    [ -n "$launcher" ] && pgrep -P "$launcher" | tr '\n' ' '
}

# catches_term PID: the process catches SIGTERM (bit 15 of SigCgt)
catches_term() {
    cgt=$(sed -n 's/^SigCgt:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null)
    [ -n "$cgt" ] && [ $((0x$cgt >> 14 & 1)) -eq 1 ]
}

# stopped WHAT STATUS ERRFILE: exit 130, one "interrupted" line naming the
# mpirun resume command, no MPI error
stopped() {
    n=$(grep -c '^vae_mnist: interrupted after step ' "$3")
    if [ "$2" -ne 130 ] || [ "$n" -ne 1 ] ||
        ! grep -q 'resume with: mpirun -np 2 ' "$3" ||
        grep -q 'MPI_ERR\|MPI_ABORT\|mpirun noticed' "$3"; then
        fail "$1: exit $2, stderr: $(cat "$3")"
        return 1
    fi
    echo "ok: $1: exit 130, one message: $(grep -o 'interrupted after step [0-9]* (epoch [0-9]*, batch [0-9]*)' "$3")"
}

# --- at the start ------------------------------------------------------------
start="--epochs 3 --max-batches 4 --batch 32 --hidden 16 --latent 2 --threads 1"
for who in all 1; do
    out="$tmp/start_$who"
    $run -np 2 "$vae" $start --data "$data" --out "$out" >/dev/null \
        2>"$out.err" &
    pid=$!
    sent=""
    # no cap of our own on the polls: the run's timeout ends the wait
    while [ -z "$sent" ] && kill -0 $pid 2>/dev/null; do
        r=$(ranks $pid)
        set -- $r
        if [ $# -eq 2 ]; then
            [ "$who" = all ] && targets="$1 $2" || targets=$2
            ready=1
            for t in $targets; do catches_term "$t" || ready=0; done
            if [ $ready -eq 1 ]; then
                kill -TERM $targets 2>/dev/null && sent=$targets
            fi
        fi
    done
    wait $pid
    st=$?
    if [ -z "$sent" ]; then
        fail "start ($who): no rank caught SIGTERM in time (exit $st)"
        continue
    fi
    if stopped "SIGTERM at the start to rank(s) $who" $st "$out.err"; then
        grep -q 'interrupted after step 1 (epoch 1, batch 1)' "$out.err" ||
            fail "start ($who): not stopped after the first step: $(cat "$out.err")"
        [ -s "$out/checkpoint.safetensors" ] ||
            fail "start ($who): no checkpoint saved"
    fi
done

# --- during the epoch-end checkpoint write -----------------------------------
# a model whose checkpoint (weights and Adam state, about 40 MB) takes a
# while to write; one step per epoch, more epochs than the test waits for
big="--max-batches 1 --batch 16 --hidden 2000 --latent 2 --threads 1"
for who in all 0; do
    out="$tmp/ck_$who"
    $run -np 2 "$vae" $big --epochs 1000 --data "$data" --out "$out" \
        >/dev/null 2>"$out.err" &
    pid=$!
    sent=""
    # polled until seen or the run ends (its timeout, 120 s, bounds it): a
    # cap on the polls (200,000, 1.5 s at 7 us a poll) ran out before a
    # loaded machine had even started the ranks
    while [ -z "$sent" ] && kill -0 $pid 2>/dev/null; do
        for f in "$out"/checkpoint.safetensors.tapegrad-tmp.*; do
            if [ -e "$f" ]; then
                r=$(ranks $pid)
                set -- $r
                [ "$who" = all ] && targets="$r" || targets=$1
                kill -TERM $targets 2>/dev/null && sent="$targets"
            fi
        done
    done
    wait $pid
    st=$?
    if [ -z "$sent" ]; then
        fail "checkpoint ($who): never saw the temporary file (exit $st)"
        continue
    fi
    stopped "SIGTERM to rank(s) $who while rank 0 writes the checkpoint" \
        $st "$out.err" || continue
    for f in "$out"/checkpoint.safetensors.tapegrad-tmp.*; do
        [ -e "$f" ] && fail "checkpoint ($who): $f left behind"
    done
    # whole: the checkpoint a straight run of as many epochs saves
    e=$(sed -n 's/.*interrupted after step [0-9]* (epoch \([0-9]*\), batch 0).*/\1/p' "$out.err")
    if [ -z "$e" ]; then
        fail "checkpoint ($who): not stopped at an epoch's end: $(cat "$out.err")"
        continue
    fi
    $run -np 2 "$vae" $big --epochs "$e" --data "$data" --out "$tmp/ref_$who" \
        >/dev/null 2>&1 || fail "reference run of $e epoch(s)"
    if cmp -s "$out/checkpoint.safetensors" "$tmp/ref_$who/checkpoint.safetensors"; then
        echo "ok: checkpoint ($who): whole, bit-identical to a straight $e-epoch run's"
    else
        fail "checkpoint ($who): differs from a straight $e-epoch run's: $(
            "$ck_diff" "$tmp/ref_$who/checkpoint.safetensors" \
                "$out/checkpoint.safetensors" 0 2>&1)"
    fi
done

# --- resumed with another number of ranks --------------------------------------
small="--epochs 2 --max-batches 6 --batch 101 --hidden 64 --latent 4 --threads 1"
one_epoch=$(echo "$small" | sed 's/--epochs 2/--epochs 1/')
$run -np 2 "$vae" $small --data "$data" --out "$tmp/straight" >/dev/null 2>&1 ||
    fail "straight -np 2 run"
$run -np 2 "$vae" $one_epoch --data "$data" --out "$tmp/first" >/dev/null 2>&1 ||
    fail "-np 2, first epoch"
for np in 1 3; do
    cp "$tmp/first/checkpoint.safetensors" "$tmp/from2_$np.safetensors"
    $run -np $np "$vae" $small --data "$data" --out "$tmp/np$np" \
        --resume "$tmp/from2_$np.safetensors" >"$tmp/np$np.log" 2>&1
    st=$?
    [ $st -eq 0 ] || fail "-np 2 checkpoint resumed with -np $np: exit $st: $(cat "$tmp/np$np.log")"
    if [ $np -eq 3 ] && ! grep -q "3 ranks but 2 shards" "$tmp/np$np.log"; then
        fail "-np 2 checkpoint resumed with -np 3: no note: $(cat "$tmp/np$np.log")"
    fi
    grep -q '^epoch 2 ' "$tmp/np$np.log" || fail "-np $np: epoch 2 not trained"
    if cmp -s "$tmp/straight/checkpoint.safetensors" \
        "$tmp/np$np/checkpoint.safetensors"; then
        echo "ok: -np 2 checkpoint resumed with -np $np = straight -np 2 run, byte for byte"
    else
        fail "resumed with -np $np vs straight -np 2: $("$ck_diff" \
            "$tmp/straight/checkpoint.safetensors" \
            "$tmp/np$np/checkpoint.safetensors" 0 2>&1)"
    fi
done

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
