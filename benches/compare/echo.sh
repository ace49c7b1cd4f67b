#!/usr/bin/env bash
# The loopback ceiling: benches/echo_ceiling.rs (a bare tokio server answering reply-sized frames)
# for $DURATION seconds, twice:
#   echo_ceiling.json:   $CLIENTS connections (default 64), one request in flight each (the
#                        ceiling of the ATM workloads)
#   echo_pipelined.json: $ECHO_PIPELINED_CONNECTIONS connections (default 8), each with
#                        $ECHO_PIPELINED_DEPTH requests in flight (default 64; the ceiling of
#                        switch mode, the same shape as actor_bank.sh's switch runs)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ECHO_PIPELINED_CONNECTIONS="${ECHO_PIPELINED_CONNECTIONS:-${SWITCH_CONNECTIONS:-8}}"
ECHO_PIPELINED_DEPTH="${ECHO_PIPELINED_DEPTH:-${SWITCH_IN_FLIGHT:-64}}"

# echo_run NAME CONNECTIONS DEPTH: one measurement, written to $RESULTS_DIR/NAME.json.
echo_run() {
    local name="$1" connections="$2" depth="$3"
    log "echo: $name, $connections connections x $depth in flight, ${DURATION}s"
    (cd "$REPO_DIR" && ECHO_CONNECTIONS="$connections" ECHO_DEPTH="$depth" \
        ECHO_SECONDS="$DURATION" ECHO_JSON_OUT="$RESULTS_DIR/$name.json" \
        cargo bench --quiet --bench echo_ceiling) >&2
    log "echo: $(cat "$RESULTS_DIR/$name.json")"
}

echo_run echo_ceiling "$CLIENTS" 1
echo_run echo_pipelined "$ECHO_PIPELINED_CONNECTIONS" "$ECHO_PIPELINED_DEPTH"
