"""GitHub Issues behind the tracker interface, over PyGithub. The protocol is in `github_logic`.

Imported only for `--tracker github` (PyGithub costs startup time the jit path must not pay).

Requests go through PyGithub's `Requester` (auth, GitHub Enterprise base URLs, error types) and
`PaginatedList` (`Link` header pagination) with plain dicts as items: PyGithub's own objects
fetch every list item again when their `raw_data` is read.

Retries are bounded twice: PyGithub's `GithubRetry` with a small total, each wait capped and,
after `hurry`, never past the deadline (a cancelled run has seconds left); and POSTs are not
retried by it at all, since a retried comment POST could post twice. The tracker retries its
own writes, and before it posts a comment again it looks for the marker nonce of the first try.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import requests
from github import Auth, Github, GithubException
from github.GithubRetry import GithubRetry
from github.PaginatedList import PaginatedList
from urllib3.exceptions import MaxRetryError, ResponseError

from jit_dispatch.domain.issue import PARKED_LABEL, Issue
from jit_dispatch.domain.selection import Filters, dispatch_reason, matches_filters
from jit_dispatch.domain.transitions import format_timestamp
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import GateRecord, Liveness, Settlement, Snapshot
from jit_dispatch.trackers.github import rules

RETRIES = 2  # per request, by PyGithub's retry; writes: by `_write`
MAX_WAIT = 2.5  # longest single retry wait: a rate limit asking for more fails fast instead
TIMEOUT = 10  # seconds per HTTP request; after `hurry`, less
THROTTLE = True  # PyGithub's pacing (0.25 s between requests, 1 s between writes); tests turn it off


class Budget:
    """How long retries may still wait: each wait capped, and after `hurry` a hard deadline."""

    def __init__(self, max_wait: float = MAX_WAIT) -> None:
        self.max_wait = max_wait
        self.deadline: float | None = None
        self.retries = 0

    def allows(self, wait: float) -> bool:
        if wait > self.max_wait:
            return False
        return self.deadline is None or time.monotonic() + wait < self.deadline

    def clamp(self, wait: float) -> float:
        left = self.max_wait if self.deadline is None else min(self.max_wait, self.deadline - time.monotonic())
        return max(0.0, min(wait, left))


class BoundedRetry(GithubRetry):
    """`GithubRetry` that gives up rather than wait past its budget; never retries a POST."""

    def __init__(self, budget: Budget | None = None, **kwargs: Any) -> None:
        self.budget = budget or Budget()
        kwargs.setdefault("allowed_methods", frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"}))
        super().__init__(**kwargs)

    def new(self, **kw: Any) -> BoundedRetry:
        kw["budget"] = self.budget
        return super().new(**kw)  # type: ignore[no-any-return]

    def _wait(self, response: Any) -> float:
        after = self.get_retry_after(response) if response is not None else None
        return after if after is not None else self.get_backoff_time()

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):  # type: ignore[no-untyped-def,override]
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        wait = retry._wait(response)
        if not self.budget.allows(wait):  # hand the last response (or error) to the caller now
            raise MaxRetryError(_pool, url, error or ResponseError(f"retry would wait {wait:g}s"))
        self.budget.retries += 1
        return retry

    def sleep(self, response: Any = None) -> None:
        time.sleep(self.budget.clamp(self._wait(response)))


class _Raw(dict):  # type: ignore[type-arg]
    """A list item as the plain JSON object GitHub sent (PaginatedList's item class)."""

    def __init__(self, _requester: Any, _headers: Any, attributes: dict[str, Any], *_: Any, **__: Any) -> None:
        super().__init__(attributes)


@dataclass
class _Held:
    """A claim this process won: its nonce and the comment carrying it."""

    nonce: str
    comment_id: int
    agent: str
    run: str
    settled_comment: int | None = None
    settled_head: str = ""  # marker line and headline of the settle comment


class GitHubTracker:
    def __init__(
        self,
        settings: rules.GitHubSettings,
        token: str,
        api_url: str = "https://api.github.com",
        *,
        throttle: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.location = settings.location
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._sleep = sleep
        self._throttle = THROTTLE if throttle is None else throttle
        self.budget = Budget()
        self._held: dict[str, _Held] = {}
        self._extra: dict[str, dict[str, Any]] = {}  # issues looked up by `--issue`
        self._listed: list[str] = []
        self._deps_api = True  # False once the server says it has no issue dependencies
        self._connect(TIMEOUT)

    def __repr__(self) -> str:  # never the token
        return f"GitHubTracker({self.location!r}, api={self.api_url!r})"

    def _connect(self, timeout: int) -> None:
        self._github = Github(
            auth=Auth.Token(self._token),
            base_url=self.api_url,
            timeout=timeout,
            per_page=100,
            retry=BoundedRetry(self.budget, total=RETRIES, backoff_factor=0.5, raise_on_status=False),
            seconds_between_requests=0.25 if self._throttle else None,
            seconds_between_writes=1.0 if self._throttle else None,
        )
        self._requester = self._github.requester

    # ------------------------------------------------------------------ plumbing
    @property
    def _repo_path(self) -> str:
        return f"/repos/{self.settings.repo}"

    def _request(self, verb: str, path: str, **kwargs: Any) -> Any:
        return self._requester.requestJsonAndCheck(verb, self._repo_path + path, **kwargs)[1]

    def _list(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return list(PaginatedList(_Raw, self._requester, self._repo_path + path, {"per_page": 100, **(params or {})}))

    @contextlib.contextmanager
    def _api(self, doing: str) -> Iterator[None]:
        """GitHub's failures as one-line TrackerErrors (exit 3) that name the fix, never the token."""
        try:
            yield
        except GithubException as exc:
            raise TrackerError(self._scrub(self._explain(doing, exc))) from None
        except requests.RequestException as exc:
            raise TrackerError(self._scrub(f"{doing}: cannot reach {self.api_url} ({type(exc).__name__})")) from None

    def _explain(self, doing: str, exc: GithubException) -> str:
        return rules.explain(doing, exc.status, *_parts(exc), self.settings.repo)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if len(self._token) >= 8 else text

    def _write(self, fn: Callable[[], Any], recheck: Callable[[], Any] | None = None) -> Any:
        """A write, retried on a 5xx, a short rate limit or a lost connection, within the budget.

        `recheck` runs before a retry and returns the result if the first try took effect after all.
        """
        tries = 0
        while True:
            try:
                return fn()
            except (GithubException, requests.ConnectionError, requests.Timeout) as exc:
                tries += 1
                status = exc.status if isinstance(exc, GithubException) else None
                wait = rules.retry_wait(status, *_parts(exc), tries)
                if wait is None or tries > RETRIES or not self.budget.allows(wait):
                    raise
            self.budget.retries += 1
            self._sleep(wait)
            if recheck is not None and (found := recheck()) is not None:
                return found

    # ------------------------------------------------------------------ reads
    def _comments(self, number: int) -> list[dict[str, Any]]:
        return self._list(f"/issues/{number}/comments")

    def _markers(self, number: int) -> list[rules.Marker]:
        return rules.parse_markers(self._comments(number))

    def _get(self, number: int) -> dict[str, Any]:
        data = self._request("GET", f"/issues/{number}")
        return data if isinstance(data, dict) else {}

    def _blockers(self, raw: dict[str, Any]) -> list[dict[str, Any]]:
        """Open or closed issues this one is "blocked by"; [] when GitHub reports none."""
        count = rules.open_blockers(raw)
        if count == 0 or (count is None and not self._deps_api):
            return []
        try:
            return self._list(f"/issues/{raw['number']}/dependencies/blocked_by")
        except GithubException as exc:
            if exc.status in (404, 410):  # no dependency data on this server (older GHES)
                self._deps_api = count is not None
                return []
            raise

    def _dependencies(self, raw: dict[str, Any], states: dict[str, str]) -> tuple[str, ...]:
        refs: list[str] = []
        for blocker in self._blockers(raw):
            ref = rules.dependency_ref(blocker, self.settings.repo)
            states.setdefault(ref, rules.state_of(blocker, self.settings.ready_label))
            refs.append(ref)
        return tuple(refs)

    def _number(self, issue_id: str) -> int:
        return rules.parse_issue_ref(issue_id)

    # ------------------------------------------------------------------ interface
    def snapshot(self, full_states: Iterable[str] = ("ready",), *, leads: bool = False) -> Snapshot:
        """Open issues with the ready label (and `dispatch:claimed` when claims are wanted in full).

        Comments are read only for claimed issues wanted in full (status, reap): a ready issue's
        attempt count is read when it is claimed.
        """
        wanted = frozenset(full_states)
        with self._api(f"list issues of {self.settings.repo}"):
            raws = {
                r["number"]: r for r in self._list("/issues", {"state": "open", "labels": self.settings.ready_label})
            }
            if State.IN_PROGRESS in wanted:
                for r in self._list("/issues", {"state": "open", "labels": rules.CLAIMED_LABEL}):
                    raws.setdefault(r["number"], r)
            for raw in self._extra.values():
                raws.setdefault(raw["number"], raw)
            issues: list[Issue] = []
            states: dict[str, str] = {}
            for raw in raws.values():
                if rules.is_pull_request(raw):
                    continue
                state = rules.state_of(raw, self.settings.ready_label)
                states[rules.issue_id(raw["number"])] = state
                if state not in wanted:
                    continue
                markers = self._markers(raw["number"]) if state == State.IN_PROGRESS else None
                deps = self._dependencies(raw, states) if state == State.READY else ()
                issues.append(rules.to_issue(raw, self.settings, markers, deps))
        self._listed = [i for i in states if i.startswith("#")]
        return Snapshot(issues, states, {}, list(self._listed))

    def issue_ids(self) -> list[str]:
        if not self._listed:
            self.snapshot()
        return list(self._listed)

    def resolve_issue_id(self, given: str) -> str:
        """`#12`, `12` or the issue's URL; the issue must exist and not be a pull request."""
        number = rules.parse_issue_ref(given)
        try:
            with self._api(f"read issue #{number}"):
                raw = self._get(number)
        except TrackerError as exc:
            if "(404)" in str(exc):
                raise ValueError(f"no issue #{number} in {self.settings.repo}") from None
            raise
        if rules.is_pull_request(raw):
            raise ValueError(f"#{number} is a pull request, not an issue")
        self._extra[rules.issue_id(number)] = raw
        return rules.issue_id(number)

    def location_of(self, issue_id: str) -> str:
        return self.location

    def claim(self, issue_id: str, assignee: str, run: str, filters: Filters) -> Issue | None:
        """Label, post a claim comment, re-read: ours only if it is the lowest live claim."""
        number = self._number(issue_id)
        with self._api(f"claim {issue_id}"):
            before = rules.live_claims(self._markers(number))  # read before the labels: see github_logic
            raw = self._get(number)
            if rules.is_pull_request(raw) or raw.get("state") != "open":
                return None
            states: dict[str, str] = {}
            current = rules.to_issue(raw, self.settings, None, self._dependencies(raw, states))
            if dispatch_reason(current, states, {}) is not None or not matches_filters(current, filters):
                return None
            nonce = secrets.token_hex(8)
            marker = rules.render_marker(
                "claim",
                {
                    "nonce": nonce,
                    "agent": assignee,
                    "run": run,
                    "at": format_timestamp(),
                    "supersedes": [c.nonce for c in before],
                },
            )
            self._add_label(number, rules.CLAIMED_LABEL)
            try:
                posted = self._post_comment(number, marker + "\n" + rules.claim_text(assignee, run), "claim", nonce)
                comments = self._comments(number)
                mine = next((c for c in comments if c.get("id") == posted), None)
                if mine is not None and not rules.is_trusted(mine):
                    self._abandon(number, nonce, posted)
                    raise TrackerError(_untrusted(mine))
                markers = rules.parse_markers(comments)
                winner = rules.winning_claim(markers)
                if winner is None:  # our comment is not visible yet: give the claim up whole
                    self._abandon(number, nonce, posted)
                    return None
                if winner.nonce != nonce:
                    self._delete_comment(posted)  # we lost the race: the winner keeps the label
                    return None
                # Ours. Label again: a late settle of an earlier holder may have just removed it.
                self._add_label(number, rules.CLAIMED_LABEL)
            except (GithubException, requests.RequestException):
                self._abandon(number, nonce)
                raise
        self._held[issue_id] = _Held(nonce, posted, assignee, run)
        claimed = dict(raw, labels=[*raw.get("labels", []), {"name": rules.CLAIMED_LABEL}])
        return rules.to_issue(claimed, self.settings, markers, current.dependencies)

    def _abandon(self, number: int, nonce: str, posted: int | None = None) -> None:
        """A claim that failed half-way: delete our comment, unlabel if nobody else holds a claim. Best effort."""
        with contextlib.suppress(GithubException, requests.RequestException):
            if posted is not None:
                self._delete_comment(posted)
            markers = self._markers(number)
            if (mine := rules.find_marker(markers, "claim", nonce)) is not None:
                self._delete_comment(mine.comment_id)
            if all(c.nonce == nonce for c in rules.live_claims(markers)):
                self._remove_label(number, rules.CLAIMED_LABEL)

    def _ours(self, issue_id: str, assignee: str, markers: list[rules.Marker]) -> rules.Marker | None:
        """The winning claim if it is this runner's (by nonce), or the agent's (reaper, release)."""
        winner = rules.winning_claim(markers)
        if winner is None:
            return None
        held = self._held.get(issue_id)
        if held is not None:
            return winner if winner.nonce == held.nonce else None
        return winner if winner.agent == assignee else None

    def _our_claim(self, issue_id: str, assignee: str, number: int) -> tuple[rules.Marker | None, int]:
        """Settling starts here: our winning claim (None: `lost`) and the failed attempts so far."""
        markers = self._markers(number)
        return self._ours(issue_id, assignee, markers), rules.failed_attempts(markers)

    def complete(self, issue_id: str, assignee: str, *, gate_runs: Sequence[GateRecord] = ()) -> Settlement:
        """GitHub Issues have no gate registry: `gate_runs` is always empty (`--check`s are reported only)."""
        number = self._number(issue_id)
        with self._api(f"settle {issue_id}"):
            claim, attempts = self._our_claim(issue_id, assignee, number)
            if claim is None:
                return Settlement(Outcome.LOST, attempts)
            data = {"nonce": claim.nonce, "agent": assignee, "at": format_timestamp(), "run": claim.data.get("run")}
            marker = rules.render_marker("done", data)
            text = rules.done_text(assignee, attempts + 1)
            self._remember(
                issue_id, self._post_comment(number, marker + "\n" + text, "done", claim.nonce), marker, text
            )
            if self._get(number).get("state") == "open":  # closed meanwhile (e.g. not planned): a person's call
                self._write(lambda: self._request("PATCH", f"/issues/{number}", input=_CLOSE))
            self._remove_label(number, rules.CLAIMED_LABEL)
        return Settlement(Outcome.DONE, attempts)

    def release(
        self,
        issue_id: str,
        assignee: str,
        reason: str,
        max_attempts: int,
        *,
        seen: Liveness | None = None,
        gate_runs: Sequence[GateRecord] = (),
    ) -> Settlement:
        """`seen` is not compared here: a GitHub heartbeat edits the claim comment, and the winning
        claim is re-read just below, so a settled or re-claimed issue still ends `lost`."""
        number = self._number(issue_id)
        with self._api(f"release {issue_id}"):
            claim, attempts = self._our_claim(issue_id, assignee, number)
            if claim is None:
                return Settlement(Outcome.LOST, attempts)
            attempts += 1
            parked = attempts >= max_attempts
            data = {
                "nonce": claim.nonce,
                "agent": claim.agent,
                "at": format_timestamp(),
                "reason": reason,
                "attempt": attempts,
                "parked": parked,
            }
            marker = rules.render_marker("release", data)
            text = rules.release_text(claim.agent, reason, attempts, max_attempts, parked)
            posted = self._post_comment(number, marker + "\n" + text, "release", claim.nonce)
            self._remember(issue_id, posted, marker, text)
            if parked:
                self._add_label(number, PARKED_LABEL)
            self._remove_label(number, rules.CLAIMED_LABEL)
        return Settlement(Outcome.PARKED if parked else Outcome.RELEASED, attempts)

    def heartbeat(self, issue_id: str, assignee: str) -> bool:
        """Record `beat` in our claim marker (an edit, not a new comment)."""
        held = self._held.get(issue_id)
        if held is None:
            return False
        number = self._number(issue_id)
        with self._api(f"heartbeat {issue_id}"):
            claim = self._ours(issue_id, assignee, self._markers(number))
            if claim is None:
                return False
            marker = rules.render_marker("claim", {**claim.data, "beat": format_timestamp()})
            body = marker + "\n" + rules.claim_text(held.agent, held.run)
            self._write(lambda: self._request("PATCH", f"/issues/comments/{held.comment_id}", input={"body": body}))
        return True

    def unpark(self, issue_id: str) -> bool:
        """Remove `dispatch:parked`; a reset marker starts the attempt count over."""
        number = self._number(issue_id)
        with self._api(f"unpark {issue_id}"):
            if not rules.parked_label_present(self._get(number)):
                return False
            nonce = secrets.token_hex(8)
            marker = rules.render_marker("reset", {"nonce": nonce, "at": format_timestamp()})
            self._post_comment(number, marker + "\n🔄 **jit-dispatch**: unparked; attempts start over.", "reset", nonce)
            self._remove_label(number, PARKED_LABEL)
        return True

    def checker_root(self, issue_id: str) -> None:
        """No gate registry on GitHub Issues: only `--check` commands run."""
        return None

    def gate_history(self, issue_id: str, gate_key: str) -> list[dict[str, Any]]:
        return []

    def hurry(self, seconds: float) -> None:
        """Cancelled: no retry may wait past `seconds` from now; requests get short timeouts, no pacing."""
        self.budget.deadline = time.monotonic() + seconds
        self._throttle = False
        self._connect(max(1, int(seconds / 2)))

    def stats(self) -> dict[str, object]:
        return {}  # nothing like remote mode's sync figures (those would show as a "Remote" row)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._github.close()

    # ------------------------------------------------------------------ the result comment
    def _remember(self, issue_id: str, comment_id: int, marker: str, text: str) -> None:
        held = self._held.get(issue_id)
        if held is not None:
            held.settled_comment, held.settled_head = comment_id, f"{marker}\n{text}"

    def record_result(self, result: Any, max_attempts: int) -> str | None:
        """Put the run's Markdown summary in the settle comment. Returns a warning, or None.

        First the token is cut out of what the command printed (it may echo its environment):
        the comment, the step summary and the JSON are all rendered from this result.
        """
        from jit_dispatch.report.summary import TAIL_CHARS, summary_markdown

        result.output_tail = self._scrub(result.output_tail)
        result.reason = self._scrub(result.reason) if result.reason else result.reason
        result.gates = [replace(run, output=self._scrub(run.output)) for run in result.gates]  # `--check` output
        issue = result.issue
        held = self._held.get(issue.id) if issue is not None else None
        if held is None or held.settled_comment is None:
            return None
        body, tail = "", TAIL_CHARS
        for _ in range(8):  # shrink the output tail until the comment fits
            shown = replace(result, output_tail=result.output_tail[-tail:]) if tail < TAIL_CHARS else result
            body = rules.fit_comment(held.settled_head, summary_markdown(shown, max_attempts))
            if not body.endswith(rules.FIT_NOTE):
                break
            tail //= 2
        comment_id, body = held.settled_comment, self._scrub(body)
        try:
            with self._api(f"write the result comment on {issue.id}"):
                self._write(lambda: self._request("PATCH", f"/issues/comments/{comment_id}", input={"body": body}))
        except TrackerError as exc:
            return str(exc)
        return None

    # ------------------------------------------------------------------ writes
    def _post_comment(self, number: int, body: str, kind: str, nonce: str) -> int:
        """Post once: a retry first looks for a comment with this marker's nonce (the POST may have landed)."""

        def landed() -> int | None:
            found = rules.find_marker(self._markers(number), kind, nonce)
            return found.comment_id if found else None

        data = self._write(lambda: self._request("POST", f"/issues/{number}/comments", input={"body": body}), landed)
        return int(data["id"]) if isinstance(data, dict) else int(data)

    def _delete_comment(self, comment_id: int) -> None:
        try:
            self._write(lambda: self._request("DELETE", f"/issues/comments/{comment_id}"))
        except GithubException as exc:
            if exc.status != 404:
                raise

    def _add_label(self, number: int, label: str) -> None:
        self._write(lambda: self._request("POST", f"/issues/{number}/labels", input={"labels": [label]}))

    def _remove_label(self, number: int, label: str) -> None:
        quoted = urllib.parse.quote(label, safe="")
        try:
            self._write(lambda: self._request("DELETE", f"/issues/{number}/labels/{quoted}"))
        except GithubException as exc:
            if exc.status != 404:  # not there: nothing to remove
                raise


_CLOSE = {"state": "closed", "state_reason": "completed"}


def _untrusted(comment: dict[str, Any]) -> str:
    login = (comment.get("user") or {}).get("login", "?")
    association = comment.get("author_association", "NONE")
    return (
        f"comments of {login} ({association}) do not count as claim markers: use the workflow's GITHUB_TOKEN, "
        "a GitHub App's token, or a token of someone with write access"
    )


def _parts(exc: Exception) -> tuple[str, dict[str, str]]:
    """GitHub's message and the response headers (lower-cased) of a failed request."""
    if not isinstance(exc, GithubException):
        return "", {}
    data = exc.data if isinstance(exc.data, dict) else {}
    return str(data.get("message") or ""), {k.lower(): str(v) for k, v in (exc.headers or {}).items()}
