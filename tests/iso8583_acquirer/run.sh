#!/usr/bin/env bash
# Runs the independent ISO 8583 acquirer (acquirer.py) against the real bank-server binary:
# a Python virtual environment in target/iso8583-venv with the pinned requirements, a server on
# a fresh data directory with the demo accounts and the ISO 8583 door on a free port (its
# address read back from the server's JSON log line "iso8583 listener"), the acquirer's
# scenarios, then the server stopped. Exits non-zero on any failure.
#
# BANK_SERVER names the binary (default: target/debug/bank-server, built when missing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

# The fixed zone PIN key of the test (2-key TDES): never a production key.
test_zone_pin_key="0123456789ABCDEFFEDCBA9876543210"
# Seconds the server has to log its ISO 8583 address.
start_timeout_secs=60

venv="$root/target/iso8583-venv"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
fi
# Installed again only when the pinned requirements change.
if ! cmp -s "$here/requirements.txt" "$stamp"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi

server="${BANK_SERVER:-$root/target/debug/bank-server}"
if [ -z "${BANK_SERVER:-}" ] && [ ! -x "$server" ]; then
    cargo build --locked --bin bank-server
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

key_file="$work/zone-pin.key"
(umask 077 && printf '%s\n' "$test_zone_pin_key" >"$key_file")
chmod 600 "$key_file"

log="$work/server.log"
env -u BANK_CONFIG RUST_LOG=info "$server" \
    --demo \
    --data-dir "$work/data" \
    --pin-key-file "$work/pin.key" \
    --listen 127.0.0.1:0 \
    --iso8583-listen 127.0.0.1:0 \
    --iso8583-pin-key-file "$key_file" \
    --log-format json \
    >"$work/server.out" 2>"$log" &
server_pid=$!

# The address is in the log line whose message is "iso8583 listener".
address=""
for _ in $(seq $((start_timeout_secs * 10))); do
    address="$("$venv/bin/python" - "$log" <<'EOF'
import json, sys
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if fields.get("message") == "iso8583 listener" and fields.get("address"):
        print(fields["address"])
        break
EOF
)"
    [ -n "$address" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "bank-server exited before listening:" >&2
        cat "$work/server.out" "$log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$address" ]; then
    echo "bank-server logged no iso8583 listener address within ${start_timeout_secs}s:" >&2
    cat "$log" >&2
    exit 1
fi

status=0
"$venv/bin/python" -B "$here/acquirer.py" "$address" "$test_zone_pin_key" || status=$?

kill -TERM "$server_pid"
if ! wait "$server_pid"; then
    echo "bank-server did not stop cleanly" >&2
    status=1
fi
server_pid=""
if [ "$status" -ne 0 ]; then
    echo "--- bank-server log ---" >&2
    tail -n 50 "$log" >&2
fi
exit "$status"
