"""Git plumbing of remote mode: list the remote, mirror a tip's `.jit/` into a scratch store,
commit the scratch store's changes with `git fast-import`, and push with leases.

The user's working tree, index, HEAD and branches are never touched: `.jit/` is materialised in
a scratch directory from the fetched tip (via `git archive`), commits are built by `git fast-import`
from the changed paths only, and the fetched tip sits under a private ref that is
deleted on close. Cost follows the size of `.jit/`, not of the repository.
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from jit_dispatch.domain.issue import LOCK_PREFIX
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.jit.store import JitStore
from jit_dispatch.trackers.remote.git import Git, last_line, redact, refused

BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"
# Words git prints when a push lost a race (as opposed to failing): retry or move on.
_RACE_WORDS = ("stale info", "non-fast-forward", "fetch first", "already exists")
# A push can also lose on the server: the ref moved (or appeared) between the advertisement and
# the update, and the server's ref transaction refuses, "[remote rejected] (failed to update ref)"
# after "cannot lock ref '…': is at X but expected Y" / "reference already exists" (git), or
# "(incorrect old value provided)" (GitHub). Any other remote rejection (a hook, branch
# protection, permissions) is a failure.
_SERVER_RACE_WORDS = ("but expected", "reference already exists", "incorrect old value")


@dataclass(frozen=True)
class RemoteSettings:
    branch: str
    jit_path: str = ".jit"  # the store's path inside the repository
    remote: str = "origin"
    lock_prefix: str = LOCK_PREFIX
    author_name: str = BOT_NAME
    author_email: str = BOT_EMAIL
    skip_ci: bool = True
    heartbeat_seconds: float | None = None  # announced in each lock; the runner re-points its lock this often
    push_budget: float = 180.0  # seconds to keep retrying refused or failed pushes
    wait_for_fold: bool = False  # a settle returns once its result is on the branch, not once it is durable
    # The state branch is not the branch checked out: the command gets its `.jit/` (workspace.py)
    state_elsewhere: bool = False


def private_repository(checkout: Git, path: Path) -> Git:
    """A bare repository of the dispatcher's own, where every fetch, commit and ref goes: the
    checkout is never written, so a depth-1 fetch of the moved tip cannot cut the history an
    agent's `git fetch && git rebase` or `git pull` needs (docs/remote-mode.md#shallow-clones). It
    reads the checkout's objects (alternates: nothing fetched twice) and its configuration
    (`include`: the remote's URL, credentials, transport settings), and knows its shallow commits."""
    common = Path(checkout.out("rev-parse", "--path-format=absolute", "--git-common-dir"))
    checkout.run("init", "--quiet", "--bare", "--template=", str(path))
    (path / "objects" / "info" / "alternates").write_text(f"{common / 'objects'}\n")
    if (common / "shallow").is_file():
        (path / "shallow").write_bytes((common / "shallow").read_bytes())
    included = str(common / "config").replace("\\", "\\\\").replace('"', '\\"')
    quiet = "[core]\n\tbare = true\n[gc]\n\tauto = 0\n[maintenance]\n\tauto = false\n"
    (path / "config").write_text(f'[include]\n\tpath = "{included}"\n{quiet}')
    private = Git(path, timeout=checkout.timeout, bare=True)
    private.env = checkout.env
    return private


@dataclass
class Listing:
    """What one `git ls-remote` saw: the branch tip, claim locks (issue id → sha), results (ref → sha)."""

    tip: str
    locks: dict[str, str] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)


