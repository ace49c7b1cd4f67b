#!/usr/bin/env python3
"""Prints the results table and the goals from the JSON files the comparison scripts wrote, and
draws the plots; with --write-docs, also rewrites the generated results section of
docs/BENCHMARKS.md and its plots in docs/benchmarks/.

    python3 benches/compare/report.py [--write-docs] [--no-plots] [--strict] [RESULTS_DIR]
    python3 benches/compare/report.py --test [--strict]

--test runs test_report.py (the generator's tests on fabricated results) in the venv, so the
plot tests run too.

RESULTS_DIR defaults to target/compare-results. The plots go to RESULTS_DIR/plots, or with
--write-docs to docs/benchmarks/ (--plot-dir overrides both). They need matplotlib: when python3
lacks it, the script makes a venv under the cargo target directory on first use
(python3 -m venv, then pip install -r benches/compare/requirements.txt, pinned versions) and runs
itself again in it. Without matplotlib the tables still print and the plots are skipped with a
warning, unless --strict (or --write-docs) makes that a failure.
"""

import argparse
import importlib.util
import os
import subprocess
import sys

sys.dont_write_bytecode = True

COMPARE_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(os.path.dirname(COMPARE_DIR))
sys.path.insert(0, COMPARE_DIR)

from reporting import docs  # noqa: E402
from reporting.results import Results, grouped  # noqa: E402

REQUIREMENTS = os.path.join(COMPARE_DIR, "requirements.txt")
DOCUMENT = os.path.join(REPO_DIR, "docs", "BENCHMARKS.md")
DOCS_PLOT_DIR = os.path.join(REPO_DIR, "docs", "benchmarks")
# Set in the environment of the run inside the venv, so it never makes another.
VENV_ACTIVE_VARIABLE = "COMPARE_REPORT_VENV"
# The venv's directory, under the cargo target directory (which is never committed).
VENV_NAME = "compare-report-venv"
# What the venv was made from: requirements.txt as it was then (a change remakes the install).
VENV_STAMP = "requirements.installed"


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default=os.path.join("target", "compare-results"),
                        help="the results directory (default target/compare-results)")
    parser.add_argument("--write-docs", action="store_true",
                        help="rewrite the generated section of docs/BENCHMARKS.md and its plots")
    parser.add_argument("--docs", default=DOCUMENT,
                        help="the document --write-docs rewrites (default docs/BENCHMARKS.md)")
    parser.add_argument("--plot-dir", help="where the plots go (default RESULTS_DIR/plots, or "
                        "with --write-docs the benchmarks/ folder beside the document)")
    parser.add_argument("--no-plots", action="store_true",
                        help="tables only (with --write-docs, the section shows no plot)")
    parser.add_argument("--strict", action="store_true",
                        help="fail when the plots cannot be drawn (matplotlib missing)")
    parser.add_argument("--test", action="store_true",
                        help="run test_report.py (in the venv, so the plot tests run) and exit")
    return parser.parse_args()


def log(message):
    print(f"report.py: {message}", file=sys.stderr)


def venv_directory():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO_DIR, "target")
    return os.path.join(os.path.abspath(target), VENV_NAME)


def ensure_venv():
    """The venv's python with the pinned requirements installed, or None (with a warning) when it
    cannot be made."""
    directory = venv_directory()
    python = os.path.join(directory, "bin", "python")
    stamp = os.path.join(directory, VENV_STAMP)
    with open(REQUIREMENTS, encoding="utf-8") as file:
        wanted = file.read()
    try:
        with open(stamp, encoding="utf-8") as file:
            if file.read() == wanted and os.path.exists(python):
                return python
    except OSError:
        pass
    log(f"making the plotting venv in {directory} (pip install -r {REQUIREMENTS})")
    try:
        if not os.path.exists(python):
            subprocess.run([sys.executable, "-m", "venv", directory], check=True,
                           stdout=sys.stderr)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-cache-dir", "-r", REQUIREMENTS], check=True, stdout=sys.stderr)
    except (OSError, subprocess.CalledProcessError) as error:
        hint = "" if importlib.util.find_spec("ensurepip") else " (Debian: install python3-venv)"
        log(f"could not make the venv{hint}: {error}")
        return None
    with open(stamp, "w", encoding="utf-8") as file:
        file.write(wanted)
    return python


def plotting_available():
    return importlib.util.find_spec("matplotlib") is not None


def rerun_in_venv_if_needed(options):
    """Runs this script again in the venv when plots are wanted and matplotlib is missing here.
    Returns only when this process should go on (with or without plots)."""
    if options.no_plots or plotting_available() or os.environ.get(VENV_ACTIVE_VARIABLE):
        return
    python = ensure_venv()
    if python is None:
        return
    environment = dict(os.environ, **{VENV_ACTIVE_VARIABLE: "1"})
    sys.stdout.flush()
    os.execve(python, [python, os.path.abspath(__file__)] + sys.argv[1:], environment)


def run_tests(strict):
    """Runs test_report.py with the venv's python (the plot tests need matplotlib); with the
    running python when the venv cannot be made (they are skipped then, a failure if STRICT)."""
    python = sys.executable if plotting_available() else ensure_venv()
    if python is None:
        if strict:
            log("no venv with matplotlib: the plot tests cannot run")
            return 1
        python = sys.executable
    environment = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    command = [python, "-m", "unittest", "discover", "-s", COMPARE_DIR, "-p", "test_report.py"]
    return subprocess.run(command, env=environment, check=False).returncode


def print_tables(results):
    print(f"machine: {docs.machine_line(results)}")
    print(docs.results_table(results, padded=True))
    spread = results.get("actor_bank_spread")
    if spread and spread.get("setup_secs") is not None:
        print(
            f"\nactor-bank spread: creating {grouped(spread.get('accounts'))} accounts (with "
            f"server start-up) took {spread['setup_secs']} s "
            f"({grouped(spread.get('accounts_per_sec'))} accounts/s); the audit after the load "
            f"took {spread.get('audit_secs')} s"
        )
    ramp = docs.ramp_table(results, padded=True)
    print("\nlogin storm:")
    print(ramp if ramp else "not run")
    print("\ngoals:")
    print(docs.goals_table(results, padded=True))


def main():
    options = arguments()
    strict = options.strict or options.write_docs
    if options.test:
        return run_tests(options.strict)
    rerun_in_venv_if_needed(options)
    results = Results(options.results)
    print_tables(results)

    written = []
    plot_dir = options.plot_dir or (
        os.path.join(os.path.dirname(os.path.abspath(options.docs)), "benchmarks")
        if options.write_docs else os.path.join(options.results, "plots"))
    if not options.no_plots:
        if plotting_available():
            from reporting import plots

            written = plots.draw_all(results, plot_dir)
            log(f"plots in {plot_dir}: {', '.join(written) or 'none (no data)'}")
        elif strict:
            log("matplotlib is not available: no plots (see the messages above)")
            return 1
        else:
            log("matplotlib is not available: the plots are skipped")

    if options.write_docs:
        with open(options.docs, encoding="utf-8") as file:
            document = file.read()
        try:
            image_dir = os.path.relpath(plot_dir, os.path.dirname(os.path.abspath(options.docs)))
            generated = docs.section_text(results, document, written,
                                          image_dir.replace(os.sep, "/"))
            updated = docs.splice(document, generated)
        except docs.MarkersMissing as error:
            log(f"{options.docs}: {error}")
            return 1
        if updated != document:
            with open(options.docs, "w", encoding="utf-8") as file:
                file.write(updated)
        state = "rewritten" if updated != document else "unchanged"
        log(f"{options.docs}: results section {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
