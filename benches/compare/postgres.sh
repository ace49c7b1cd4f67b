#!/usr/bin/env bash
# PostgreSQL as an exactly-once withdrawal server: one statement (a CTE) records the request id
# with INSERT … ON CONFLICT DO NOTHING and withdraws only when that insert happened, so a retry
# of the same id moves nothing. synchronous_commit on (every commit waits for its WAL flush),
# $CLIENTS pgbench clients over 127.0.0.1, one transaction in flight each, for $DURATION seconds,
# on one hot account and spread over $PG_ACCOUNTS accounts (default 100000).
#
# The cluster is a throwaway one in a temporary directory, run as the `postgres` user (the server
# refuses to run as root). Writes $RESULTS_DIR/postgres_hot.json and postgres_spread.json.
# Installs postgresql (server, initdb, pgbench) when missing.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_packages pgbench postgresql postgresql-contrib
PG_BIN="$(postgres_bin_dir)"
ACCOUNTS="${PG_ACCOUNTS:-100000}"
THREADS="${PG_THREADS:-2}"

if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "no postgres user to run the server as"
    as_owner() { runuser -u postgres -- "$@"; }
else
    as_owner() { "$@"; }
fi

work="$(mktemp -d /tmp/compare-postgres.XXXXXX)"
remove_at_exit "$work"
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
port="$(free_port)"
started=""
stop_postgres() {
    if [ -n "$started" ]; then
        as_owner "$PG_BIN/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
    fi
}
# Run by common.sh's EXIT trap, before it removes $work.
cleanup_hooks+=(stop_postgres)

log "postgres: initdb in $work"
as_owner "$PG_BIN/initdb" -D "$work/data" -U postgres --auth=trust --no-instructions >/dev/null
cat >>"$work/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
max_connections = $((CLIENTS + 20))
shared_buffers = 512MB
synchronous_commit = on
fsync = on
full_page_writes = on
wal_sync_method = fdatasync
max_wal_size = 4GB
checkpoint_timeout = 30min
EOF
as_owner "$PG_BIN/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
started=1

psql_run() {
    as_owner psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q "$@"
}

log "postgres: creating $ACCOUNTS accounts"
psql_run <<EOF
CREATE TABLE accounts (
    card bigint PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
);
CREATE TABLE requests (
    client bigint NOT NULL,
    sequence bigint NOT NULL,
    card bigint NOT NULL,
    amount bigint NOT NULL,
    PRIMARY KEY (client, sequence)
);
INSERT INTO accounts SELECT 1000000000 + g, 1000000000000000 FROM generate_series(0, $ACCOUNTS - 1) g;
VACUUM ANALYZE;
CHECKPOINT;
EOF

# The withdrawal: remember the id, and withdraw only if it was new. One statement, one commit.
write_script() {
    local card_line="$1"
    cat <<EOF
\\set sequence random(1, 1000000000000)
$card_line
WITH request AS (
    INSERT INTO requests (client, sequence, card, amount)
    VALUES (:client_id, :sequence, :card, 1)
    ON CONFLICT DO NOTHING
    RETURNING card, amount
)
UPDATE accounts SET balance = accounts.balance - request.amount
FROM request
WHERE accounts.card = request.card AND accounts.balance >= request.amount
RETURNING accounts.balance;
EOF
}
write_script '\set card 1000000000' >"$work/hot.sql"
write_script "\\set card random(1000000000, $((1000000000 + ACCOUNTS - 1)))" >"$work/spread.sql"
chmod 644 "$work"/*.sql

# Sanity: the same id twice withdraws once.
psql_run -t -A <<'EOF' >"$work/check.txt"
WITH request AS (
    INSERT INTO requests VALUES (-1, 1, 1000000000, 5) ON CONFLICT DO NOTHING RETURNING card, amount
) UPDATE accounts SET balance = accounts.balance - request.amount FROM request
  WHERE accounts.card = request.card RETURNING accounts.balance;
WITH request AS (
    INSERT INTO requests VALUES (-1, 1, 1000000000, 5) ON CONFLICT DO NOTHING RETURNING card, amount
) UPDATE accounts SET balance = accounts.balance - request.amount FROM request
  WHERE accounts.card = request.card RETURNING accounts.balance;
EOF
[ "$(grep -c . "$work/check.txt")" -eq 1 ] || die "the dedup statement withdrew twice"

run_pgbench() {
    local name="$1"
    local script="$2"
    local description="$3"
    log "postgres: $name, $CLIENTS clients, ${DURATION}s"
    mkdir -p "$work/log-$name"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$work/log-$name"
    local before
    before="$(psql_run -t -A -c 'SELECT count(*) FROM requests')"
    local output
    output="$(cd "$work/log-$name" && as_owner pgbench -h 127.0.0.1 -p "$port" -U postgres -n \
        -M prepared -c "$CLIENTS" -j "$THREADS" -T "$DURATION" -f "$script" -l \
        --log-prefix=tx postgres 2>&1)"
    printf '%s\n' "$output" >"$RESULTS_DIR/postgres_$name.txt"
    # Per-transaction log: client transaction latency_us script epoch epoch_us.
    cat "$work/log-$name"/tx* >"$work/log-$name/all"
    local percentiles
    percentiles="$(percentiles_from_column "$work/log-$name/all" 2 1)"
    # Every new id leaves one row (and withdrew once, in the same statement).
    local withdrawals
    withdrawals="$(($(psql_run -t -A -c 'SELECT count(*) FROM requests') - before))"
    python3 - "$name" "$output" "$percentiles" "$CLIENTS" "$DURATION" "$description" "$withdrawals" \
        >"$RESULTS_DIR/postgres_$name.json" <<'EOF'
import json, re, sys
name, output, percentiles, clients, duration, description, withdrawals = sys.argv[1:8]
tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", output)
failed = re.search(r"number of failed transactions: ([0-9]+)", output)
print(json.dumps({
    "name": f"postgres_{name}",
    "system": description,
    "clients": int(clients),
    "duration_secs": float(duration),
    "ops_per_sec": float(tps.group(1)) if tps else None,
    "failed": int(failed.group(1)) if failed else 0,
    "withdrawals": int(withdrawals),
    "latency_us": json.loads(percentiles),
}))
EOF
    log "postgres: $(cat "$RESULTS_DIR/postgres_$name.json")"
}

run_pgbench hot "$work/hot.sql" "PostgreSQL (CTE: INSERT ON CONFLICT DO NOTHING + UPDATE), 1 account"
run_pgbench spread "$work/spread.sql" "PostgreSQL (same statement), $ACCOUNTS accounts"
