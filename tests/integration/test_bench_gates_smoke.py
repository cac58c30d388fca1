"""bench/gates.py must keep working: a tiny run of the real script (a check that it runs, not a timing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow  # a real run of a bench script: minutes on a loaded machine


def test_gates_bench_prints_the_extra_cost_against_the_floor(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "gates.py"), "--rounds", "3", "--results-dir", str(tmp_path)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"Extra cost ÷ floor: \*\*-?\d+\.\d\d×\*\* ", proc.stdout), proc.stdout
    assert (tmp_path / "gates.md").read_text(encoding="utf-8") in proc.stdout
