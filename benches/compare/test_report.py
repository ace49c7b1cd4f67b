"""Tests of report.py on fabricated results: the table, every goal's verdict and arithmetic,
"not run" for a missing file, the spliced document, and (when matplotlib is there) the plots and
their byte-for-byte stability.

    python3 -m unittest discover -s benches/compare -p test_report.py
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
COMPARE_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, COMPARE_DIR)

from reporting import docs, goals  # noqa: E402
from reporting.results import Results, grouped, milliseconds, table_rows  # noqa: E402


def _latency(p50, p99, p999):
    return {"p50": p50, "p99": p99, "p999": p999, "max": p999 * 2}


def _run(ops, p50=1000, p99=2000, p999=4000, **extra):
    result = {"ops_per_sec": ops, "latency_us": _latency(p50, p99, p999), "violations": 0}
    result.update(extra)
    return result


def fabricated():
    """A complete results directory's objects (name -> JSON), with round numbers."""
    return {
        "machine": {"cpus": 2, "cpu_model": "Test CPU", "memory_gib": 8.0},
        "echo_ceiling": _run(100_000, 500, 1500, 2500),
        "echo_pipelined": _run(400_000, 900, 3000, 5000),
        "redis_hot": _run(10_000, 5000, 20000, 30000, clients=64),
        "redis_spread": _run(8_000, 6000, 22000, 32000),
        "redis_transfer_spread": _run(10_000, 5000, 20000, 30000),
        "postgres_hot": _run(1_000, 30000, 400000, 800000, clients=64),
        "postgres_spread": _run(12_000, 4000, 12000, 21000),
        "actor_bank_hot": _run(28_000, 1500, 9000, 15000, clients=64, duration_secs=10.02),
        "actor_bank_spread": _run(18_000, 3000, 12000, 20000, clients=64, duration_secs=10.0,
                                  accounts=100_000, setup_secs=6.1, accounts_per_sec=16000,
                                  audit_secs=2.0),
        "actor_bank_spread4": _run(32_000),
        "actor_bank_spread_pin": _run(30_000),
        "actor_bank_switch": _run(150_000),
        "actor_bank_transfer_hot": _run(24_000),
        "actor_bank_transfer_spread": _run(14_000, accounts=100_000),
        "actor_bank_iso_hot": _run(22_000),
        "actor_bank_iso_switch": _run(135_000),
        "actor_bank_iso_spread": _run(20_000),
        "cluster_postgres_spread": _run(12_600),
        "cluster_three_nodes_spread": _run(6_300),
        "cluster_postgres_hot": _run(22_000),
        "cluster_files_spread": _run(21_000),
        "cluster_failover": {"kill_to_served_secs": 3.2, "violations": 0, "kill_second": 1.5,
                             "ops_per_second": [5000, 5000, 0, 0, 3000, 5000]},
        "ramp": {"steps": [{"atms": 64, "goodput_ops_per_sec": 10_000, "p99_us": 9000},
                           {"atms": 512, "goodput_ops_per_sec": 12_000, "p99_us": 60000},
                           {"atms": 4096, "goodput_ops_per_sec": 7_800, "p99_us": 900000}],
                 "peak_goodput": 12_000, "lowest_after_peak_ratio": 0.65, "violations": 0},
        "memory_1m_accounts": {"accounts": 1_000_000, "rss_mib_idle_after_recovery": 150.5,
                               "start_secs": 0.9},
        "memory_soak": {"seconds": 600, "swarm_exit": 0, "ops_per_sec": 9000, "violations": 0,
                        "rss_mib_second_quarter_mean": 100.0, "rss_mib_last_quarter_mean": 103.0},
        "recovery": {"accounts": 1_000_000, "records": 10_000_000, "starts_secs": [13.8, 13.9, 14],
                     "failed_starts": 0, "median_secs": 13.9},
    }


def write(directory, objects):
    for name, value in objects.items():
        with open(os.path.join(directory, name + ".json"), "w", encoding="utf-8") as file:
            json.dump(value, file)


