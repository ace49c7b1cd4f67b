#!/usr/bin/env bash
# Runs every comparison on this machine, in one go, and prints the results table and the targets.
#
#   benches/compare/run_all.sh
#
# Settings (environment):
#   CLIENTS=64            concurrent clients / ATMs / connections everywhere
#   DURATION=10           seconds of load per measurement
#   SPREAD_ACCOUNTS=100000  accounts in the actor-bank spread run (PG_ACCOUNTS for PostgreSQL)
#   MEMORY_ACCOUNTS=1000000 accounts for the resident-memory measurement
#   SOAK_SECONDS=600      length of the memory soak (0 skips it)
#   WITH_CRITERION=1      also run `cargo bench` (the criterion micro-benchmarks) first
#   ONLY="echo redis postgres actor_bank cluster memory"  a subset, in that order
#   RESULTS_DIR=target/compare-results
#
# Installs what it needs from Debian packages when missing (redis-server, redis-tools,
# postgresql, pgbench). Needs a Rust toolchain and python3.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ONLY="${ONLY:-echo redis postgres actor_bank cluster memory recovery}"
export CLIENTS DURATION RESULTS_DIR

ensure_packages python3 python3
log "results go to $RESULTS_DIR"
machine_json >"$RESULTS_DIR/machine.json"
build_release

if [ -n "${WITH_CRITERION:-}" ]; then
    log "criterion micro-benchmarks (cargo bench)"
    (cd "$REPO_DIR" && cargo bench --bench codec --bench ledger --bench journal --bench actors) \
        >"$RESULTS_DIR/criterion.txt" 2>&1
fi

for part in $ONLY; do
    case "$part" in
        echo | redis | postgres | actor_bank | cluster | memory | recovery) bash "$COMPARE_DIR/$part.sh" ;;
        *) die "unknown part $part (echo redis postgres actor_bank cluster memory)" ;;
    esac
done

python3 "$COMPARE_DIR/report.py" "$RESULTS_DIR"
