"""bench/merge_watch.py must keep working: a tiny run of the real script (a check that it runs, not a timing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow  # a real run of a bench script: a store to build, processes to time


def test_merge_watch_bench_prints_the_overhead(tmp_path: Path) -> None:
    script = PROJECT_ROOT / "bench" / "merge_watch.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--rounds", "1", "--size", "400", "--results-dir", str(tmp_path)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"Overhead: -?\d+\.\d % \(target ≤ 10 %\)", proc.stdout), proc.stdout
    assert (tmp_path / "merge-watch.md").read_text(encoding="utf-8") in proc.stdout
