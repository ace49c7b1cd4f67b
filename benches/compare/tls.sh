#!/usr/bin/env bash
# What TLS costs: the hot-account workload (the atm_swarm example in --bench mode, $CLIENTS ATMs
# with one request in flight each, withdrawals from one account, connections kept open) against
# two separately started bank-servers at their default settings, one on plain TCP and one with
# TLS, in alternating runs of $DURATION seconds ($PAIRS pairs), so both see the same machine.
# Prints each run's withdrawals per second and the TLS/plain ratio of the medians (the goal:
# TLS costs at most 20 %), and writes $RESULTS_DIR/tls/summary.json.
#
# The certificates are made for the run with openssl (a CA and a server certificate for
# 127.0.0.1); the operator token reaches the servers and the swarm through the environment. The
# servers are started and stopped by common.sh (start_bank_server), their output in tls/.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PAIRS="${PAIRS:-3}"
OUT="$RESULTS_DIR/tls"
mkdir -p "$OUT"
ensure_packages openssl openssl

build_release
SWARM="$(target_dir)/release/examples/atm_swarm"
WORK="$(mktemp -d /tmp/compare-tls.XXXXXX)"
remove_at_exit "$WORK"
BANK_OPERATOR_TOKEN="$(operator_token)"
export BANK_OPERATOR_TOKEN

# A CA and a server certificate for 127.0.0.1, keys readable by the owner only.
(
    cd "$WORK"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=bench CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.pem 2>/dev/null
)

# start_server NAME [FLAGS...]: starts a server (common.sh's start_bank_server) and sets
# SERVER_ADDRESS to its address.
start_server() {
    local name="$1"
    shift
    start_bank_server "$OUT/$name" --data-dir "$WORK/$name-data" \
        --pin-key-file "$WORK/$name.pin-key" "$@"
    SERVER_ADDRESS="$BANK_SERVER_ADDRESS"
}

start_server plain
PLAIN_ADDRESS="$SERVER_ADDRESS"
start_server tls --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key"
TLS_ADDRESS="$SERVER_ADDRESS"

# run NAME ADDRESS [FLAGS...]: one hot-account run; prints its withdrawals per second.
run() {
    local name="$1" address="$2"
    shift 2
    "$SWARM" --bench --server "$address" --atms "$CLIENTS" --accounts 1 --mix withdraw=1 \
        --initial-balance 1000000000000000 --duration "${DURATION}s" \
        --json-out "$OUT/$name.json" "$@" >"$OUT/$name.swarm.stdout" 2>"$OUT/$name.swarm.stderr" \
        || die "the swarm failed ($name): see $OUT/$name.swarm.stderr"
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["ops_per_sec"]))' "$OUT/$name.json"
}

plain=()
tls=()
for pair in $(seq 1 "$PAIRS"); do
    # Each run its own seed: the swarm's client ids and cards follow the seed, and a second run
    # with the same seed against the same server would find its ids already used.
    plain+=("$(run "plain-$pair" "$PLAIN_ADDRESS" --seed "$((2 * pair))")")
    tls+=("$(run "tls-$pair" "$TLS_ADDRESS" --seed "$((2 * pair + 1))" --tls-ca "$WORK/ca.pem")")
    log "pair $pair: plain ${plain[-1]}/s, TLS ${tls[-1]}/s"
done

python3 - "$OUT/summary.json" "${plain[*]}" "${tls[*]}" <<'PY'
import json, statistics, sys
plain = [int(x) for x in sys.argv[2].split()]
tls = [int(x) for x in sys.argv[3].split()]
ratio = statistics.median(tls) / statistics.median(plain)
summary = {"plain_per_sec": plain, "tls_per_sec": tls, "tls_over_plain": round(ratio, 3),
           "goal": "TLS costs at most 20 % (ratio >= 0.80)", "met": ratio >= 0.80}
json.dump(summary, open(sys.argv[1], "w"), indent=2)
print(json.dumps(summary))
PY
