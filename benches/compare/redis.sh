#!/usr/bin/env bash
# Redis as an exactly-once bank, with the append-only file synced on every write (appendonly yes,
# appendfsync always), driven by redis-benchmark: $CLIENTS connections, one request in flight
# each, a random request id per call.
#   hot:             one Lua script withdraws from one hot balance key and remembers the request
#                    id with SET NX (and the reply, so a retry gets it back)
#   spread:          workload 2's peer: one Lua script per operation on a card drawn at random of
#                    $SPREAD_ACCOUNTS (default 100000), each card a hash holding its PIN
#                    verifier, its failure count and its balance: the verifier given is compared
#                    with the stored one (a mismatch counts a failure and moves nothing), then
#                    the withdrawal, with the same SET NX dedup of the request id. Every card has
#                    the same verifier (redis-benchmark sends fixed arguments); the comparison and
#                    the failure count are the work, not the secrecy
#   transfer_spread: one Lua script moves money between two of $TRANSFER_ACCOUNTS balance keys
#                    (default 100000) drawn at random, atomically, refusing what the sender cannot
#                    cover, with the same SET NX dedup of the request id
#
# REDIS_RUNS="hot spread transfer_spread" picks the runs (default: all three).
# Writes $RESULTS_DIR/redis_hot.json, redis_spread.json and redis_transfer_spread.json. Installs
# redis-server and redis-tools when missing. The server is a throwaway one, stopped at the end.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_packages redis-server redis-server redis-tools
ensure_packages redis-benchmark redis-tools

# redis-benchmark stops after a number of requests, not a time: aim at about $DURATION seconds
# from the expected rate (REDIS_REQUESTS overrides).
REQUESTS="${REDIS_REQUESTS:-$((DURATION * 15000))}"
TRANSFER_REQUESTS="${REDIS_TRANSFER_REQUESTS:-$REQUESTS}"
SPREAD_REQUESTS="${REDIS_SPREAD_REQUESTS:-$REQUESTS}"
SPREAD_ACCOUNTS="${SPREAD_ACCOUNTS:-100000}"
# Opening balance of each spread card (no withdrawal of 1 is ever refused).
SPREAD_BALANCE=1000000000
# The PIN verifier stored for every spread card and presented by every operation.
SPREAD_VERIFIER=5f0c2a9e41d8b7736c15e0a94b2d8f61
TRANSFER_ACCOUNTS="${TRANSFER_ACCOUNTS:-${SPREAD_ACCOUNTS:-100000}}"
# Opening balance of each transfer account: small enough that the sum over every account stays
# exact in Lua's numbers (doubles), large enough that no transfer of 1 is ever refused.
TRANSFER_BALANCE=1000000000
hot_run=no
spread_run=no
transfer_run=no
for run in ${REDIS_RUNS:-hot spread transfer_spread}; do
    case "$run" in
        hot) hot_run=yes ;;
        spread) spread_run=yes ;;
        transfer_spread) transfer_run=yes ;;
        *) die "unknown run $run (hot, spread, transfer_spread)" ;;
    esac
done

work="$(mktemp -d /tmp/compare-redis.XXXXXX)"
remove_at_exit "$work"
port="$(free_port)"
server_pid=""
stop_redis() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
cleanup_hooks+=(stop_redis)

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

# report_json NAME SYSTEM CSV REQUESTS AOF_BYTES NEW_IDS ACCOUNTS: the summary of one
# redis-benchmark run, as JSON.
report_json() {
    python3 - "$@" "$CLIENTS" <<'EOF'
import csv, io, json, sys
name, system, text, requests, aof, new_ids, accounts, clients = sys.argv[1:9]
rows = list(csv.reader(io.StringIO(text)))
header, values = rows[0], rows[-1]
row = dict(zip(header, values))
ms = lambda key: round(float(row[key]) * 1000) if key in row else None
print(json.dumps({
    "name": name,
    "system": system,
    "clients": int(clients),
    "accounts": int(accounts),
    "requests": int(requests),
    "ops_per_sec": float(row["rps"]),
    "latency_us": {"p50": ms("p50_latency_ms"), "p99": ms("p99_latency_ms"), "max": ms("max_latency_ms")},
    "new_request_ids": int(new_ids),
    "aof_bytes": int(aof or 0),
    **({"withdrawals": int(new_ids)} if name == "redis_hot" else {}),
}))
EOF
}

