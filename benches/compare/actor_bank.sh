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
#   spread_pin: as spread, but each withdrawal one ForCard request carrying the card and its PIN
#            (--pin-with-each), instead of a Verify and then the withdrawal: one round trip per
#            operation, as the Redis peer's one Lua call per operation
# Transfers only (--mix transfer=1: each to another account drawn at random; the audit waits for
# the server to deliver every one):
#   transfer_hot:    --accounts 2 (a hot pair: every transfer goes from one to the other)
#   transfer_spread: --accounts $SPREAD_ACCOUNTS, random pairs
# The same withdrawals through the ISO 8583 door (--front-door iso8583: each ATM a terminal on its
# own connection, every 0200 carrying its PIN block in clear; the accounts are still created, and
# audited, over the bank's protocol):
#   iso_hot:    --accounts 1
#   iso_spread: --accounts $SPREAD_ACCOUNTS
# Switch mode (--connections $SWITCH_CONNECTIONS --in-flight $SWITCH_IN_FLIGHT, default 8 x 64:
# 512 terminals, up to 64 requests in flight on each connection, instead of $CLIENTS ATMs with
# one each), withdrawals over $SPREAD_ACCOUNTS accounts, one per verified card:
#   switch:     the bincode door: a line verifies a card drawn at random, then each of its
#               terminals withdraws from it (all pipelined), then the line draws the next card
#               (the bank's protocol has one verified card per connection: src/swarm/switch.rs)
#   iso_switch: the ISO 8583 door: each line one acquirer connection signed on for all its
#               terminals, each 0200 a withdrawal on a card drawn at random carrying its own PIN
#               block (so every one is a PIN check and a withdrawal), matched by terminal + STAN
# When a bincode run and its ISO 8583 twin both ran, the two throughputs and their ratio are
# printed at the end (goal: ISO 8583 at least 80 % of bincode): hot, spread and switch.
#
# Each run is, by hand:
#   BANK_OPERATOR_TOKEN=T target/release/bank-server --listen 127.0.0.1:0 --data-dir DIR &
#   # reads "bank-server listening on ADDR" (and "bank-server iso8583 on ADDR") from its output
#   BANK_OPERATOR_TOKEN=T target/release/examples/atm_swarm --bench --server ADDR --atms 64 \
#       --accounts 1 --mix withdraw=1 --initial-balance 1000000000000000 --duration 10s \
#       --json-out FILE
# (the built binaries, so cargo's own start-up is not timed).
#
# ACTOR_BANK_RUNS="hot spread spread4 spread_pin switch transfer_hot transfer_spread iso_hot
# iso_switch iso_spread" picks the runs (default: all ten). BANK_SERVER_ARGS adds bank-server flags
# (default: none). The servers are started and stopped by common.sh (start_bank_server).
# Writes $RESULTS_DIR/actor_bank_NAME.json for each (summaries; the swarm's full reports are kept
# next to them as *_report.json, the server's output as *_server.stdout / *_server.stderr).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPREAD_ACCOUNTS="${SPREAD_ACCOUNTS:-100000}"
BANK_SERVER_ARGS="${BANK_SERVER_ARGS:-}"
ALL_RUNS="hot spread spread4 spread_pin switch transfer_hot transfer_spread iso_hot iso_switch iso_spread"
RUNS="${ACTOR_BANK_RUNS:-$ALL_RUNS}"
# Switch mode: connections, and requests in flight on each.
SWITCH_CONNECTIONS="${SWITCH_CONNECTIONS:-8}"
SWITCH_IN_FLIGHT="${SWITCH_IN_FLIGHT:-64}"
build_release
SWARM="$(target_dir)/release/examples/atm_swarm"
[ -x "$SWARM" ] || die "$SWARM was not built"
# The operator token reaches the server and the swarm through their environment, never their
# arguments (where every local user could read it).
BANK_OPERATOR_TOKEN="${BANK_OPERATOR_TOKEN:-$(operator_token)}"
export BANK_OPERATOR_TOKEN

