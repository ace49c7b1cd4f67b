#!/usr/bin/env bash
# actor-bank end to end: the atm_swarm example in --bench mode (no faults) against an in-process
# server on a temporary data directory, $CLIENTS ATMs with one request in flight each, for
# $DURATION seconds. Withdrawals only:
#   hot:    --accounts 1
#   spread: --accounts $SPREAD_ACCOUNTS (default 100000); the time to create the accounts is
#           measured too (from the start of the process to the first second of load).
# Transfers only (--mix transfer=1: each to another account drawn at random; the audit waits for
# the server to deliver every one):
#   transfer_hot:    --accounts 2 (a hot pair: every transfer goes from one to the other)
#   transfer_spread: --accounts $SPREAD_ACCOUNTS, random pairs
# The same withdrawals through the ISO 8583 door (--front-door iso8583: each ATM a terminal on its
# own connection, every 0200 carrying its PIN block; the accounts are still created, and audited,
# over the bank's protocol):
#   iso_hot:    --accounts 1
#   iso_spread: --accounts $SPREAD_ACCOUNTS
# When a bincode run and its ISO 8583 twin both ran, the two throughputs and their ratio are
# printed at the end (goal: ISO 8583 at least 80 % of bincode).
#
# Equivalent to
#   cargo run --release --example atm_swarm -- --bench --atms 64 --accounts 1 --mix withdraw=1 \
#       --initial-balance 1000000000000000 \
#       --duration 10s --json-out FILE
# but runs the built binary, so cargo's own start-up is not timed.
#
# ACTOR_BANK_RUNS="hot spread transfer_hot transfer_spread iso_hot iso_spread" picks the runs
# (default: all six).
# Writes $RESULTS_DIR/actor_bank_NAME.json for each (summaries; the swarm's full reports are kept
# next to them as *_report.json).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPREAD_ACCOUNTS="${SPREAD_ACCOUNTS:-100000}"
build_release
SWARM="$(target_dir)/release/examples/atm_swarm"
[ -x "$SWARM" ] || die "$SWARM was not built"

# run_swarm NAME ACCOUNTS MIX [FRONT_DOOR]
run_swarm() {
    local name="$1"
    local accounts="$2"
    local mix="$3"
    local door="${4:-bincode}"
    local report="$RESULTS_DIR/actor_bank_${name}_report.json"
    local stderr="$RESULTS_DIR/actor_bank_${name}.stderr"
    log "actor-bank: $name, $CLIENTS ATMs, $accounts accounts, ${DURATION}s of $mix through $door"
    local started
    started="$(date +%s.%N)"
    # Progress goes to standard error once a second (not a terminal); stamp each line.
    local status=0
    "$SWARM" --bench --front-door "$door" --atms "$CLIENTS" --accounts "$accounts" --mix "$mix" \
        --initial-balance 1000000000000000 \
        --duration "${DURATION}s" --json-out "$report" \
        > "$RESULTS_DIR/actor_bank_${name}.stdout" \
        2> >(while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done >"$stderr") || status=$?
    local finished
    finished="$(date +%s.%N)"
    sleep 0.2
    [ "$status" -eq 0 ] || log "actor-bank: the swarm exited with $status (see $stderr)"
    python3 - "$name" "$report" "$stderr" "$started" "$finished" "$accounts" "$CLIENTS" "$DURATION" "$mix" "$door" \
        >"$RESULTS_DIR/actor_bank_$name.json" <<'EOF'
import json, sys
name, report_path, stderr_path, started, finished, accounts, clients, duration, mix, door = sys.argv[1:11]
started, finished = float(started), float(finished)
with open(report_path) as file:
    report = json.load(file)
first_second = None
with open(stderr_path) as lines:
    for line in lines:
        stamp, _, text = line.partition(" ")
        if "ops acked" in text:
            first_second = float(stamp)
            break
# The first progress line comes one second into the load; before that: start-up + accounts.
setup = None if first_second is None else round(first_second - 1.0 - started, 2)
load_ended = None if first_second is None else first_second - 1.0 + report["duration_secs"]
print(json.dumps({
    "name": f"actor_bank_{name}",
    "system": f"actor-bank (atm_swarm --bench --front-door {door} --mix {mix}, {accounts} account{'s' if int(accounts) != 1 else ''})",
    "mix": mix,
    "front_door": door,
    "clients": int(clients),
    "accounts": int(accounts),
    "duration_secs": report["duration_secs"],
    "ops_acked": report["ops_acked"],
    "ops_per_sec": report["ops_per_sec"],
    "latency_us": report["latency_us"],
    "statuses": report["statuses"],
    "violations": report["violations"],
    "setup_secs": setup,
    "accounts_per_sec": None if not setup else round(int(accounts) / setup),
    "audit_secs": None if load_ended is None else round(finished - load_ended, 2),
}))
EOF
    log "actor-bank: $(cat "$RESULTS_DIR/actor_bank_$name.json")"
}

for run in ${ACTOR_BANK_RUNS:-hot spread transfer_hot transfer_spread iso_hot iso_spread}; do
    case "$run" in
        hot) run_swarm hot 1 withdraw=1 ;;
        spread) run_swarm spread "$SPREAD_ACCOUNTS" withdraw=1 ;;
        transfer_hot) run_swarm transfer_hot 2 transfer=1 ;;
        transfer_spread) run_swarm transfer_spread "$SPREAD_ACCOUNTS" transfer=1 ;;
        iso_hot) run_swarm iso_hot 1 withdraw=1 iso8583 ;;
        iso_spread) run_swarm iso_spread "$SPREAD_ACCOUNTS" withdraw=1 iso8583 ;;
        *) die "unknown run $run (hot, spread, transfer_hot, transfer_spread, iso_hot, iso_spread)" ;;
    esac
done

# The ISO 8583 door beside the bincode door: each pair that ran in this invocation.
python3 - "$RESULTS_DIR" ${ACTOR_BANK_RUNS:-hot spread transfer_hot transfer_spread iso_hot iso_spread} <<'EOF'
import json, os, sys
results, runs = sys.argv[1], set(sys.argv[2:])
for workload in ("hot", "spread"):
    if workload not in runs or f"iso_{workload}" not in runs:
        continue
    def load(name):
        with open(os.path.join(results, f"actor_bank_{name}.json")) as file:
            return json.load(file)
    bincode, iso = load(workload), load(f"iso_{workload}")
    ratio = iso["ops_per_sec"] / bincode["ops_per_sec"] if bincode["ops_per_sec"] else 0.0
    verdict = "met" if ratio >= 0.8 else "NOT met"
    print(f"{workload}: bincode {bincode['ops_per_sec']:.0f} ops/s (p99 {bincode['latency_us']['p99']} us), "
          f"iso8583 {iso['ops_per_sec']:.0f} ops/s (p99 {iso['latency_us']['p99']} us), "
          f"iso8583 / bincode {ratio:.2f} (goal 0.80: {verdict}); "
          f"violations {bincode['violations']} / {iso['violations']}")
EOF
