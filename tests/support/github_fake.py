"""A stateful stand-in for GitHub's REST API: `responses` callbacks in-process, or a loopback
HTTP server (`github_server.py`) for real `jit-dispatch` processes.

List endpoints can lag (`lag` seconds): issue and ref lists show the state as it was then, to
every reader; comment lists too, except that a reader (a token) sees its own comments at once.
Single-resource reads are current. Payloads follow the shapes GitHub documents for issues,
comments and labels (trimmed of fields nobody reads, never of fields the dispatcher reads):
`Link` header pagination, pull requests in the issues list, `author_association`,
`state_reason`, `issue_dependencies_summary`.
Pull requests, reviews, merges and collaborator permissions: `github_pulls.py`.
PyGithub talks to `https://api.github.com:443/...` (it spells out the port), so routes match
with and without it.
"""

from __future__ import annotations

import copy
import email.utils
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import responses

from github_git import GitDatabase
from github_pulls import PullsDatabase

API = "https://api.github.com"
REPO = "octo-org/widgets"
BOT = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot", "site_admin": False}
HUMAN = {"login": "octocat", "id": 583231, "type": "User", "site_admin": False}


def user(login: str, kind: str = "User", uid: int = 1000) -> dict[str, Any]:
    return {
        "login": login,
        "id": uid,
        "node_id": f"U_{uid}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "url": f"{API}/users/{urllib.parse.quote(login)}",
        "html_url": f"https://github.com/{urllib.parse.quote(login)}",
        "type": kind,
        "site_admin": False,
    }


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    times: int
    apply_first: bool  # do the work, then answer with the error (a POST that landed)
    token: str | None = None  # only requests with this token
    delay: float = 0.0  # stall this long first (the loopback server only)