work="$(mktemp -d /tmp/compare-actor-bank.XXXXXX)"
remove_at_exit "$work"

# start_server NAME DOOR: a bank-server at its defaults on a fresh data directory (common.sh's
# start_bank_server), with the ISO 8583 door for DOOR iso8583.
start_server() {
    local name="$1" door="$2" iso_flags=()
    if [ "$door" = iso8583 ]; then
        iso_flags=(--iso8583-listen 127.0.0.1:0 --iso8583-clear-pin-blocks)
    fi
    # shellcheck disable=SC2086
    start_bank_server "$RESULTS_DIR/actor_bank_${name}_server" --data-dir "$work/$name" \
        "${iso_flags[@]}" $BANK_SERVER_ARGS
    if [ "$door" = iso8583 ] && [ -z "$BANK_SERVER_ISO_ADDRESS" ]; then
        die "bank-server did not open its ISO 8583 listener (see $RESULTS_DIR/actor_bank_${name}_server.stdout)"
    fi
    log "actor-bank: bank-server (pid $BANK_SERVER_PID) listening on $BANK_SERVER_ADDRESS${BANK_SERVER_ISO_ADDRESS:+, ISO 8583 on $BANK_SERVER_ISO_ADDRESS}"
}

# run_swarm NAME ACCOUNTS MIX OPS_PER_CARD [FRONT_DOOR [MODE [pin-with-each]]]; MODE is atms
# (the default) or switch.
run_swarm() {
    local name="$1"
    local accounts="$2"
    local mix="$3"
    local per_card="$4"
    local door="${5:-bincode}"
    local mode="${6:-atms}"
    local pin_flags=() pin_with_each=0
    if [ "${7:-}" = pin-with-each ]; then
        pin_flags=(--pin-with-each)
        pin_with_each=1
    fi
    local report="$RESULTS_DIR/actor_bank_${name}_report.json"
    local stderr="$RESULTS_DIR/actor_bank_${name}.stderr"
    start_server "$name" "$door"
    local door_flags=() load_flags=(--atms "$CLIENTS") load="$CLIENTS ATMs"
    if [ "$door" = iso8583 ]; then
        door_flags=(--iso8583-address "$BANK_SERVER_ISO_ADDRESS" --iso8583-clear-pin-blocks)
    fi
    if [ "$mode" = switch ]; then
        load_flags=(--connections "$SWITCH_CONNECTIONS" --in-flight "$SWITCH_IN_FLIGHT")
        load="$SWITCH_CONNECTIONS connections x $SWITCH_IN_FLIGHT in flight"
    fi
    log "actor-bank: $name, $load, $accounts accounts, ${DURATION}s of $mix ($per_card per card) through $door"
    local started
    started="$(date +%s.%N)"
    # Progress goes to standard error once a second (not a terminal); stamp each line.
    local status=0
    "$SWARM" --bench --server "$BANK_SERVER_ADDRESS" --front-door "$door" "${door_flags[@]}" \
        "${load_flags[@]}" "${pin_flags[@]}" --accounts "$accounts" --mix "$mix" --ops-per-card "$per_card" \
        --initial-balance 1000000000000000 \
        --duration "${DURATION}s" --json-out "$report" \
        > "$RESULTS_DIR/actor_bank_${name}.stdout" \
        2> >(while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done >"$stderr") || status=$?
    local finished
    finished="$(date +%s.%N)"
    local server_kib
    server_kib="$(rss_kib "$BANK_SERVER_PID" 2>/dev/null || echo 0)"
    stop_bank_server "$BANK_SERVER_PID"
    rm -rf "${work:?}/$name" "$work/$name.pin-key"
    sleep 0.2
    [ "$status" -eq 0 ] || log "actor-bank: the swarm exited with $status (see $stderr)"
    [ -s "$report" ] || die "actor-bank: $name wrote no report (see $stderr)"
    local clients="$CLIENTS"
    if [ "$mode" = switch ]; then
        clients=$((SWITCH_CONNECTIONS * SWITCH_IN_FLIGHT))
    fi
    python3 - "$name" "$report" "$stderr" "$started" "$finished" "$accounts" "$clients" "$DURATION" "$mix" "$door" "$per_card" "${server_kib:-0}" "$pin_with_each" \
        >"$RESULTS_DIR/actor_bank_$name.json" <<'EOF'
import json, sys
name, report_path, stderr_path, started, finished, accounts, clients, duration, mix, door, per_card, server_kib, pin_with_each = sys.argv[1:14]
pin_with_each = pin_with_each == "1"
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
switch = report.get("switch")
load = "" if not switch else f" --connections {switch['connections']} --in-flight {switch['in_flight']}"
print(json.dumps({
    "name": f"actor_bank_{name}",
    "system": f"actor-bank (bank-server at its defaults; atm_swarm --bench --front-door {door}{load}{' --pin-with-each' if pin_with_each else ''} --mix {mix} --ops-per-card {per_card}, {accounts} account{'s' if int(accounts) != 1 else ''})",
    "server": "separate process",
    "mix": mix,
    "front_door": door,
    "ops_per_card": int(per_card),
    "pin_with_each": pin_with_each,
    "logins": report.get("logins"),
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
    **({"switch": switch} if switch else {}),
}))
EOF
    log "actor-bank: $(cat "$RESULTS_DIR/actor_bank_$name.json")"
}

