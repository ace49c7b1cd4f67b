#!/usr/bin/env bash
# actor-bank end to end: for every run, a separately started bank-server (the release binary, its
# own process, at its default settings: only a temporary data directory, the operator token from
# the environment and, for the ISO 8583 runs, --iso8583-listen with --iso8583-clear-pin-blocks),
# and the atm_swarm example in --bench mode (no faults) pointed at it with --server: $CLIENTS
# ATMs with one request in flight each, for $DURATION seconds. The server is stopped (SIGTERM)
# and its data directory removed after each run. Withdrawals only:
#   hot:     --accounts 1
#   spread:  --accounts $SPREAD_ACCOUNTS (default 100000), each operation a card verification and
#            a withdrawal on a card drawn at random (--ops-per-card 1); the time to create the
#            accounts through the server is measured too (from the start of the swarm to its
#            first second of load).
#   spread4: the same, 4 withdrawals per verified card (--ops-per-card 4)
# Transfers only (--mix transfer=1: each to another account drawn at random; the audit waits for
# the server to deliver every one):
#   transfer_hot:    --accounts 2 (a hot pair: every transfer goes from one to the other)
#   transfer_spread: --accounts $SPREAD_ACCOUNTS, random pairs
# The same withdrawals through the ISO 8583 door (--front-door iso8583: each ATM a terminal on its
# own connection, every 0200 carrying its PIN block in clear; the accounts are still created, and
# audited, over the bank's protocol):
#   iso_hot:    --accounts 1
#   iso_spread: --accounts $SPREAD_ACCOUNTS
# When a bincode run and its ISO 8583 twin both ran, the two throughputs and their ratio are
# printed at the end (goal: ISO 8583 at least 80 % of bincode).
#
# Each run is, by hand:
#   BANK_OPERATOR_TOKEN=T target/release/bank-server --listen 127.0.0.1:0 --data-dir DIR &
#   # reads "bank-server listening on ADDR" (and "bank-server iso8583 on ADDR") from its output
#   BANK_OPERATOR_TOKEN=T target/release/examples/atm_swarm --bench --server ADDR --atms 64 \
#       --accounts 1 --mix withdraw=1 --initial-balance 1000000000000000 --duration 10s \
#       --json-out FILE
# (the built binaries, so cargo's own start-up is not timed).
#
# ACTOR_BANK_RUNS="hot spread spread4 transfer_hot transfer_spread iso_hot iso_spread" picks the
# runs (default: all seven). BANK_SERVER_ARGS adds bank-server flags (default: none).
# Writes $RESULTS_DIR/actor_bank_NAME.json for each (summaries; the swarm's full reports are kept
# next to them as *_report.json, the server's output as *_server.stdout / *_server.stderr).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPREAD_ACCOUNTS="${SPREAD_ACCOUNTS:-100000}"
BANK_SERVER_ARGS="${BANK_SERVER_ARGS:-}"
ALL_RUNS="hot spread spread4 transfer_hot transfer_spread iso_hot iso_spread"
RUNS="${ACTOR_BANK_RUNS:-$ALL_RUNS}"
# Seconds bank-server may take to print its ready line.
SERVER_READY_SECS="${SERVER_READY_SECS:-120}"
build_release
SERVER="$(target_dir)/release/bank-server"
SWARM="$(target_dir)/release/examples/atm_swarm"
[ -x "$SERVER" ] || die "$SERVER was not built"
[ -x "$SWARM" ] || die "$SWARM was not built"
# The operator token reaches the server and the swarm through their environment, never their
# arguments (where every local user could read it).
BANK_OPERATOR_TOKEN="${BANK_OPERATOR_TOKEN:-$(operator_token)}"
export BANK_OPERATOR_TOKEN

work="$(mktemp -d /tmp/compare-actor-bank.XXXXXX)"
server_pid=""
server_address=""
iso_address=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT

# ready_address FILE PREFIX: the address after PREFIX on the first line of FILE that has it.
ready_address() {
    sed -n "s/^$2 //p" "$1" 2>/dev/null | head -n 1
}

