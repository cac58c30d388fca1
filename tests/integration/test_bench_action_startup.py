"""bench/action_startup.py must keep working: one short run of the real script (a check that it runs, not a timing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow  # a real run of a bench script: minutes on a loaded machine

BENCH = PROJECT_ROOT / "bench" / "action_startup.py"


def test_a_hit_run_prints_pip_and_uv_side_by_side(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "1", "--scenarios", "hit", "--results-dir", str(tmp_path)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = r"\| (\d+\.\d+) \| (\d+\.\d+) \| (\d+\.\d)× \| (\d+\.\d+) \|"
    row = re.search(rf"^\| cache hit: [^|]+ {cells}$", proc.stdout, re.M)
    assert row, proc.stdout
    pip, uv, speedup, ratio = (float(g) for g in row.groups())
    assert pip > 0 and uv > 0
    # The table prints seconds to 2 decimals and computes the ratios before rounding: allow for that.
    rounding = 0.005 / uv + 0.005 / pip
    assert abs(speedup - pip / uv) <= 0.05 + speedup * rounding and abs(ratio - uv / pip) <= 0.01 + ratio * rounding
    sizes = re.search(r"The cached venv: pip (\d+\.\d) MB .* uv (\d+\.\d) MB", proc.stdout)
    assert sizes and float(sizes.group(2)) < float(sizes.group(1)), "uv's venv has no pip in it"
    assert (tmp_path / "action-startup.md").read_text(encoding="utf-8") in proc.stdout


def test_bad_arguments_are_one_clear_line() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--scenarios", "warm"], env=clean_env(), capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--scenarios takes cold, cold-warm-cache, hit" in proc.stderr
