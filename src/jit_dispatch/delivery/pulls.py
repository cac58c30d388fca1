"""Pull requests for delivered work (docs/delivery.md#github): open or update one per work branch,
see whether it merged or closed, and read the review that asks for changes.

Requests go through the GitHub tracker's `Api` (PyGithub, bounded retries, one-line errors that
never show the token). Issue text reaches GitHub only inside the JSON bodies of requests; what
comes back from reviews is handed on as data (`Feedback`), never interpreted.

Trust: a review counts only when its author has write permission or higher on the repository
(the collaborator-permission endpoint, asked once per login and run), is the token's own login,
or is a `--trusted-actor`. `author_association` is never enough: it says OWNER/MEMBER/COLLABORATOR
for people whose role may be read-only.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from github import GithubException

from jit_dispatch.domain.delivery import Feedback, InlineComment
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.github.api import Api

PULLS_PERMISSION = "pull-requests: write"
CONTENTS_PERMISSION = "contents: write"
WRITE_ROLES = frozenset({"admin", "maintain", "write"})  # `role_name`s at or above write
DIRECT_POLL = 3  # up to this many PRs: one GET each; more: list the open ones first
BODY_LIMIT = 65_536  # characters GitHub accepts in a pull request body
CUT_NOTE = "\n\n… (cut to fit GitHub's limit)\n"
VERDICTS = frozenset({"APPROVED", "CHANGES_REQUESTED", "DISMISSED"})  # COMMENTED changes no verdict
_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?")


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    state: str  # "open" | "closed"
    merged: bool
    head: str
    base: str
    merge_commit_sha: str | None = None


def _pull(raw: Mapping[str, Any]) -> PullRequest:
    """A pull request as GitHub sends it; list items carry `merged_at` but no `merged`."""
    merged = bool(raw.get("merged") or raw.get("merged_at"))
    return PullRequest(
        number=int(raw["number"]),
        url=str(raw.get("html_url") or ""),
        state=str(raw.get("state") or ""),
        merged=merged,
        head=str((raw.get("head") or {}).get("ref") or ""),
        base=str((raw.get("base") or {}).get("ref") or ""),
        merge_commit_sha=str(raw["merge_commit_sha"]) if merged and raw.get("merge_commit_sha") else None,
    )


def _already_open(exc: GithubException) -> bool:
    """GitHub's 422 for a second PR from the same head: `A pull request already exists for o:branch.`"""
    return exc.status == 422 and "already exists" in str(exc.data).lower()


