"""The plots of the results section, as SVG: throughput per workload, latency percentiles per
run, goodput against ATMs in the login storm, and throughput over time through the failover.

Needs matplotlib (report.py runs this in its venv). The SVGs are deterministic: a fixed hash salt
for their ids, no date or creator in their metadata, text kept as text (no glyph outlines), so a
regeneration from the same results writes the same bytes and a new run changes only what changed.
"""

import os

import matplotlib

matplotlib.use("svg")
import matplotlib.patches  # noqa: E402 (the backend is chosen first)
import matplotlib.pyplot as pyplot  # noqa: E402
import matplotlib.ticker  # noqa: E402

from .results import (  # noqa: E402
    WORKLOADS,
    failover_series,
    family,
    label,
    latency,
    ramp_steps,
    rate,
)

# The salt of the SVG ids (any fixed text keeps them stable from one regeneration to the next).
SVG_HASH_SALT = "actor-bank-benchmarks"
# Width of every plot, in inches; heights grow with the number of bars.
PLOT_WIDTH_INCHES = 9.0
# Height given to one bar of the bar charts, in inches.
BAR_HEIGHT_INCHES = 0.24
COLOURS = {
    "actor-bank": "#1f77b4",
    "redis": "#d62728",
    "postgres": "#2ca02c",
    "echo": "#7f7f7f",
    "other": "#9467bd",
}
FAMILY_NAMES = {
    "actor-bank": "actor-bank",
    "redis": "Redis",
    "postgres": "PostgreSQL",
    "echo": "tokio echo",
    "other": "other",
}

matplotlib.rcParams.update({
    "svg.hashsalt": SVG_HASH_SALT,
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
})
SVG_METADATA = {"Date": None, "Creator": None}


def _save(figure, directory, name):
    path = os.path.join(directory, name)
    figure.savefig(path, format="svg", metadata=SVG_METADATA, bbox_inches="tight")
    pyplot.close(figure)
    return name


def _bars(results):
    """The throughput bars: (workload label, system name, ops/s) for every result that ran,
    grouped by workload, the actor-bank run first."""
    groups = []
    for workload in WORKLOADS:
        bars = []
        for name in [workload.subject] + workload.peers:
            value = rate(results.get(name))
            if value is not None:
                bars.append((workload.short, name, value))
        if bars:
            groups.append(bars)
    return groups


def throughput_plot(results, directory):
    """Ops/s per workload, actor-bank beside each of its peers. None when nothing ran."""
    groups = _bars(results)
    if not groups:
        return None
    positions, labels, values, colours = [], [], [], []
    position = 0.0
    for bars in groups:
        for workload, name, value in bars:
            positions.append(position)
            labels.append(f"{workload}: {label(name, results.get(name))}")
            values.append(value)
            colours.append(COLOURS[family(name)])
            position += 1
        position += 0.6
    height = 1.0 + BAR_HEIGHT_INCHES * position
    figure, axes = pyplot.subplots(figsize=(PLOT_WIDTH_INCHES, height))
    axes.barh(positions, values, color=colours, height=0.8)
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    for spot, value in zip(positions, values):
        axes.text(value, spot, f" {value:,.0f}".replace(",", " "), va="center", fontsize=7)
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_plain))
    axes.set_xlabel("acknowledged operations per second")
    axes.set_title("Throughput per workload (each actor-bank run above its peers)")
    axes.set_xlim(0, max(values) * 1.15)
    _legend(axes, {family(name) for bars in groups for _, name, _ in bars})
    return _save(figure, directory, "results-throughput.svg")


def _plain(value, _position=None):
    """An axis tick as the document writes numbers: 100 000, 0.5."""
    if value >= 1 or value == 0:
        return f"{value:,.0f}".replace(",", " ")
    return f"{value:g}"


def _legend(axes, families):
    handles = [
        matplotlib.patches.Patch(color=COLOURS[name], label=FAMILY_NAMES[name])
        for name in COLOURS
        if name in families
    ]
    axes.legend(handles=handles, loc="lower right", frameon=False)


def latency_plot(results, directory):
    """p50, p99 and p99.9 of every run that reported them (log scale). None when none did."""
    runs = []
    seen = set()
    for workload in WORKLOADS:
        for name in [workload.subject] + workload.peers:
            if name in seen:
                continue
            seen.add(name)
            values = [latency(results.get(name), key) for key in ("p50", "p99", "p999")]
            if values[0] is not None:
                runs.append((f"{workload.short}: {label(name, results.get(name))}", values))
    if not runs:
        return None
    height = 1.0 + BAR_HEIGHT_INCHES * 1.2 * len(runs)
    figure, axes = pyplot.subplots(figsize=(PLOT_WIDTH_INCHES, height))
    offsets = {"p50": -0.27, "p99": 0.0, "p99.9": 0.27}
    shades = {"p50": "#9ecae1", "p99": "#3182bd", "p99.9": "#08519c"}
    for index, key in enumerate(offsets):
        spots = [row + offsets[key] for row, (_, values) in enumerate(runs)
                 if values[index] is not None]
        widths = [values[index] / 1000 for _, values in runs if values[index] is not None]
        axes.barh(spots, widths, height=0.26, color=shades[key], label=key)
    axes.set_yticks(range(len(runs)), [name for name, _ in runs])
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_plain))
    axes.set_xlabel("latency, ms (log scale)")
    axes.set_title("Latency percentiles per run")
    axes.legend(loc="lower right", frameon=False)
    return _save(figure, directory, "results-latency.svg")


