#!/usr/bin/env bash
# The loopback ceiling: benches/echo_ceiling.rs (a bare tokio server answering reply-sized frames)
# with $CLIENTS connections, one request in flight each, for $DURATION seconds.
# Writes $RESULTS_DIR/echo_ceiling.json.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

log "echo ceiling: $CLIENTS connections, ${DURATION}s"
(cd "$REPO_DIR" && ECHO_CONNECTIONS="$CLIENTS" ECHO_SECONDS="$DURATION" \
    ECHO_JSON_OUT="$RESULTS_DIR/echo_ceiling.json" \
    cargo bench --quiet --bench echo_ceiling) >&2
log "echo ceiling: $(cat "$RESULTS_DIR/echo_ceiling.json")"
