#!/usr/bin/env bash
# Memory targets of actor-bank:
#  1. Resident memory of bank-server with MEMORY_ACCOUNTS accounts (default 1000000) recovered
#     from its data directory (written through the crate's journal by the make_journal example,
#     as recovery.sh does: keyed PIN verifiers, as the server makes them, and the PIN key file
#     beside the directory), idle after start-up (no account actor running).
#  2. A soak: bank-server (release binary, own process) under the atm_swarm for SOAK_SECONDS
#     (default 600; 0 skips it), resident memory sampled every SOAK_SAMPLE seconds (default 10).
# The server runs at its default settings but for the per-peer connection cap (every ATM of the
# soak connects from this host). The servers are started and stopped by common.sh (start_bank_server, stop_bank_server); start
# time is from the start of the process to its ready line.
# Writes $RESULTS_DIR/memory_1m_accounts.json and memory_soak.json.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# The operator token reaches the server and the swarm through their environment, never their
# arguments (where every local user could read it).
BANK_OPERATOR_TOKEN="${BANK_OPERATOR_TOKEN:-$(operator_token)}"
export BANK_OPERATOR_TOKEN

MEMORY_ACCOUNTS="${MEMORY_ACCOUNTS:-1000000}"
SOAK_SECONDS="${SOAK_SECONDS:-600}"
SOAK_SAMPLE="${SOAK_SAMPLE:-10}"
SOAK_ACCOUNTS="${SOAK_ACCOUNTS:-1000}"
build_release
log "building the make_journal example"
(cd "$REPO_DIR" && cargo build --release --quiet --example make_journal)
SWARM="$(target_dir)/release/examples/atm_swarm"
MAKE_JOURNAL="$(target_dir)/release/examples/make_journal"
[ -x "$MAKE_JOURNAL" ] || die "$MAKE_JOURNAL was not built"

work="$(mktemp -d /tmp/compare-memory.XXXXXX)"
remove_at_exit "$work"
server_pid=""

# start_server DATA_DIR NAME: starts bank-server (common.sh's start_bank_server, its output in
# $work/NAME.std{out,err}) and waits for its ready line; sets server_pid and server_address.
start_server() {
    start_bank_server "$work/$2" --data-dir "$1" --connections-per-peer-max 100000
    server_pid="$BANK_SERVER_PID"
    server_address="$BANK_SERVER_ADDRESS"
}

log "memory: building a data directory with $MEMORY_ACCOUNTS accounts"
build_started="$(date +%s.%N)"
"$MAKE_JOURNAL" --data-dir "$work/million" --accounts "$MEMORY_ACCOUNTS" --records 0 >&2
start_started="$(date +%s.%N)"
start_server "$work/million" million
start_finished="$(date +%s.%N)"
sleep 2
idle_kib="$(rss_kib "$server_pid")"
data_bytes="$(du -sb "$work/million" | cut -f1)"
stop_bank_server "$server_pid"
python3 - "$MEMORY_ACCOUNTS" "$idle_kib" "$data_bytes" "$start_started" "$start_finished" \
    >"$RESULTS_DIR/memory_1m_accounts.json" <<'PY'
import json, sys
accounts, idle_kib, data_bytes, started, finished = sys.argv[1:6]
print(json.dumps({
    "name": "memory_1m_accounts",
    "accounts": int(accounts),
    "rss_mib_idle_after_recovery": round(int(idle_kib) / 1024, 1),
    "data_dir_mib": round(int(data_bytes) / 1048576, 1),
    "start_secs": round(float(finished) - float(started), 2),
}))
PY
log "memory: $(cat "$RESULTS_DIR/memory_1m_accounts.json")"
rm -rf "$work/million"

if [ "$SOAK_SECONDS" -gt 0 ]; then
    start_server "$work/soak" soak
    log "memory: soak, $CLIENTS ATMs over $SOAK_ACCOUNTS accounts, cash mix, ${SOAK_SECONDS}s"
    : >"$work/rss.txt"
    (
        second=0
        while kill -0 "$server_pid" 2>/dev/null; do
            printf '%s %s\n' "$second" "$(rss_kib "$server_pid")" >>"$work/rss.txt"
            sleep "$SOAK_SAMPLE"
            second=$((second + SOAK_SAMPLE))
        done
    ) &
    sampler=$!
    soak_status=0
    "$SWARM" --bench --server "$server_address" \
        --atms "$CLIENTS" --accounts "$SOAK_ACCOUNTS" --duration "${SOAK_SECONDS}s" \
        --mix withdraw=45,deposit=35,balance=15,utility=5 \
        --json-out "$work/soak_report.json" >"$RESULTS_DIR/memory_soak.stdout" 2>/dev/null \
        || soak_status=$?
    sleep "$SOAK_SAMPLE"
    stop_bank_server "$server_pid"
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    cp "$work/rss.txt" "$RESULTS_DIR/memory_soak_rss.txt"
    python3 - "$work/rss.txt" "$work/soak_report.json" "$soak_status" "$SOAK_SECONDS" \
        >"$RESULTS_DIR/memory_soak.json" <<'PY'
import json, sys
rss_path, report_path, status, seconds = sys.argv[1:5]
samples = [tuple(map(int, line.split())) for line in open(rss_path) if len(line.split()) == 2]
mib = [kib / 1024 for _, kib in samples]
report = {}
try:
    report = json.load(open(report_path))
except Exception:
    pass
# Flatness: compare the second quarter with the last quarter of the run (the first quarter is
# warm-up: actors start, buffers grow).
quarter = max(1, len(mib) // 4)
early = mib[quarter:2 * quarter] or mib
late = mib[-quarter:] or mib
print(json.dumps({
    "name": "memory_soak",
    "seconds": int(seconds),
    "swarm_exit": int(status),
    "ops_per_sec": report.get("ops_per_sec"),
    "violations": report.get("violations"),
    "rss_mib_first": round(mib[0], 1) if mib else None,
    "rss_mib_max": round(max(mib), 1) if mib else None,
    "rss_mib_second_quarter_mean": round(sum(early) / len(early), 1) if mib else None,
    "rss_mib_last_quarter_mean": round(sum(late) / len(late), 1) if mib else None,
    "rss_mib_final": round(mib[-1], 1) if mib else None,
    "samples": len(mib),
}))
PY
    log "memory: $(cat "$RESULTS_DIR/memory_soak.json")"
fi
