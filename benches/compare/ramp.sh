#!/usr/bin/env bash
# The login-storm ramp: a separately started bank-server at its default settings, and the
# atm_swarm example ramping the number of ATMs against it. Every operation is a withdrawal from a
# card the ATM has just verified (one verification per operation), so PIN checks are the load.
# Prints each step's goodput and p99 and draws target/compare-results/ramp/ramp.svg.
#
#   RAMP=64,128,256,512,1024,2048,4096   ATMs per step
#   STEP=10s                             length of each step
#   ACCOUNTS=2000                        accounts (created through the server before the ramp)
#   SERVER_ARGS=""                       extra bank-server flags (none: its defaults, except the
#                                        per-peer connection cap, lifted because every ATM of the
#                                        ramp connects from this host)
#   RSS_MAX_MIB=8192                     the server is killed if its resident memory passes this
#
# The operator token reaches the server through its environment, never its arguments.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RAMP="${RAMP:-64,128,256,512,1024,2048,4096}"
STEP="${STEP:-10s}"
ACCOUNTS="${ACCOUNTS:-2000}"
SERVER_ARGS="${SERVER_ARGS:-}"
RSS_MAX_MIB="${RSS_MAX_MIB:-8192}"
OUT="$RESULTS_DIR/ramp"
mkdir -p "$OUT"

build_release
SERVER="$(target_dir)/release/bank-server"
SWARM="$(target_dir)/release/examples/atm_swarm"
DATA_DIR="$(mktemp -d)"
PORT="$(free_port)"
BANK_OPERATOR_TOKEN="$(operator_token)"
export BANK_OPERATOR_TOKEN

# shellcheck disable=SC2086
"$SERVER" --listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" --connections-per-peer-max 100000 \
    $SERVER_ARGS 2>"$OUT/server.stderr" &
SERVER_PID=$!
cleanup() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$DATA_DIR" "$DATA_DIR.pin-key"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

# The server's peak resident memory, and a guard against exhausting the machine.
(
    peak=0
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        rss="$(rss_kib "$SERVER_PID" 2>/dev/null || echo 0)"
        [ "${rss:-0}" -gt "$peak" ] && peak="$rss" && echo "$peak" >"$OUT/server_rss_peak_kib"
        if [ "${rss:-0}" -gt $((RSS_MAX_MIB * 1024)) ]; then
            log "server resident memory ${rss} KiB passed ${RSS_MAX_MIB} MiB: killing it"
            kill -9 "$SERVER_PID"
        fi
        sleep 0.2
    done
) &

log "ramp $RAMP, $STEP per step, $ACCOUNTS accounts, server flags: ${SERVER_ARGS:-none}"
status=0
"$SWARM" --bench --server "127.0.0.1:$PORT" --accounts "$ACCOUNTS" --mix withdraw=1 \
    --initial-balance 1000000000000000 --ramp "$RAMP" --step-duration "$STEP" \
    --json-out "$OUT/report.json" --plot-dir "$OUT" >"$OUT/stdout" 2>"$OUT/stderr" || status=$?
cat "$OUT/stdout"
log "swarm exit status $status; server peak resident memory $(cat "$OUT/server_rss_peak_kib" 2>/dev/null || echo '?') KiB"
exit "$status"
