"""The pieces of benches/compare/report.py: reading the results, judging the goals, writing the
results section of docs/BENCHMARKS.md and drawing its plots.

Everything but `plots` runs on the standard library alone, so the table and the goals print on
any python3; `plots` needs matplotlib (report.py brings it into a venv of its own).
"""
