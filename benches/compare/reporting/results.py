"""Reading a results directory: one JSON object per measurement (the contract of run_all.sh),
the workloads of the comparison with the peers each is set beside, and the numbers' formatting.

A file that is missing or not a JSON object reads as None: its rows say "not run", never a number.
"""

import datetime
import json
import os

# The switch workload's shape as the issue sets it: connections, and requests in flight on each.
SWITCH_CONNECTIONS = 8
SWITCH_IN_FLIGHT = 64


class Results:
    """The JSON files of one run, read once each, by name (`redis_hot` for redis_hot.json)."""

    def __init__(self, directory):
        self.directory = directory
        self._cache = {}

    def get(self, name):
        """The object in NAME.json, or None when the file is missing or is no JSON object."""
        if name not in self._cache:
            self._cache[name] = read_json(os.path.join(self.directory, name + ".json"))
        return self._cache[name]

    def path(self, *parts):
        """A path inside the results directory."""
        return os.path.join(self.directory, *parts)

    def started_at(self):
        """When the run started: machine.json is written first (run_all.sh), else the oldest
        result. From the files' times, so regenerating the same results writes the same date."""
        candidates = []
        for entry in sorted(os.listdir(self.directory)) if os.path.isdir(self.directory) else []:
            if entry.endswith(".json"):
                candidates.append(os.path.join(self.directory, entry))
        machine = os.path.join(self.directory, "machine.json")
        chosen = [machine] if os.path.exists(machine) else candidates
        times = [os.path.getmtime(path) for path in chosen if os.path.exists(path)]
        if not times:
            return None
        return datetime.datetime.fromtimestamp(min(times), datetime.timezone.utc)


def read_json(path):
    """The JSON object in PATH, or None (missing, unreadable, not an object)."""
    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def rate(result):
    """The operations per second of a result, or None."""
    if not result:
        return None
    value = result.get("ops_per_sec")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def latency(result, key):
    """One latency percentile of a result in µs (key p50, p99, p999, max), or None."""
    if not result:
        return None
    values = result.get("latency_us") or {}
    value = values.get(key) if isinstance(values, dict) else None
    return value if isinstance(value, (int, float)) else None


def violations(result):
    """The audit's violations of a result (0 when the result does not report them)."""
    if not result:
        return 0
    value = result.get("violations")
    return value if isinstance(value, int) else 0


