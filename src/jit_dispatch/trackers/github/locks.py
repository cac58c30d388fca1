"""The claim lock over GitHub's git database API: create (the compare-and-set), fast-forward, delete.

One small tree is made per process (it doubles as the check that the token has `contents: write`);
each record is a commit on it whose parent is the record it replaces. See `records`.
"""

from __future__ import annotations

from typing import Any

from github import GithubException

from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.github.api import Api
from jit_dispatch.trackers.github.records import LockRecord, number_of, parse_record, ref_name, render_record

PERMISSION = "contents: write"
_TREE = [{"path": "jit-dispatch-lock", "mode": "100644", "type": "blob", "content": "a jit-dispatch claim lock\n"}]


class ClaimRefs:
    def __init__(self, api: Api, prefix: str) -> None:
        self.api = api
        self.prefix = prefix
        self._tree: str | None = None
        self._records: dict[str, LockRecord | None] = {}  # commits never change: read each once
        self.dates: dict[str, str] = {}  # commit → its committer date (GitHub's clock)
        self.kinds: dict[int, str] = {}  # the object type each listed ref points at (a lock: commit)

    def check_access(self) -> None:
        """Before anything else: can this token write refs? One line naming `contents: write` if not."""
        hint = f"lock refs need `{PERMISSION}` (or choose --github-lock comments; see docs/github-issues.md)"
        with self.api.doing(f"check access to {self.api.repo}"):
            repo = self.api.request("GET", "")
        permissions = repo.get("permissions") if isinstance(repo, dict) else None
        if isinstance(permissions, dict) and permissions.get("push") is False:
            raise TrackerError(f"{self.api.repo}: the token cannot write to the repository: {hint}")
        doing = f"create the lock tree in {self.api.repo}"
        try:
            with self.api.doing(doing, keep=GithubException):
                self._tree = self.api.write(lambda: self.api.request("POST", "/git/trees", input={"tree": _TREE}))[
                    "sha"
                ]
        except GithubException as exc:
            if exc.status in (403, 404) and not self.api.limited(exc):
                raise TrackerError(
                    f"{self.api.repo}: GitHub refused to create a git tree ({exc.status}): {hint}"
                ) from None
            if exc.status == 409:
                raise TrackerError(f"{self.api.repo}: the repository is empty: {hint}; push a first commit") from None
            with self.api.doing(doing):
                raise

    def over(self, api: Api) -> ClaimRefs:
        """The same locks through another connection (a heartbeat's), sharing the lock tree."""
        refs = ClaimRefs(api, self.prefix)
        refs._tree, refs._records, refs.kinds = self._tree, self._records, self.kinds
        return refs

    def _path(self, number: int) -> str:
        return "/git/refs/" + ref_name(self.prefix, number)[len("refs/") :]

    def commit(self, record: LockRecord, parent: str | None = None) -> str:
        if self._tree is None:
            self.check_access()
        body: dict[str, Any] = {
            "message": render_record(record),
            "tree": self._tree,
            "parents": [parent] if parent else [],
        }
        sha = str(self.api.write(lambda: self.api.request("POST", "/git/commits", input=body))["sha"])
        self._records[sha] = record
        return sha

    def create(self, number: int, sha: str) -> bool:
        """The compare-and-set: True when the ref is ours now, False when it already existed."""
        ref = ref_name(self.prefix, number)
        try:
            self.api.write(
                lambda: self.api.request("POST", "/git/refs", input={"ref": ref, "sha": sha}),
                lambda: True if self.get(number) == sha else None,  # the first try landed after all
            )
        except GithubException as exc:
            if exc.status == 422 and "already exists" in str(exc.data).lower():
                return self.get(number) == sha
            raise
        return True

    def get(self, number: int) -> str | None:
        """The commit the issue's lock ref points at; None when there is no lock."""
        try:
            data = self.api.request("GET", "/git/ref/" + ref_name(self.prefix, number)[len("refs/") :])
        except GithubException as exc:
            if exc.status == 404:
                return None
            raise
        return str(data["object"]["sha"]) if isinstance(data, dict) else None

    def move(self, number: int, sha: str) -> bool:
        """Fast-forward the lock to `sha` (a child of what its writer saw); False when it moved meanwhile."""
        try:
            self.api.write(lambda: self.api.request("PATCH", self._path(number), input={"sha": sha, "force": False}))
        except GithubException as exc:
            if exc.status in (404, 409, 422):  # gone, or not a fast-forward: someone else's now
                return False
            raise
        return True

    def delete(self, number: int, expected: str) -> None:
        """Delete the lock if it still points at `expected`; a lock already gone is fine."""
        if self.get(number) != expected:
            return
        try:
            self.api.write(lambda: self.api.request("DELETE", self._path(number)))
        except GithubException as exc:
            if exc.status not in (404, 422):
                raise

    def record(self, sha: str) -> LockRecord | None:
        """The lock record of commit `sha`; None when it is no lock of ours (or no commit at all)."""
        if sha not in self._records:
            try:
                data = self.api.request("GET", f"/git/commits/{sha}")
            except GithubException as exc:
                if exc.status not in (404, 422):  # not a commit GitHub can show: a foreign object
                    raise
                data = {}
            data = data if isinstance(data, dict) else {}
            self._records[sha] = parse_record(str(data.get("message", "")))
            self.dates[sha] = str((data.get("committer") or {}).get("date", ""))
        return self._records[sha]

    def list(self) -> dict[int, str]:
        """Every lock ref (a list endpoint: it may lag; use `get` where a decision depends on it)."""
        try:
            refs = self.api.list("/git/matching-refs/" + self.prefix[len("refs/") :] + "gh-")
        except GithubException as exc:
            if exc.status in (404, 409):  # no such refs, or an empty repository
                return {}
            raise
        found = {}
        for ref in refs:
            number = number_of(self.prefix, str(ref.get("ref", "")))
            if number is not None:
                found[number] = str(ref["object"]["sha"])
                self.kinds[number] = str(ref["object"].get("type") or "commit")
        return found

    def foreign(self, number: int, sha: str) -> str | None:
        """Why the listed ref of `number` is no lock of ours (None: it is one)."""
        kind = self.kinds.get(number, "commit")
        if kind != "commit":
            return f"points at a {kind} object, not a lock commit"
        if self.record(sha) is None:
            return "points at a commit that is no jit-dispatch lock record"
        return None
