#!/usr/bin/env python3
"""Torn `git ls-remote` listings never run a finished issue's command again (remote mode).

    .venv/bin/python bench/remote_torn.py                 # 500 trials, 2 at a time
    .venv/bin/python bench/remote_torn.py --trials 4      # smoke (the suite runs this)

`git ls-remote` is no snapshot of an atomic push: it reads `refs/heads/main` before
`refs/jit-dispatch/…`, so a fold landing in between lists the old `main` (the issue ready) with
the folded result ref already gone. The choreography of issue 18 item 3: runner A claims, runs
and settles the only issue, and its fold lands; runner B — started when the issue looked ready —
then wins a lock on the finished issue (A's lock is gone) and re-reads the view.

Each trial copies a remote where A has done that (A's command ran once), clones it for B, and
serves B torn listings with real git: an `uploadpack` wrapper answers B's sessions from a
repository holding the `main` of before A's claim beside the remote's current `refs/jit-dispatch/`
refs. Every session B opens before its lock lands may be torn, and so may the first one after (a
tear can only make a listing older than the moment its session began, and A's fold landed before
B's lock): a `post-receive` hook on the remote marks the moment B's lock lands, before B's push
returns. Which of those sessions are torn is drawn per trial (seeded). B must never run the
command: it reads the branch alone after its listing, sees `done` and gives the lock back.

Reported: trials, trials where B was served a torn listing after its lock, **double runs** (the
command ran twice), B's outcomes, wall time.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT, clean_env, git, load_average, machine
from remote_runner import build_remote, issue_specs

TORN_BEFORE_THE_LOCK = 4  # sessions a pattern covers before the lock lands (B opens one or two)


def template(work: Path, env: dict[str, str]) -> tuple[Path, str]:
    """A remote on which runner A has claimed, run and settled its only issue, folded; the tip of before."""
    bare = work / "template.git"
    build_remote(bare, issue_specs(1, mixed=False))
    before = git("-C", str(bare), "rev-parse", "main").strip()
    clone = work / "a"
    git("clone", "-q", "--depth", "1", f"file://{bare}", str(clone))
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--sync", "git", "--agent", "a", "--wait-for-fold",
            "--command", 'echo "$JIT_ISSUE_ID" >> "$RUN_LOG"']  # fmt: skip
    proc = subprocess.run(argv, cwd=clone, env={**env, "RUN_LOG": str(work / "a.log")}, capture_output=True, text=True)
    refs = git("-C", str(bare), "for-each-ref", "refs/jit-dispatch/").strip()
    if proc.returncode != 0 or refs or '"state": "done"' not in git("-C", str(bare), "show", "main:.jit/issues/" +
                                                                     _only_issue(bare) + ".json"):  # fmt: skip
        raise SystemExit(f"runner A did not finish cleanly: {proc.stderr[-500:]}")
    return bare, before


def _only_issue(bare: Path) -> str:
    names = git("-C", str(bare), "ls-tree", "--name-only", "main", ".jit/issues/").split()
    return Path(names[0]).stem


def tear_sessions(clone: Path, bare: Path, old_tip: str, pattern: str) -> None:
    """B's upload-pack sessions: before its lock lands (the hook's mark), session k is torn when
    `pattern[k]` is 1; the first after the lock when `pattern[-1]` is 1; all later ones are true."""
    state = clone.parent / f"{clone.name}-sessions"
    state.mkdir()
    wrapper = clone.parent / f"{clone.name}-upload-pack"
    wrapper.write_text(
        f"""#!/bin/sh
s={state}
if [ -f {bare}/lock-landed ]; then
  n=$(( $(cat $s/after 2>/dev/null || echo 0) + 1 )); echo $n > $s/after
  [ $n -gt 1 ] && exec git-upload-pack "$@"
  bit=$(echo {pattern} | cut -c{len(pattern)})
