"""bench/github_stress.py and bench/github_race.py must keep working: tiny smoke runs of the real scripts
(a check that they run and report no overlap, re-run, leak or wrong park; not a timing)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from helpers import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow  # real runners on a loopback GitHub: a minute on a loaded machine


def run(script: str, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / script), *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def test_the_stress_run_reports_its_four_zeros() -> None:
    report = run("github_stress.py", "--runners", "3", "--issues", "4", "--claims", "4", "--seed", "7")
    for figure in ("overlaps", "re-runs after done", "leaked credentials", "wrongly parked"):
        assert report[figure] == 0, report
    assert isinstance(report["claims (commands run)"], int) and report["claims (commands run)"] >= 1


def test_the_race_counts_requests_per_claim_with_spread() -> None:
    args = ("--runners", "3", "--issues", "6", "--waves", "1", "--modes", "refs", "--spread", "on")
    report = run("github_race.py", *args)
    assert report["spread"] is True and report["overlaps"] == 0 and float(str(report["requests per claim"])) > 0
