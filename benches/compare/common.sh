# Shared helpers of the comparison scripts; sourced, not run.
#
# Every script writes its result as one JSON object to $RESULTS_DIR/<name>.json with at least
# "ops_per_sec" and, where the tool reports them, "latency_us": {"p50", "p99"}.
#
# Every bank-server a script runs is started with start_bank_server (release binary, port 0,
# ready line awaited with a bound) and stopped with stop_bank_server; one EXIT trap, set here,
# stops what still runs, calls the script's cleanup_hooks and removes its remove_at_exit
# directories. Scripts set no trap of their own.

set -euo pipefail

COMPARE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$COMPARE_DIR/../.." && pwd)"

# SMOKE=1: a run that only proves the scripts still work (a few hundred operations a workload,
# correctness checked, no number worth keeping). Tiny defaults for every size and length below and
# in the scripts; any setting given in the environment still wins.
if [ -n "${SMOKE:-}" ]; then
    : "${RESULTS_DIR:=$REPO_DIR/target/compare-smoke}"
    : "${CLIENTS:=4}" "${DURATION:=1}"
    : "${SPREAD_ACCOUNTS:=200}" "${PG_ACCOUNTS:=200}" "${TRANSFER_ACCOUNTS:=200}"
    : "${REDIS_REQUESTS:=400}" "${REDIS_TRANSFER_REQUESTS:=400}" "${REDIS_SPREAD_REQUESTS:=400}"
    : "${SWITCH_CONNECTIONS:=2}" "${SWITCH_IN_FLIGHT:=8}"
    : "${MEMORY_ACCOUNTS:=1000}" "${SOAK_SECONDS:=2}" "${SOAK_SAMPLE:=1}" "${SOAK_ACCOUNTS:=20}"
    : "${RECOVERY_ACCOUNTS:=1000}" "${RECOVERY_RECORDS:=10000}" "${RECOVERY_STARTS:=1}"
    : "${FAILOVER_ATMS:=4}" "${RAMP:=4,8}" "${STEP:=1s}" "${ACCOUNTS:=50}" "${PAIRS:=1}"
    export RESULTS_DIR CLIENTS DURATION SPREAD_ACCOUNTS PG_ACCOUNTS TRANSFER_ACCOUNTS \
        REDIS_REQUESTS REDIS_TRANSFER_REQUESTS REDIS_SPREAD_REQUESTS SWITCH_CONNECTIONS \
        SWITCH_IN_FLIGHT MEMORY_ACCOUNTS SOAK_SECONDS SOAK_SAMPLE \
        SOAK_ACCOUNTS RECOVERY_ACCOUNTS RECOVERY_RECORDS RECOVERY_STARTS FAILOVER_ATMS RAMP STEP \
        ACCOUNTS PAIRS
fi
RESULTS_DIR="${RESULTS_DIR:-$REPO_DIR/target/compare-results}"
mkdir -p "$RESULTS_DIR"

# Concurrent clients in every comparison.
CLIENTS="${CLIENTS:-64}"
# Seconds of load per measurement.
DURATION="${DURATION:-10}"