DOCUMENT = f"""# Benchmarks

## Results at production settings

{docs.BEGIN_MARKER}
old text
{docs.END_MARKER}

## 6. What bounds throughput now

## 8. Overload: a login-storm ramp

## 11. The ISO 8583 door beside the bincode door

## 13. Where the time goes at production settings
"""


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.temporary = tempfile.TemporaryDirectory()
        self.directory = self.temporary.name

    def tearDown(self):
        self.temporary.cleanup()

    def goals(self, objects):
        write(self.directory, objects)
        return {goal.text: goal for goal in goals.all_goals(Results(self.directory))}

    def test_every_goal_is_judged_with_its_arithmetic(self):
        found = self.goals(fabricated())
        hot = found["hot >= 2.5x Redis"]
        self.assertEqual(hot.verdict, goals.MET)
        self.assertEqual(hot.why, "28 000 / 10 000 = 2.80x >= 2.5x")
        echo = found["hot >= 50% of echo (depth 1)"]
        self.assertEqual((echo.verdict, echo.why), (goals.MISSED, "28 000 / 100 000 = 28% < 50%"))
        self.assertEqual(echo.pointer, goals.WHERE_TIME_GOES)
        self.assertEqual(found["hot p99 <= 2 ms"].verdict, goals.MISSED)
        self.assertEqual(found["spread >= 1.5x Redis spread"].why, "18 000 / 8 000 = 2.25x >= 1.5x")
        self.assertEqual(found["switch >= 50% of pipelined echo"].verdict, goals.MISSED)
        self.assertEqual(found["transfers >= 1.0x Redis transfer"].verdict, goals.MET)
        iso_hot = found["ISO door >= 80% of bincode, hot"]
        self.assertEqual((iso_hot.verdict, iso_hot.why),
                         (goals.MISSED, "22 000 / 28 000 = 79% < 80%"))
        self.assertEqual(found["ISO door >= 80% of bincode, switch"].verdict, goals.MET)
        ramp = found["login storm 64 -> 4096 ATMs: goodput never below 80% of peak"]
        self.assertEqual(ramp.verdict, goals.MISSED)
        self.assertIn("7 800 ops/s at 4096 ATMs / peak 12 000 at 512 ATMs = 65% < 80%", ramp.why)
        self.assertEqual(found["1M accounts in <= 160 MiB RSS"].verdict, goals.MET)
        self.assertEqual(found["RSS flat over the soak (within 5%)"].verdict, goals.MET)
        recovery = found["recovery of 1M accounts + 10M records <= 2 s"]
        self.assertEqual(recovery.verdict, goals.MISSED)
        self.assertIn("13.90 s > 2 s", recovery.why)
        one = found["cluster, 1 node on PostgreSQL, workload 2"]
        self.assertEqual(one.verdict, goals.REPORTED)
        self.assertIn("12 600 / 12 000 (PostgreSQL's CTE alone", one.why)
        three = found["cluster, 3 nodes on PostgreSQL, workload 2"]
        self.assertIn("6 300 / 12 600 (1 node) = 0.50x", three.why)

    def test_a_missing_file_is_not_run_never_a_number(self):
        objects = fabricated()
        for name in ("redis_hot", "actor_bank_switch", "ramp", "recovery", "memory_soak",
                     "cluster_failover", "machine"):
            del objects[name]
        found = self.goals(objects)
        for text in ("hot >= 2.5x Redis", "switch >= 50% of pipelined echo",
                     "ISO door >= 80% of bincode, switch",
                     "login storm 64 -> 4096 ATMs: goodput never below 80% of peak",
                     "recovery of 1M accounts + 10M records <= 2 s",
                     "RSS flat over the soak (within 5%)",
                     "cluster failover: SIGKILL of 1 of 3 nodes"):
            self.assertEqual(found[text].verdict, goals.NOT_RUN, text)
            self.assertEqual(found[text].measured, "n/a", text)
        rows = {row.name: row.cells() for row in table_rows(Results(self.directory))
                if row.name in ("redis_hot", "actor_bank_switch")}
        self.assertEqual(rows["redis_hot"][2:], ["not run", "", "", "", ""])
        self.assertEqual(rows["actor_bank_switch"][2], "not run")

    def test_an_empty_or_broken_directory_reports_without_failing(self):
        with open(os.path.join(self.directory, "redis_hot.json"), "w", encoding="utf-8") as file:
            file.write("{not json")
        results = Results(self.directory)
        self.assertTrue(all(goal.verdict == goals.NOT_RUN for goal in goals.all_goals(results)))
        self.assertIn("not run", docs.results_table(results, padded=True))
        self.assertIn("not run", docs.section_text(results, DOCUMENT, []))

    def test_fields_of_the_wrong_type_never_crash_the_report(self):
        original = fabricated()
        write(self.directory, original)
        failures = []
        for name, fields in original.items():
            for key in fields:
                for odd in ("x", None, [], {}, -1):
                    changed = json.loads(json.dumps(fields))
                    changed[key] = odd
                    write(self.directory, {name: changed})
                    results = Results(self.directory)
                    try:
                        goals.all_goals(results)
                        docs.section_text(results, DOCUMENT, [])
                    except Exception as error:  # noqa: BLE001 (the failure names the field)
                        failures.append(f"{name}.{key} = {odd!r}: {error!r}")
            write(self.directory, {name: fields})
        self.assertEqual(failures, [])

    def test_violations_never_meet_a_goal(self):
        objects = fabricated()
        objects["actor_bank_transfer_spread"]["violations"] = 3
        found = self.goals(objects)
        transfers = found["transfers >= 1.0x Redis transfer"]
        self.assertEqual(transfers.verdict, goals.MISSED)
        self.assertIn("found 3 violations", transfers.why)

    def test_smaller_runs_are_not_judged_against_sized_goals(self):
        objects = fabricated()
        objects["memory_1m_accounts"]["accounts"] = 1000
        objects["ramp"]["steps"] = objects["ramp"]["steps"][:2]
        objects["actor_bank_hot"]["clients"] = 4
        objects["actor_bank_switch"]["clients"] = 16
        objects["memory_soak"]["seconds"] = 2
        found = self.goals(objects)
        hot = found["hot >= 2.5x Redis"]
        self.assertEqual(hot.verdict, goals.OFF_SIZE)
        self.assertEqual(hot.why, "28 000 / 10 000 = 2.80x >= 2.5x; actor_bank_hot ran 4 clients, "
                                  "not 64")
        self.assertEqual(found["switch >= 50% of pipelined echo"].verdict, goals.OFF_SIZE)
        self.assertEqual(found["RSS flat over the soak (within 5%)"].verdict, goals.OFF_SIZE)
        self.assertEqual(found["spread >= 1.5x Redis spread"].verdict, goals.MET)
        self.assertEqual(found["1M accounts in <= 160 MiB RSS"].verdict, goals.OFF_SIZE)
        self.assertEqual(
            found["login storm 64 -> 4096 ATMs: goodput never below 80% of peak"].verdict,
            goals.OFF_SIZE)

    def test_the_document_is_rewritten_between_the_markers_only(self):
        write(self.directory, fabricated())
        results = Results(self.directory)
        generated = docs.section_text(results, DOCUMENT, ["results-throughput.svg"])
        updated = docs.splice(DOCUMENT, generated)
        self.assertNotIn("old text", updated)
        self.assertTrue(updated.startswith("# Benchmarks\n\n## Results at production settings\n"))
        self.assertTrue(updated.endswith(DOCUMENT[DOCUMENT.index(docs.END_MARKER):]))
        flat = " ".join(updated.split())
        self.assertIn("2 CPUs (Test CPU), 8.0 GiB of memory", flat)
        self.assertIn("64 clients (ATMs), 10 s of load per measurement, 100 000 accounts", flat)
        self.assertIn("![throughput per workload", updated)
        self.assertNotIn("results-latency.svg", updated)
        self.assertIn("**NOT met** | 28 000 / 100 000 = 28% < 50%; see [Where the time goes at "
                      "production settings](#13-where-the-time-goes-at-production-settings)",
                      updated)
        self.assertEqual(docs.splice(updated, generated), updated)
        with self.assertRaises(docs.MarkersMissing):
            docs.splice("# no markers\n", generated)

    def test_the_switch_and_echo_rows_name_the_shape_each_run_reports(self):
        objects = fabricated()
        objects["actor_bank_switch"]["switch"] = {"connections": 2, "in_flight": 8}
        objects["echo_pipelined"].update({"connections": 2, "depth": 8})
        write(self.directory, objects)
        table = docs.results_table(Results(self.directory), padded=False)
        self.assertIn("| 3. switch: 2 connections x 8 in flight, spread | actor-bank", table)
        self.assertIn("| tokio echo, 2 conn. x depth 8 | 400 000 |", table)
        self.assertIn("| 5. ISO 8583 door, switch: 8 x 64 |", table)

    def test_numbers_are_written_as_the_document_writes_them(self):
        self.assertEqual(grouped(28402.4), "28 402")
        self.assertEqual(grouped(None), "n/a")
        self.assertEqual(milliseconds(1243), "1.24")
        self.assertEqual(milliseconds(22999), "23.0")
        self.assertEqual(milliseconds(396208), "396")

    def test_the_script_prints_and_writes_the_document(self):
        write(self.directory, fabricated())
        document = os.path.join(self.directory, "docs", "BENCHMARKS.md")
        os.makedirs(os.path.dirname(document))
        with open(document, "w", encoding="utf-8") as file:
            file.write(DOCUMENT)
        command = [sys.executable, os.path.join(COMPARE_DIR, "report.py"), self.directory,
                   "--write-docs", "--no-plots", "--docs", document]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        self.assertIn("| 1. hot account, withdrawals", output)
        self.assertIn("28 000 / 10 000 = 2.80x >= 2.5x", output)
        with open(document, encoding="utf-8") as file:
            self.assertIn("28 000 / 10 000 = 2.80x >= 2.5x", file.read())


HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@unittest.skipUnless(HAVE_MATPLOTLIB, "matplotlib is not installed (report.py brings it in a venv)")
class PlotsTest(unittest.TestCase):
    def test_every_plot_is_drawn_and_a_redraw_is_byte_for_byte_the_same(self):
        from reporting import plots

        with tempfile.TemporaryDirectory() as directory:
            write(directory, fabricated())
            first = os.path.join(directory, "first")
            second = os.path.join(directory, "second")
            written = plots.draw_all(Results(directory), first)
            self.assertEqual(sorted(written), sorted(plots.PLOT_FILES))
            plots.draw_all(Results(directory), second)
            for name in written:
                with open(os.path.join(first, name), "rb") as file:
                    content = file.read()
                with open(os.path.join(second, name), "rb") as file:
                    self.assertEqual(content, file.read(), name)
                self.assertNotIn(b"<dc:date>", content)

    def test_a_plot_without_data_is_removed_not_left_stale(self):
        from reporting import plots

        with tempfile.TemporaryDirectory() as directory:
            objects = fabricated()
            del objects["ramp"]
            write(directory, objects)
            stale = os.path.join(directory, "plots", "results-login-storm.svg")
            os.makedirs(os.path.dirname(stale))
            with open(stale, "w", encoding="utf-8") as file:
                file.write("<svg/>")
            written = plots.draw_all(Results(directory), os.path.dirname(stale))
            self.assertNotIn("results-login-storm.svg", written)
            self.assertFalse(os.path.exists(stale))


if __name__ == "__main__":
    unittest.main()
