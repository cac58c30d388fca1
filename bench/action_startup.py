#!/usr/bin/env python3
"""The Action's start-up: from the start of its install step to the start of the user's command.

    .venv/bin/python bench/action_startup.py               # ~5 min on 2 cores → bench/results/action-startup.md
    .venv/bin/python bench/action_startup.py --runs 1 --scenarios hit   # smoke run

Two ways to install, measured side by side in one run (alternating which goes first, medians):

- pip, the floor: the install step as the Action had it before uv (`python -m venv`, then
  `pip install ACTION_PATH`, resolving dependency ranges against the index);
- uv: the `install` step of action.yml as it is now (`uv venv`, `uv pip install --require-hashes
  --no-deps -r requirements/action.lock`, the package built with requirements/build.lock).

One measured run is the step's `run:` script under `bash --noprofile --norc -eo pipefail` with its
`env:` resolved as the runner would, then `jit-dispatch once` from the venv it names, on a one-issue
store, with a command that records when it starts: step start → command start.

Scenarios:
- cold: fresh venv and an empty download cache each run; packages come from the package index as
  pip is configured on this machine (`pip config list`); uv is pointed at the same indexes.
- cold, warm download cache: fresh venv; each tool's download cache kept from the warm-up.
- hit: the venv saved after a first run (so with the .pyc files that run wrote, as actions/cache
  saves it) is extracted from a zstd tarball, as actions/cache restores it; the install step then
  finds nothing to do.

Not measured: setup-uv downloading uv on a miss (this machine cannot fetch release binaries; uv
comes from this venv), and the network transfer of a cache restore (the tarball sizes are reported).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from common import ROOT, BenchError, load_average, machine, median, scrubbed_env, table_head, table_row
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

# The install step's script before uv (action.yml at 24810f8): the floor.
PIP_STEP = """\
if [ ! -x "$VENV/bin/jit-dispatch" ]; then
  extra=""
  if [ "$TRACKER" = github ]; then extra="[github]"; fi
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$ACTION_PATH$extra"
fi
echo "bin=$VENV/bin/jit-dispatch" >> "$GITHUB_OUTPUT"
"""
SCENARIOS = ("cold", "cold-warm-cache", "hit")
SCENARIO_TITLES = {
    "cold": "cold: fresh venv, empty download cache",
    "cold-warm-cache": "cold: fresh venv, warm download cache",
    "hit": "cache hit: venv restored, nothing installed",
}
ACTION_FILES = ("action.yml", "pyproject.toml", "README.md", "LICENSE", "src", "requirements")
# pip's settings (`pip config list` keys) and the uv variables that say the same.
PIP_TO_UV = {
    "index-url": "UV_INDEX_URL",
    "extra-index-url": "UV_EXTRA_INDEX_URL",
    "find-links": "UV_FIND_LINKS",
    "cert": "SSL_CERT_FILE",
}


@dataclass
class Side:
    name: str
    script: str
    cache_variable: str  # where the tool keeps its download cache
    env: dict[str, str]
    times: dict[str, list[float]] = field(default_factory=dict)
    venv_bytes: int = 0
    tarball_bytes: int = 0
    saved: Path | None = None  # the venv as a cache would hold it (hit scenario)


def action_step(step_id: str) -> dict[str, Any]:
    """A step of action.yml: what the Action runs now."""
    steps = yaml.safe_load((ROOT / "action.yml").read_text())["runs"]["steps"]
    return next(step for step in steps if step.get("id") == step_id)


def pip_settings(python: str) -> dict[str, str]:
    """pip's effective settings here (environment over config files): key -> value."""
    listing = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    settings: dict[str, str] = {}
    for line in sorted(listing.splitlines(), key=lambda entry: entry.startswith(":env:")):  # env last: it wins
        scoped_key, _, value = line.partition("=")
        settings[scoped_key.rsplit(".", 1)[-1]] = value.strip("'\"")
    for key in PIP_TO_UV:
        if f"PIP_{key.upper().replace('-', '_')}" in os.environ:
            settings[key] = os.environ[f"PIP_{key.upper().replace('-', '_')}"]
    return settings


def uv_index_env(python: str) -> dict[str, str]:
    """Point uv at pip's indexes, with pip's rule of taking the best version found in any of them."""
    settings = pip_settings(python)
    env = {PIP_TO_UV[key]: value for key, value in settings.items() if key in PIP_TO_UV}
    if "UV_FIND_LINKS" in env:
        env["UV_FIND_LINKS"] = ",".join(env["UV_FIND_LINKS"].split())
    env["UV_INDEX_STRATEGY"] = "unsafe-best-match"
    return env


def tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        shown = shlex.join(argv)[:200]
        raise BenchError(f"{shown}: exit code {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


class Bench:
    def __init__(self, work: Path, python: str, uv: Path) -> None:
        self.work = work
        self.python = python
        self.action = work / "action"
        for name in ACTION_FILES:  # a frozen copy: edits made during the run do not mix in
            source, target = ROOT / name, self.action / name
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            elif source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target)
        self.counter = 0
        self.pinned_uv = action_step("uv")["with"]["version"]
        base = scrubbed_env()
        base.pop("VIRTUAL_ENV", None)
        base.pop("PYTHONPYCACHEPREFIX", None)
        self.sides = [
            Side("pip", PIP_STEP, "PIP_CACHE_DIR", dict(base)),
            Side("uv", action_step("install")["run"], "UV_CACHE_DIR", {**base, **uv_index_env(python), "UV": str(uv)}),
        ]

    def fresh(self, label: str) -> Path:
        self.counter += 1
        path = self.work / f"{self.counter:03d}-{label}"
        path.mkdir()
        return path

    def start_to_command(self, side: Side, scenario: str, keep: bool = False) -> float:
        """One run of the install step and the dispatch: seconds from step start to command start."""
        if scenario == "hit":  # the runner temp directory of the saved venv: a cache key holds its path
            assert side.saved is not None
            temp = side.saved.parent
            shutil.rmtree(temp / "jit-dispatch-venv")
        else:
            temp = self.fresh(f"{side.name}-{scenario}")
        venv = temp / "jit-dispatch-venv"
        workspace = self.fresh("workspace")
        JitStore.init(workspace / ".jit").create_issues([NewIssue("measure the start-up", "high")])
        cache = self.work / f"cache-{side.name}" if scenario != "cold" else temp / "download-cache"
        output = workspace / "github-output"
        output.touch()
        env = {
            **side.env,
            side.cache_variable: str(cache),
            "ACTION_PATH": str(self.action),
            "PYTHON": self.python,
            "VENV": str(venv),
            "TRACKER": "jit",
            "CACHE_HIT": "true" if scenario == "hit" else "false",
            "GITHUB_OUTPUT": str(output),
            "RUNNER_TEMP": str(temp),
        }
        marker = workspace / "command-started"
        command = f"date +%s%N > {shlex.quote(str(marker))}"
        started = time.time_ns()
        if scenario == "hit":
            run(["tar", "-I", "zstd", "-xf", str(side.saved), "-C", str(temp)], env, temp)
        run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", side.script], env, workspace)
        binary = next(line[4:] for line in output.read_text().splitlines() if line.startswith("bin="))
        dispatch_env = {k: v for k, v in side.env.items() if not k.startswith("UV")}
        run([binary, "once", "--agent", "bench", "--sync", "none", "--command", command], dispatch_env, workspace)
        seconds = (int(marker.read_text()) - started) / 1e9
        shutil.rmtree(workspace)
        if keep:  # saved after a first run, with the .pyc files it wrote, as actions/cache/save does
            side.venv_bytes = tree_bytes(venv)
            side.saved = temp / "venv.tar.zst"
            run(["tar", "-I", "zstd", "-cf", str(side.saved), "-C", str(temp), venv.name], env, temp)
            side.tarball_bytes = side.saved.stat().st_size
        elif scenario != "hit":
            shutil.rmtree(temp)
        return seconds

    def measure(self, scenario: str, runs: int) -> None:
        print(f"{SCENARIO_TITLES[scenario]}:", flush=True)
        for side in self.sides:  # warm-up: fills the download caches, saves the venv a hit restores
            self.start_to_command(side, "cold-warm-cache", keep=scenario == "hit")
        for i in range(runs):
            order = self.sides if i % 2 == 0 else self.sides[::-1]
            for side in order:
                side.times.setdefault(scenario, []).append(self.start_to_command(side, scenario))
            pip, uv = (side.times[scenario][-1] for side in self.sides)
            print(f"  {i + 1}/{runs}: pip {pip:.2f} s, uv {uv:.2f} s", flush=True)


def render(bench: Bench, scenarios: list[str], runs: int, argv: list[str], seconds: float, load: str) -> str:
    pip, uv = bench.sides
    info = machine()
    lines = [
        "# The Action's start-up: pip vs uv",
        "",
        f"`{shlex.join(['.venv/bin/python', *argv])}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {seconds:.0f} s;",
        f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, load average {load} at start.",
        f"Medians of {runs} alternating runs each, after a warm-up of each side. Step start → command start.",
        "",
        *table_head(["scenario", "pip (s)", "uv (s)", "pip ÷ uv", "uv ÷ pip"], "lrrrr"),
    ]
    for scenario in scenarios:
        a, b = median(pip.times[scenario]), median(uv.times[scenario])
        lines.append(table_row(SCENARIO_TITLES[scenario], f"{a:.2f}", f"{b:.2f}", f"{a / b:.1f}×", f"{b / a:.2f}"))
    if pip.saved and uv.saved:
        lines += [
            "",
            f"The cached venv: pip {pip.venv_bytes / 1e6:.1f} MB ({pip.tarball_bytes / 1e6:.1f} MB as .tar.zst), "
            f"uv {uv.venv_bytes / 1e6:.1f} MB ({uv.tarball_bytes / 1e6:.1f} MB as .tar.zst).",
        ]
    version = subprocess.run([uv.env["UV"], "--version"], capture_output=True, text=True).stdout.strip()
    lines += ["", f"{version} (action.yml pins {bench.pinned_uv}); pip: the one the venvs' Python bundles."]
    indexes = {k: v for k, v in uv.env.items() if k in (*PIP_TO_UV.values(), "UV_INDEX_STRATEGY")}
    lines += ["", "uv's indexes, as pip's: " + ", ".join(f"`{k}={v}`" for k, v in sorted(indexes.items()))]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs of each side per scenario (default 5)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--python", default=getattr(sys, "_base_executable", sys.executable), help="the venvs' Python")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown or not args.scenarios or args.runs < 1:
        parser.error(f"--scenarios takes {', '.join(SCENARIOS)}; --runs at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    started, load = time.perf_counter(), load_average()
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    uv = Path(sys.executable).with_name("uv")
    if not uv.is_file() or not shutil.which("zstd"):
        print("bench: error: needs uv in this venv (pip install -e '.[test]') and zstd", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="jit-dispatch-action-bench-"))
    try:
        bench = Bench(work, args.python, uv)
        for scenario in args.scenarios:
            bench.measure(scenario, args.runs)
        report = render(
            bench, args.scenarios, args.runs, ["bench/action_startup.py", *argv], time.perf_counter() - started, load
        )
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "action-startup.md").write_text(report, encoding="utf-8")
    print("\n" + report, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
