"""Smoke test: the speed benchmark runs end to end on tiny sizes (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_speed_benchmark_runs_on_tiny_sizes(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick",
                    "--method", "telea", "--out", str(tmp_path)], check=True, cwd=ROOT,
                   capture_output=True, timeout=400)
    table = (tmp_path / "speed.md").read_text()
    for heading in ("Pipeline efficiency", "Cost follows the damage", "Optimizer overhead",
                    "Throughput by method", "Peak memory", "Crops per second by batch size"):
        assert heading in table
    assert (tmp_path / "speed.png").stat().st_size > 0
