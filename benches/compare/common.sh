# Shared helpers of the comparison scripts; sourced, not run.
#
# Every script writes its result as one JSON object to $RESULTS_DIR/<name>.json with at least
# "ops_per_sec" and, where the tool reports them, "latency_us": {"p50", "p99"}.

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
    : "${REDIS_REQUESTS:=400}" "${REDIS_TRANSFER_REQUESTS:=400}"
    : "${MEMORY_ACCOUNTS:=1000}" "${SOAK_SECONDS:=2}" "${SOAK_SAMPLE:=1}" "${SOAK_ACCOUNTS:=20}"
    : "${RECOVERY_ACCOUNTS:=1000}" "${RECOVERY_RECORDS:=10000}" "${RECOVERY_STARTS:=1}"
    : "${FAILOVER_ATMS:=4}" "${RAMP:=4,8}" "${STEP:=1s}" "${ACCOUNTS:=50}" "${PAIRS:=1}"
    export RESULTS_DIR CLIENTS DURATION SPREAD_ACCOUNTS PG_ACCOUNTS TRANSFER_ACCOUNTS \
        REDIS_REQUESTS REDIS_TRANSFER_REQUESTS MEMORY_ACCOUNTS SOAK_SECONDS SOAK_SAMPLE \
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