def ramp_plot(results, directory):
    """Goodput and p99 against the number of ATMs in the login storm. None when it did not run."""
    steps = [(atms, goodput, p99) for atms, goodput, p99 in ramp_steps(results)
             if isinstance(goodput, (int, float))]
    if not steps:
        return None
    figure, axes = pyplot.subplots(figsize=(PLOT_WIDTH_INCHES, 4.0))
    atms = [step[0] for step in steps]
    goodput = [step[1] for step in steps]
    axes.plot(atms, goodput, marker="o", color=COLOURS["actor-bank"], label="goodput")
    peak = max(goodput)
    axes.axhline(peak * 0.8, color="#999999", linestyle="--", linewidth=1,
                 label="80% of the peak (the goal's floor)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(atms, [str(value) for value in atms])
    axes.set_xlabel("ATMs (each verifies its card before every withdrawal)")
    axes.set_ylabel("goodput, approved operations per second")
    axes.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_plain))
    axes.set_ylim(0, peak * 1.15)
    latencies = [(step[0], step[2] / 1000) for step in steps if isinstance(step[2], (int, float))]
    if latencies:
        other = axes.twinx()
        other.spines["right"].set_visible(True)
        other.plot([point[0] for point in latencies], [point[1] for point in latencies],
                   marker="s", color=COLOURS["redis"], label="p99")
        other.set_ylabel("p99, ms")
        other.set_ylim(bottom=0)
        lines = axes.get_legend_handles_labels()
        more = other.get_legend_handles_labels()
        axes.legend(lines[0] + more[0], lines[1] + more[1], loc="lower left", frameon=False)
    else:
        axes.legend(loc="lower left", frameon=False)
    axes.set_title("Login storm: goodput and p99 against ATMs")
    return _save(figure, directory, "results-login-storm.svg")


def failover_plot(results, directory):
    """Acknowledged operations per second through the failover, the kill marked. None when the
    failover did not run."""
    found = failover_series(results)
    if not found:
        return None
    series, kill, recorded = found
    summary = results.get("cluster_failover") or {}
    figure, axes = pyplot.subplots(figsize=(PLOT_WIDTH_INCHES, 3.5))
    # Second i holds the operations acknowledged from i to i + 1: a step, closed at the end.
    seconds = list(range(len(series) + 1))
    values = list(series) + [series[-1]]
    axes.step(seconds, values, where="post", color=COLOURS["actor-bank"])
    axes.fill_between(seconds, values, step="post", color=COLOURS["actor-bank"], alpha=0.15)
    text = "SIGKILL" if recorded else f"SIGKILL (about: {kill:g} s after the swarm started)"
    axes.axvline(kill, color=COLOURS["redis"], linestyle="--", linewidth=1.2)
    axes.text(kill, max(series) * 1.02, f" {text}", color=COLOURS["redis"], fontsize=8)
    served = summary.get("kill_to_served_secs")
    if isinstance(served, (int, float)):
        axes.axvspan(kill, kill + served, color=COLOURS["redis"], alpha=0.08)
        axes.text(kill + served, max(series) * 0.9, f" its card served again after {served:g} s",
                  fontsize=8)
    axes.set_xlabel("second of the load")
    axes.set_ylabel("acknowledged operations")
    axes.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_plain))
    axes.set_ylim(0, max(series) * 1.12 if max(series) else 1)
    axes.set_title("Failover: three nodes, one killed under load")
    return _save(figure, directory, "results-failover.svg")


PLOTTERS = [throughput_plot, latency_plot, ramp_plot, failover_plot]
# Every file the plotters may write (the stale ones of a plot with no data are removed).
PLOT_FILES = ["results-throughput.svg", "results-latency.svg", "results-login-storm.svg",
              "results-failover.svg"]


def draw_all(results, directory):
    """Draws every plot that has data into DIRECTORY; removes the file of each plot that has none
    (it would show an older run). Returns the names written."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for plotter, name in zip(PLOTTERS, PLOT_FILES):
        made = plotter(results, directory)
        if made:
            written.append(made)
        elif os.path.exists(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
    return written
