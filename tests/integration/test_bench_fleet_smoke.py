"""bench/remote_fleet.py must keep working: a tiny run of the real script (a check that it runs, not a timing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow  # a real run of a bench script: minutes on a loaded machine

BENCH = PROJECT_ROOT / "bench" / "remote_fleet.py"


def test_quick_fleet_bench_prints_its_figures(tmp_path: Path) -> None:
    results = tmp_path / "fleet.md"
    argv = [sys.executable, str(BENCH), "--solo-runs", "1", "--runners", "2", "--latency-runners", "2"]
    proc = subprocess.run(
        [*argv, "--results", str(results)], env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"^\| 2 \| 2 \| \d+\.\d{3} \| \d+\.\d\d \| \d+\.\d \| \d+\.\d\d \|$", out, re.MULTILINE), out
    assert "Every push delayed 0.3 s" in out, out
    wait = r"\d+\.\d / \d+\.\d / \d+\.\d"
    assert re.search(rf"^\| 2 \| 2 \| \d+\.\d \| {wait} \| \d+\.\d / \d+\.\d \| 0 \| \d / 0 \|", out, re.MULTILINE), out
    assert re.search(r"With a cold cache \(every runner compiles\): \d+\.\d{3} s", out), out
    assert "Checks: all passed" in out, out
    assert results.read_text(encoding="utf-8") in out
