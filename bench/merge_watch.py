#!/usr/bin/env python3
"""What noticing merges costs `once` (docs/delivery.md#done-when-it-merges), issue 17's item 8.

    .venv/bin/python bench/merge_watch.py              # 21 rounds → bench/results/merge-watch.md
    .venv/bin/python bench/merge_watch.py --rounds 3   # a smoke run

Two copies of the cached 10 000-issue `real` store (bench/stores.py), each in a git repository
whose `origin` is a local bare repository with 300 commits on `main` (a third carrying
`Jit-Issue:` trailers of issues that are not waiting):

* `none`:    no delivery waits for its merge;
* `waiting`: 100 issues wait for their merge (`gated`, `dispatch.branch`/`base`/`delivered_at`).

Each round runs a real `jit-dispatch once` process on each (alternating), with a label filter that
matches nothing, so the run does everything an idle `once` does — the merge watch included (one
`git fetch` of `main` and one `git log` since the oldest delivery) — and changes nothing. The
target: median(waiting) ≤ 1.10 × median(none).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, alternate, clean_env, fmt, load_average, machine, median, run_timed
from jit_dispatch.domain.delivery import commit_message
from jit_dispatch.trackers.jit.files import dumps_pretty, ordered_issue
from stores import cached_store

WAITING = 100
BASE_COMMITS = 300
RESULTS = ROOT / "bench" / "results"


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin, capture_output=True, check=True, env={**clean_env(None), **env}
    )
    return done.stdout.decode().strip()


def make_repo(where: Path, store: Path, ids: list[str], waiting: int) -> Path:
    """A repository holding a copy of `store`, its `origin` a bare repository with a busy `main`."""
    repo, bare = where / "repo", where / "origin.git"
    shutil.copytree(store, repo / ".jit")
    _git(where, "init", "-q", "--bare", "-b", "main", str(bare))
    _git(where, "init", "-q", "-b", "main", str(repo))
    (repo / ".gitignore").write_text(".jit/\n")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "-q", "-m", "start")
    rng = random.Random(7)
    for n in range(BASE_COMMITS):  # others' work on main, some of it delivered by jit-dispatch
        message = commit_message(f"change {n}", rng.choice(ids)) if n % 3 == 0 else f"change {n}\n"
        _git(repo, "commit", "-q", "--allow-empty", "-m", message)
    _git(repo, "remote", "add", "origin", str(bare))
    _git(repo, "push", "-q", "origin", "main")
    for issue_id in ids[:waiting]:
        path = repo / ".jit" / "issues" / f"{issue_id}.json"
        raw = json.loads(path.read_text())
        raw["state"] = "gated"
        raw["context"].update(
            {
                "dispatch.branch": f"jit/{issue_id[:8]}-work",
                "dispatch.base": "main",
                "dispatch.delivered_at": "2026-01-01T00:00:00.000000000Z",
            }
        )
        path.write_text(dumps_pretty(ordered_issue(raw)))
    return repo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="the store cache and merge-watch.md")
    args = parser.parse_args(argv)
    fixture = cached_store(args.results_dir, args.size)
    ids = sorted(p.stem for p in (fixture.root / "issues").glob("*.json"))
    done = [i for i in ids if json.loads((fixture.root / "issues" / f"{i}.json").read_text())["state"] == "done"]
    env = clean_env(None)
    with tempfile.TemporaryDirectory(prefix="bench-merge-watch-") as tmp:
        none = make_repo(Path(tmp) / "none", fixture.root, done, 0)
        waiting = make_repo(Path(tmp) / "waiting", fixture.root, done, WAITING)
        argv_once = [sys.executable, "-m", "jit_dispatch", "once", "--agent", "bench", "--command", "true"]
        argv_once += ["--label", "bench:matches-nothing", "--json"]

        def once(repo: Path) -> float:
            run = run_timed(["sh", "-c", f'cd "{repo}" && exec "$@"', "sh", *argv_once], env)
            assert json.loads(run.stdout)["outcome"] == "idle", run.stdout
            return run.seconds

        times_none, times_waiting = alternate(lambda: once(none), lambda: once(waiting), args.rounds, "none/waiting")
        gated = sum(1 for p in (waiting / ".jit" / "issues").glob("*.json") if '"state": "gated"' in p.read_text())
    ratio = median(times_waiting) / median(times_none)
    lines = [
        "# Merge watch: `once` with 100 deliveries waiting for their merge",
        "",
        f"Command: `.venv/bin/python bench/merge_watch.py --rounds {args.rounds}`",
        f"Machine: {machine()['cpu']}; load {load_average()}",
        f"Store: {args.size} issues (`real` shape), {gated} `gated` of which {WAITING} wait for a merge; "
        f"`main` has {BASE_COMMITS} commits",
        "",
        "| | median | runs |",
        "|---|---|---|",
        f"| none waiting | {fmt(median(times_none), 3)} s | {len(times_none)} |",
        f"| 100 waiting | {fmt(median(times_waiting), 3)} s | {len(times_waiting)} |",
        "",
        f"Overhead: {fmt((ratio - 1) * 100, 1)} % (target ≤ 10 %).",
    ]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "merge-watch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
