"""GitHub Issues' reads and writes as the trackers use them: issues, their dependencies, comments,
markers (counted only from trusted authors: our identity, `--trusted-actor`s, people with write
access), labels. The protocols built on them: `tracker` (claims by comment), `reflock` (by ref).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from github import GithubException

from jit_dispatch.trackers.github import rules
from jit_dispatch.trackers.github.api import Api


class IssueAccess:
    def __init__(
        self,
        settings: rules.GitHubSettings,
        token: str,
        api_url: str = "https://api.github.com",
        *,
        throttle: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
        identity: str | None = None,
    ) -> None:
        """`identity`: whose markers count when GET /user cannot say (an Actions or App token)."""
        self.settings = settings
        self.location = settings.location
        self.api = Api(settings.repo, token, api_url, throttle=throttle, sleep=sleep)
        self._deps_api = True  # False once the server says it has no issue dependencies
        self._identity = identity
        self._trusted: set[str] | None = None
        self._writers: dict[str, bool] = {}  # login (casefolded) → write access or more, per run
        self._claimed_kept: tuple[int, list[dict[str, Any]]] | None = None  # (api.writes then, the listing)

    # ------------------------------------------------------------------ reads
    def _comments(self, number: int) -> list[dict[str, Any]]:
        return self.api.list(f"/issues/{number}/comments")

    def _markers(self, number: int) -> list[rules.Marker]:
        comments = self._comments(number)
        trusted = self.trusted()
        writers = {login.casefold() for login in rules.marker_authors(comments, trusted) if self._can_write(login)}
        return rules.parse_markers(comments, trusted | writers)

    def _can_write(self, login: str) -> bool:
        """Whether `login` has write access or more to the repository; asked once per run and login."""
        key = login.casefold()
        if key not in self._writers:
            quoted = urllib.parse.quote(login, safe="")
            try:
                answer = self.api.request("GET", f"/collaborators/{quoted}/permission")
            except GithubException as exc:
                if exc.status not in (403, 404):  # 404: no such user; 403: the token may not ask
                    raise
                answer = {}
            self._writers[key] = isinstance(answer, dict) and rules.can_write(answer)
        return self._writers[key]

    def trusted(self) -> frozenset[str]:
        """Logins whose markers count (casefolded): the token's own, else `identity`; `--trusted-actor`s."""
        if self._trusted is None:
            self._trusted = {login.casefold() for login in self.settings.trusted_actors}
            try:
                me = self.api.request("GET", "/user", absolute=True)
                login = me.get("login") if isinstance(me, dict) else None
            except GithubException:  # an installation token has no user: /user answers 403
                login = self._identity
            if login:
                self._trusted.add(str(login).casefold())
        return frozenset(self._trusted)

    def _get(self, number: int) -> dict[str, Any]:
        data = self.api.request("GET", f"/issues/{number}")
        return data if isinstance(data, dict) else {}

    def _current(self, number: int) -> tuple[dict[str, Any], str | None]:
        """The issue as GitHub has it now, and how it left this repository if it did (deleted: 410;
        transferred: its URL answers 301 to another repository), else None."""
        try:
            raw = self._get(number)
        except GithubException as exc:
            if exc.status == 410:
                return {}, "was deleted (410)"
            raise
        if not rules.in_repo(raw, self.settings.repo):
            return raw, f"was transferred to {rules.dependency_ref(raw, self.settings.repo).split('#')[0]} (301)"
        return raw, None

    def _gone(self, number: int) -> str | None:
        return self._current(number)[1]

    def _blockers(self, raw: dict[str, Any]) -> list[dict[str, Any]]:
        """Open or closed issues this one is "blocked by"; [] when GitHub reports none."""
        count = rules.open_blockers(raw)
        if count == 0 or (count is None and not self._deps_api):
            return []
        try:
            return self.api.list(f"/issues/{raw['number']}/dependencies/blocked_by")
        except GithubException as exc:
            if exc.status in (404, 410):  # no dependency data on this server (older GHES)
                self._deps_api = count is not None
                return []
            raise

    def _dependencies(self, raw: dict[str, Any], states: dict[str, str]) -> tuple[str, ...]:
        refs: list[str] = []
        for blocker in self._blockers(raw):
            ref = rules.dependency_ref(blocker, self.settings.repo)
            states.setdefault(ref, rules.state_of(blocker, self.settings.ready_label, self.settings.review_label))
            refs.append(ref)
        return tuple(refs)

    def _claimed_issues(self, *, keep: bool = False) -> list[dict[str, Any]]:
        """Open issues labelled claimed (a list: a hint). List pages are read once within a run: the
        repair's listing (`keep`) serves the snapshot that follows it (`_kept_claimed`)."""
        listed = self.api.list("/issues", {"state": "open", "labels": rules.CLAIMED_LABEL})
        self._claimed_kept = (self.api.writes, listed) if keep else None
        return listed

    def _kept_claimed(self) -> list[dict[str, Any]] | None:
        """The listing the repair kept, if this tracker wrote nothing since; every snapshot takes it."""
        kept, self._claimed_kept = self._claimed_kept, None
        return kept[1] if kept is not None and kept[0] == self.api.writes else None

    def _number(self, issue_id: str) -> int:
        return rules.parse_issue_ref(issue_id)

    # ------------------------------------------------------------------ writes
    def _post_comment(self, number: int, body: str, kind: str, nonce: str) -> int:
        """Post once: a retry first looks for a comment with this marker's nonce (the POST may have landed)."""

        def landed() -> int | None:
            found = rules.find_marker(self._markers(number), kind, nonce)
            return found.comment_id if found else None

        data = self.api.write(
            lambda: self.api.request("POST", f"/issues/{number}/comments", input={"body": body}), landed
        )
        if isinstance(data, dict):
            self._learn((data.get("user") or {}).get("login"))
            return int(data["id"])
        return int(data)

    def _learn(self, login: str | None) -> None:
        """Our own comments come back with our login: an App token outside Actions learns itself here."""
        if login:
            self.trusted()
            assert self._trusted is not None
            self._trusted.add(login.casefold())

    def _delete_comment(self, comment_id: int) -> None:
        try:
            self.api.write(lambda: self.api.request("DELETE", f"/issues/comments/{comment_id}"))
        except GithubException as exc:
            if exc.status != 404:
                raise

    def _add_label(self, number: int, label: str) -> None:
        self.api.write(lambda: self.api.request("POST", f"/issues/{number}/labels", input={"labels": [label]}))

    def _remove_label(self, number: int, label: str) -> None:
        quoted = urllib.parse.quote(label, safe="")
        try:
            self.api.write(lambda: self.api.request("DELETE", f"/issues/{number}/labels/{quoted}"))
        except GithubException as exc:
            if exc.status != 404:  # not there: nothing to remove
                raise
