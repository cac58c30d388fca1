"""bench/remote.py must keep working: a tiny smoke run of the real script (a check that it runs, not a timing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow  # a real run of a bench script: minutes on a loaded machine

BENCH = PROJECT_ROOT / "bench" / "remote.py"


def test_quick_remote_bench_prints_its_tables(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--results-dir", str(tmp_path)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| priorities | order | waves | claims | runners without a claim | median | mean | max |" in out
    attempts = re.findall(r"^\| (same|mixed) \| (spread|strict)[^|]*\| 1 \| (\d+) \| \d+ \| (\d+\.\d) \|", out, re.M)
    assert len(attempts) == 4, out
    assert all(int(claims) >= 1 and float(med) >= 1.0 for *_, claims, med in attempts)
    assert "| runners | waves | claims | median (s) | p90 (s) |" in out
    for n in (1, 3):
        row = re.search(rf"^\| {n} \| \d+ \| {n if n > 1 else 2} \| (\d+\.\d+) \| (\d+\.\d+) \|", out, re.MULTILINE)
        assert row, out
        median, p90 = (float(g) for g in row.groups())
        assert 0 < median <= p90
    assert re.search(r"^\| at tip \| 0 \| 1 \| \d+\.\d{3} \|", out, re.MULTILINE), out
    assert re.search(r"^\| one run behind \| 2000 \| 1 \| \d+\.\d{3} \|", out, re.MULTILINE), out
    # Every wave is checked: each command ran once, locks gone, the remote agrees with the runners.
    assert "correctness checks: all passed" in out, out
    report = (tmp_path / "remote-quick.md").read_text(encoding="utf-8")
    assert report in out