if [ "$hot_run" = yes ]; then
    # KEYS[1] the balance, KEYS[2] the request id; ARGV[1] the amount. A known id returns the
    # stored reply and moves nothing; a new one withdraws (or is refused) and its reply is stored
    # with SET NX.
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
    # -r must fit in a C int (redis-benchmark parses it with atoi): ids are drawn from 2e9 values,
    # so only a handful of the requests repeat an id (and are answered from the dedup key).
    csv="$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$REQUESTS" -r 2000000000 \
        --csv evalsha "$sha" 2 balance:hot "req:__rand_int__" 1)"
    printf '%s\n' "$csv" >"$RESULTS_DIR/redis_hot.csv"
    aof_bytes="$(du -sb "$work/appendonlydir" 2>/dev/null | cut -f1 || echo 0)"
    # Each new id leaves one key and takes 1 from the balance: check the load really withdrew.
    ids="$(($(redis-cli -p "$port" dbsize) - 2))"
    withdrawn="$((1000000000000000 - $(redis-cli -p "$port" get balance:hot) - 7))"
    [ "$ids" -eq "$withdrawn" ] || die "redis: $ids request ids but $withdrawn withdrawn"
    [ "$ids" -ge $((REQUESTS * 9 / 10)) ] || die "redis: only $ids of $REQUESTS requests were new ids"

    report_json redis_hot "Redis (Lua withdraw + SET NX dedup, appendfsync always)" \
        "$csv" "$REQUESTS" "$aof_bytes" "$ids" 1 >"$RESULTS_DIR/redis_hot.json"
    log "redis: $(cat "$RESULTS_DIR/redis_hot.json")"
fi

# The spread workload: a PIN check and a withdrawal on a random card of $SPREAD_ACCOUNTS, in one
# Lua call, with the request id remembered by SET NX (and the reply, so a retry gets it back).
# Each card is one hash (card:NNNNNNNNNNNN, as redis-benchmark writes __rand_int__): its PIN
# verifier, its count of wrong PINs and its balance, so the script touches one declared card key
# and one request key.
if [ "$spread_run" = yes ]; then
    redis-cli -p "$port" flushall >/dev/null
    aof_before="$(du -sb "$work/appendonlydir" 2>/dev/null | cut -f1 || echo 0)"
    # KEYS[1] the card, KEYS[2] the request id; ARGV[1] the PIN verifier presented, ARGV[2] the
    # amount. A known id returns the stored reply and moves nothing.
    spread_script='
local done = redis.call("GET", KEYS[2])
if done then return done end
local reply
local verifier = redis.call("HGET", KEYS[1], "pin")
local amount = tonumber(ARGV[2])
if not verifier then
  reply = "unknown_card"
elseif verifier ~= ARGV[1] then
  redis.call("HINCRBY", KEYS[1], "failures", 1)
  reply = "incorrect_pin"
elseif not amount or amount <= 0 then
  reply = "invalid_request"
else
  local balance = tonumber(redis.call("HGET", KEYS[1], "balance"))
  if amount <= balance then
    reply = "approved:" .. redis.call("HINCRBY", KEYS[1], "balance", -amount)
  else
    reply = "insufficient_funds:" .. balance
  end
end
redis.call("SET", KEYS[2], reply, "NX", "EX", 86400)
return reply
'
    spread_sha="$(redis-cli -p "$port" script load "$spread_script")"
    redis-cli -p "$port" eval '
for i = 0, tonumber(ARGV[1]) - 1 do
  redis.call("HSET", string.format("card:%012d", i), "pin", ARGV[2], "failures", 0, "balance", ARGV[3])
