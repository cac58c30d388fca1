"""GitHub's git database endpoints for the fake: trees, commits, refs (create is the compare-and-set).

Behaviour follows GitHub's documentation: a ref must start with `refs/` and have two slashes;
creating an existing ref is 422 "Reference already exists"; PATCH with `force: false` is 422
"Update is not a fast forward" unless the new commit descends from the current one; a missing
ref is 422 on PATCH and DELETE and 404 on GET. Without `contents: write`, git writes are 403.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any


class GitDatabase:
    """Mixed into FakeGitHub: `refs` (full name → sha), `commits` (sha → payload)."""

    refs: dict[str, str]
    commits: dict[str, dict[str, Any]]
    trees: dict[str, Any]
    clock_offset: float  # GitHub's clock minus this machine's
    contents_write: bool
    repo: str

    def _sha(self, *parts: str) -> str:
        return hashlib.sha1("\0".join([*parts, str(len(self.commits))]).encode()).hexdigest()

    def descends(self, sha: str, ancestor: str) -> bool:
        todo = [sha]
        while todo:
            current = todo.pop()
            if current == ancestor:
                return True
            todo += self.commits.get(current, {}).get("parents_shas", [])
        return False

    def lock_records(self) -> dict[str, str]:
        """Each lock ref's commit message (for assertions)."""
        return {ref: self.commits[sha]["message"] for ref, sha in self.refs.items()}

    def git_route(self, method: str, rest: str, body: Any) -> tuple[int, Any, dict[str, str]] | None:
        forbidden = (403, {"message": "Resource not accessible by integration"}, {})
        unprocessable = lambda text: (422, {"message": text}, {})  # noqa: E731
        if method != "GET" and rest.startswith("/git/") and not self.contents_write:
            return forbidden
        if rest == "/git/trees" and method == "POST":
            sha = self._sha("tree", repr(body))
            self.trees[sha] = body["tree"]
            return 201, {"sha": sha, "tree": body["tree"]}, {}
        if rest == "/git/commits" and method == "POST":
            sha = self._sha("commit", body["message"], *body.get("parents", []))
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + self.clock_offset))  # GitHub's clock
            self.commits[sha] = {
                "sha": sha,
                "message": body["message"],
                "tree": {"sha": body["tree"]},
                "parents": [{"sha": p} for p in body.get("parents", [])],
                "parents_shas": list(body.get("parents", [])),
                "committer": {"name": "fake", "email": "fake@example.com", "date": stamp},
                "author": {"name": "fake", "email": "fake@example.com", "date": stamp},
            }
            return 201, self.commits[sha], {}
        if m := re.fullmatch(r"/git/commits/([0-9a-f]{40})", rest):
            return (200, self.commits[m.group(1)], {}) if m.group(1) in self.commits else None
        if rest == "/git/refs" and method == "POST":
            ref, sha = body.get("ref", ""), body.get("sha", "")
            if not ref.startswith("refs/") or ref.count("/") < 2:
                return unprocessable("Reference name is invalid")
            if sha not in self.commits and sha not in self.trees:
                return unprocessable("Object does not exist")
            if ref in self.refs:
                return unprocessable("Reference already exists")
            self.refs[ref] = sha
            return 201, self.ref_payload(ref), {}
        if m := re.fullmatch(r"/git/ref/(.+)", rest):
            ref = "refs/" + m.group(1)
            return (200, self.ref_payload(ref), {}) if method == "GET" and ref in self.refs else None
        if m := re.fullmatch(r"/git/refs/(.+)", rest):
            ref = "refs/" + m.group(1)
            if ref not in self.refs:
                return unprocessable("Reference does not exist")
            if method == "DELETE":
                del self.refs[ref]
                return 204, "", {}
            if method == "PATCH":
                if body["sha"] not in self.commits:
                    return unprocessable("Object does not exist")
                if not body.get("force") and not self.descends(body["sha"], self.refs[ref]):
                    return unprocessable("Update is not a fast forward")
                self.refs[ref] = body["sha"]
                return 200, self.ref_payload(ref), {}
        return None

    def ref_payload(self, ref: str, sha: str | None = None) -> dict[str, Any]:
        sha = sha or self.refs[ref]
        kind = "tree" if sha in self.trees else "commit"  # a ref may point at any object
        return {"ref": ref, "node_id": "REF_x", "object": {"type": kind, "sha": sha, "url": f"/{kind}s/{sha}"}}
