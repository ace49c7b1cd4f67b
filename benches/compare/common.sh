# Shared helpers of the comparison scripts; sourced, not run.
#
# Every script writes its result as one JSON object to $RESULTS_DIR/<name>.json with at least
# "ops_per_sec" and, where the tool reports them, "latency_us": {"p50", "p99"}.

set -euo pipefail

COMPARE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$COMPARE_DIR/../.." && pwd)"
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
