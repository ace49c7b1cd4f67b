#!/usr/bin/env bash
# actor-bank on PostgreSQL storage beside the file journal, in one run: a throwaway PostgreSQL
# (synchronous_commit on, as postgres.sh), `bank-server init-cluster`, one node
# (`bank-server --storage postgres://… --node-id 1`) at its defaults, and the atm_swarm in
# --bench mode against it ($CLIENTS ATMs, one request in flight each, $DURATION seconds of
# withdrawals): hot (one account) and spread ($SPREAD_ACCOUNTS accounts, default 100000; workload
# 2 of docs/BENCHMARKS.md: each operation a card verification and a withdrawal on a card drawn
# at random, --ops-per-card 1). Then
# the same two loads against a node on the file journal. PostgreSQL's own single-statement
# benchmark is postgres.sh (run_all.sh runs both); the goal is PostgreSQL storage at ten times
# that hot-account number or more, since one transaction carries a whole batch of requests.
#
# Then three nodes: nodes 2 and 3 join, the same spread load (workload 2) runs over the three,
# and one of them is
# killed with SIGKILL under load: the time from the kill to the first withdrawal the others
# answer on one of its accounts is the failover time, and the swarm's throughput over time
# through the kill is plotted (cluster_failover/throughput.svg).
#
# Writes $RESULTS_DIR/cluster_{postgres,files}_{hot,spread}.json, cluster_three_nodes_spread.json,
# cluster_failover.json and cluster_failover/. The nodes are started by common.sh
# (start_bank_server, each node's output in $RESULTS_DIR/cluster_node_NAME.std{out,err}) and
# killed (SIGKILL) at the end.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_packages psql postgresql postgresql-client
PG_BIN="$(postgres_bin_dir)"
SPREAD_ACCOUNTS="${SPREAD_ACCOUNTS:-100000}"
build_release
(cd "$REPO_DIR" && cargo build --release --quiet --bin atm)
SWARM="$(target_dir)/release/examples/atm_swarm"
TOKEN="$(operator_token)"
export BANK_OPERATOR_TOKEN="$TOKEN"

if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "no postgres user to run the server as"
    as_owner() { runuser -u postgres -- "$@"; }
else
    as_owner() { "$@"; }
fi

work="$(mktemp -d /tmp/compare-cluster.XXXXXX)"
remove_at_exit "$work"
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
port="$(free_port)"
pg_started=""
# The nodes are killed, not stopped: nothing of theirs is kept.
SERVER_EXIT_SIGNAL=KILL
stop_postgres() {
    if [ -n "$pg_started" ]; then
        as_owner "$PG_BIN/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
    fi
}
cleanup_hooks+=(stop_postgres)

log "cluster: initdb in $work"
as_owner "$PG_BIN/initdb" -D "$work/data" -U bank --auth=trust --no-instructions >/dev/null
cat >>"$work/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
max_connections = 100
shared_buffers = 512MB
synchronous_commit = on
fsync = on
wal_sync_method = fdatasync
max_wal_size = 4GB
EOF
as_owner "$PG_BIN/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
pg_started=1
psql -h 127.0.0.1 -p "$port" -U bank -d postgres -q -c "CREATE DATABASE bank"
URL="postgres://bank@127.0.0.1:$port/bank"
"$(target_dir)/release/bank-server" init-cluster --storage "$URL" --partitions 16 >/dev/null

# start_node NAME ARGS...: starts a node with ARGS (common.sh's start_bank_server); sets
# NODE_PID and NODE_ADDRESS once it serves (its ready line).
start_node() {
    local name="$1"
    shift
    start_bank_server "$RESULTS_DIR/cluster_node_$name" --pin-key-file "$work/pin-key" "$@"
    NODE_PID="$BANK_SERVER_PID"
    NODE_ADDRESS="$BANK_SERVER_ADDRESS"
}

# measure NAME ACCOUNTS ADDRESS SEED: the swarm's bench run against ADDRESS. Runs against the same
# server take different seeds: the same seed would draw the same cards and client ids again, and
# the second run would find the first one's account and request ids.
measure() {
    local name="$1" accounts="$2" address="$3" seed="$4"
    log "cluster: $name, $CLIENTS ATMs, $accounts accounts, ${DURATION}s of withdrawals (a verification each)"
    "$SWARM" --bench --server "$address" --atms "$CLIENTS" \
        --accounts "$accounts" --mix withdraw=1 --ops-per-card 1 --initial-balance 1000000000000 \
        --seed "$seed" \
        --duration "${DURATION}s" --json-out "$RESULTS_DIR/cluster_${name}_report.json" \
        >"$RESULTS_DIR/cluster_${name}.stdout" 2>"$RESULTS_DIR/cluster_${name}.stderr" \
        || log "cluster: the swarm exited with $? (see $RESULTS_DIR/cluster_${name}.stderr)"
    python3 - "$name" "$RESULTS_DIR/cluster_${name}_report.json" "$accounts" "$CLIENTS" \
        >"$RESULTS_DIR/cluster_$name.json" <<'EOF'
import json, sys
name, path = sys.argv[1:3]
accounts, clients = int(sys.argv[3]), int(sys.argv[4])
with open(path) as file:
    report = json.load(file)
print(json.dumps({
    "name": f"cluster_{name}",
    "accounts": accounts,
    "clients": clients,
    "ops_per_card": 1,
    "ops_per_sec": report["ops_per_sec"],
    "latency_us": report["latency_us"],
    "violations": report["violations"],
}))
EOF
    log "cluster: $(cat "$RESULTS_DIR/cluster_$name.json")"
}