def grouped(value, digits=0):
    """A number with spaces between groups of three digits: 28 402, 2.65."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "n/a"
    text = f"{value:,.{digits}f}"
    return text.replace(",", " ")


def milliseconds(micros):
    """A latency in µs written in ms: 1.24, 23.0, 396."""
    if micros is None:
        return "n/a"
    ms = micros / 1000
    if ms >= 100:
        return grouped(ms)
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


class System:
    """One measured system of a comparison: its result file and how the table names it."""

    def __init__(self, name, label, family):
        self.name = name
        self.label = label
        # Colours and grouping in the plots: actor-bank, redis, postgres, echo.
        self.family = family


SYSTEMS = {
    system.name: system
    for system in [
        System("echo_ceiling", "tokio echo, 64 conn. x depth 1", "echo"),
        System("echo_pipelined", "tokio echo, 8 conn. x depth 64", "echo"),
        System("redis_hot", "Redis, Lua withdraw + SET NX, 1 key", "redis"),
        System("redis_spread", "Redis, Lua PIN check + withdraw + SET NX", "redis"),
        System("redis_transfer_spread", "Redis, Lua two-key transfer + SET NX", "redis"),
        System("postgres_hot", "PostgreSQL, CTE, 1 account", "postgres"),
        System("postgres_spread", "PostgreSQL, CTE, spread", "postgres"),
        System("actor_bank_hot", "actor-bank, bincode", "actor-bank"),
        System("actor_bank_spread", "actor-bank, bincode", "actor-bank"),
        System("actor_bank_spread4", "actor-bank, bincode", "actor-bank"),
        System("actor_bank_spread_pin", "actor-bank, bincode ForCard", "actor-bank"),
        System("actor_bank_switch", "actor-bank, bincode", "actor-bank"),
        System("actor_bank_transfer_hot", "actor-bank, bincode", "actor-bank"),
        System("actor_bank_transfer_spread", "actor-bank, bincode", "actor-bank"),
        System("actor_bank_iso_hot", "actor-bank, ISO 8583 door", "actor-bank"),
        System("actor_bank_iso_switch", "actor-bank, ISO 8583 door", "actor-bank"),
        System("actor_bank_iso_spread", "actor-bank, ISO 8583 door", "actor-bank"),
        System("cluster_postgres_spread", "actor-bank, 1 node on PostgreSQL", "actor-bank"),
        System("cluster_three_nodes_spread", "actor-bank, 3 nodes on PostgreSQL", "actor-bank"),
        System("cluster_postgres_hot", "actor-bank, 1 node on PostgreSQL", "actor-bank"),
        System("cluster_files_spread", "actor-bank, 1 node, file journal", "actor-bank"),
        System("cluster_files_hot", "actor-bank, 1 node, file journal", "actor-bank"),
    ]
}


class Workload:
    """One row group of the results table: an actor-bank run and the peers it is compared with
    (the ratio column is the actor-bank run's ops/s over each peer's)."""

    def __init__(self, number, title, subject, peers, short):
        self.number = number
        self.title = title
        self.subject = subject
        self.peers = peers
        # The label of the workload in the plots.
        self.short = short

    def describe(self, result):
        """The title, with the switch's shape as RESULT ran it (the issue's 8 x 64 when unknown)."""
        shape = (result or {}).get("switch")
        shape = shape if isinstance(shape, dict) else {}
        return self.title.format(connections=shape.get("connections", SWITCH_CONNECTIONS),
                                 in_flight=shape.get("in_flight", SWITCH_IN_FLIGHT))


WORKLOADS = [
    Workload("1", "hot account, withdrawals", "actor_bank_hot",
             ["redis_hot", "echo_ceiling", "postgres_hot"], "1 hot"),
    Workload("2", "spread: verify + withdraw on a random card", "actor_bank_spread",
             ["redis_spread", "postgres_spread"], "2 spread"),
    Workload("2", "spread, 4 withdrawals per verified card", "actor_bank_spread4",
             ["redis_spread"], "2 spread x4"),
    Workload("2", "spread: verify + withdraw in one request (ForCard)", "actor_bank_spread_pin",
             ["redis_spread", "actor_bank_spread"], "2 spread, PIN with each"),
    Workload("3", "switch: {connections} connections x {in_flight} in flight, spread",
             "actor_bank_switch",
             ["echo_pipelined"], "3 switch"),
    Workload("4", "transfers between random pairs", "actor_bank_transfer_spread",
             ["redis_transfer_spread"], "4 transfers"),
    Workload("4", "transfers, one hot pair", "actor_bank_transfer_hot", [], "4 transfer pair"),
    Workload("5", "ISO 8583 door, hot account", "actor_bank_iso_hot", ["actor_bank_hot"],
             "5 ISO hot"),
    Workload("5", "ISO 8583 door, switch: {connections} x {in_flight}", "actor_bank_iso_switch",
             ["actor_bank_switch"],
             "5 ISO switch"),
    Workload("5", "ISO 8583 door, spread", "actor_bank_iso_spread", ["actor_bank_spread"],
             "5 ISO spread"),
    Workload("6", "cluster, 1 node on PostgreSQL, spread", "cluster_postgres_spread",
             ["postgres_spread", "actor_bank_spread"], "6 cluster 1 node"),
    Workload("6", "cluster, 3 nodes on PostgreSQL, spread", "cluster_three_nodes_spread",
             ["cluster_postgres_spread", "postgres_spread"], "6 cluster 3 nodes"),
    Workload("6", "cluster, 1 node on PostgreSQL, hot", "cluster_postgres_hot",
             ["postgres_hot"], "6 cluster hot"),
    Workload("6", "cluster, 1 node on the file journal, spread", "cluster_files_spread",
             ["actor_bank_spread"], "6 files spread"),
]


def label(name, result=None):
    """How the tables name the system of a result file (an echo run with the connections and
    depth RESULT reports, when it does)."""
    result = result or {}
    if name.startswith("echo") and isinstance(result.get("connections"), int) \
            and isinstance(result.get("depth"), int):
        return f"tokio echo, {result['connections']} conn. x depth {result['depth']}"
    system = SYSTEMS.get(name)
    return system.label if system else name


def family(name):
    """The family of a system (actor-bank, redis, postgres, echo) for the plots' colours."""
    system = SYSTEMS.get(name)
    return system.family if system else "other"


