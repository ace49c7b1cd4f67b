#!/usr/bin/env bash
# Where the time goes: CPU profiles of a separately started bank-server, at its default settings,
# under the workloads of actor_bank.sh, and of its start on a large data directory (recovery).
#
#   PROFILE_RUNS="hot iso_hot spread switch storm256 storm4096 recovery"
#                                                        what to profile (default: all seven)
#   PROFILE_SECS=10                                      seconds of load per run
#   PROFILE_FREQ=999                                     samples per second
#   PROFILE_RECOVERY_ACCOUNTS=1000000 PROFILE_RECOVERY_RECORDS=10000000
#                                                        the data directory of the recovery run
#
# bank-server is built once with frame pointers and line tables (the `profiling` profile of
# Cargo.toml, into target/profiling-build, so the release binaries the other scripts time stay as
# they are) and run under `perf record --call-graph fp`; the load is the release atm_swarm, with
# the same flags as actor_bank.sh, 64 ATMs ($CLIENTS). The two storm runs are the login storm's
# load (ramp.sh: a verify + withdraw on a random card of 2 000 for every operation) held at 256
# and at 4 096 ATMs, the per-peer connection cap lifted as ramp.sh does, so the two profiles
# show what grows with the connections. For every run it keeps, under
# $RESULTS_DIR/profiles/:
#   NAME.svg     the flame graph (inferno), every sampled stack of the server
#   NAME.txt     perf's functions by self time, and the CPU both processes used (user + system
#                seconds, from their own accounting) beside the load's length
#   NAME.folded  the folded stacks the flame graph was drawn from
# perf.data itself is removed (it is large). Installs perf (Debian's linux-perf) and inferno
# (`cargo install inferno`) when missing.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PROFILE_RUNS="${PROFILE_RUNS:-hot iso_hot spread switch storm256 storm4096 recovery}"
PROFILE_SECS="${PROFILE_SECS:-10}"
PROFILE_FREQ="${PROFILE_FREQ:-999}"
PROFILE_RECOVERY_ACCOUNTS="${PROFILE_RECOVERY_ACCOUNTS:-1000000}"
PROFILE_RECOVERY_RECORDS="${PROFILE_RECOVERY_RECORDS:-10000000}"
SPREAD_ACCOUNTS="${SPREAD_ACCOUNTS:-100000}"
OUT="$RESULTS_DIR/profiles"
mkdir -p "$OUT"

ensure_packages perf linux-perf
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
    export PATH="$HOME/.cargo/bin:$PATH"
    if ! command -v inferno-flamegraph >/dev/null 2>&1; then
        log "profile: installing inferno (cargo install)"
        cargo install --quiet --locked inferno >&2
    fi
fi

build_release
PROFILE_TARGET="$(target_dir)/profiling-build"
log "profile: building bank-server with frame pointers (profile 'profiling')"
(cd "$REPO_DIR" && CARGO_TARGET_DIR="$PROFILE_TARGET" RUSTFLAGS="-C force-frame-pointers=yes" \
    cargo build --quiet --profile profiling --bin bank-server)
PROFILED_SERVER="$PROFILE_TARGET/profiling/bank-server"
SWARM="$(target_dir)/release/examples/atm_swarm"
[ -x "$PROFILED_SERVER" ] || die "$PROFILED_SERVER was not built"
BANK_OPERATOR_TOKEN="${BANK_OPERATOR_TOKEN:-$(operator_token)}"
export BANK_OPERATOR_TOKEN

work="$(mktemp -d /tmp/compare-profile.XXXXXX)"
remove_at_exit "$work"
perf_pid=""
stop_profiled() {
    if [ -n "$perf_pid" ]; then
        # perf writes its data once the server it runs has exited.
        pkill -TERM -P "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        perf_pid=""
    fi
}
cleanup_hooks+=(stop_profiled)

# cpu_secs PID: user + system CPU seconds the process has used so far.
cpu_secs() {
    awk -v ticks="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / ticks }' "/proc/$1/stat"
}

# start_profiled NAME DATA_DIR [FLAGS...]: bank-server under perf; waits for its ready line and
# sets server_address (and iso_address when the ISO 8583 door is open).
start_profiled() {
    local name="$1" data="$2"
    shift 2
    local stdout="$OUT/$name.server.stdout"
    perf record -q -F "$PROFILE_FREQ" --call-graph fp -o "$work/$name.data" -- \
        "$PROFILED_SERVER" --listen 127.0.0.1:0 --data-dir "$data" "$@" \
        >"$stdout" 2>"$OUT/$name.server.stderr" &
    perf_pid=$!
    server_address=""
    local waited=0
    while [ -z "$server_address" ]; do
        kill -0 "$perf_pid" 2>/dev/null || die "bank-server under perf exited (see $OUT/$name.server.stderr)"
        [ "$waited" -lt 6000 ] || die "bank-server did not listen within 300 s"
        sleep 0.05
        waited=$((waited + 1))
        server_address="$(sed -n 's/^bank-server listening on //p' "$stdout" | head -n 1)"
    done
    iso_address="$(sed -n 's/^bank-server iso8583 on //p' "$stdout" | head -n 1)"
}

