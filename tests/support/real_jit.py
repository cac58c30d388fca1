"""The real jit binaries of both eras, when JIT_DISPATCH_JIT_BIN names their directory (`.ci/run` sets it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gate_stores import gate_runs

BIN_VARIABLE = "JIT_DISPATCH_JIT_BIN"


ERA_BINARIES = {"seed": "jit-seed-", "newest": "jit-head-"}


def jit_binary(era: str) -> Path:
    where = os.environ.get(BIN_VARIABLE)
    if not where:
        pytest.skip(f"{BIN_VARIABLE} is not set: point it at the directory of the real jit binaries to run this")
    found = sorted(Path(where).glob(ERA_BINARIES[era] + "*"))
    if not found:
        pytest.skip(f"{BIN_VARIABLE}={where} holds no {ERA_BINARIES[era]}* binary")
    return found[-1]


def jit(binary: Path, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIT_")}
    return subprocess.run([str(binary), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60)


def assert_real_jit_reads(binary: Path, root: Path) -> None:
    """`jit validate` passes, events and every issue are readable; the newest jit shows each gate's last run."""
    repo = root.parent
    validate = jit(binary, repo, "validate")
    assert validate.returncode == 0, f"{binary.name} validate: {validate.stdout}{validate.stderr}"
    events = jit(binary, repo, "events", "tail", "-n", "1000")
    assert events.returncode == 0, f"{binary.name} events tail: {events.stderr}"
    runs = gate_runs(root)
    for issue_id in json.loads((root / "index.json").read_text())["all_ids"]:
        shown = jit(binary, repo, "issue", "show", issue_id, "--json")
        assert shown.returncode == 0, f"{binary.name} issue show {issue_id}: {shown.stderr}"
        data = json.loads(shown.stdout)
        if "gates" in data:  # the newest jit: gates with their last run, read from gate-runs/
            last = {r["gate_key"]: r["exit_code"] for r in runs if r["issue_id"] == issue_id}  # runs: oldest first
            shown_runs = {g["key"]: g["exit_code"] for g in data["gates"] if g["last_run_at"] is not None}
            assert shown_runs == last, data["gates"]