# start_server NAME DOOR: starts bank-server on a fresh data directory and waits for its ready
# line; sets server_pid, server_address and (for the ISO 8583 door) iso_address.
start_server() {
    local name="$1"
    local door="$2"
    local data="$work/$name"
    local stdout="$RESULTS_DIR/actor_bank_${name}_server.stdout"
    local stderr="$RESULTS_DIR/actor_bank_${name}_server.stderr"
    local iso_flags=()
    if [ "$door" = iso8583 ]; then
        iso_flags=(--iso8583-listen 127.0.0.1:0 --iso8583-clear-pin-blocks)
    fi
    # shellcheck disable=SC2086
    "$SERVER" --listen 127.0.0.1:0 --data-dir "$data" "${iso_flags[@]}" $BANK_SERVER_ARGS \
        >"$stdout" 2>"$stderr" &
    server_pid=$!
    server_address=""
    iso_address=""
    local waited=0
    while [ -z "$server_address" ]; do
        kill -0 "$server_pid" 2>/dev/null || die "bank-server exited before listening (see $stderr)"
        [ "$waited" -lt $((SERVER_READY_SECS * 20)) ] || die "bank-server did not listen within ${SERVER_READY_SECS}s"
        sleep 0.05
        waited=$((waited + 1))
        server_address="$(ready_address "$stdout" "bank-server listening on")"
    done
    if [ "$door" = iso8583 ]; then
        iso_address="$(ready_address "$stdout" "bank-server iso8583 on")"
        [ -n "$iso_address" ] || die "bank-server did not open its ISO 8583 listener (see $stdout)"
    fi
    log "actor-bank: bank-server (pid $server_pid) listening on $server_address${iso_address:+, ISO 8583 on $iso_address}"
}

# run_swarm NAME ACCOUNTS MIX OPS_PER_CARD [FRONT_DOOR]
run_swarm() {
    local name="$1"
    local accounts="$2"
    local mix="$3"
    local per_card="$4"
    local door="${5:-bincode}"
    local report="$RESULTS_DIR/actor_bank_${name}_report.json"
    local stderr="$RESULTS_DIR/actor_bank_${name}.stderr"
    start_server "$name" "$door"
    local door_flags=()
    if [ "$door" = iso8583 ]; then
        door_flags=(--iso8583-address "$iso_address" --iso8583-clear-pin-blocks)
    fi
    log "actor-bank: $name, $CLIENTS ATMs, $accounts accounts, ${DURATION}s of $mix ($per_card per card) through $door"
    local started
    started="$(date +%s.%N)"
    # Progress goes to standard error once a second (not a terminal); stamp each line.
    local status=0
    "$SWARM" --bench --server "$server_address" --front-door "$door" "${door_flags[@]}" \
        --atms "$CLIENTS" --accounts "$accounts" --mix "$mix" --ops-per-card "$per_card" \
        --initial-balance 1000000000000000 \
        --duration "${DURATION}s" --json-out "$report" \
        > "$RESULTS_DIR/actor_bank_${name}.stdout" \
        2> >(while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done >"$stderr") || status=$?
    local finished
    finished="$(date +%s.%N)"
    local server_kib
    server_kib="$(rss_kib "$server_pid" 2>/dev/null || echo 0)"
    stop_server
    rm -rf "${work:?}/$name" "$work/$name.pin-key"
    sleep 0.2
    [ "$status" -eq 0 ] || log "actor-bank: the swarm exited with $status (see $stderr)"
    [ -s "$report" ] || die "actor-bank: $name wrote no report (see $stderr)"
    python3 - "$name" "$report" "$stderr" "$started" "$finished" "$accounts" "$CLIENTS" "$DURATION" "$mix" "$door" "$per_card" "${server_kib:-0}" \
        >"$RESULTS_DIR/actor_bank_$name.json" <<'EOF'
import json, sys
name, report_path, stderr_path, started, finished, accounts, clients, duration, mix, door, per_card, server_kib = sys.argv[1:13]
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
    "system": f"actor-bank (bank-server at its defaults; atm_swarm --bench --front-door {door} --mix {mix} --ops-per-card {per_card}, {accounts} account{'s' if int(accounts) != 1 else ''})",
    "server": "separate process",
    "mix": mix,
    "front_door": door,
    "ops_per_card": int(per_card),
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
    "server_rss_mib_after_load": round(int(server_kib) / 1024, 1),
}))
EOF
    log "actor-bank: $(cat "$RESULTS_DIR/actor_bank_$name.json")"
}

for run in $RUNS; do
    case "$run" in
        hot) run_swarm hot 1 withdraw=1 1 ;;
        spread) run_swarm spread "$SPREAD_ACCOUNTS" withdraw=1 1 ;;
        spread4) run_swarm spread4 "$SPREAD_ACCOUNTS" withdraw=1 4 ;;
        transfer_hot) run_swarm transfer_hot 2 transfer=1 1 ;;
        transfer_spread) run_swarm transfer_spread "$SPREAD_ACCOUNTS" transfer=1 1 ;;
        iso_hot) run_swarm iso_hot 1 withdraw=1 1 iso8583 ;;
        iso_spread) run_swarm iso_spread "$SPREAD_ACCOUNTS" withdraw=1 1 iso8583 ;;
        *) die "unknown run $run ($ALL_RUNS)" ;;
    esac
done

# The ISO 8583 door beside the bincode door: each pair that ran in this invocation.
# shellcheck disable=SC2086
python3 - "$RESULTS_DIR" $RUNS <<'EOF'
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
