#!/usr/bin/env bash
# actor-bank on PostgreSQL storage beside the file journal, in one run: a throwaway PostgreSQL
# (synchronous_commit on, as postgres.sh), `bank-server init-cluster`, one node
# (`bank-server --storage postgres://… --node-id 1`) at its defaults, and the atm_swarm in
# --bench mode against it ($CLIENTS ATMs, one request in flight each, $DURATION seconds of
# withdrawals): hot (one account) and spread ($SPREAD_ACCOUNTS accounts, default 100000). Then
# the same two loads against a node on the file journal. PostgreSQL's own single-statement
# benchmark is postgres.sh (run_all.sh runs both); the goal is PostgreSQL storage at ten times
# that hot-account number or more, since one transaction carries a whole batch of requests.
#
# Then the failover time: a standby is started, the serving node is killed with SIGKILL under
# load, and the time from the kill to the first withdrawal the standby answers is measured.
#
# Writes $RESULTS_DIR/cluster_{postgres,files}_{hot,spread}.json and cluster_failover.json.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_packages psql postgresql postgresql-client
PG_BIN="$(postgres_bin_dir)"
SPREAD_ACCOUNTS="${SPREAD_ACCOUNTS:-100000}"
build_release
(cd "$REPO_DIR" && cargo build --release --quiet --bin atm)
SERVER="$(target_dir)/release/bank-server"
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
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
port="$(free_port)"
pg_started=""
nodes=()
cleanup() {
    for pid in "${nodes[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    if [ -n "$pg_started" ]; then
        as_owner "$PG_BIN/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

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
"$SERVER" init-cluster --storage "$URL" --partitions 16 >/dev/null

# start_node NAME ARGS...: starts bank-server with ARGS; sets NODE_PID and NODE_ADDRESS once it
# serves (its ready line).
start_node() {
    local name="$1"
    shift
    local out="$work/$name.out"
    "$SERVER" --listen 127.0.0.1:0 --pin-key-file "$work/pin-key" "$@" >"$out" 2>"$work/$name.err" &
    NODE_PID=$!
    nodes+=("$NODE_PID")
    NODE_ADDRESS=""
    for _ in $(seq 1 600); do
        NODE_ADDRESS="$(sed -n 's/^bank-server listening on //p' "$out" | head -n 1)"
        [ -n "$NODE_ADDRESS" ] && return 0
        kill -0 "$NODE_PID" 2>/dev/null || die "$name exited (see $work/$name.err)"
        sleep 0.1
    done
    die "$name did not start serving"
}

# measure NAME ACCOUNTS ADDRESS SEED: the swarm's bench run against ADDRESS. Runs against the same
# server take different seeds: the same seed would draw the same cards and client ids again, and
# the second run would find the first one's account and request ids.
measure() {
    local name="$1" accounts="$2" address="$3" seed="$4"
    log "cluster: $name, $CLIENTS ATMs, $accounts accounts, ${DURATION}s of withdrawals"
    "$SWARM" --bench --server "$address" --operator-token "$TOKEN" --atms "$CLIENTS" \
        --accounts "$accounts" --mix withdraw=1 --initial-balance 1000000000000 --seed "$seed" \
        --duration "${DURATION}s" --json-out "$RESULTS_DIR/cluster_${name}_report.json" \
        >"$RESULTS_DIR/cluster_${name}.stdout" 2>"$RESULTS_DIR/cluster_${name}.stderr" \
        || log "cluster: the swarm exited with $? (see $RESULTS_DIR/cluster_${name}.stderr)"
    python3 - "$name" "$RESULTS_DIR/cluster_${name}_report.json" >"$RESULTS_DIR/cluster_$name.json" <<'EOF'
import json, sys
name, path = sys.argv[1:3]
with open(path) as file:
    report = json.load(file)
print(json.dumps({
    "name": f"cluster_{name}",
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
kill "$NODE_PID"

# Failover: a standby waits; the serving node is killed under load; the first withdrawal the
# standby answers ends the gap.
log "cluster: failover (SIGKILL of the serving node under load)"
"$SERVER" --listen 127.0.0.1:0 --pin-key-file "$work/pin-key" --storage "$URL" --node-id 2 \
    >"$work/standby.out" 2>"$work/standby.err" &
nodes+=("$!")
"$SWARM" --bench --server "$postgres_address" --operator-token "$TOKEN" --atms 8 --accounts 1 \
    --mix withdraw=1 --initial-balance 1000000000000 --duration 30s --seed 3 \
    >"$work/failover-load.out" 2>&1 &
load=$!
sleep 3
killed="$(date +%s.%N)"
kill -9 "$serving_pid"
standby=""
for _ in $(seq 1 1200); do
    standby="$(sed -n 's/^bank-server listening on //p' "$work/standby.out" | head -n 1)"
    [ -n "$standby" ] && break
    sleep 0.05
done
[ -n "$standby" ] || die "the standby never served"
echo 1234 | "$(target_dir)/release/atm" --server "$standby" --json withdraw --card 123456789 \
    --pin-stdin --amount 1 >/dev/null 2>&1 || true
served="$(date +%s.%N)"
kill "$load" 2>/dev/null || true
python3 - "$killed" "$served" >"$RESULTS_DIR/cluster_failover.json" <<'EOF'
import json, sys
killed, served = map(float, sys.argv[1:3])
print(json.dumps({"name": "cluster_failover", "kill_to_served_secs": round(served - killed, 2)}))
EOF
log "cluster: $(cat "$RESULTS_DIR/cluster_failover.json")"
