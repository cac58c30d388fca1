"""bench/run.py must keep working: a tiny smoke run of the real script (a check that it runs, not a timing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow  # a real run of a bench script: minutes on a loaded machine

BENCH = PROJECT_ROOT / "bench" / "run.py"


def test_quick_bench_prints_a_table_with_a_ratio(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--sizes", "200", "--runs", "1", "--results-dir", str(tmp_path)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    header = "| issues | store (files) | states | runs | dispatch median (s) | floor median (s) | ratio |"
    assert header in proc.stdout
    row = re.search(r"^\| 200 \| [^\n]*? \| 1 \| (\d+\.\d+) \| (\d+\.\d+) \| (\d+\.\d+)x \|", proc.stdout, re.MULTILINE)
    assert row, proc.stdout
    dispatch, floor, ratio = (float(g) for g in row.groups())
    assert dispatch > 0 and floor > 0
    assert abs(ratio - dispatch / floor) < 0.05 * ratio + 0.01
    assert re.search(r"^\| tiny output \(`true`\) \| \d+\.\d \|", proc.stdout, re.MULTILINE)
    assert "## Overhead on the real 175-issue store" in proc.stdout
    report = (tmp_path / "quick.md").read_text(encoding="utf-8")
    assert report in proc.stdout
    assert not list((tmp_path / "stores").glob(".*-building-*")), "a half-built store was left behind"
