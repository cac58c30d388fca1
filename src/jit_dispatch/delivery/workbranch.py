"""The work branch, built with git plumbing (docs/delivery.md#the-work-branch).

The user's working tree, index and HEAD are left as the command left them: commits are built
in a temporary index (`GIT_INDEX_FILE`) with `git write-tree` / `git commit-tree`, and every tree
carries `.jit/` exactly as the commit the work started from had it: the state travels as it always
did (the workspace, or the state branch in remote mode), never on a work branch.

    root ── a' ── b' ── w'      root: the commit the work builds on (the base, or the work branch
                                 of an earlier delivery); a', b': the command's own commits with
                                 `Jit-Issue:` added and `.jit/` put back; w': what it left
                                 uncommitted (respecting .gitignore).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jit_dispatch.domain.delivery import commit_message, message_trailer_ids, with_trailer
from jit_dispatch.trackers.remote.git import Git, GitError, is_permanent, last_line, redact

_RACE_WORDS = ("stale info", "non-fast-forward", "fetch first", "already exists", "but expected", "incorrect old value")
_WORKFLOWS = re.compile(r"without [`']?workflows?[`']? (permission|scope)", re.IGNORECASE)
_IDENT = re.compile(r"^\s*([^<>\n]+?)\s*<([^<>\s]+)>\s*$")


class DeliveryError(Exception):
    """The work could not be delivered: the reason the issue is released with (one line)."""


@dataclass(frozen=True)
class Author:
    name: str
    email: str

    @classmethod
    def parse(cls, text: str) -> Author:
        """`Name <email>`; ValueError naming what is wrong."""
        match = _IDENT.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not 'Name <email>'")
        return cls(match.group(1), match.group(2))

    def env(self, prefix: str) -> dict[str, str]:
        return {f"GIT_{prefix}_NAME": self.name, f"GIT_{prefix}_EMAIL": self.email}


@dataclass(frozen=True)
class Start:
    """Where the work began: `head` is what HEAD was before the command, `root` the commit the work
    branch builds on (the same, unless an earlier delivery's branch was checked out over it), and
    `before` the workspace's tree then (uncommitted changes included, `.jit/` as `root` has it):
    only what the command changed since goes on the branch, not what was lying there already."""

    head: str
    root: str
    before: str


def toplevel(workdir: Path) -> Git:
    """The repository the command works in; DeliveryError when there is none."""
    git = Git(workdir)
    try:
        return Git(Path(git.out("rev-parse", "--show-toplevel")))
    except GitError:
        raise DeliveryError(f"{workdir}: not inside a git repository, nothing to deliver from") from None


def _head(git: Git) -> str:
    try:
        return git.out("rev-parse", "--verify", "HEAD^{commit}")
    except GitError:
        raise DeliveryError("the repository has no commit to build a work branch on") from None


class WorkBranch:
    """Builds and pushes one issue's work branch."""

    def __init__(self, git: Git, remote: str, jit_path: str, author: Author) -> None:
        self.git = git
        self.remote = remote
        self.jit_path = jit_path.strip("/") or ".jit"
        self.author = author
        # A temporary index of our own (the pool delivers from several threads of one process).
        index = f"jit-dispatch-index-{os.getpid()}-{secrets.token_hex(4)}"
        self._index = Path(git.out("rev-parse", "--absolute-git-dir")) / index

    # ------------------------------------------------------------------ where the work starts
    def start(self, base: str | None = None) -> Start:
        """Before the command, on a fresh work branch. When HEAD holds commits the remote's `base`
        lacks (a workspace kept from an earlier run still holds its agent's own commits), the work
        builds on `base`'s tip instead, so the branch proposes this run's work alone."""
        head = _head(self.git)
        root = head
        if base is not None and (tip := self._fetch_branch(base)) is not None and not self._holds(tip, head):
            root = tip
        try:
            return Start(head, root, self._worktree_tree(root))
        finally:
            self._index.unlink(missing_ok=True)

    def _holds(self, tip: str, commit: str) -> bool:
        """Whether `commit` is in `tip`'s history (HEAD is on the base, or behind it)."""
        return self.git.run("merge-base", "--is-ancestor", commit, tip, check=False).returncode == 0

    def continue_from(self, branch: str) -> Start | None:
        """Before the command: check out the work branch of an earlier delivery (fetched), the
        workspace's `.jit/` kept as it is. None when the remote has no such branch any more."""
        head = _head(self.git)
        tip = self._fetch_branch(branch)
        if tip is None:
            return None
        mixed = self._tree_with_jit(tip, head)  # the branch's files, the workspace's state
        commit = self._commit_tree(mixed, [tip], f"jit-dispatch: continue {branch}\n", self.author, self.author)
        proc = self.git.run("checkout", "--quiet", "--detach", commit, check=False)
        if proc.returncode != 0 and self._clear_delivered_leftovers(commit):
            proc = self.git.run("checkout", "--quiet", "--detach", commit, check=False)
        if proc.returncode != 0:
            raise DeliveryError(f"could not check out work branch {branch}: {last_line(proc)}")
        try:
            return Start(commit, tip, self._worktree_tree(tip))
        finally:
            self._index.unlink(missing_ok=True)

    def _clear_delivered_leftovers(self, commit: str) -> bool:
        """A workspace that outlives its run still holds what the last round left uncommitted, which
        is on the work branch now and blocks its checkout. Every uncommitted file (outside `.jit/`)
        whose content is exactly `commit`'s is put back as HEAD has it (or removed): nothing is lost.
        Whether any was; a file that differs is left for the checkout to refuse."""
        listed = self.git.run(
            "status", "--porcelain", "-z", "--untracked-files=all", "--no-renames", "--", ".",
            f":(exclude){self.jit_path}",
        ).stdout  # fmt: skip
        entries = [(e[:2], e[3:].decode()) for e in listed.split(b"\0") if len(e) > 3]
        entries = [(status, path) for status, path in entries if (self.git.repo / path).is_file()]
        if not entries:
            return False
        paths = [path for _, path in entries]
        ours = self.git.out("hash-object", "--", *paths).split()
        listing = self.git.run("ls-tree", "-r", "-z", commit, "--", *paths).stdout.decode().split("\0")
        theirs = {line.split("\t", 1)[1]: line.split()[2] for line in listing if "\t" in line}
        cleared = False
        for (status, path), sha in zip(entries, ours, strict=True):
            if theirs.get(path) != sha:
                continue
            if status == b"??":
                (self.git.repo / path).unlink()
            elif self.git.run("cat-file", "-e", f"HEAD:{path}", check=False).returncode == 0:
                self.git.run("checkout", "--quiet", "HEAD", "--", path)
            else:  # staged, never committed
                self.git.run("rm", "--quiet", "--force", "--", path)
            cleared = True
        return cleared

    # ------------------------------------------------------------------ building
    def build(self, start: Start, issue_id: str, title: str, body: str, *, allow_empty: bool) -> str | None:
        """The work branch's new tip; None when the command changed nothing outside `.jit/`."""
        try:
            tip, changed = self._replay(start, issue_id)
            tree = self._changed_since(self._tree(tip), start.before, self._worktree_tree(start.root))
            if tree != self._tree(tip) or (not changed and allow_empty):
                message = commit_message(title, issue_id, body)
                tip, changed = self._commit_tree(tree, [tip], message, self.author, self.author), True
            return tip if changed else None
        finally:
            self._index.unlink(missing_ok=True)

    def _replay(self, start: Start, issue_id: str) -> tuple[str, bool]:
        """The command's own commits (start.head..HEAD) onto `start.root`, `.jit/` as the root has it,
        each with the trailer; commits that only touched `.jit/` are dropped."""
        commits = self.git.out("rev-list", "--reverse", "--topo-order", "HEAD", f"^{start.head}").split()
        mapped = {start.head: start.root}
        tip, changed = start.root, False
        for sha in commits:
            fields = self.git.out("log", "-1", "--format=%P%x00%an%x00%ae%x00%aI%x00%B", sha).split("\x00", 4)
            parents = [mapped.get(p, p) for p in fields[0].split()]
            tree = self._tree_with_jit(sha, start.root)
            if start.root != start.head and parents:  # onto another root: only what the commit itself changed
                original = fields[0].split()[0]
                tree = self._changed_since(self._tree(parents[0]), self._tree_with_jit(original, start.root), tree)
            if len(parents) == 1 and tree == self._tree(parents[0]):
                mapped[sha] = parents[0]
                continue
            author = Author(fields[1], fields[2])
            env = {"GIT_AUTHOR_DATE": fields[3]}
            new = self._commit_tree(tree, parents, with_trailer(fields[4], issue_id), author, self.author, env)
            mapped[sha], tip, changed = new, new, True
        return mapped.get(_head(self.git), tip), changed

    def _worktree_tree(self, root: str) -> str:
        """HEAD plus everything uncommitted outside `.jit/` (ignored files left out), `.jit/` as `root` has it."""
        env = {"GIT_INDEX_FILE": str(self._index)}
        self.git.run("read-tree", "HEAD", env=env)
        self.git.run("add", "--all", "--", ".", f":(exclude){self.jit_path}", env=env)
        return self._put_jit(root, env)

    def _changed_since(self, tree: str, before: str, after: str) -> str:
        """`tree` with every path that differs between `before` and `after` as `after` has it."""
        env = {"GIT_INDEX_FILE": str(self._index)}
        self.git.run("read-tree", tree, env=env)
        raw = self.git.run("diff-tree", "-r", "-z", "--no-renames", before, after).stdout
        fields = raw.split(b"\0")
        lines = []
        for header, path in zip(fields[0::2], fields[1::2], strict=False):
            if not header.startswith(b":"):
                continue
            _, mode, _, sha, status = header[1:].split(b" ")
            if status == b"D":
                mode, sha = b"0", b"0" * len(sha)
            lines.append(mode + b" " + sha + b"\t" + path + b"\0")
        if lines:
            self.git.run("update-index", "-z", "--index-info", stdin=b"".join(lines), env=env)
        return self.git.out("write-tree", env=env)

    def _tree_with_jit(self, commit: str, jit_from: str) -> str:
        env = {"GIT_INDEX_FILE": str(self._index)}
        self.git.run("read-tree", commit, env=env)
        return self._put_jit(jit_from, env)

    def _put_jit(self, jit_from: str, env: dict[str, str]) -> str:
        self.git.run("rm", "-r", "--cached", "--quiet", "--ignore-unmatch", "--", self.jit_path, env=env)
        if self.git.run("rev-parse", "--verify", "--quiet", f"{jit_from}:{self.jit_path}", check=False).returncode == 0:
            self.git.run("read-tree", f"--prefix={self.jit_path}/", f"{jit_from}:{self.jit_path}", env=env)
        return self.git.out("write-tree", env=env)

    def _tree(self, commit: str) -> str:
        return self.git.out("rev-parse", f"{commit}^{{tree}}")

    def _commit_tree(
        self,
        tree: str,
        parents: list[str],
        message: str,
        author: Author,
        committer: Author,
        env: dict[str, str] | None = None,
    ) -> str:
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        full = {**author.env("AUTHOR"), **committer.env("COMMITTER"), **(env or {})}
        return self.git.out(*args, stdin=message.encode("utf-8"), env=full)

    # ------------------------------------------------------------------ pushing
    def _fetch_branch(self, branch: str) -> str | None:
        """The remote's tip of `branch`, fetched; None when it has none."""
        ref = f"refs/heads/{branch}"
        listed = self.git.run("ls-remote", "--heads", self.remote, ref, check=False)
        if listed.returncode != 0:
            raise DeliveryError(f"cannot read '{redact(self.remote)}': {last_line(listed)}")
        line = listed.stdout.decode().split()
        if not line:
            return None
        self.git.run("fetch", "--no-tags", "--quiet", "--no-write-fetch-head", self.remote, ref)
        return line[0]

    def foreign(self, remote_tip: str, tip: str, issue_id: str) -> list[str]:
        """Commits on the remote branch that our tip does not hold and that are not ours for this issue."""
        shas = self.git.out("rev-list", remote_tip, f"^{tip}").split()
        messages = {sha: self.git.out("log", "-1", "--format=%B", sha) for sha in shas}
        return [sha for sha, message in messages.items() if issue_id not in message_trailer_ids(message)]

    def _unshallow(self, base: str | None) -> bool:
        """In a shallow clone the tip's history stops at the clone's commit, so every older commit of an
        existing branch looks foreign: fetch `base`'s whole history (only then). Whether it did."""
        if base is None or self.git.out("rev-parse", "--is-shallow-repository") != "true":
            return False
        ref = f"refs/heads/{base}"
        args = ("fetch", "--unshallow", "--no-tags", "--quiet", "--no-write-fetch-head", self.remote, ref)
        return self.git.run(*args, check=False).returncode == 0

    def push(
        self, branch: str, tip: str, issue_id: str, fence: Callable[[], bool], budget: float, base: str | None = None
    ) -> None:
        """Push `tip` to `branch`, fenced: only while `fence()` says the claim is ours. A branch
        holding commits that are not ours is never overwritten; a lost race is retried within `budget`."""
        deadline = time.monotonic() + budget
        remote = redact(self.remote)
        while True:
            current = self._fetch_branch(branch)
            lease = current or ""
            if current is not None and current != tip:
                behind = self.git.run("merge-base", "--is-ancestor", current, tip, check=False).returncode == 0
                alien = [] if behind else self.foreign(current, tip, issue_id)
                if alien and self._unshallow(base):
                    alien = self.foreign(current, tip, issue_id)
                if alien:
                    raise DeliveryError(
                        f"work branch {branch} on '{remote}' holds {len(alien)} commit(s) not made for this issue "
                        f"(e.g. {alien[0][:12]}); not overwritten"
                    )
            if not fence():
                raise DeliveryError("the claim was taken away before the push; nothing pushed")
            proc = self.git.run(
                "push", "--porcelain", "--no-verify", "--quiet", f"--force-with-lease=refs/heads/{branch}:{lease}",
                self.remote, f"+{tip}:refs/heads/{branch}", check=False,
            )  # fmt: skip
            if proc.returncode == 0:
                return
            text = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
            if _WORKFLOWS.search(text):
                raise DeliveryError(
                    f"push of {branch} refused: the work changes .github/workflows/ and the token lacks "
                    "the `workflows` permission"
                )
            racing = any(word in text for word in _RACE_WORDS)
            if not racing and is_permanent(text):
                raise DeliveryError(f"push of {branch} to '{remote}' refused: {last_line(proc)}")
            if time.monotonic() + 0.5 >= deadline:
                raise DeliveryError(f"push of {branch} to '{remote}' failed within the push budget: {last_line(proc)}")
            time.sleep(0.5)