log() {
    printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# ensure_packages COMMAND PACKAGE...: installs the Debian packages when COMMAND is missing.
ensure_packages() {
    local command="$1"
    shift
    if command -v "$command" >/dev/null 2>&1; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "$command is missing and apt-get is not available"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    log "installing $* (for $command)"
    if [ -z "${COMPARE_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq
        export COMPARE_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
    command -v "$command" >/dev/null 2>&1 || die "installing $* did not provide $command"
}

# The PostgreSQL server binaries (initdb, pg_ctl) are not on PATH on Debian.
postgres_bin_dir() {
    local directory
    directory="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$directory" ] || die "no PostgreSQL server under /usr/lib/postgresql"
    printf '%s\n' "$directory"
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# The cargo target directory the scripts build into (respects CARGO_TARGET_DIR).
target_dir() {
    printf '%s\n' "${CARGO_TARGET_DIR:-$REPO_DIR/target}"
}

# Builds the release binaries and example the scripts run, once per run_all.
build_release() {
    if [ -n "${COMPARE_BUILT:-}" ]; then
        return 0
    fi
    log "building release binaries (bank-server, atm_swarm)"
    (cd "$REPO_DIR" && cargo build --release --quiet --bin bank-server --example atm_swarm)
    export COMPARE_BUILT=1
}

# --- bank-server processes -------------------------------------------------------------------
# Every script starts its bank-servers with start_bank_server and stops them with
# stop_bank_server; whatever still runs when the script exits (an error, a signal) is stopped by
# the one EXIT trap common.sh sets, which then runs the script's own cleanup_hooks and removes
# the directories given to remove_at_exit.

# Seconds bank-server may take to print its ready line (`bank-server listening on ADDR`).
SERVER_READY_SECS="${SERVER_READY_SECS:-120}"
# Seconds a SIGTERM'd bank-server may take to exit before it is sent SIGKILL.
SERVER_STOP_SECS="${SERVER_STOP_SECS:-30}"
# The signal the EXIT trap stops the servers still running with (cluster.sh: KILL).
SERVER_EXIT_SIGNAL="${SERVER_EXIT_SIGNAL:-TERM}"
# Every bank-server started and not yet stopped.
BANK_SERVER_PIDS=()
# Set by start_bank_server: the server's pid, its address, its ISO 8583 door's (if it has one).
BANK_SERVER_PID=""
BANK_SERVER_ADDRESS=""
BANK_SERVER_ISO_ADDRESS=""
# Functions the EXIT trap calls (after stopping the servers), in order; scripts append theirs.
cleanup_hooks=()
# Directories the EXIT trap removes.
COMPARE_WORK_DIRS=()

# remove_at_exit DIRECTORY: the EXIT trap removes DIRECTORY (a script's temporary work).
remove_at_exit() {
    COMPARE_WORK_DIRS+=("$1")
}

# ready_address FILE PREFIX: the address after PREFIX on the first line of FILE that has it.
ready_address() {
    sed -n "s/^$2 //p" "$1" 2>/dev/null | head -n 1
}

# start_bank_server OUT [FLAGS...]: starts the release bank-server with `--listen 127.0.0.1:0`
# and FLAGS (the data directory or storage, the door, extra settings), its standard output in
# OUT.stdout and standard error in OUT.stderr, and waits (at most SERVER_READY_SECS) for its
# ready line. Sets BANK_SERVER_PID, BANK_SERVER_ADDRESS and, when it opened an ISO 8583 door,
# BANK_SERVER_ISO_ADDRESS. Dies if it exits first or is not ready in time. Call it in the
# script's own shell, never in a command substitution (its pid must reach BANK_SERVER_PIDS).
start_bank_server() {
    local out="$1"
    shift
    local server
    server="$(target_dir)/release/bank-server"
    [ -x "$server" ] || die "$server was not built"
    "$server" --listen 127.0.0.1:0 "$@" >"$out.stdout" 2>"$out.stderr" &
    BANK_SERVER_PID=$!
    BANK_SERVER_PIDS+=("$BANK_SERVER_PID")
    BANK_SERVER_ADDRESS=""
    BANK_SERVER_ISO_ADDRESS=""
    local waited=0
    while [ -z "$BANK_SERVER_ADDRESS" ]; do
        kill -0 "$BANK_SERVER_PID" 2>/dev/null || die "bank-server exited before listening (see $out.stderr)"
        [ "$waited" -lt $((SERVER_READY_SECS * 100)) ] || die "bank-server did not listen within ${SERVER_READY_SECS}s (see $out.stderr)"
        sleep 0.01
        waited=$((waited + 1))
        BANK_SERVER_ADDRESS="$(ready_address "$out.stdout" "bank-server listening on")"
    done
    # The door's line comes before the main listener's. (Read by the scripts.)
    # shellcheck disable=SC2034
    BANK_SERVER_ISO_ADDRESS="$(ready_address "$out.stdout" "bank-server iso8583 on")"
}

# stop_bank_server PID [SIGNAL]: sends SIGNAL (default TERM) and waits for the exit (a TERM'd
# server that is still running after SERVER_STOP_SECS gets SIGKILL); forgets PID.
stop_bank_server() {
    local pid="$1" signal="${2:-TERM}" left=() other
    kill "-$signal" "$pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((SERVER_STOP_SECS * 10)) ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for other in "${BANK_SERVER_PIDS[@]}"; do
        [ "$other" = "$pid" ] || left+=("$other")
    done
    BANK_SERVER_PIDS=("${left[@]}")
}

# The EXIT trap: stops every server still running, runs the cleanup hooks, removes the work
# directories.
compare_cleanup() {
    local pid hook directory
    for pid in "${BANK_SERVER_PIDS[@]}"; do
        stop_bank_server "$pid" "$SERVER_EXIT_SIGNAL"
    done
    for hook in "${cleanup_hooks[@]}"; do
        "$hook" || true
    done
    for directory in "${COMPARE_WORK_DIRS[@]}"; do
        rm -rf "$directory"
    done
}
trap compare_cleanup EXIT

# rss_kib PID: resident set size of a process in KiB.
rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# percentiles_from_column FILE COLUMN SCALE: p50/p99 (µs) of one whitespace-separated column,
# multiplied by SCALE; prints a JSON object.
percentiles_from_column() {
    python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
path, column, scale = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
values = []
with open(path) as lines:
    for line in lines:
        parts = line.split()
        if len(parts) > column:
            values.append(float(parts[column]) * scale)
values.sort()
def at(q):
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))])
print(json.dumps({"p50": at(0.5), "p99": at(0.99), "p999": at(0.999), "max": at(1.0), "samples": len(values)}))
EOF
}