def _when(stamp: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


def fit_body(body: str, limit: int = BODY_LIMIT) -> str:
    return body if len(body) <= limit else body[: limit - len(CUT_NOTE)] + CUT_NOTE


class PullRequests:
    def __init__(
        self,
        repo: str,
        token: str,
        *,
        api_url: str = "https://api.github.com",
        trusted_actors: Sequence[str] = (),
        own_login: str | None = None,
    ) -> None:
        self.api = Api(repo, token, api_url)
        self.repo = repo
        self._trusted = {login.casefold() for login in trusted_actors}
        self._own = own_login.casefold() if own_login else None
        self._asked_own = own_login is not None
        self._writers: dict[str, bool] = {}  # login (casefolded) → has write permission; per run
        self.warnings: list[str] = []  # what did not stop the delivery (a reviewer GitHub refused)

    def __repr__(self) -> str:  # never the token
        return f"PullRequests({self.repo!r}, {self.api.url!r})"

    # ------------------------------------------------------------------ before the command
    def check_permissions(self) -> None:
        """Before the command: TrackerError (exit 3) naming the missing `pull-requests: write` or
        `contents: write`, in one line.

        Two requests that GitHub refuses either way: an empty POST to create a pull request and an
        empty POST to create a ref. A token allowed to write gets 422 (the body is invalid), one
        without the permission 403 (404 where it cannot see the repository). Nothing is created.
        """
        missing = [name for name, path in ((PULLS_PERMISSION, "/pulls"), (CONTENTS_PERMISSION, "/git/refs"))
                   if not self._may_write(path)]  # fmt: skip
        if missing:
            needed = " and ".join(f"`{name}`" for name in missing)
            raise TrackerError(
                f"{self.repo}: the token lacks {needed}, which --deliver pull-request needs "
                "(add it to the workflow's `permissions:`)"
            )

    def _may_write(self, path: str) -> bool:
        with self.api.doing(f"check the token's permissions on {self.repo}"):
            try:
                self.api.write(lambda: self.api.request("POST", path, input={}))
            except GithubException as exc:
                if exc.status == 422:
                    return True
                if exc.status in (403, 404):
                    return False
                raise
        return True  # accepted an empty body: nothing GitHub does, but then it may write

    # ------------------------------------------------------------------ delivery
    def open_or_update(
        self,
        head: str,
        base: str,
        title: str,
        body: str,
        *,
        draft: bool,
        labels: Sequence[str],
        reviewers: Sequence[str],
    ) -> PullRequest:
        """Open the PR for `head`, or update the open one (title, body): never a duplicate. <= 3 calls.

        Opening: the create, then labels and reviewers (each only when given). Updating: the create
        GitHub refuses with "already exists", the lookup by head, the update. Labels and reviewers
        are set when the PR opens, and left as people changed them afterwards.
        """
        body = fit_body(body)
        wanted = {"title": title, "head": head, "base": base, "body": body, "draft": draft}
        with self.api.doing(f"open a pull request for {head}"):
            try:
                raw = self.api.write(lambda: self.api.request("POST", "/pulls", input=wanted), lambda: self._open(head))
            except GithubException as exc:
                if not _already_open(exc):
                    raise
                return self._update(head, base, title, body)
            pull = _pull(raw)
            if labels:
                labelled = {"labels": list(labels)}
                self.api.write(lambda: self.api.request("POST", f"/issues/{pull.number}/labels", input=labelled))
            if reviewers:
                self._request_reviews(pull.number, reviewers)
        return pull

    def _update(self, head: str, base: str, title: str, body: str) -> PullRequest:
        raw = self._open(head)
        if raw is None:  # the list lags the create that made it
            raise TrackerError(
                f"{self.repo}: GitHub says a pull request for {head} is open but does not list it yet; "
                "the next delivery updates it"
            )
        changes = {"title": title, "body": body, "base": base}
        number = int(raw["number"])
        return _pull(self.api.write(lambda: self.api.request("PATCH", f"/pulls/{number}", input=changes)))

    def _open(self, head: str) -> dict[str, Any] | None:
        """The open pull request whose head is this repository's branch `head`, if GitHub lists one."""
        owner = self.repo.split("/")[0]
        found = self.api.list("/pulls", {"state": "open", "head": f"{owner}:{head}"})
        return next((raw for raw in found if (raw.get("head") or {}).get("ref") == head), None)

    def _request_reviews(self, number: int, reviewers: Sequence[str]) -> None:
        """`login` or `org/team`; a reviewer GitHub refuses (not a collaborator, the author) is a warning."""
        people = [r for r in reviewers if "/" not in r]
        teams = [r.split("/", 1)[1] for r in reviewers if "/" in r]
        wanted = {"reviewers": people, "team_reviewers": teams}
        try:
            self.api.write(lambda: self.api.request("POST", f"/pulls/{number}/requested_reviewers", input=wanted))
        except GithubException as exc:
            if exc.status != 422:
                raise
            message = str(exc.data.get("message") if isinstance(exc.data, dict) else "") or "refused"
            names = ", ".join(reviewers)
            self.warnings.append(
                self.api.scrub(f"pull request #{number}: GitHub refused the reviewers {names}: {message}")
            )

    # ------------------------------------------------------------------ after the delivery
    def poll(self, numbers: Sequence[int]) -> dict[int, PullRequest]:
        """The current state of these PRs in as few calls as possible.

        Up to `DIRECT_POLL` PRs: one GET each (single reads are current). More: one listing of the
        open PRs (a call per 100), then one GET for each asked PR not listed open (merged or closed
        since; the listing may lag, which only delays noticing). A PR GitHub does not know is left out.
        """
        wanted = sorted(set(numbers))
        found: dict[int, PullRequest] = {}
        with self.api.doing(f"read pull requests of {self.repo}"):
            if len(wanted) > DIRECT_POLL:
                for raw in self.api.list("/pulls", {"state": "open"}):
                    if int(raw["number"]) in wanted:
                        found[int(raw["number"])] = _pull(raw)
            for number in wanted:
                if number not in found and (single := self._get(number)) is not None:
                    found[number] = _pull(single)
        return found

    def _get(self, number: int) -> dict[str, Any] | None:
        try:
            raw = self.api.request("GET", f"/pulls/{number}")
        except GithubException as exc:
            if exc.status == 404:
                return None
            raise
        return raw if isinstance(raw, dict) else None

    def changes_requested(self, number: int, since: str | None) -> Feedback | None:
        """The newest review that requests changes (by a user with write permission, our own login or a
        trusted actor), submitted after `since`, with its inline comments; None when there is none.

        A reviewer's verdict is their latest approving, change-requesting or dismissed review, as on
        GitHub: changes asked for and then approved are not asked for any more. Calls: the reviews
        (a call per 100), one permission check per new reviewer, the chosen review's comments.
        """
        after = _when(since) if since else None
        with self.api.doing(f"read the reviews of pull request #{number}"):
            verdicts: dict[str, dict[str, Any]] = {}
            for review in self.api.list(f"/pulls/{number}/reviews"):
                login = str((review.get("user") or {}).get("login") or "")
                submitted = _when(review.get("submitted_at"))
                if review.get("state") not in VERDICTS or not _LOGIN.fullmatch(login) or submitted is None:
                    continue
                if after is None or submitted > after:
                    verdicts[login.casefold()] = review
            asking = [r for r in verdicts.values() if r.get("state") == "CHANGES_REQUESTED"]
            for review in sorted(asking, key=lambda r: (_when(r["submitted_at"]), int(r["id"])), reverse=True):
                if self._trusted_reviewer(str(review["user"]["login"])):
                    return self._feedback(number, review)
        return None

    def _trusted_reviewer(self, login: str) -> bool:
        key = login.casefold()
        if key in self._trusted or key == self._own_login():
            return True
        if key not in self._writers:
            quoted = urllib.parse.quote(login, safe="")
            answer: Any = {}
            try:
                answer = self.api.request("GET", f"/collaborators/{quoted}/permission")
            except GithubException as exc:
                if exc.status != 404:  # 404: no such user here
                    raise
            answer = answer if isinstance(answer, dict) else {}
            role = str(answer.get("role_name") or answer.get("permission") or "")
            self._writers[key] = role in WRITE_ROLES
        return self._writers[key]

    def _own_login(self) -> str | None:
        """The token's login, once (an installation token has none: GET /user answers 403)."""
        if not self._asked_own:
            self._asked_own = True
            try:
                me = self.api.request("GET", "/user", absolute=True)
            except GithubException:
                me = {}
            login = me.get("login") if isinstance(me, dict) else None
            self._own = str(login).casefold() if login else None
        return self._own

    def _feedback(self, number: int, review: Mapping[str, Any]) -> Feedback:
        login = str(review["user"]["login"])
        comments = []
        for raw in self.api.list(f"/pulls/{number}/reviews/{int(review['id'])}/comments"):
            line = raw.get("line") if raw.get("line") is not None else raw.get("original_line")
            comments.append(
                InlineComment(
                    path=str(raw.get("path") or ""),
                    line=int(line) if isinstance(line, int) else None,
                    body=str(raw.get("body") or ""),
                    author=str((raw.get("user") or {}).get("login") or ""),
                )
            )
        return Feedback(
            reason=f"changes requested by {login}",
            reviewer=login,
            review_body=str(review.get("body") or ""),
            review_url=str(review.get("html_url") or "") or None,
            comments=tuple(comments),
        )

    def close(self) -> None:
        self.api.close()
