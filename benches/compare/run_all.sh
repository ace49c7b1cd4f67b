#!/usr/bin/env bash
# Runs every comparison on this machine, in one go, and prints the results table and the targets.
#
#   benches/compare/run_all.sh
#
# Settings (environment):
#   CLIENTS=64            concurrent clients / ATMs / connections everywhere
#   DURATION=10           seconds of load per measurement
#   SPREAD_ACCOUNTS=100000  accounts in the actor-bank spread run (PG_ACCOUNTS for PostgreSQL)
#   SWITCH_CONNECTIONS=8 SWITCH_IN_FLIGHT=64  the switch runs (actor_bank.sh) and the
#                         pipelined echo ceiling (echo.sh)
#   RAMP=64,128,256,512,1024,2048,4096 STEP=10s  the login-storm ramp (ramp.sh)
#   MEMORY_ACCOUNTS=1000000 accounts for the resident-memory measurement
#   SOAK_SECONDS=600      length of the memory soak (0 skips it)
#   WITH_CRITERION=1      also run `cargo bench` (the criterion micro-benchmarks) first
#   WITH_PROFILE=1        also run profile.sh last: flame graphs of the server under the
#                         workloads whose goals are missed, in RESULTS_DIR/profiles/
#   WRITE_DOCS=1          rewrite the generated results section of docs/BENCHMARKS.md and its
#                         plots in docs/benchmarks/ (report.py --write-docs); otherwise the plots
#                         go to RESULTS_DIR/plots
#   ONLY="echo redis postgres actor_bank cluster memory recovery ramp"  a subset, in that order
#   RESULTS_DIR=target/compare-results
#   SMOKE=1               a smoke run: tiny sizes and lengths (common.sh), results in
#                         target/compare-smoke, the part run_all leaves out by default
#                         (SMOKE_EXTRA="tls") runs too, and the run fails unless every result
#                         reports 0 violations (see smoke_check in common.sh)
#
# The login-storm ramp (ramp.sh: 64 -> 4096 ATMs, the server at its defaults but for the
# per-peer connection cap) is part of a full run and writes ramp.json; the TLS pair (tls.sh) is
# not (run it on its own). How long each part took is printed at the end.
#
# Installs what it needs from Debian packages when missing (redis-server, redis-tools,
# postgresql, pgbench). Needs a Rust toolchain and python3.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ONLY="${ONLY:-echo redis postgres actor_bank cluster memory recovery ramp${WITH_PROFILE:+ profile}}"
export CLIENTS DURATION RESULTS_DIR

ensure_packages python3 python3
log "results go to $RESULTS_DIR"
if [ -n "${SMOKE:-}" ]; then
    SMOKE_MARKER="$RESULTS_DIR/.smoke-started"
    touch "$SMOKE_MARKER"
    smoke_started="$(date +%s)"
fi
machine_json >"$RESULTS_DIR/machine.json"
build_release

if [ -n "${WITH_CRITERION:-}" ]; then
    log "criterion micro-benchmarks (cargo bench)"
    (cd "$REPO_DIR" && cargo bench --bench codec --bench ledger --bench journal --bench actors \
        --bench hot_paths) \
        >"$RESULTS_DIR/criterion.txt" 2>&1
fi

# How long each part took, printed at the end.
timings=()
# run_part PART: runs PART.sh (its standard output kept in PART.stdout for ramp and tls, whose
# tables go there) and notes its seconds.
run_part() {
    local part="$1" started status=0
    started="$(date +%s)"
    case "$part" in
        echo | redis | postgres | actor_bank | cluster | memory | recovery) bash "$COMPARE_DIR/$part.sh" || status=$? ;;
        ramp | tls | profile) bash "$COMPARE_DIR/$part.sh" >"$RESULTS_DIR/$part.stdout" || status=$? ;;
        *) die "unknown part $part (echo redis postgres actor_bank cluster memory recovery ramp tls profile)" ;;
    esac
    timings+=("$(printf '%-10s %5d s' "$part" "$(($(date +%s) - started))")")
    [ "$status" -eq 0 ] || die "$part failed (exit status $status)"
}

for part in $ONLY; do
    run_part "$part"
done

# The TLS pair is not part of a full run (many minutes of alternating runs), but in smoke mode
# it is as cheap as the rest.
if [ -n "${SMOKE:-}" ]; then
    for part in ${SMOKE_EXTRA-tls}; do
        run_part "$part"
    done
fi

# The smoke also runs the report generator's own tests (in its venv, the plots' too).
if [ -n "${SMOKE:-}" ]; then
    python3 "$COMPARE_DIR/report.py" --test --strict
fi
# shellcheck disable=SC2086
python3 "$COMPARE_DIR/report.py" ${SMOKE:+--strict} ${WRITE_DOCS:+--write-docs} "$RESULTS_DIR"

log "time per part:"
for timing in "${timings[@]}"; do
    log "  $timing"
done

if [ -n "${SMOKE:-}" ]; then
    log "smoke: checking the results ($(($(date +%s) - smoke_started)) s after the start)"
    smoke_check "$SMOKE_MARKER" || die "smoke: a workload failed its checks (above)"
    log "smoke: every result is correct"
fi