for run in $RUNS; do
    case "$run" in
        hot) run_swarm hot 1 withdraw=1 1 ;;
        spread) run_swarm spread "$SPREAD_ACCOUNTS" withdraw=1 1 ;;
        spread4) run_swarm spread4 "$SPREAD_ACCOUNTS" withdraw=1 4 ;;
        spread_pin) run_swarm spread_pin "$SPREAD_ACCOUNTS" withdraw=1 1 bincode atms pin-with-each ;;
        switch) run_swarm switch "$SPREAD_ACCOUNTS" withdraw=1 1 bincode switch ;;
        transfer_hot) run_swarm transfer_hot 2 transfer=1 1 ;;
        transfer_spread) run_swarm transfer_spread "$SPREAD_ACCOUNTS" transfer=1 1 ;;
        iso_hot) run_swarm iso_hot 1 withdraw=1 1 iso8583 ;;
        iso_spread) run_swarm iso_spread "$SPREAD_ACCOUNTS" withdraw=1 1 iso8583 ;;
        iso_switch) run_swarm iso_switch "$SPREAD_ACCOUNTS" withdraw=1 1 iso8583 switch ;;
        *) die "unknown run $run ($ALL_RUNS)" ;;
    esac
done

# The ISO 8583 door beside the bincode door: each pair that ran in this invocation.
# shellcheck disable=SC2086
python3 - "$RESULTS_DIR" $RUNS <<'EOF'
import json, os, sys
results, runs = sys.argv[1], set(sys.argv[2:])
for workload in ("hot", "spread", "switch"):
    if workload not in runs or f"iso_{workload}" not in runs:
        continue
    def load(name):
        with open(os.path.join(results, f"actor_bank_{name}.json")) as file:
            return json.load(file)
    bincode, iso = load(workload), load(f"iso_{workload}")
    ratio = iso["ops_per_sec"] / bincode["ops_per_sec"] if bincode["ops_per_sec"] else 0.0
    print(f"{workload}: bincode {bincode['ops_per_sec']:.0f} ops/s (p99 {bincode['latency_us']['p99']} us), "
          f"iso8583 {iso['ops_per_sec']:.0f} ops/s (p99 {iso['latency_us']['p99']} us), "
          f"iso8583 / bincode {ratio:.2f} (goal 0.80, judged by report.py at the goal's size); "
          f"violations {bincode['violations']} / {iso['violations']}")
EOF
