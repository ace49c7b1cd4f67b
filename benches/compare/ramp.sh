#!/usr/bin/env bash
# The login-storm ramp: a separately started bank-server at its default settings, and the
# atm_swarm example ramping the number of ATMs against it. Every operation is a withdrawal from a
# card the ATM has just verified (one verification per operation), so PIN checks are the load.
# Prints each step's goodput and p99, draws $RESULTS_DIR/ramp/ramp.svg and writes the summary
# $RESULTS_DIR/ramp.json: steps [{atms, goodput_ops_per_sec, p99_us}], peak_goodput (the best
# step's goodput), lowest_after_peak_ratio (the worst step after the peak over the peak; 1.0 when
# the peak is the last step: goodput that holds up under overload stays near 1) and violations.
# run_all.sh runs it in a full run too.
#
#   RAMP=64,128,256,512,1024,2048,4096   ATMs per step
#   STEP=10s                             length of each step
#   ACCOUNTS=2000                        accounts (created through the server before the ramp)
#   SERVER_ARGS=""                       extra bank-server flags (none: its defaults, except the
#                                        per-peer connection cap, lifted because every ATM of the
#                                        ramp connects from this host)
#   RSS_MAX_MIB=8192                     the server is killed if its resident memory passes this
#
# The operator token reaches the server through its environment, never its arguments. The
# server is started and stopped by common.sh (start_bank_server), its output in ramp/server.*.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RAMP="${RAMP:-64,128,256,512,1024,2048,4096}"
STEP="${STEP:-10s}"
ACCOUNTS="${ACCOUNTS:-2000}"
SERVER_ARGS="${SERVER_ARGS:-}"
RSS_MAX_MIB="${RSS_MAX_MIB:-8192}"
OUT="$RESULTS_DIR/ramp"
mkdir -p "$OUT"

build_release
SWARM="$(target_dir)/release/examples/atm_swarm"
WORK="$(mktemp -d /tmp/compare-ramp.XXXXXX)"
remove_at_exit "$WORK"
BANK_OPERATOR_TOKEN="$(operator_token)"
export BANK_OPERATOR_TOKEN

# shellcheck disable=SC2086
start_bank_server "$OUT/server" --data-dir "$WORK/data" --connections-per-peer-max 100000 \
    $SERVER_ARGS
SERVER_PID="$BANK_SERVER_PID"

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
"$SWARM" --bench --server "$BANK_SERVER_ADDRESS" --accounts "$ACCOUNTS" --mix withdraw=1 \
    --initial-balance 1000000000000000 --ramp "$RAMP" --step-duration "$STEP" \
    --json-out "$OUT/report.json" --plot-dir "$OUT" >"$OUT/stdout" 2>"$OUT/stderr" || status=$?
cat "$OUT/stdout"
log "swarm exit status $status; server peak resident memory $(cat "$OUT/server_rss_peak_kib" 2>/dev/null || echo '?') KiB"
[ -s "$OUT/report.json" ] || die "ramp: the swarm wrote no report (see $OUT/stderr)"
python3 - "$OUT/report.json" "$status" "$(cat "$OUT/server_rss_peak_kib" 2>/dev/null || echo 0)" \
    >"$RESULTS_DIR/ramp.json" <<'EOF'
import json, sys
report_path, status, peak_kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(report_path) as file:
    report = json.load(file)
steps = [
    {"atms": step["atms"], "goodput_ops_per_sec": round(step["goodput_per_sec"], 1),
     "p99_us": step["latency_us"]["p99"]}
    for step in report["ramp"]
]
goodputs = [step["goodput_ops_per_sec"] for step in steps]
peak = max(goodputs, default=0.0)
at_peak = goodputs.index(peak) if goodputs else 0
after = goodputs[at_peak + 1:]
print(json.dumps({
    "name": "ramp",
    "steps": steps,
    "peak_goodput": peak,
    "peak_atms": steps[at_peak]["atms"] if steps else None,
    "lowest_after_peak_ratio": round(min(after) / peak, 3) if after and peak else 1.0,
    "ops_acked": report["ops_acked"],
    "violations": report["violations"],
    "swarm_exit": status,
    "server_rss_peak_mib": round(peak_kib / 1024, 1),
}))
EOF
log "ramp: $(cat "$RESULTS_DIR/ramp.json")"
exit "$status"