# machine_json: the machine the numbers were taken on.
machine_json() {
    python3 - <<'EOF'
import json, os
model = ""
with open("/proc/cpuinfo") as info:
    for line in info:
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
memory_kib = 0
with open("/proc/meminfo") as info:
    for line in info:
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
print(json.dumps({"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory_kib / 1048576, 1)}))
EOF
}

# A fresh operator token (256 random bits in hexadecimal), strong enough for the server's check.
operator_token() {
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

# smoke_check MARKER: the smoke's verdict on every JSON result written since MARKER was touched
# (under $RESULTS_DIR, sub-directories included): each "violations" must be 0, each "failed",
# "failed_starts" and "swarm_exit" 0, each "ops_acked" and "ops_per_sec" above 0. Prints one line
# per file; returns non-zero when any check fails or no result was written at all.
smoke_check() {
    find "$RESULTS_DIR" -name '*.json' -newer "$1" -print0 | python3 -c '
import json, sys
paths = sorted(path for path in sys.stdin.read().split("\0") if path)
bad = 0
for path in paths:
    try:
        with open(path) as file:
            result = json.load(file)
    except ValueError as error:
        print(f"FAIL {path}: not JSON ({error})")
        bad += 1
        continue
    if not isinstance(result, dict):
        continue
    problems = []
    for key in ("violations", "failed", "failed_starts", "swarm_exit"):
        if key in result and result[key] != 0:
            problems.append(f"{key} {result[key]}")
    for key in ("ops_acked", "ops_per_sec"):
        if key in result and not (isinstance(result[key], (int, float)) and result[key] > 0):
            problems.append(f"{key} {result[key]}")
    checked = [key for key in ("violations", "ops_acked", "ops_per_sec") if key in result]
    verdict = "FAIL" if problems else "ok"
    detail = ", ".join(problems) or ", ".join(f"{key} {result[key]}" for key in checked) or "-"
    print(f"{verdict:4} {path}: {detail}")
    bad += bool(problems)
if not paths:
    print("FAIL no result was written")
    bad += 1
sys.exit(1 if bad else 0)
'
}
