"""bench/service.py must keep working: a tiny smoke run of the real script (a check that it runs, not a timing)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow  # a real run of a bench script: minutes on a loaded machine


def test_service_bench_prints_its_ratios() -> None:
    bench = PROJECT_ROOT / "bench" / "service.py"
    proc = subprocess.run(
        [sys.executable, str(bench), "--issues", "200", "--samples", "2", "--idle", "1"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    idle = re.search(r"^\| idle CPU [^|]*\| (\d+\.\d+) \| (\d+\.\d+) \| (\d+\.\d+) ", proc.stdout, re.MULTILINE)
    wake = re.search(r"^\| store change [^|]*\| (\d+\.\d+) \| (\d+\.\d+) \| (\d+\.\d+) \|", proc.stdout, re.MULTILINE)
    assert idle and wake, proc.stdout
    value, floor, ratio = (float(g) for g in wake.groups())
    assert value > 0 and floor > 0 and abs(ratio - value / floor) < 0.05 * ratio + 0.01