start_node postgres --storage "$URL" --node-id 1 --demo
serving_pid="$NODE_PID"
measure postgres_hot 1 "$NODE_ADDRESS" 1
measure postgres_spread "$SPREAD_ACCOUNTS" "$NODE_ADDRESS" 2
postgres_address="$NODE_ADDRESS"

start_node files --data-dir "$work/files"
measure files_hot 1 "$NODE_ADDRESS" 1
measure files_spread "$SPREAD_ACCOUNTS" "$NODE_ADDRESS" 2
stop_bank_server "$NODE_PID"

# Three nodes, and the failover: nodes 2 and 3 join node 1 and the three share the 16
# partitions; the swarm runs over the three; the node that serves the demo card's partition is
# killed with SIGKILL in the middle of a load with --plot-dir (throughput over time through the
# kill); the time from the kill to the first withdrawal on that card the others serve is the
# failover time.
log "cluster: three nodes (nodes 2 and 3 join)"
start_node node2 --storage "$URL" --node-id 2
node2_pid="$NODE_PID"
node2_address="$NODE_ADDRESS"
start_node node3 --storage "$URL" --node-id 3
node3_pid="$NODE_PID"
node3_address="$NODE_ADDRESS"
pg() { psql -h 127.0.0.1 -p "$port" -U bank -d bank -q -A -t -c "$1"; }
owners=""
for _ in $(seq 1 600); do
    owners="$(pg "SELECT count(DISTINCT owner) FROM bank_partitions WHERE lease_until > now()")"
    [ "$owners" = "3" ] && break
    sleep 0.1
done
[ "$owners" = "3" ] || die "the three nodes never shared the partitions"
seeds="$postgres_address,$node2_address,$node3_address"
measure three_nodes_spread "$SPREAD_ACCOUNTS" "$seeds" 4

log "cluster: failover (SIGKILL of one of three nodes under load)"
# The demo card 123456789's partition, and the node that serves it.
demo_partition=$((123456789 % 16))
victim="$(pg "SELECT owner FROM bank_partitions WHERE partition = $demo_partition")"
case "$victim" in
    1) victim_pid="$serving_pid"; survivors="$node2_address,$node3_address" ;;
    2) victim_pid="$node2_pid"; survivors="$postgres_address,$node3_address" ;;
    3) victim_pid="$node3_pid"; survivors="$postgres_address,$node2_address" ;;
    *) die "nobody serves partition $demo_partition" ;;
esac
mkdir -p "$RESULTS_DIR/cluster_failover"
# Every ATM of the swarm and the probe connect from 127.0.0.1, and a node gives one peer
# address at most 64 connections (connections_per_peer_max): half of that for the swarm leaves
# the probe its slot on every node.
FAILOVER_ATMS="${FAILOVER_ATMS:-32}"
# The swarm's progress lines (one a second, on standard error) are stamped, so the kill can be
# placed on its timeline: the first comes one second into the load.
"$SWARM" --bench --server "$seeds" --atms "$FAILOVER_ATMS" \
    --accounts 1000 --mix withdraw=1 --initial-balance 1000000000000 --duration 20s --seed 5 \
    --json-out "$RESULTS_DIR/cluster_failover/report.json" --plot-dir "$RESULTS_DIR/cluster_failover" \
    >"$RESULTS_DIR/cluster_failover/stdout" \
    2> >(while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done \
        >"$RESULTS_DIR/cluster_failover/stderr") &
load=$!
sleep 8
killed="$(date +%s.%N)"
kill -9 "$victim_pid"
served=""
for _ in $(seq 1 400); do
    # Exit code 0: approved. A probe that is not answered within half a second is given up for
    # a fresh one: the client's own retries back off, which would measure its backoff instead.
    if echo 1234 | timeout 0.5 "$(target_dir)/release/atm" --server "$survivors" --json withdraw \
        --card 123456789 --pin-stdin --amount 1 >/dev/null 2>&1; then
        served="$(date +%s.%N)"
        break
    fi
    sleep 0.05
done
[ -n "$served" ] || die "the killed node's partitions were never served again"
wait "$load" || log "cluster: the failover swarm exited with $? (see $RESULTS_DIR/cluster_failover/stderr)"
python3 - "$killed" "$served" "$RESULTS_DIR/cluster_failover/report.json" \
    "$RESULTS_DIR/cluster_failover/stderr" >"$RESULTS_DIR/cluster_failover.json" <<'EOF'
import json, sys
killed, served = map(float, sys.argv[1:3])
with open(sys.argv[3]) as file:
    report = json.load(file)
load_started = None
with open(sys.argv[4], errors="replace") as lines:
    for line in lines:
        stamp, _, text = line.partition(" ")
        if "ops acked" in text:
            load_started = float(stamp) - 1.0
            break
print(json.dumps({
    "name": "cluster_failover",
    "kill_to_served_secs": round(served - killed, 2),
    "kill_second": None if load_started is None else round(killed - load_started, 2),
    "violations": report["violations"],
    "ops_per_second": [second["ops_acked"] for second in report["timeline"]],
}))
EOF
log "cluster: $(cat "$RESULTS_DIR/cluster_failover.json")"