@dataclass
class FakeGitHub(GitDatabase, PullsDatabase):
    repo: str = REPO
    page_size: int = 2  # small pages, so every listing paginates via `Link`
    actor: dict[str, Any] = field(default_factory=lambda: dict(BOT))
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    blocked_by: dict[int, list[int]] = field(default_factory=dict)
    dependencies_api: bool = True
    requests: list[tuple[str, str]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    hooks: list[tuple[str, re.Pattern[str], Callable[[], None]]] = field(default_factory=list)
    next_comment_id: int = 2_000_000_000
    clock: int = 0
    base: str = API  # where `Link` headers point
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, Any]] = field(default_factory=dict)
    trees: dict[str, Any] = field(default_factory=dict)
    contents_write: bool = True
    user_endpoint: bool = True  # False: an installation token (GET /user is 403)
    actors: dict[str, dict[str, Any]] = field(default_factory=dict)  # token → who it comments as
    permissions: dict[str, str] = field(default_factory=dict)  # login → admin | maintain | write | triage | read
    lag: float = 0.0
    log: list[tuple[float, dict[int, Any], dict[int, Any], dict[str, str]]] = field(default_factory=list)
    written_by: dict[int, str] = field(default_factory=dict)  # comment id → token
    deleted_by: dict[int, str] = field(default_factory=dict)
    reader: str = ""  # the token of the request being handled
    pinned: tuple[dict[int, Any], dict[int, Any], dict[str, str]] | None = None  # lists frozen by `pin`
    deleted: set[int] = field(default_factory=set)  # issues deleted: 410 Gone
    transferred: dict[int, dict[str, Any]] = field(default_factory=dict)  # number → the issue in its new repository
    clock_offset: float = 0.0  # GitHub's clock minus this machine's: commit dates and the `Date` header

    # ------------------------------------------------------------------ building state
    def now(self) -> str:
        self.clock += 1
        return f"2025-06-01T12:{self.clock // 60:02d}:{self.clock % 60:02d}Z"

    def add_issue(
        self,
        number: int,
        title: str = "",
        labels: tuple[str, ...] = ("dispatch",),
        created_at: str = "2025-05-01T10:00:00Z",
        assignees: tuple[dict[str, Any], ...] = (),
        pull_request: bool = False,
        state: str = "open",
        state_reason: str | None = None,
        blocked_by: tuple[int, ...] = (),
        summary: bool = True,
    ) -> dict[str, Any]:
        base = f"{API}/repos/{self.repo}"
        raw: dict[str, Any] = {
            "url": f"{base}/issues/{number}",
            "repository_url": base,
            "labels_url": f"{base}/issues/{number}/labels{{/name}}",
            "comments_url": f"{base}/issues/{number}/comments",
            "events_url": f"{base}/issues/{number}/events",
            "html_url": f"https://github.com/{self.repo}/{'pull' if pull_request else 'issues'}/{number}",
            "id": 3_000_000_000 + number,
            "node_id": f"I_kwDO{number:08d}",
            "number": number,
            "title": title or f"Issue {number}",
            "user": user("reporter", uid=77),
            "labels": [],
            "state": state,
            "locked": False,
            "assignee": assignees[0] if assignees else None,
            "assignees": list(assignees),
            "milestone": None,
            "comments": 0,
            "created_at": created_at,
            "updated_at": created_at,
            "closed_at": None,
            "author_association": "NONE",
            "type": None,
            "active_lock_reason": None,
            "body": f"Body of {number}",
            "closed_by": None,
            "reactions": {"url": f"{base}/issues/{number}/reactions", "total_count": 0},
            "timeline_url": f"{base}/issues/{number}/timeline",
            "performed_via_github_app": None,
            "state_reason": state_reason,
        }
        if summary:
            raw["issue_dependencies_summary"] = {
                "blocked_by": 0,
                "blocking": 0,
                "total_blocked_by": 0,
                "total_blocking": 0,
            }
        if pull_request:
            raw["pull_request"] = {
                "url": f"{base}/pulls/{number}",
                "html_url": f"https://github.com/{self.repo}/pull/{number}",
                "diff_url": f"https://github.com/{self.repo}/pull/{number}.diff",
                "patch_url": f"https://github.com/{self.repo}/pull/{number}.patch",
                "merged_at": None,
            }
        self.issues[number] = raw
        self.comments.setdefault(number, [])
        for label in labels:
            self._label(number, label)
        if blocked_by:
            self.blocked_by[number] = list(blocked_by)
        self.snap()
        return raw

    def _label(self, number: int, name: str) -> None:
        raw = self.issues[number]
        if any(label["name"].casefold() == name.casefold() for label in raw["labels"]):
            return
        raw["labels"].append(
            {
                "id": 5_000_000 + len(name),
                "node_id": f"LA_{name}",
                "url": f"{API}/repos/{self.repo}/labels/{urllib.parse.quote(name)}",
                "name": name,
                "color": "ededed",
                "default": False,
                "description": None,
            }
        )

    def add_comment(self, number: int, body: str, author: dict[str, Any] | None = None, association: str = "NONE"):
        self.next_comment_id += 1
        comment = {
            "url": f"{API}/repos/{self.repo}/issues/comments/{self.next_comment_id}",
            "html_url": f"https://github.com/{self.repo}/issues/{number}#issuecomment-{self.next_comment_id}",
            "issue_url": f"{API}/repos/{self.repo}/issues/{number}",
            "id": self.next_comment_id,
            "node_id": f"IC_{self.next_comment_id}",
            "user": author or self.actors.get(self.reader, self.actor),
            "created_at": self.now(),
            "updated_at": self.now(),
            "author_association": association,
            "body": body,
            "reactions": {"total_count": 0},
            "performed_via_github_app": None,
        }
        self.comments[number].append(comment)
        self.issues[number]["comments"] = len(self.comments[number])
        self.written_by[comment["id"]] = self.reader
        self.snap()
        return comment

    def permission_payload(self, login: str) -> dict[str, Any]:
        """GitHub's answer: `permission` is the legacy admin|write|read|none (maintain reads as write,
        triage as read), `role_name` the role itself; anyone else reads `read` (public) or `none`."""
        role = self.permissions.get(login) or self.collaborators.get(login.casefold())
        role = role or ("read" if self.public else "none")
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        return {"permission": legacy, "role_name": role, "user": user(login)}

    def delete_issue(self, number: int) -> None:
        """A person deleted it: gone from lists; the issue and its parts answer 410 Gone."""
        self.deleted.add(number)
        self.issues.pop(number)
        self.snap()

    def transfer_issue(self, number: int, to_repo: str = "octo-org/elsewhere", new_number: int = 9) -> None:
        """Moved to another repository: gone from lists; its URLs answer 301 to the new location."""
        raw = self.issues.pop(number)
        base = f"{API}/repos/{to_repo}"
        self.transferred[number] = dict(raw, number=new_number, repository_url=base, url=f"{base}/issues/{new_number}")
        self.snap()

    def date(self) -> str:
        """GitHub's `Date` header: its clock, whole seconds."""
        return email.utils.formatdate(time.time() + self.clock_offset, usegmt=True)

    # ------------------------------------------------------------------ inspecting
    def labels(self, number: int) -> list[str]:
        return [label["name"] for label in self.issues[number]["labels"]]

    def bodies(self, number: int) -> list[str]:
        return [c["body"] for c in self.comments[number]]

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.fullmatch(pattern, p))

    # ------------------------------------------------------------------ faults and hooks
    def fail(
        self,
        method: str,
        pattern: str,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        times: int = 1,
        apply_first: bool = False,
        token: str | None = None,
        delay: float = 0.0,
    ) -> None:
        body = {"message": message, "documentation_url": "https://docs.github.com/rest"}
        fault = Fault(method, re.compile(pattern), status, body, headers or {}, times, apply_first, token, delay)
        self.faults.append(fault)

    def stall(self, method: str, pattern: str, seconds: float, token: str | None = None) -> None:
        """The next matching request waits `seconds` before GitHub handles it (loopback server); in-process,
        the client's read timeout fires (`requests.ReadTimeout`) and GitHub never sees it."""
        self.fail(method, pattern, 0, "", token=token, delay=seconds)

    # ------------------------------------------------------------------ lagging lists
    def snap(self) -> None:
        """Remember the state after a write: lagging list endpoints serve it later."""
        if self.lag > 0:
            self.log.append(
                (time.monotonic(), copy.deepcopy(self.issues), copy.deepcopy(self.comments), dict(self.refs))
            )
            cut = time.monotonic() - self.lag - 1
            while len(self.log) > 2 and self.log[1][0] < cut:
                self.log.pop(0)

    def pin(self) -> None:
        """From now on list endpoints show the state as it is now (a reader still sees its own comments):
        a lag as long as a test needs, without waiting for it."""
        self.pinned = (copy.deepcopy(self.issues), copy.deepcopy(self.comments), dict(self.refs))

    def _seen(self) -> tuple[dict[int, Any], dict[int, Any], dict[str, str]]:
        """The state a list endpoint shows now: `lag` seconds old (the oldest known when younger)."""
        if self.pinned is not None:
            return self.pinned
        if self.lag <= 0 or not self.log:
            return self.issues, self.comments, self.refs
        cut = time.monotonic() - self.lag
        old = [entry for entry in self.log if entry[0] <= cut]
        _, issues, comments, refs = old[-1] if old else self.log[0]
        return issues, comments, refs

    def _listed_comments(self, number: int) -> list[dict[str, Any]]:
        _, comments, _ = self._seen()
        shown = {c["id"]: c for c in comments.get(number, [])}
        for comment in self.comments.get(number, []):  # a reader's own comments: at once
            if self.written_by.get(comment["id"]) == self.reader:
                shown[comment["id"]] = comment
        for cid, token in self.deleted_by.items():
            if token == self.reader:
                shown.pop(cid, None)
        return [shown[cid] for cid in sorted(shown)]

    def before(self, method: str, pattern: str, action: Callable[[], None]) -> None:
        """Run `action` once, just before the first matching request is handled."""
        self.hooks.append((method, re.compile(pattern), action))

    # ------------------------------------------------------------------ the server
    def install(self, mock: responses.RequestsMock) -> None:
        route = re.compile(r"https://api\.github\.com(?::443)?/.*")
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            mock.add_callback(method, route, callback=self._callback)

    def _callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        token = str(request.headers.get("Authorization", "")).split(" ")[-1]
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        path = urllib.parse.urlsplit(request.url).path
        fault = self.fault_for(request.method, path, token)
        if fault is not None and fault.delay and not fault.status:  # in-process, a stall outlasts any read timeout
            self.requests.append((request.method, path))
            raise requests.exceptions.ReadTimeout(f"the fake stalled {request.method} {path}")
        return self.handle(request.method, request.url, body, token, fault)

    def fault_for(self, method: str, path: str, token: str) -> Fault | None:
        for fault in self.faults:
            matches = fault.times > 0 and fault.method == method and fault.pattern.fullmatch(path)
            if matches and (fault.token is None or fault.token == token):
                fault.times -= 1
                return fault
        return None

    def handle(
        self, method: str, url: str, body_text: str | None, token: str, fault: Fault | None = None
    ) -> tuple[int, dict[str, str], str]:
        """One request; `fault` when the caller (the server) already took it."""
        split = urllib.parse.urlsplit(url)
        path, query = split.path, dict(urllib.parse.parse_qsl(split.query))
        self.reader = token
        self.requests.append((method, path))
        for hook in list(self.hooks):
            if hook in self.hooks and hook[0] == method and hook[1].fullmatch(path):  # a nested request took it
                self.hooks.remove(hook)
                hook[2]()
        body = json.loads(body_text) if body_text else None
        fault = fault or self.fault_for(method, path, token)
        date = {"Date": self.date()}
        if fault is not None and fault.status:
            if fault.apply_first:
                self._route(method, path, query, body)
                self.snap()
            return fault.status, {"Content-Type": "application/json", **date, **fault.headers}, json.dumps(fault.body)
        status, payload, headers = self._route(method, path, query, body)
        headers = {**date, **headers}
        if method != "GET" and status < 400:
            self.snap()
        if status == 204:
            return status, headers, ""
        return status, {"Content-Type": "application/json; charset=utf-8", **headers}, json.dumps(payload)

    def _page(self, url_path: str, query: dict[str, str], items: list[Any]) -> tuple[int, Any, dict[str, str]]:
        page = int(query.get("page", "1"))
        chunk = items[(page - 1) * self.page_size : page * self.page_size]
        last = max(1, -(-len(items) // self.page_size))
        links = []
        for rel, number in (("next", page + 1), ("last", last)):
            if page < last:
                params = urllib.parse.urlencode({**query, "page": number})
                links.append(f'<{self.base}{url_path}?{params}>; rel="{rel}"')
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})

    def _refresh(self) -> None:
        """GitHub counts open blockers in `issue_dependencies_summary.blocked_by`."""
        for number, raw in self.issues.items():
            if "issue_dependencies_summary" in raw:
                blockers = self.blocked_by.get(number, [])
                summary = raw["issue_dependencies_summary"]
                summary["total_blocked_by"] = len(blockers)
                summary["blocked_by"] = sum(1 for n in blockers if self.issues[n]["state"] == "open")

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        self._refresh()
        prefix = f"/repos/{self.repo}"
        not_found = (404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, {})
        if path == "/user" and method == "GET":
            if not self.user_endpoint:
                return 403, {"message": "Resource not accessible by integration"}, {}
            return 200, self.actors.get(self.reader, self.actor), {}
        if (m := re.fullmatch(r"/repositories/999/issues/(\d+)", path)) and int(m.group(1)) in self.transferred:
            return (200, self.transferred[int(m.group(1))], {}) if method == "GET" else not_found  # not our repository
        if not path.startswith(prefix):
            return not_found
        rest = path[len(prefix) :]
        if rest == "" and method == "GET":
            permissions = {"admin": False, "maintain": False, "push": self.contents_write, "triage": True, "pull": True}
            return 200, {"full_name": self.repo, "permissions": permissions}, {}
        if (m := re.match(r"/issues/(\d+)(/.*)?$", rest)) and int(m.group(1)) in self.deleted:
            return 410, {"message": "This issue was deleted", "documentation_url": "https://docs.github.com/rest"}, {}
        if (m := re.match(r"/issues/(\d+)(/.*)?$", rest)) and int(m.group(1)) in self.transferred:
            where = f"/repositories/999/issues/{m.group(1)}{m.group(2) or ''}"
            return 301, {"message": "Moved Permanently", "url": where}, {"Location": f"{self.base}{where}"}
        if m := re.fullmatch(r"/collaborators/([^/]+)/permission", rest):
            return 200, self.permission_payload(urllib.parse.unquote(m.group(1))), {}
        if m := re.fullmatch(r"/git/matching-refs/(.+)", rest):
            _, _, refs = self._seen()
            wanted = "refs/" + m.group(1)
            return self._page(
                path, query, [self.ref_payload(r, sha) for r, sha in sorted(refs.items()) if r.startswith(wanted)]
            )
        if (answer := self.git_route(method, rest, body)) is not None:
            return answer
        if (answer := self.pulls_route(method, rest, query, body)) is not None:
            return answer
        if method == "GET" and rest == "/issues":
            issues, _, _ = self._seen()
            wanted = [w for w in query.get("labels", "").split(",") if w]
            items = [
                raw
                for _, raw in sorted(issues.items(), key=lambda kv: -kv[0])  # GitHub's default: newest first
                if (query.get("state", "open") in ("all", raw["state"]))
                and all(any(lbl["name"].casefold() == w.casefold() for lbl in raw["labels"]) for w in wanted)
            ]
            return self._page(path, query, items)
        if m := re.fullmatch(r"/issues/(\d+)", rest):
            number = int(m.group(1))
            if number not in self.issues:
                return not_found
            raw = self.issues[number]
            if method == "PATCH":
                for key in ("state", "state_reason", "title", "body"):
                    if key in body:
                        raw[key] = body[key]
                if body.get("state") == "closed":
                    raw["closed_at"] = self.now()
            return 200, raw, {}
        if m := re.fullmatch(r"/issues/(\d+)/comments", rest):
            number = int(m.group(1))
            if method == "POST":
                return 201, self.add_comment(number, body["body"]), {}
            return self._page(path, query, self._listed_comments(number))
        if m := re.fullmatch(r"/issues/comments/(\d+)", rest):
            cid = int(m.group(1))
            for thread in self.comments.values():
                for comment in thread:
                    if comment["id"] == cid:
                        if method == "DELETE":
                            thread.remove(comment)
                            self.deleted_by[cid] = self.reader
                            return 204, "", {}
                        if method == "PATCH":
                            comment["body"] = body["body"]
                            comment["updated_at"] = self.now()
                        return 200, comment, {}
            return not_found
        if m := re.fullmatch(r"/issues/(\d+)/labels", rest):
            number = int(m.group(1))
            if method == "POST":
                for name in body["labels"]:
                    self._label(number, name)
            return 200, self.issues[number]["labels"], {}
        if m := re.fullmatch(r"/issues/(\d+)/labels/([^/]+)", rest):
            number, name = int(m.group(1)), urllib.parse.unquote(m.group(2))
            labels = self.issues[number]["labels"]
            kept = [label for label in labels if label["name"].casefold() != name.casefold()]
            if len(kept) == len(labels):
                return 404, {"message": "Label does not exist", "documentation_url": "https://docs.github.com"}, {}
            self.issues[number]["labels"] = kept
            return 200, kept, {}
        if m := re.fullmatch(r"/issues/(\d+)/dependencies/blocked_by", rest):
            if not self.dependencies_api:
                return not_found
            blockers = [self.issues[n] for n in self.blocked_by.get(int(m.group(1)), [])]
            return self._page(path, query, blockers)
        return not_found


@contextmanager
def serving(server: FakeGitHub | None = None) -> Iterator[FakeGitHub]:
    """The fake answering this process's `requests` (`responses`) for the block's duration."""
    server = server if server is not None else FakeGitHub()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        server.install(mock)
        yield server


def without_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    """No client-side throttling between GitHub calls (imported here, lazily, to keep this module light)."""
    from jit_dispatch.trackers.github import api as github_api

    monkeypatch.setattr(github_api, "THROTTLE", False)
