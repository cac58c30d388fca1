"""The state branch's `.jit/` in the workspace while the command runs.

docs/delivery.md#when-the-agent-writes-jit-itself

Remote mode never writes the user's checkout, with one exception: the `.jit/` directory the
agent's own `jit` calls are about to use. Before the command it becomes the view this runner
claimed from (the state branch plus pending results and claims, this run's claim included), so
`jit issue show` and `jit query` see the real state and not the stale copy the checkout
brought; afterwards the checkout's own `.jit/` is put back as it was (moved aside, moved back).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jit_dispatch.trackers.remote.carried import Writes, read_writes


class Materialised:
    """Moves the workspace's `.jit/` aside and copies the view's in; `restore` undoes both."""

    def __init__(self, view: Path, target: Path, parking: Path) -> None:
        self.target = target
        self._parking = parking
        self._parked = False
        self._files: dict[str, bytes] = {}
        self.writes: Writes = {}  # what the command wrote there that reaches the state branch (`restore`)
        self.kept: list[str] = []  # what it wrote there that does not
        self._restored = False
        if target.is_symlink():
            raise OSError(f"{target}: is a symbolic link; the dispatcher never writes through one")
        if target.exists():
            shutil.move(target, parking)  # a rename when on one file system
            self._parked = True
        try:
            shutil.copytree(view, target, symlinks=False, ignore=shutil.ignore_patterns("*.lock"))
        except BaseException:
            self.restore()
            raise
        self._files = _files(target)

    def restore(self) -> None:
        """Note what the command wrote in the copy (`writes`, `kept`), then put the checkout's `.jit/`
        back (or none, when it had none)."""
        if self._restored:
            return
        self._restored = True
        now = _files(self.target) if self.target.is_dir() and not self.target.is_symlink() else {}
        wrote = sorted(path for path in now.keys() | self._files.keys() if now.get(path) != self._files.get(path))
        self.writes = read_writes(self._files, now, wrote)
        self.kept = [path for path in wrote if path not in self.writes]
        if self.target.is_symlink() or self.target.is_file():
            self.target.unlink()
        elif self.target.exists():
            shutil.rmtree(self.target)
        if self._parked:
            shutil.move(self._parking, self.target)
            self._parked = False


def _files(root: Path) -> dict[str, bytes]:
    """Relative path → content of every regular file under `root`, jit's lock files left out (empty,
    git-ignored, created by any jit call that writes or locks: no change of the state). Held in
    memory: the store's size, once per run."""
    found: dict[str, bytes] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if name.endswith(".lock") or path.is_symlink() or not path.is_file():
                continue
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found
