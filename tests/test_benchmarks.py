"""The benchmark script runs, and its exact part (call counts) holds.

Timings are reported by benchmarks/run.py, never asserted here."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(sys.platform == "win32",
                    reason="benchmarks build the double with the host cc")
def test_quick_benchmark_run():
    p = subprocess.run([sys.executable, os.path.join("benchmarks", "run.py"),
                        "--quick"], cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    calls = p.stdout.split("## Calls per operation")[1].split("## ")[0]
    rows = [line for line in calls.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 6
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")][2:]
        assert cells and all(c.endswith("✓") for c in cells), row