class Plumbing:
    """The scratch store mirrors `self.tip`'s `.jit/`; commits and pushes go through here."""

    def __init__(self, checkout: Git, settings: RemoteSettings, scratch: Path) -> None:
        self.settings = settings
        self.scratch = scratch
        self._shallow = checkout.out("rev-parse", "--is-shallow-repository") == "true"
        self.git = private_repository(checkout, scratch / "git")
        self.store = JitStore(scratch / "jit")
        self.remote_name = redact(settings.remote)  # a URL may carry a token: never print it
        self.tip: str | None = None
        self.private_ref = f"refs/jit-dispatch/tips/{os.getpid()}-{secrets.token_hex(4)}"
        self._messages: dict[str, str] = {}  # sha → message of lock and result commits read so far
        self._empty_tree: str | None = None

    def close(self) -> None:
        for ref in (self.private_ref, f"{self.private_ref}-commit"):
            self.git.run("update-ref", "-d", ref, check=False)

    def author_env(self) -> dict[str, str]:
        name, email = self.settings.author_name, self.settings.author_email
        return {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }

    @property
    def results_prefix(self) -> str:
        """`refs/jit-dispatch/results/` beside the default lock prefix `refs/jit-dispatch/claims/`."""
        return self.settings.lock_prefix.rstrip("/").rpartition("/")[0] + "/results/"

    def list_remote(self, locks: bool = True, *, deadline: float | None = None) -> Listing:
        """One round trip: the branch tip, every claim lock and every pending result."""
        branch = f"refs/heads/{self.settings.branch}"
        patterns = [branch] + ([self.settings.lock_prefix + "*", self.results_prefix + "*"] if locks else [])
        proc = self.git.run("ls-remote", self.settings.remote, *patterns, check=False, deadline=deadline)
        if proc.returncode != 0:
            raise refused(f"cannot reach remote '{self.remote_name}': {last_line(proc)}", proc)
        listing = Listing("")
        for line in proc.stdout.decode().splitlines():
            sha, ref = line.split("\t", 1)
            if ref == branch:
                listing.tip = sha
            elif ref.startswith(self.settings.lock_prefix):
                listing.locks[ref[len(self.settings.lock_prefix) :]] = sha
            elif ref.startswith(self.results_prefix):
                listing.results[ref] = sha
        if not listing.tip:
            raise TrackerError(f"branch '{self.settings.branch}' not found on remote '{self.remote_name}'")
        return listing

    def prefetch(self, listing: Listing) -> None:
        """One fetch for what a view of `listing` may read and this clone lacks: the branch tip,
        pending results, locks. A ref that vanished meanwhile is left to the readers to notice."""
        refs = {**listing.results, **{self.settings.lock_prefix + i: sha for i, sha in listing.locks.items()}}
        unknown = [ref for ref, sha in refs.items() if sha not in self._messages]
        new_tip = listing.tip != self.tip
        present = self.batch_check(([f"{listing.tip}^{{commit}}"] if new_tip else []) + [refs[r] for r in unknown])
        need_tip = new_tip and present.pop(0) is None
        specs = [ref for ref, found in zip(unknown, present, strict=True) if found is None]
        if need_tip or specs:
            self._fetch(*specs, tip=need_tip, check=False)

    def _fetch(self, *specs: str, tip: bool = False, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """`git fetch` of `specs`; with `tip`, first the branch tip into the private ref (one commit
        deep in a shallow clone)."""
        if tip:
            specs = (f"+refs/heads/{self.settings.branch}:{self.private_ref}", *specs)
        depth = ["--depth=1"] if self._shallow and tip else []
        args = ("fetch", "--no-tags", "--no-write-fetch-head", "--quiet", *depth, self.settings.remote, *specs)
        return self.git.run(*args, check=check)

    def messages(self, refs: dict[str, str]) -> dict[str, str] | None:
        """Ref → the message of the commit it points at; None when one vanished meanwhile. Such
        commits never change: each is read once (a fetch only for those not here yet)."""
        missing = [sha for sha in dict.fromkeys(refs.values()) if sha not in self._messages]
        if missing:
            found = self.batch(missing)
            absent = [ref for ref, sha in refs.items() if sha in missing and found[missing.index(sha)] is None]
            if absent:
                fetched = self._fetch(*absent, check=False)
                if fetched.returncode != 0:
                    if b"couldn't find remote ref" not in fetched.stderr:
                        raise refused(f"git fetch failed: {last_line(fetched)}", fetched)
                    return None
                found = self.batch(missing)
            for sha, body in zip(missing, found, strict=True):
                if body is None:
                    return None  # moved since the listing: the caller lists again
                self._messages[sha] = body.partition(b"\n\n")[2].decode("utf-8", errors="replace")
        return {ref: self._messages[sha] for ref, sha in refs.items()}

    def batch_check(self, specs: list[str]) -> list[bytes | None]:
        """The object ids of several specs in one `git cat-file --batch-check`; None for a missing one."""
        lines = self.git.run("cat-file", "--batch-check=%(objectname)", stdin="".join(f"{s}\n" for s in specs).encode())
        return [None if line.endswith(b" missing") else line for line in lines.stdout.splitlines()]

    def batch(self, specs: list[str]) -> list[bytes | None]:
        """The contents of several objects in one `git cat-file --batch`; None for a missing one."""
        data = self.git.run("cat-file", "--batch", stdin="".join(f"{spec}\n" for spec in specs).encode()).stdout
        contents: list[bytes | None] = []
        for _ in specs:
            header, _, data = data.partition(b"\n")
            if header.endswith(b" missing") or not header:
                contents.append(None)
                continue
            size = int(header.rsplit(b" ", 1)[1])  # `<sha> <type> <size>`
            contents.append(data[:size])
            data = data[size + 1 :]
        return contents

    def note_commit(self, message: str, *, deadline: float | None = None) -> str:
        """An empty-tree commit carrying `message` (a lock or a result), written locally."""
        if self._empty_tree is None:
            self._empty_tree = self.git.out("hash-object", "-t", "tree", "-w", "--stdin", stdin=b"")
        commit = ("commit-tree", self._empty_tree, "-m", message)
        return self.git.run(*commit, env=self.author_env(), deadline=deadline).stdout.decode().strip()

    def sync_to(self, tip: str) -> None:
        """Make the scratch `.jit/` equal to `tip`'s, fetching only what is missing."""
        if tip == self.tip:
            return
        path = self.settings.jit_path
        have_tip, have_store = (b is not None for b in self.batch_check([f"{tip}^{{commit}}", f"{tip}:{path}"]))
        if not have_tip:
            self._fetch(tip=True)
            tip = self.git.out("rev-parse", self.private_ref)
            have_store = self.batch_check([f"{tip}:{path}"])[0] is not None
        if not have_store:
            raise TrackerError(f"{self.settings.remote}/{self.settings.branch} has no '{path}' directory")
        if self.tip is None:
            self._extract(self.git.run("archive", "--format=tar", f"{tip}:{path}").stdout)
        else:
            self._apply_diff(self.tip, tip)
        self.tip = tip
        self.store.forget_view()  # a snapshot taken before (results applied, dependents promoted) is stale

    def _extract(self, archive: bytes) -> None:
        """Regular files and directories only, never outside the scratch store."""
        root = self.store.root
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar:
                relative = PurePosixPath(member.name)
                if relative.is_absolute() or ".." in relative.parts:
                    continue
                if member.isdir():
                    (root / relative).mkdir(parents=True, exist_ok=True)
                elif member.isfile() and (data := tar.extractfile(member)) is not None:
                    (root / relative).parent.mkdir(parents=True, exist_ok=True)
                    (root / relative).write_bytes(data.read())

    def _apply_diff(self, old: str, new: str) -> None:
        self._restore(new, self._differing(old, new))

    def _differing(self, old: str, new: str) -> list[PurePosixPath]:
        """The store's files (relative paths) that differ between two commits."""
        path = self.settings.jit_path
        listing = self.git.out("diff-tree", "-r", "-z", "--no-renames", "--name-status", old, new, "--", path)
        fields = listing.split("\0")
        return [PurePosixPath(fields[i + 1]).relative_to(path) for i in range(0, len(fields) - 1, 2)]

    def recover(self, seen: str) -> tuple[str, bool] | None:
        """The fold's own ancestry check, on content: jit only appends to `events.jsonl`, so a tip whose
        events do not extend those of a tip `seen` before lost folded results (a force-push from a
        stale checkout). When they are a prefix, the store's files become `seen`'s where they differ,
        as changes the next commit carries (docs/remote-mode.md#careless-agents). None: nothing
        lost; else what happened and whether it was restored."""
        assert self.tip is not None
        events = f"{self.settings.jit_path}/events.jsonl"
        old, new = self.batch([f"{seen}:{events}", f"{self.tip}:{events}"])
        if old is None or new is None or new.startswith(old):
            return None
        if not old.startswith(new):
            return f"the state branch was rewritten: its .jit/ no longer extends {seen[:12]}'s; not restored", False
        differing = self._differing(self.tip, seen)
        self._restore(seen, differing)
        self.store.changed.update(self.store.root / relative for relative in differing)
        lost = f"the state branch lost folded results (force-pushed from an older checkout?): restored {len(differing)}"
        return f"{lost} file(s) of .jit/ from {seen[:12]}; results folded after it are not known here", True

    def _restore(self, commit: str, relatives: list[PurePosixPath]) -> None:
        """Make these files of the scratch store what `commit` has (absent there: deleted)."""
        blobs = self.batch([f"{commit}:{self.settings.jit_path}/{relative}" for relative in relatives])
        for relative, blob in zip(relatives, blobs, strict=True):
            target = self.store.root / relative
            if blob is None:
                target.unlink(missing_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob)

    def discard_changes(self) -> None:
        """Undo what the store wrote since the last commit or sync, so it matches `self.tip` again."""
        assert self.tip is not None
        if self.store.changed:
            root = self.store.root
            self._restore(self.tip, [PurePosixPath(p.relative_to(root).as_posix()) for p in self.store.changed])
            self.store.forget_view()  # the promotions a settle made are undone: the next one must not trust them
        self.store.changed.clear()

    def commit(self, message: str) -> str:
        """A commit on `self.tip` whose tree differs only in the files the store changed: one
        `git fast-import` (it reads only the paths it changes; the user's index is never used)."""
        assert self.tip is not None
        files: dict[str, bytes | None] = {}
        for changed in sorted(self.store.changed):
            name = f"{self.settings.jit_path}/{changed.relative_to(self.store.root).as_posix()}"
            files[name] = changed.read_bytes() if changed.exists() else None
        return self._fast_import(message, self.tip, files)

    def files_commit(self, message: str, files: dict[str, bytes]) -> str:
        """A commit without parent carrying `message` and a tree of `files` (a result that carries
        the agent's own jit writes: carried.py)."""
        return self._fast_import(message, None, dict(files))

    def tree_files(self, commit: str) -> dict[str, bytes]:
        """Path → content of every file in `commit`'s tree (a carrying result's; fetched with it)."""
        listing = self.git.out("ls-tree", "-r", "-z", "--full-tree", commit).split("\0")
        entries = [(line.split("\t", 1)[1], line.split()[2]) for line in listing if "\t" in line and " blob " in line]
        blobs = self.batch([sha for _, sha in entries])
        return {path: blob for (path, _), blob in zip(entries, blobs, strict=True) if blob is not None}

    def _fast_import(self, message: str, parent: str | None, files: dict[str, bytes | None]) -> str:
        """One commit by `git fast-import`: `files` written (None: deleted) on `parent`'s tree."""
        ident = f"{self.settings.author_name} <{self.settings.author_email}> {int(time.time())} +0000"
        text = message.encode()
        ref = f"{self.private_ref}-commit"
        reset = b"" if parent else f"reset {ref}\n\n".encode()  # no parent: not the ref's last commit either
        stream = [reset + f"commit {ref}\nmark :1\nauthor {ident}\ncommitter {ident}\n".encode()]
        stream.append(f"data {len(text)}\n".encode() + text + b"\n")
        if parent:
            stream.append(f"from {parent}\n".encode())
        for path, data in sorted(files.items()):
            name = _quote(path)
            if data is not None:
                stream.append(f"M 100644 inline {name}\ndata {len(data)}\n".encode() + data + b"\n")
            else:
                stream.append(f"D {name}\n".encode())
        marks = self.scratch / "marks"
        self.git.run(
            "fast-import", "--quiet", "--force", "--done", f"--export-marks={marks}",
            stdin=b"".join(stream) + b"done\n",
        )  # fmt: skip
        return marks.read_text().split()[1]  # `:1 <sha>`

    def push(
        self, *updates: tuple[str, str], leases: dict[str, str] | None = None, deadline: float | None = None
    ) -> bool:
        """Push `(sha, ref)` updates (sha "" deletes) in one atomic push, each ref in `leases` only if it
        is still at that value ("" = must not exist). True when the remote took all; False when a
        lease or a fast-forward check failed (another runner won a race); GitError otherwise,
        `transient` when another try may pass."""
        args = ["push", "--porcelain", "--no-verify", "--quiet"]
        if len(updates) > 1:
            args.append("--atomic")
        args += [f"--force-with-lease={ref}:{sha}" for ref, sha in (leases or {}).items()]
        refspecs = (f"{sha}:{ref}" for sha, ref in updates)
        proc = self.git.run(*args, self.settings.remote, *refspecs, check=False, deadline=deadline)
        if proc.returncode == 0:
            return True
        text = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
        race_words = _SERVER_RACE_WORDS if "remote rejected" in text else _RACE_WORDS
        if any(word in text for word in race_words):
            return False
        raise refused(f"push to '{self.remote_name}' failed: {last_line(proc)}", proc)


def _quote(path: str) -> str:
    """A path as fast-import reads it: C-style quoted when it holds anything unusual."""
    if path.isascii() and path.isprintable() and not any(c in path for c in ' "\\'):
        return path
    escaped = path.encode().decode("latin-1").replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if " " <= c <= "~" else f"\\{ord(c):03o}" for c in escaped) + '"'