else
  n=$(( $(cat $s/before 2>/dev/null || echo 0) + 1 )); echo $n > $s/before
  [ $n -gt {TORN_BEFORE_THE_LOCK} ] && exec git-upload-pack "$@"
  bit=$(echo {pattern} | cut -c$n)
fi
[ "$bit" = 1 ] || exec git-upload-pack "$@"
[ -f {bare}/lock-landed ] && touch $s/torn-after-lock
d=$(mktemp -d $s/torn.XXXXXX); git init -q --bare -b main "$d"
echo {bare}/objects > "$d/objects/info/alternates"
git --git-dir={bare} for-each-ref --format='create %(refname) %(objectname)' refs/jit-dispatch/ |
  git --git-dir="$d" update-ref --stdin
git --git-dir="$d" update-ref refs/heads/main {old_tip}
git-upload-pack "$d"; rc=$?; rm -rf "$d"; exit $rc
"""
    )
    wrapper.chmod(0o755)
    git("-C", str(clone), "config", "remote.origin.uploadpack", str(wrapper))


def trial(n: int, work: Path, source: Path, old_tip: str, env: dict[str, str], seed: int) -> tuple[str, bool, int]:
    """(B's outcome, whether a listing after its lock was torn, how often the command ran)."""
    rng = random.Random(seed * 100_003 + n)
    where = work / f"t{n}"
    where.mkdir()
    bare = where / "remote.git"
    shutil.copytree(source, bare, symlinks=True)
    hook = bare / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\ngrep -q ' refs/jit-dispatch/claims/' && touch {bare}/lock-landed\nexit 0\n")
    hook.chmod(0o755)
    clone = where / "b"
    git("clone", "-q", "--depth", "1", f"file://{bare}", str(clone))
    pattern = "".join(rng.choice("01") for _ in range(TORN_BEFORE_THE_LOCK)) + rng.choice("01")
    pattern = "1" + pattern[1:]  # B's first listing is always torn: else it never goes for the issue
    tear_sessions(clone, bare, old_tip, pattern)
    log = where / "runs.log"
    log.write_text((work / "a.log").read_text())
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--sync", "git", "--json", "--agent", "b",
            "--command", 'echo "$JIT_ISSUE_ID" >> "$RUN_LOG"']  # fmt: skip
    proc = subprocess.run(argv, cwd=clone, env={**env, "RUN_LOG": str(log)}, capture_output=True, text=True)
    try:
        outcome = str(json.loads(proc.stdout)["outcome"])
    except (ValueError, KeyError):
        outcome = f"exit {proc.returncode}"
    runs = len(log.read_text().split())
    torn_after = (clone.parent / f"{clone.name}-sessions" / "torn-after-lock").exists()
    shutil.rmtree(where, ignore_errors=True)
    return outcome, torn_after, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=2, help="trials at a time")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    started = time.monotonic()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="jit-torn-", dir=base) as tmp:
        work = Path(tmp)
        env = clean_env(work / "pycache")
        source, old_tip = template(work, env)
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            results = list(pool.map(lambda n: trial(n, work, source, old_tip, env, args.seed), range(args.trials)))
    outcomes = Counter(outcome for outcome, _, _ in results)
    torn_after = sum(torn for _, torn, _ in results)
    double = sum(runs > 1 for _, _, runs in results)
    print(f"# Torn listings after a lock ({machine()['cpu']}, load {load_average()})\n")
    print(f"`{' '.join(['bench/remote_torn.py', *sys.argv[1:]])}`, code at {ROOT.name}\n")
    print(f"- trials {len(results)}, B served a torn listing after its lock in {torn_after}")
    print(f"- B's outcomes {dict(outcomes)}")
    print(f"- **double runs {double}**")
    print(f"- wall {time.monotonic() - started:.0f} s, seed {args.seed}")
    if double or set(outcomes) != {"idle"}:
        sys.exit(1)


if __name__ == "__main__":
    main()
