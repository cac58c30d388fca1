"""GitHub's pull request endpoints for the fake: pulls, requested reviewers, reviews and their
comments, merges (merge, squash, rebase) and the collaborator-permission endpoint.

Shapes and status codes follow GitHub's REST documentation: a pull request is also an issue (same
number, listed by the issues endpoint with a `pull_request` key, labelled through the issues
endpoints); list items carry `merged_at` but no `merged`; creating a second open PR from one head
is 422 "A pull request already exists for owner:branch."; without `pull-requests: write` writes
are 403 "Resource not accessible by integration", checked before the body is validated; merging
a closed or merged PR is 405; a reviewer who is not a collaborator, or the PR's author, is 422;
a merge into the default branch closes the issues its body closes (`Closes #N`), as completed.
The pulls listing lags like the other lists (`lag`); reviews and comments paginate.

With `git_remote` (a bare repository) heads must exist there, and a merge is a real one: a merge
commit, a squash or a rebase onto the base branch, pushed to that repository.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, cast

ROLES = ("admin", "maintain", "write", "triage", "read")
MERGE_METHODS = ("merge", "squash", "rebase")
_CLOSING = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#(\d+)\b", re.IGNORECASE)


Answer = tuple[int, Any, dict[str, str]]


def _invalid(field: str) -> Answer:
    return _error(422, "Validation Failed", [{"resource": "PullRequest", "field": field, "code": "invalid"}])


def _custom(message: str) -> Answer:
    return _error(422, "Validation Failed", [{"resource": "PullRequest", "code": "custom", "message": message}])


def _error(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> Answer:
    body: dict[str, Any] = {"message": message, "documentation_url": "https://docs.github.com/rest/pulls/pulls"}
    if errors is not None:
        body["errors"] = errors
    return status, body, {}


class PullsDatabase:
    """Mixed into FakeGitHub. `pulls`: number → payload; `reviews`/`review_comments`: number → list."""

    repo: str
    issues: dict[int, dict[str, Any]]
    actor: dict[str, Any]
    actors: dict[str, dict[str, Any]]
    reader: str
    lag: float
    page_size: int
    base: str

    def __post_init__(self) -> None:
        self.pulls: dict[int, dict[str, Any]] = {}
        self.reviews: dict[int, list[dict[str, Any]]] = {}
        self.review_comments: dict[int, list[dict[str, Any]]] = {}
        self.collaborators: dict[str, str] = {}  # login (casefolded) → role
        self.pulls_write = True
        self.drafts_supported = True
        self.public = True  # a stranger's permission: read (public) or none (private)
        self.git_remote: Path | None = None
        self.default_branch = "main"
        self.pulls_log: list[tuple[float, dict[int, dict[str, Any]]]] = []
        self.next_review_id = 80_000_000

    # ------------------------------------------------------------------ building state
    def add_collaborator(self, login: str, role: str) -> None:
        assert role in ROLES
        self.collaborators[login.casefold()] = role

    def add_review(
        self,
        number: int,
        author: dict[str, Any],
        state: str,
        body: str = "",
        comments: tuple[tuple[str, int | None, str], ...] = (),
        association: str = "NONE",
    ) -> dict[str, Any]:
        """A submitted review (`state`: APPROVED, CHANGES_REQUESTED, COMMENTED) with inline comments."""
        self.next_review_id += 1
        rid = self.next_review_id
        api, web = self._urls(number)
        pull = self.pulls[number]
        review = {
            "id": rid,
            "node_id": f"PRR_{rid}",
            "user": author,
            "body": body,
            "state": state,
            "html_url": f"{web}#pullrequestreview-{rid}",
            "pull_request_url": api,
            "author_association": association,
            "_links": {"html": {"href": f"{web}#pullrequestreview-{rid}"}, "pull_request": {"href": api}},
            "submitted_at": self._stamp(),
            "commit_id": pull["head"]["sha"],
        }
        self.reviews.setdefault(number, []).append(review)
        for path, line, text in comments:
            self.next_review_id += 1
            cid = self.next_review_id
            self.review_comments.setdefault(number, []).append(
                {
                    "url": f"{self._api_base()}/pulls/comments/{cid}",
                    "pull_request_review_id": rid,
                    "id": cid,
                    "node_id": f"PRRC_{cid}",
                    "diff_hunk": "@@ -1 +1 @@",
                    "path": path,
                    "commit_id": pull["head"]["sha"],
                    "original_commit_id": pull["head"]["sha"],
                    "user": author,
                    "body": text,
                    "created_at": review["submitted_at"],
                    "updated_at": review["submitted_at"],
                    "html_url": f"{web}#discussion_r{cid}",
                    "pull_request_url": api,
                    "author_association": association,
                    "line": line,
                    "original_line": line,
                    "side": "RIGHT",
                    "subject_type": "line" if line is not None else "file",
                }
            )
        return review

    def dismiss_review(self, number: int, review_id: int) -> None:
        for review in self.reviews.get(number, []):
            if review["id"] == review_id:
                review["state"] = "DISMISSED"

    # ------------------------------------------------------------------ helpers
    def _api_base(self) -> str:
        return f"https://api.github.com/repos/{self.repo}"

    def _urls(self, number: int) -> tuple[str, str]:
        return f"{self._api_base()}/pulls/{number}", f"https://github.com/{self.repo}/pull/{number}"

    @staticmethod
    def _stamp() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def _who(self) -> dict[str, Any]:
        return self.actors.get(self.reader, self.actor)

    def _pulls_snap(self) -> None:
        if self.lag > 0:
            self.pulls_log.append((time.monotonic(), copy.deepcopy(self.pulls)))

    def _listed_pulls(self) -> dict[int, dict[str, Any]]:
        if self.lag <= 0 or not self.pulls_log:
            return self.pulls
        cut = time.monotonic() - self.lag
        old = [pulls for at, pulls in self.pulls_log if at <= cut]
        return old[-1] if old else {}

    def _head_sha(self, ref: str) -> str | None:
        if self.git_remote is None:
            return hashlib.sha1(f"{ref}:{len(self.pulls)}".encode()).hexdigest()
        found = subprocess.run(
            ["git", "-C", str(self.git_remote), "rev-parse", "--verify", "-q", f"refs/heads/{ref}^{{commit}}"],
            capture_output=True,
            text=True,
        )
        return found.stdout.strip() if found.returncode == 0 else None

    def _branch(self, ref: str, sha: str) -> dict[str, Any]:
        owner = self.repo.split("/")[0]
        return {
            "label": f"{owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": {"login": owner, "type": "Organization"},
            "repo": {"full_name": self.repo, "name": self.repo.split("/")[1]},
        }

    def _shown(self, pull: dict[str, Any], single: bool) -> dict[str, Any]:
        """The list item, or the single-resource payload (which adds `merged` and friends)."""
        if self.git_remote is not None and pull["state"] == "open":
            pull["head"]["sha"] = self._head_sha(pull["head"]["ref"]) or pull["head"]["sha"]
        shown = {k: v for k, v in pull.items() if not k.startswith("_")}
        shown["labels"] = copy.deepcopy(self.issues[pull["number"]]["labels"])
        if single:
            shown |= {
                "merged": pull["_merged"],
                "mergeable": None if pull["_merged"] else True,
                "mergeable_state": "unknown" if pull["_merged"] else "clean",
                "merged_by": pull["_merged_by"],
                "comments": 0,
                "review_comments": len(self.review_comments.get(pull["number"], [])),
                "commits": 1,
            }
        return shown

    # ------------------------------------------------------------------ routes
    def pulls_route(self, method: str, rest: str, query: dict[str, str], body: Any) -> Answer | None:
        not_found = _error(404, "Not Found")
        if not rest.startswith("/pulls"):
            return None
        writing = method in ("POST", "PATCH", "PUT", "DELETE")
        if writing and not self.pulls_write:
            return _error(403, "Resource not accessible by integration")
        if rest == "/pulls" and method == "GET":
            wanted_state = query.get("state", "open")
            pulls = [
                self._shown(p, False)
                for _, p in sorted(self._listed_pulls().items(), key=lambda kv: -kv[0])  # newest first
                if wanted_state in ("all", p["state"])
                and query.get("head") in (None, p["head"]["label"])
                and query.get("base") in (None, p["base"]["ref"])
            ]
            return cast(Any, self)._page(f"/repos/{self.repo}/pulls", query, pulls)
        if rest == "/pulls" and method == "POST":
            return self._create(body or {})
        m = re.fullmatch(r"/pulls/(\d+)(/.*)?", rest)
        if m is None:
            return None
        number, tail = int(m.group(1)), m.group(2) or ""
        pull = self.pulls.get(number)
        if pull is None:
            return not_found
        if tail == "" and method == "GET":
            return 200, self._shown(pull, True), {}
        if tail == "" and method == "PATCH":
            return self._update(pull, body or {})
        if tail == "/merge" and method == "PUT":
            return self._merge(pull, (body or {}).get("merge_method", "merge"))
        if tail == "/merge" and method == "GET":
            return (204, "", {}) if pull["_merged"] else not_found
        if tail == "/requested_reviewers" and method == "POST":
            return self._request(pull, body or {})
        if tail == "/reviews" and method == "GET":
            return cast(Any, self)._page(f"/repos/{self.repo}{rest}", query, self.reviews.get(number, []))
        if mm := re.fullmatch(r"/reviews/(\d+)/comments", tail):
            rid = int(mm.group(1))
            if not any(r["id"] == rid for r in self.reviews.get(number, [])):
                return not_found
            comments = [c for c in self.review_comments.get(number, []) if c["pull_request_review_id"] == rid]
            return cast(Any, self)._page(f"/repos/{self.repo}{rest}", query, comments)
        if tail == "/comments" and method == "GET":
            return cast(Any, self)._page(f"/repos/{self.repo}{rest}", query, self.review_comments.get(number, []))
        return not_found

    def _create(self, body: dict[str, Any]) -> Answer:
        missing = [key for key in ("head", "base") if not body.get(key)]
        if not body.get("title") and "issue" not in body:
            missing.insert(0, "title")
        if missing:
            names = ", ".join(f'"{key}"' for key in missing)
            return _error(422, f"Invalid request.\n\n{names} {'was' if len(missing) == 1 else 'were'}n't supplied.")
        head, base = str(body["head"]).split(":")[-1], str(body["base"])
        sha = self._head_sha(head)
        if sha is None:
            return _invalid("head")
        if self.git_remote is not None and self._head_sha(base) is None:
            return _invalid("base")
        if body.get("draft") and not self.drafts_supported:
            return _error(422, "Draft pull requests are not supported in this repository.")
        owner = self.repo.split("/")[0]
        for other in self.pulls.values():
            if other["state"] == "open" and other["head"]["ref"] == head and other["base"]["ref"] == base:
                message = f"A pull request already exists for {owner}:{head}."
                return _custom(message)
        fake = cast(Any, self)
        number = max([*self.issues, *self.pulls, 0]) + 1
        issue = fake.add_issue(number, str(body["title"]), labels=(), pull_request=True)
        issue["body"] = body.get("body")
        issue["user"] = self._who()
        api, web = self._urls(number)
        now = self._stamp()
        self.pulls[number] = {
            "url": api,
            "id": 1_900_000_000 + number,
            "node_id": f"PR_{number}",
            "html_url": web,
            "diff_url": f"{web}.diff",
            "patch_url": f"{web}.patch",
            "issue_url": f"{self._api_base()}/issues/{number}",
            "number": number,
            "state": "open",
            "locked": False,
            "title": body["title"],
            "user": self._who(),
            "body": body.get("body"),
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "merged_at": None,
            "merge_commit_sha": None,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": self._branch(head, sha),
            "base": self._branch(base, self._head_sha(base) or "0" * 40),
            "author_association": "NONE",
            "draft": bool(body.get("draft")),
            "_merged": False,
            "_merged_by": None,
        }
        self._pulls_snap()
        return 201, self._shown(self.pulls[number], True), {"Location": api}

    def _update(self, pull: dict[str, Any], body: dict[str, Any]) -> Answer:
        if body.get("state") == "open" and pull["_merged"]:
            return _custom("state cannot be changed. The pull request has been merged.")
        for key in ("title", "body"):
            if key in body:
                pull[key] = body[key]
                self.issues[pull["number"]][key] = body[key]
        if body.get("base"):
            pull["base"] = self._branch(str(body["base"]), self._head_sha(str(body["base"])) or "0" * 40)
        if body.get("state") in ("open", "closed"):
            self._set_state(pull, str(body["state"]))
        pull["updated_at"] = self._stamp()
        self._pulls_snap()
        return 200, self._shown(pull, True), {}

    def _set_state(self, pull: dict[str, Any], state: str) -> None:
        now = self._stamp()
        pull["state"] = state
        pull["closed_at"] = now if state == "closed" else None
        issue = self.issues[pull["number"]]
        issue["state"], issue["closed_at"] = state, pull["closed_at"]
        issue["state_reason"] = None if state == "closed" else "reopened"

    def _request(self, pull: dict[str, Any], body: dict[str, Any]) -> Answer:
        logins = [str(login) for login in body.get("reviewers") or []]
        if any(login.casefold() == str(pull["user"]["login"]).casefold() for login in logins):
            return _error(422, "Review cannot be requested from pull request author.")
        if any(self.collaborators.get(login.casefold()) is None for login in logins):
            return _error(
                422,
                "Reviews may only be requested from collaborators. One or more of the users or teams you "
                f"specified is not a collaborator of the {self.repo} repository.",
            )
        for login in logins:
            if all(r["login"].casefold() != login.casefold() for r in pull["requested_reviewers"]):
                pull["requested_reviewers"].append({"login": login, "type": "User"})
        for slug in body.get("team_reviewers") or []:
            pull["requested_teams"].append({"slug": slug, "name": slug})
        self._pulls_snap()
        return 201, self._shown(pull, False), {}

    # ------------------------------------------------------------------ merging
    def merge_pull(self, number: int, method: str = "merge") -> str:
        """Merge as a person would on GitHub's page; the merge commit's sha."""
        status, answer, _ = self._merge(self.pulls[number], method)
        assert status == 200, answer
        return str(answer["sha"])

    def close_pull(self, number: int) -> None:
        self._set_state(self.pulls[number], "closed")
        self._pulls_snap()

    def _merge(self, pull: dict[str, Any], method: str) -> Answer:
        if method not in MERGE_METHODS:
            return _invalid("merge_method")
        if pull["state"] != "open" or pull["_merged"]:
            return _error(405, "Pull Request is not mergeable")
        sha = (
            self._git_merge(pull, method)
            if self.git_remote is not None
            else hashlib.sha1(f"{method}:{pull['number']}".encode()).hexdigest()
        )
        self._set_state(pull, "closed")
        self.issues[pull["number"]]["pull_request"]["merged_at"] = pull["closed_at"]
        pull |= {"merged_at": pull["closed_at"], "merge_commit_sha": sha, "_merged": True, "_merged_by": self._who()}
        if pull["base"]["ref"] == self.default_branch:  # `Closes #N` in the body closes the issue
            for number in _CLOSING.findall(str(pull.get("body") or "")):
                issue = self.issues.get(int(number))
                if issue is not None and "pull_request" not in issue and issue["state"] == "open":
                    issue |= {"state": "closed", "state_reason": "completed", "closed_at": pull["closed_at"]}
        self._pulls_snap()
        return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}, {}

    def _git_merge(self, pull: dict[str, Any], method: str) -> str:
        """A real merge in a clone of `git_remote`, pushed back: what GitHub's merge button does."""
        assert self.git_remote is not None
        head, base, number = pull["head"]["ref"], pull["base"]["ref"], pull["number"]
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "GitHub",
            "GIT_AUTHOR_EMAIL": "noreply@github.com",
            "GIT_COMMITTER_NAME": "GitHub",
            "GIT_COMMITTER_EMAIL": "noreply@github.com",
        }
        with tempfile.TemporaryDirectory() as work:

            def git(*args: str) -> str:
                done = subprocess.run(["git", "-C", work, *args], env=env, capture_output=True, text=True, check=True)
                return done.stdout.strip()

            subprocess.run(["git", "clone", "-q", "-b", base, str(self.git_remote), work], env=env, check=True)
            git("fetch", "-q", "origin", f"refs/heads/{head}:refs/remotes/origin/{head}")
            title = f"{pull['title']} (#{number})"
            if method == "merge":
                git("merge", "--no-ff", "-q", "-m", f"Merge pull request #{number} from {head}", f"origin/{head}")
            elif method == "squash":
                messages = git("log", "--format=* %B", f"{base}..origin/{head}")
                git("merge", "--squash", "-q", f"origin/{head}")
                git("commit", "-q", "-m", f"{title}\n\n{messages}")
            else:
                git("checkout", "-q", "-B", "rebasing", f"origin/{head}")
                git("rebase", "-q", base)
                git("checkout", "-q", base)
                git("merge", "--ff-only", "-q", "rebasing")
            git("push", "-q", "origin", f"HEAD:refs/heads/{base}")
            return git("rev-parse", "HEAD")