def ratio(subject, peer):
    """SUBJECT's ops/s over PEER's, or None when either did not run."""
    numerator, denominator = rate(subject), rate(peer)
    if numerator is None or denominator is None:
        return None
    return numerator / denominator


class Row:
    """One line of the results table."""

    def __init__(self, workload, name, result, ratio_value, is_subject):
        self.workload = workload
        self.name = name
        self.result = result
        self.ratio = ratio_value
        self.is_subject = is_subject

    def cells(self):
        """The cells: workload, system, ops/s, p50, p99, p99.9 (ms), ratio."""
        workload = ""
        if self.is_subject:
            workload = f"{self.workload.number}. {self.workload.describe(self.result)}"
        system = label(self.name, self.result)
        if self.result is None:
            return [workload, system, "not run", "", "", "", ""]
        ops = grouped(rate(self.result))
        found = violations(self.result)
        if found:
            ops += f" ({found} violations)"
        if self.is_subject:
            ratio_text = ""
        elif self.ratio is None:
            ratio_text = "n/a"
        else:
            ratio_text = f"{self.ratio:.2f}x"
        return [
            workload,
            system,
            ops,
            milliseconds(latency(self.result, "p50")),
            milliseconds(latency(self.result, "p99")),
            milliseconds(latency(self.result, "p999")),
            ratio_text,
        ]


TABLE_HEADER = ["workload", "system", "ops/s", "p50 ms", "p99 ms", "p99.9 ms",
                "actor-bank / this"]


def table_rows(results):
    """Every row of the results table: each workload's actor-bank run, then its peers."""
    rows = []
    for workload in WORKLOADS:
        subject = results.get(workload.subject)
        rows.append(Row(workload, workload.subject, subject, None, True))
        for peer in workload.peers:
            result = results.get(peer)
            rows.append(Row(workload, peer, result, ratio(subject, result), False))
    return rows


def ramp_steps(results):
    """The login storm's steps as (atms, goodput ops/s, p99 µs or None): from ramp.json, else
    from the swarm's own report (ramp/report.json). Empty when neither is there."""
    summary = results.get("ramp")
    steps = []
    if summary and isinstance(summary.get("steps"), list):
        for step in summary["steps"]:
            if isinstance(step, dict) and isinstance(step.get("atms"), int):
                steps.append((step["atms"], step.get("goodput_ops_per_sec"), step.get("p99_us")))
    if steps:
        return steps
    report = read_json(results.path("ramp", "report.json"))
    for step in (report or {}).get("ramp") or []:
        if isinstance(step, dict) and isinstance(step.get("atms"), int):
            p99 = (step.get("latency_us") or {}).get("p99")
            steps.append((step["atms"], step.get("goodput_per_sec"), p99))
    return steps


# Seconds from the start of the failover load to the SIGKILL, when cluster_failover.json does not
# say (cluster.sh sleeps this long after starting the swarm; the swarm's own set-up comes first).
FAILOVER_KILL_SECOND_ASSUMED = 8


def failover_series(results):
    """The failover's acknowledged operations per second (from cluster_failover/report.json's
    timeline, else cluster_failover.json), the second of the kill and whether that second was
    recorded (True) or assumed from cluster.sh (False). None when the failover did not run."""
    summary = results.get("cluster_failover")
    report = read_json(results.path("cluster_failover", "report.json"))
    series = []
    for second in (report or {}).get("timeline") or []:
        if isinstance(second, dict) and isinstance(second.get("ops_acked"), int):
            series.append(second["ops_acked"])
    if not series and summary and isinstance(summary.get("ops_per_second"), list):
        series = [value for value in summary["ops_per_second"] if isinstance(value, (int, float))]
    if not series:
        return None
    kill = (summary or {}).get("kill_second")
    if isinstance(kill, (int, float)):
        return series, float(kill), True
    return series, float(FAILOVER_KILL_SECOND_ASSUMED), False