end
return tonumber(ARGV[1])
' 0 "$SPREAD_ACCOUNTS" "$SPREAD_VERIFIER" "$SPREAD_BALANCE" >/dev/null
    card="card:$(printf '%012d' 0)"
    # Sanity: a wrong PIN counts a failure and moves nothing; a retry gets the same reply.
    wrong="$(redis-cli -p "$port" evalsha "$spread_sha" 2 "$card" req:check:1 not-the-verifier 7)"
    [ "$wrong" = incorrect_pin ] || die "redis spread script accepted a wrong PIN: $wrong"
    [ "$(redis-cli -p "$port" hget "$card" failures)" = 1 ] || die "redis spread script did not count the wrong PIN"
    first="$(redis-cli -p "$port" evalsha "$spread_sha" 2 "$card" req:check:2 "$SPREAD_VERIFIER" 7)"
    again="$(redis-cli -p "$port" evalsha "$spread_sha" 2 "$card" req:check:2 "$SPREAD_VERIFIER" 7)"
    [ "$first" = "$again" ] || die "redis spread script is not idempotent: $first vs $again"
    [ "$(redis-cli -p "$port" hget "$card" balance)" = $((SPREAD_BALANCE - 7)) ] || die "redis spread script moved the wrong amount"

    log "redis: $SPREAD_REQUESTS PIN checks + withdrawals on random cards of $SPREAD_ACCOUNTS from $CLIENTS clients"
    csv="$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$SPREAD_REQUESTS" -r "$SPREAD_ACCOUNTS" \
        --csv evalsha "$spread_sha" 2 "card:__rand_int__" "req:__rand_int__:__rand_int__" \
        "$SPREAD_VERIFIER" 1)"
    printf '%s\n' "$csv" >"$RESULTS_DIR/redis_spread.csv"
    aof_bytes="$(($(du -sb "$work/appendonlydir" 2>/dev/null | cut -f1 || echo 0) - aof_before))"
    # Each new id took 1 from one card and left one key: check the load really withdrew, on
    # many cards, and counted no failure beyond the check's.
    read -r withdrawn touched failures <<<"$(redis-cli -p "$port" eval '
local withdrawn, touched, failures = 0, 0, 0
for i = 0, tonumber(ARGV[1]) - 1 do
  local card = string.format("card:%012d", i)
  local taken = tonumber(ARGV[2]) - tonumber(redis.call("HGET", card, "balance"))
  withdrawn = withdrawn + taken
  if taken > 0 then touched = touched + 1 end
  failures = failures + tonumber(redis.call("HGET", card, "failures"))
end
return string.format("%.0f %d %d", withdrawn, touched, failures)
' 0 "$SPREAD_ACCOUNTS" "$SPREAD_BALANCE")"
    ids="$(($(redis-cli -p "$port" dbsize) - SPREAD_ACCOUNTS - 2))"
    [ "$ids" -eq $((withdrawn - 7)) ] || die "redis: $ids request ids but $((withdrawn - 7)) withdrawn"
    [ "$ids" -ge $((SPREAD_REQUESTS * 9 / 10)) ] || die "redis: only $ids of $SPREAD_REQUESTS operations were new ids"
    [ "$failures" -eq 1 ] || die "redis: $failures wrong PINs counted (1 expected, the check's)"
    log "redis: $withdrawn withdrawn from $touched of $SPREAD_ACCOUNTS cards"
    report_json redis_spread \
        "Redis (Lua PIN check + withdraw + SET NX dedup, appendfsync always, random cards of $SPREAD_ACCOUNTS)" \
        "$csv" "$SPREAD_REQUESTS" "$aof_bytes" "$ids" "$SPREAD_ACCOUNTS" >"$RESULTS_DIR/redis_spread.json"
    log "redis: $(cat "$RESULTS_DIR/redis_spread.json")"
fi

# The transfer workload: random pairs of $TRANSFER_ACCOUNTS accounts, one Lua script per transfer
# that moves money between two balance keys atomically (refusing what the sender cannot cover)
# and remembers the request id with SET NX (and the reply, so a retry gets it back). Every key is
# declared to the script. redis-benchmark draws each __rand_int__ on its own (0 .. -r - 1, written
# with 12 digits): the sender, the receiver and two halves of the request id (10^10 ids).
if [ "$transfer_run" = yes ]; then
    redis-cli -p "$port" flushall >/dev/null
    aof_before="$(du -sb "$work/appendonlydir" 2>/dev/null | cut -f1 || echo 0)"
    # KEYS[1] the sender's balance, KEYS[2] the receiver's, KEYS[3] the request id; ARGV[1] the
    # amount. A known id returns the stored reply and moves nothing.
    transfer_script='
local done = redis.call("GET", KEYS[3])
if done then return done end
local amount = tonumber(ARGV[1])
local reply
if KEYS[1] == KEYS[2] or not amount or amount <= 0 then
  reply = "invalid_request"
