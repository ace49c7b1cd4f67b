#!/usr/bin/env python3
"""Prints the comparison table and the targets from the JSON files the scripts wrote.

    python3 benches/compare/report.py [RESULTS_DIR]
"""

import json
import os
import sys

RESULTS = sys.argv[1] if len(sys.argv) > 1 else "target/compare-results"

ROWS = [
    ("echo_ceiling", "tokio echo (loopback ceiling)", "no work, no disk"),
    ("redis_hot", "Redis, Lua + SET NX, appendfsync always", "1 key"),
    ("postgres_hot", "PostgreSQL, CTE, synchronous_commit on", "1 account"),
    ("postgres_spread", "PostgreSQL, CTE, synchronous_commit on", "100k accounts"),
    ("actor_bank_hot", "actor-bank (atm_swarm --bench)", "1 account"),
    ("actor_bank_spread", "actor-bank (atm_swarm --bench)", "100k accounts"),
    ("actor_bank_transfer_hot", "actor-bank (atm_swarm --bench --mix transfer=1)", "hot pair"),
    ("actor_bank_transfer_spread", "actor-bank (atm_swarm --bench --mix transfer=1)", "100k accounts, random pairs"),
]


def load(name):
    path = os.path.join(RESULTS, name + ".json")
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def number(value, digits=0):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def main():
    machine = load("machine") or {}
    if machine:
        print(
            f"machine: {machine.get('cpus')} CPUs ({machine.get('cpu_model')}), "
            f"{machine.get('memory_gib')} GiB"
        )
    echo = load("echo_ceiling")
    redis = load("redis_hot")
    header = ("system", "load", "ops/s", "p50 µs", "p99 µs", "of echo", "of Redis")
    lines = [header]
    for name, system, scenario in ROWS:
        result = load(name)
        if result is None:
            continue
        if name == "actor_bank_spread" and result.get("accounts"):
            scenario = f"{result['accounts']:,} accounts"
        if name == "actor_bank_transfer_spread" and result.get("accounts"):
            scenario = f"{result['accounts']:,} accounts, random pairs"
        rate = result.get("ops_per_sec")
        latency = result.get("latency_us") or {}
        of_echo = rate / echo["ops_per_sec"] if echo and rate else None
        of_redis = rate / redis["ops_per_sec"] if redis and rate else None
        lines.append(
            (
                system,
                scenario,
                number(rate),
                number(latency.get("p50")),
                number(latency.get("p99")),
                "n/a" if of_echo is None else f"{of_echo:.0%}",
                "n/a" if of_redis is None else f"{of_redis:.2f}×",
            )
        )
    widths = [max(len(str(line[column])) for line in lines) for column in range(len(header))]
    for index, line in enumerate(lines):
        print(
            "| "
            + " | ".join(
                str(cell).ljust(widths[column]) if column < 2 else str(cell).rjust(widths[column])
                for column, cell in enumerate(line)
            )
            + " |"
        )
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")

    spread = load("actor_bank_spread")
    if spread and spread.get("setup_secs") is not None:
        print(
            f"\nactor-bank spread: creating {spread['accounts']:,} accounts (with server start-up) took "
            f"{spread['setup_secs']} s ({number(spread.get('accounts_per_sec'))} accounts/s); "
            f"the audit after the load took {spread.get('audit_secs')} s"
        )

    print("\ntargets:")
    hot = load("actor_bank_hot")

    def verdict(ok):
        return "met" if ok else "NOT met"

    if hot and redis:
        ratio = hot["ops_per_sec"] / redis["ops_per_sec"]
        print(f"  hot account >= 2x Redis: {ratio:.2f}x -> {verdict(ratio >= 2)}")
    if hot and echo:
        ratio = hot["ops_per_sec"] / echo["ops_per_sec"]
        p99 = hot["latency_us"]["p99"]
        ok = ratio >= 0.5 and p99 <= 2000
        print(
            f"  hot account >= 50% of echo with p99 <= 2 ms: {ratio:.0%}, p99 {p99 / 1000:.2f} ms"
            f" -> {verdict(ok)}"
        )
    if spread and echo:
        ratio = spread["ops_per_sec"] / echo["ops_per_sec"]
        print(
            f"  spread over {spread['accounts']:,} accounts >= 60% of echo: {ratio:.0%}"
            f" -> {verdict(ratio >= 0.6)}"
        )
    million = load("memory_1m_accounts")
    if million:
        rss = million["rss_mib_idle_after_recovery"]
        print(
            f"  {million['accounts']:,} accounts in <= 256 MiB RSS: {rss} MiB idle after recovery "
            f"(start-up {million['start_secs']} s) -> {verdict(rss <= 256)}"
        )
    soak = load("memory_soak")
    if soak and soak.get("samples"):
        early, late = soak["rss_mib_second_quarter_mean"], soak["rss_mib_last_quarter_mean"]
        growth = (late - early) / early if early else 0
        print(
            f"  RSS flat over a {soak['seconds']} s run: {soak['rss_mib_first']} MiB at start, "
            f"{early} MiB (2nd quarter) -> {late} MiB (last quarter), max {soak['rss_mib_max']} MiB, "
            f"{growth:+.1%} -> {verdict(abs(growth) <= 0.05)}"
        )


if __name__ == "__main__":
    main()