# finish NAME LOAD_SECS SWARM_CPU: stops the server, folds the stacks and writes the outputs.
finish() {
    local name="$1" load_secs="$2" swarm_cpu="$3"
    local server_pid server_cpu
    server_pid="$(pgrep -P "$perf_pid" | head -n 1)"
    server_cpu="$(cpu_secs "$server_pid" 2>/dev/null || echo n/a)"
    stop_profiled
    perf script -i "$work/$name.data" 2>/dev/null | inferno-collapse-perf >"$OUT/$name.folded"
    inferno-flamegraph --title "bank-server: $name" <"$OUT/$name.folded" >"$OUT/$name.svg"
    local acked
    acked="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ops_acked"])' \
        "$OUT/$name.report.json" 2>/dev/null || echo 0)"
    {
        printf 'run %s: %s s of load, %s operations acknowledged; CPU used since the start: bank-server %s s, atm_swarm %s s (%s cores)\n\n' \
            "$name" "$load_secs" "$acked" "$server_cpu" "$swarm_cpu" "$(nproc)"
        perf report -i "$work/$name.data" --stdio --no-children --sort sym -g none --percent-limit 0.5 \
            2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 60
    } >"$OUT/$name.txt"
    rm -f "$work/$name.data"
    log "profile: $name -> $OUT/$name.svg ($(head -n 1 "$OUT/$name.txt"))"
}

# profile_load NAME ACCOUNTS DOOR SWARM_FLAGS...: one workload of actor_bank.sh under the profiler.
profile_load() {
    local name="$1" accounts="$2" door="$3"
    shift 3
    local server_flags=()
    local door_flags=()
    if [ "$door" = iso8583 ]; then
        server_flags=(--iso8583-listen 127.0.0.1:0 --iso8583-clear-pin-blocks)
    fi
    if [[ "$name" == storm* ]]; then
        server_flags=(--connections-per-peer-max 100000)
    fi
    start_profiled "$name" "$work/$name-data" "${server_flags[@]}"
    if [ "$door" = iso8583 ]; then
        door_flags=(--iso8583-address "$iso_address" --iso8583-clear-pin-blocks)
    fi
    log "profile: $name, $accounts accounts, ${PROFILE_SECS}s through $door ($*)"
    local times="$work/$name.times"
    /usr/bin/time -f '%U %S' -o "$times" "$SWARM" --bench --server "$server_address" \
        --front-door "$door" "${door_flags[@]}" --accounts "$accounts" \
        --initial-balance 1000000000000000 --duration "${PROFILE_SECS}s" \
        --json-out "$OUT/$name.report.json" "$@" >"$OUT/$name.swarm.stdout" 2>"$OUT/$name.swarm.stderr" ||
        log "profile: the swarm exited with $? (see $OUT/$name.swarm.stderr)"
    finish "$name" "$PROFILE_SECS" "$(awk '{ printf "%.2f", $1 + $2 }' "$times")"
    rm -rf "${work:?}/$name-data"
}

profile_recovery() {
    (cd "$REPO_DIR" && cargo build --release --quiet --example make_journal)
    log "profile: recovery, writing $PROFILE_RECOVERY_ACCOUNTS accounts and $PROFILE_RECOVERY_RECORDS records"
    "$(target_dir)/release/examples/make_journal" --data-dir "$work/recovery-data" \
        --accounts "$PROFILE_RECOVERY_ACCOUNTS" --records "$PROFILE_RECOVERY_RECORDS" >&2
    local started finished
    started="$(date +%s.%N)"
    start_profiled recovery "$work/recovery-data"
    finished="$(date +%s.%N)"
    finish recovery "$(python3 -c "print(round($finished - $started, 1))")" 0
    rm -rf "$work/recovery-data"
}

for run in $PROFILE_RUNS; do
    case "$run" in
        hot) profile_load hot 1 bincode --atms "$CLIENTS" --mix withdraw=1 ;;
        iso_hot) profile_load iso_hot 1 iso8583 --atms "$CLIENTS" --mix withdraw=1 ;;
        spread) profile_load spread "$SPREAD_ACCOUNTS" bincode --atms "$CLIENTS" --mix withdraw=1 --ops-per-card 1 ;;
        switch) profile_load switch "$SPREAD_ACCOUNTS" bincode --connections 8 --in-flight 64 --mix withdraw=1 ;;
        storm256 | storm4096)
            profile_load "$run" 2000 bincode --atms "${run#storm}" --mix withdraw=1 --ops-per-card 1 ;;
        recovery) profile_recovery ;;
        *) die "unknown run $run (hot iso_hot spread switch storm256 storm4096 recovery)" ;;
    esac
done