else
  local balance = tonumber(redis.call("GET", KEYS[1]) or "0")
  if amount <= balance then
    reply = "approved:" .. redis.call("DECRBY", KEYS[1], amount)
    redis.call("INCRBY", KEYS[2], amount)
  else
    reply = "insufficient_funds:" .. balance
  end
end
redis.call("SET", KEYS[3], reply, "NX", "EX", 86400)
return reply
'
    transfer_sha="$(redis-cli -p "$port" script load "$transfer_script")"
    # The accounts, in one script call (keys named as redis-benchmark writes __rand_int__).
    redis-cli -p "$port" eval '
for i = 0, tonumber(ARGV[1]) - 1 do
  redis.call("SET", string.format("acct:%012d", i), ARGV[2])
end
return tonumber(ARGV[1])
' 0 "$TRANSFER_ACCOUNTS" "$TRANSFER_BALANCE" >/dev/null
    # total_balances: the money in every account, added up inside Redis.
    total_balances() {
        redis-cli -p "$port" eval '
local total = 0
for i = 0, tonumber(ARGV[1]) - 1 do
  total = total + tonumber(redis.call("GET", string.format("acct:%012d", i)))
end
return string.format("%.0f", total)
' 0 "$TRANSFER_ACCOUNTS"
    }
    before="$(total_balances)"
    # Sanity: a retry moves nothing and gets the same reply; an overdraft is refused.
    a="acct:$(printf '%012d' 0)"
    b="acct:$(printf '%012d' 1)"
    first="$(redis-cli -p "$port" evalsha "$transfer_sha" 3 "$a" "$b" req:check:1 7)"
    again="$(redis-cli -p "$port" evalsha "$transfer_sha" 3 "$a" "$b" req:check:1 7)"
    [ "$first" = "$again" ] || die "redis transfer script is not idempotent: $first vs $again"
    over="$(redis-cli -p "$port" evalsha "$transfer_sha" 3 "$a" "$b" req:check:2 "$((TRANSFER_BALANCE * 2))")"
    case "$over" in insufficient_funds:*) ;; *) die "redis transfer script allowed an overdraft: $over" ;; esac

    log "redis: $TRANSFER_REQUESTS transfers between random pairs of $TRANSFER_ACCOUNTS accounts from $CLIENTS clients"
    csv="$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$TRANSFER_REQUESTS" -r "$TRANSFER_ACCOUNTS" \
        --csv evalsha "$transfer_sha" 3 "acct:__rand_int__" "acct:__rand_int__" \
        "req:__rand_int__:__rand_int__" 1)"
    printf '%s\n' "$csv" >"$RESULTS_DIR/redis_transfer_spread.csv"
    aof_bytes="$(($(du -sb "$work/appendonlydir" 2>/dev/null | cut -f1 || echo 0) - aof_before))"
    after="$(total_balances)"
    [ "$before" = "$after" ] || die "redis: the accounts held $before before the transfers and $after after"
    # The load really moved money: accounts whose balance is no longer the opening one.
    changed="$(redis-cli -p "$port" eval '
local changed = 0
for i = 0, tonumber(ARGV[1]) - 1 do
  if redis.call("GET", string.format("acct:%012d", i)) ~= ARGV[2] then changed = changed + 1 end
end
return changed
' 0 "$TRANSFER_ACCOUNTS" "$TRANSFER_BALANCE")"
    [ "$changed" -gt 0 ] || die "redis: the transfers moved no money"
    log "redis: $changed of $TRANSFER_ACCOUNTS accounts changed, $before in all before and after"
    # Each new id leaves one key; the two check ids and the accounts are the others.
    ids="$(($(redis-cli -p "$port" dbsize) - TRANSFER_ACCOUNTS - 2))"
    [ "$ids" -ge $((TRANSFER_REQUESTS * 9 / 10)) ] || die "redis: only $ids of $TRANSFER_REQUESTS transfers were new ids"
    report_json redis_transfer_spread \
        "Redis (Lua two-key transfer + SET NX dedup, appendfsync always, random pairs of $TRANSFER_ACCOUNTS keys)" \
        "$csv" "$TRANSFER_REQUESTS" "$aof_bytes" "$ids" "$TRANSFER_ACCOUNTS" >"$RESULTS_DIR/redis_transfer_spread.json"
    log "redis: $(cat "$RESULTS_DIR/redis_transfer_spread.json")"
fi
