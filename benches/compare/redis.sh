#!/usr/bin/env bash
# Redis as an exactly-once withdrawal server: one Lua script withdraws from one hot balance key
# and remembers the request id with SET NX (and the reply, so a retry gets it back), with the
# append-only file synced on every write (appendonly yes, appendfsync always). Driven by
# redis-benchmark: $CLIENTS connections, one request in flight each, a random request id per call.
#
# Writes $RESULTS_DIR/redis_hot.json. Installs redis-server and redis-tools when missing.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_packages redis-server redis-server redis-tools
ensure_packages redis-benchmark redis-tools

# redis-benchmark stops after a number of requests, not a time: aim at about $DURATION seconds
# from the expected rate (REDIS_REQUESTS overrides).
REQUESTS="${REDIS_REQUESTS:-$((DURATION * 15000))}"

work="$(mktemp -d /tmp/compare-redis.XXXXXX)"
port="$(free_port)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

log "redis: starting a throwaway server on 127.0.0.1:$port (appendfsync always)"
redis-server --bind 127.0.0.1 --port "$port" --dir "$work" --save "" \
    --appendonly yes --appendfsync always --daemonize no --logfile "$work/redis.log" \
    --protected-mode yes &
server_pid=$!
for _ in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$port" ping >/dev/null || die "redis did not start (see $work/redis.log)"

# KEYS[1] the balance, KEYS[2] the request id; ARGV[1] the amount. A known id returns the stored
# reply and moves nothing; a new one withdraws (or is refused) and its reply is stored with SET NX.
script='
local done = redis.call("GET", KEYS[2])
if done then return done end
local balance = tonumber(redis.call("GET", KEYS[1]) or "0")
local amount = tonumber(ARGV[1])
local reply
if amount > 0 and amount <= balance then
  reply = "approved:" .. redis.call("DECRBY", KEYS[1], amount)
else
  reply = "insufficient_funds:" .. balance
end
redis.call("SET", KEYS[2], reply, "NX", "EX", 86400)
return reply
'
sha="$(redis-cli -p "$port" script load "$script")"
redis-cli -p "$port" set balance:hot 1000000000000000 >/dev/null

# Sanity: a retry with the same id gets the same reply and moves no money.
first="$(redis-cli -p "$port" evalsha "$sha" 2 balance:hot req:check 7)"
again="$(redis-cli -p "$port" evalsha "$sha" 2 balance:hot req:check 7)"
[ "$first" = "$again" ] || die "redis script is not idempotent: $first vs $again"

log "redis: $REQUESTS withdrawals from $CLIENTS clients"
# -r must fit in a C int (redis-benchmark parses it with atoi): ids are drawn from 2e9 values, so
# only a handful of the requests repeat an id (and are answered from the dedup key).
csv="$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$REQUESTS" -r 2000000000 \
    --csv evalsha "$sha" 2 balance:hot "req:__rand_int__" 1)"
printf '%s\n' "$csv" >"$RESULTS_DIR/redis_hot.csv"
aof_bytes="$(du -sb "$work/appendonlydir" 2>/dev/null | cut -f1 || echo 0)"
# Each new id leaves one key and takes 1 from the balance: check the load really withdrew.
ids="$(($(redis-cli -p "$port" dbsize) - 2))"
withdrawn="$((1000000000000000 - $(redis-cli -p "$port" get balance:hot) - 7))"
[ "$ids" -eq "$withdrawn" ] || die "redis: $ids request ids but $withdrawn withdrawn"
[ "$ids" -ge $((REQUESTS * 9 / 10)) ] || die "redis: only $ids of $REQUESTS requests were new ids"

python3 - "$csv" "$REQUESTS" "$CLIENTS" "$aof_bytes" "$ids" >"$RESULTS_DIR/redis_hot.json" <<'EOF'
import csv, io, json, sys
text, requests, clients, aof = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4] or 0)
withdrawals = int(sys.argv[5])
rows = list(csv.reader(io.StringIO(text)))
header, values = rows[0], rows[-1]
row = dict(zip(header, values))
ms = lambda key: round(float(row[key]) * 1000) if key in row else None
print(json.dumps({
    "name": "redis_hot",
    "system": "Redis (Lua withdraw + SET NX dedup, appendfsync always)",
    "clients": clients,
    "requests": requests,
    "ops_per_sec": float(row["rps"]),
    "latency_us": {"p50": ms("p50_latency_ms"), "p99": ms("p99_latency_ms"), "max": ms("max_latency_ms")},
    "withdrawals": withdrawals,
    "aof_bytes": aof,
}))
EOF
log "redis: $(cat "$RESULTS_DIR/redis_hot.json")"
