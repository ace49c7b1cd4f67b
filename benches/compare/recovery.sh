#!/usr/bin/env bash
# Recovery of actor-bank: how long bank-server takes, at its default settings, from its start to
# its ready line (`bank-server listening on ADDR`) on a data directory of $RECOVERY_ACCOUNTS
# accounts (default 1000000) and $RECOVERY_RECORDS records (default 10000000). Goal: 2 s.
#
# The data directory is written by the make_journal example through the crate's own journal, at
# the journal's default settings (a snapshot every million records), so it holds what a server
# that had run that long would have left: the newest snapshot and the records after it. Then the
# server is started on it $RECOVERY_STARTS times (default 3), each time stopped with SIGTERM once
# ready; the best and the median start are reported. The directory was just written, so its
# files are in the page cache: this is a restart, not a cold boot of the machine.
#
# Each start also reports when the server logged "journal recovered" (snapshot read and tail
# replayed; the rest until the ready line is the server's own start-up on the recovered ledger)
# and its resident memory once ready.
#
# The starts are the measurement, so they are not common.sh's start_bank_server (which polls
# for the ready line): a small Python harness starts the process and reads its output as it
# comes, so the clock stops on the line itself, and a start that fails counts as failed rather
# than ending the run. The work directory is common.sh's (removed by its EXIT trap).
#
# Writes $RESULTS_DIR/recovery.json (and recovery_server.stderr, the last start's log).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RECOVERY_ACCOUNTS="${RECOVERY_ACCOUNTS:-1000000}"
RECOVERY_RECORDS="${RECOVERY_RECORDS:-10000000}"
RECOVERY_STARTS="${RECOVERY_STARTS:-3}"
# Seconds one start may take before it counts as failed.
RECOVERY_START_TIMEOUT_SECS="${RECOVERY_START_TIMEOUT_SECS:-300}"
# The goal of the performance targets, in seconds.
RECOVERY_GOAL_SECS=2

build_release
log "building the make_journal example"
(cd "$REPO_DIR" && cargo build --release --quiet --example make_journal)
SERVER="$(target_dir)/release/bank-server"
MAKE_JOURNAL="$(target_dir)/release/examples/make_journal"
[ -x "$SERVER" ] || die "$SERVER was not built"
[ -x "$MAKE_JOURNAL" ] || die "$MAKE_JOURNAL was not built"
BANK_OPERATOR_TOKEN="${BANK_OPERATOR_TOKEN:-$(operator_token)}"
export BANK_OPERATOR_TOKEN

work="$(mktemp -d /tmp/compare-recovery.XXXXXX)"
remove_at_exit "$work"
data="$work/data"

log "recovery: writing $RECOVERY_ACCOUNTS accounts and $RECOVERY_RECORDS records through the journal"
build_started="$(date +%s.%N)"
"$MAKE_JOURNAL" --data-dir "$data" --accounts "$RECOVERY_ACCOUNTS" --records "$RECOVERY_RECORDS" >&2
build_finished="$(date +%s.%N)"
data_bytes="$(du -sb "$data" | cut -f1)"
log "recovery: the data directory holds $((data_bytes / 1048576)) MiB: $(cd "$data" && printf '%s ' *)"

starts=()
for attempt in $(seq 1 "$RECOVERY_STARTS"); do
    port="$(free_port)"
    # The clock starts just before the process is made and stops when its ready line is read.
    start="$(python3 - "$SERVER" "$data" "$port" "$RECOVERY_START_TIMEOUT_SECS" \
        "$RESULTS_DIR/recovery_server.stderr" <<'EOF'
import datetime, json, re, signal, subprocess, sys, time
server, data, port, timeout, stderr_path = sys.argv[1:6]
with open(stderr_path, "wb") as stderr:
    wall_started = time.time()
    started = time.perf_counter()
    process = subprocess.Popen(
        [server, "--listen", f"127.0.0.1:{port}", "--data-dir", data],
        stdout=subprocess.PIPE, stderr=stderr,
    )
    ready = None
    for line in process.stdout:
        if line.startswith(b"bank-server listening on "):
            ready = time.perf_counter() - started
            break
        if time.perf_counter() - started > float(timeout):
            break
    rss_kib = 0
    try:
        with open(f"/proc/{process.pid}/status") as status:
            for entry in status:
                if entry.startswith("VmRSS:"):
                    rss_kib = int(entry.split()[1])
    except OSError:
        pass
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
# The server's own line "journal recovered" (its time stamp, by the wall clock): the part of the
# start spent reading the snapshot and replaying the records after it.
recovered = None
with open(stderr_path, errors="replace") as lines:
    for line in lines:
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if "journal recovered" in line:
            stamp = line.split()[0].replace("Z", "+00:00")
            try:
                recovered = datetime.datetime.fromisoformat(stamp).timestamp() - wall_started
            except ValueError:
                pass
            break
print(json.dumps({
    "ready_secs": ready,
    "journal_recovered_secs": None if recovered is None else round(recovered, 3),
    "rss_kib": rss_kib,
    "exit_code": code,
}))
EOF
    )"
    log "recovery: start $attempt: $start"
    starts+=("$start")
done

python3 - "$RECOVERY_ACCOUNTS" "$RECOVERY_RECORDS" "$data_bytes" "$build_started" "$build_finished" \
    "$RECOVERY_GOAL_SECS" "${starts[@]}" >"$RESULTS_DIR/recovery.json" <<'EOF'
import json, statistics, sys
accounts, records, data_bytes, build_started, build_finished, goal = sys.argv[1:7]
starts = [json.loads(start) for start in sys.argv[7:]]
failed = [start for start in starts if start["ready_secs"] is None]
times = sorted(start["ready_secs"] for start in starts if start["ready_secs"] is not None)
best = round(times[0], 3) if times else None
median = round(statistics.median(times), 3) if times else None
print(json.dumps({
    "name": "recovery",
    "system": "actor-bank (bank-server at its defaults, start to its ready line)",
    "accounts": int(accounts),
    "records": int(records),
    "data_dir_mib": round(int(data_bytes) / 1048576, 1),
    "build_secs": round(float(build_finished) - float(build_started), 1),
    "starts_secs": [round(time, 3) for time in times],
    "failed_starts": len(failed),
    "best_secs": best,
    "median_secs": median,
    "journal_recovered_secs": [start["journal_recovered_secs"] for start in starts],
    "rss_mib_when_ready": [round(start["rss_kib"] / 1024, 1) for start in starts],
    "goal_secs": float(goal),
    "goal_met": median is not None and not failed and median <= float(goal),
}))
EOF
log "recovery: $(cat "$RESULTS_DIR/recovery.json")"
