"""GitHub Issues behind the tracker interface: the claim and settle protocol (rules in `rules`).

Imported only for `--tracker github` (PyGithub costs startup time the jit path must not pay).
HTTP, retries and error messages are `api.Api`'s; reads and writes of issues, comments and labels
`access.IssueAccess`'s.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.issue import PARKED_LABEL, Issue
from jit_dispatch.domain.selection import Filters, dispatch_reason, matches_filters
from jit_dispatch.domain.staleness import Claim
from jit_dispatch.domain.transitions import format_timestamp
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.errors import TrackerError, UsageError
from jit_dispatch.trackers.base import ClaimTiming, GateRecord, Liveness, Settlement, Snapshot, StateCopy
from jit_dispatch.trackers.github import review, rules
from jit_dispatch.trackers.github.api import FAILURES, Api
from jit_dispatch.trackers.github.reviewing import ReviewPhase

FINISHED_LATER = "the next once, reap or status --repair finishes it"  # a settle left half-done


@dataclass
class _Held:
    """A claim this process won: its nonce and the comment carrying it (refs mode: and its lock)."""

    nonce: str
    comment_id: int
    agent: str
    run: str
    settled_comment: int | None = None
    settled_head: str = ""  # marker line and headline of the settle comment
    lock: str = ""  # refs mode: the commit our lock ref points at
    record: Any = None  # refs mode: the LockRecord of that commit
    settling: bool = False  # no heartbeat may move the lock once the settle began
    claim_data: dict[str, Any] = field(default_factory=dict)  # the claim marker's data (refs mode)
    sent: float | None = None  # refs mode: when the lock's creation was sent (monotonic)
    took: float = 0.0  # and how long it took to land
    mutex: threading.Lock = field(default_factory=threading.Lock)  # heartbeat vs settle


def refuse_uncounted(count_attempt: bool) -> None:
    """GitHub's markers and lock records count every release: an uncounted one is refused, not faked."""
    if not count_attempt:
        raise UsageError("--no-attempt: not supported with --tracker github; pass --attempt (the release counts)")


class GitHubTracker(ReviewPhase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As `IssueAccess` (`identity`: whose markers count when GET /user cannot say)."""
        super().__init__(*args, **kwargs)
        self._held: dict[str, _Held] = {}
        self._extra: dict[str, dict[str, Any]] = {}  # issues looked up by `--issue`
        self._listed: list[str] = []
        self._beats: Api | None = None  # the heartbeat's own connection (its deadline is its alone)

    def __repr__(self) -> str:  # never the token
        return f"GitHubTracker({self.location!r}, api={self.api.url!r})"

    # ------------------------------------------------------------------ interface
    def snapshot(self, full_states: Iterable[str] = ("ready",), *, leads: bool = False) -> Snapshot:
        """Open issues with the ready label (and `dispatch:claimed` when claims are wanted in full).

        Comments are read only for claimed issues wanted in full (status, reap): a ready issue's
        attempt count is read when it is claimed.
        """
        wanted = frozenset(full_states)
        with self.api.doing(f"list issues of {self.settings.repo}"):
            raws = {
                r["number"]: r for r in self.api.list("/issues", {"state": "open", "labels": self.settings.ready_label})
            }
            kept = self._kept_claimed()
            if State.IN_PROGRESS in wanted:
                for r in kept if kept is not None else self._claimed_issues():
                    raws.setdefault(r["number"], r)
            for raw in self._extra.values():
                raws.setdefault(raw["number"], raw)
            issues: list[Issue] = []
            states: dict[str, str] = {}
            for raw in raws.values():
                if rules.is_pull_request(raw):
                    continue
                state = rules.state_of(raw, self.settings.ready_label, self.settings.review_label)
                states[rules.issue_id(raw["number"])] = state
                if state not in wanted:
                    continue
                markers = self._markers(raw["number"]) if state == State.IN_PROGRESS else None
                deps = self._dependencies(raw, states) if state == State.READY else ()
                issues.append(rules.to_issue(raw, self.settings, markers, deps))
        self._listed = [i for i in states if i.startswith("#")]
        return Snapshot(issues, states, {}, list(self._listed), locked=self._locked())

    def _locked(self) -> frozenset[str]:
        """Issues under another runner's lock (refs mode); comments mode knows none."""
        return frozenset()

    def issue_ids(self) -> list[str]:
        if not self._listed:
            self.snapshot()
        return list(self._listed)

    def resolve_issue_id(self, given: str) -> str:
        """`#12`, `12` or the issue's URL; the issue must exist and not be a pull request."""
        number = rules.parse_issue_ref(given)
        try:
            with self.api.doing(f"read issue #{number}"):
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
        with self.api.doing(f"claim {issue_id}"):
            before = rules.live_claims(self._markers(number))  # read before the labels: see `rules`
            found = self._dispatchable(number, filters)
            if found is None:
                return None
            raw, current = found
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
                markers = self._markers(number)
                winner = rules.winning_claim(markers)
                if winner is None:  # our comment is not visible yet: give the claim up whole
                    self._abandon(number, nonce, posted)
                    return None
                if winner.nonce != nonce:
                    self._delete_comment(posted)  # we lost the race: the winner keeps the label
                    return None
                now = self._get(number)  # ours: re-check that nobody closed or parked it meanwhile
                if now.get("state") != "open" or rules.parked_label_present(now):
                    self._abandon(number, nonce, posted)
                    return None
                # Label again: a late settle of an earlier holder may have just removed it.
                self._add_label(number, rules.CLAIMED_LABEL)
            except FAILURES:
                self._abandon(number, nonce)
                raise
        self._held[issue_id] = _Held(nonce, posted, assignee, run)
        claimed = dict(raw, labels=[*raw.get("labels", []), {"name": rules.CLAIMED_LABEL}])
        return rules.to_issue(claimed, self.settings, markers, current.dependencies)

    def _dispatchable(self, number: int, filters: Filters) -> tuple[dict[str, Any], Issue] | None:
        """The issue as GitHub has it now, if it is still dispatchable (not deleted or moved either); else None."""
        raw, gone = self._current(number)
        if gone is not None or rules.is_pull_request(raw) or raw.get("state") != "open":
            return None
        states: dict[str, str] = {}
        current = rules.to_issue(raw, self.settings, None, self._dependencies(raw, states))
        if dispatch_reason(current, states, {}) is not None or not matches_filters(current, filters):
            return None
        return raw, current

    def _abandon(self, number: int, nonce: str, posted: int | None = None) -> None:
        """A claim that failed half-way: delete our comment, unlabel if nobody else holds a claim. Best effort."""
        with contextlib.suppress(*FAILURES):
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

    def _still_claimed(self, number: int, *, reaping: bool) -> bool:
        """The issue as GitHub has it now (a single read, current where comment lists lag): a closed issue
        is never released (a success may be recorded), and a reaper releases only what is still labelled."""
        now = self._get(number)
        return now.get("state") == "open" and (not reaping or rules.has_label(now, rules.CLAIMED_LABEL))

    def complete(self, issue_id: str, assignee: str, *, gate_runs: Sequence[GateRecord] = ()) -> Settlement:
        """GitHub Issues have no gate registry: `gate_runs` is always empty (`--check`s are reported only)."""
        return self._succeed(issue_id, assignee, "done", {})

    def hold_for_merge(
        self, issue_id: str, assignee: str, delivery: Delivery, *, gate_runs: Sequence[GateRecord] = ()
    ) -> Settlement:
        """Open, with the review label instead of `dispatch:claimed`: not dispatchable until it merges."""
        return self._succeed(issue_id, assignee, review.DELIVER, review.delivery_data(delivery))

    def _succeed(self, issue_id: str, assignee: str, kind: str, extra: dict[str, Any]) -> Settlement:
        number = self._number(issue_id)
        with self.api.doing(f"settle {issue_id}"), self.api.persistent():
            claim, attempts = self._our_claim(issue_id, assignee, number)
            if claim is None:
                return Settlement(Outcome.LOST, attempts)
            data = {"nonce": claim.nonce, "agent": assignee, "run": claim.data.get("run"), "attempt": attempts + 1}
            self._remember(issue_id, *self._settle_comment(number, kind, data | extra))
        outcome = Outcome.DONE if kind == "done" else Outcome.IN_REVIEW
        return Settlement(outcome, attempts, warnings=self._finish_labels(issue_id, kind, False))

    def release(
        self,
        issue_id: str,
        assignee: str,
        reason: str,
        max_attempts: int,
        *,
        seen: Liveness | None = None,
        gate_runs: Sequence[GateRecord] = (),
        count_attempt: bool = True,
    ) -> Settlement:
        """`seen` is not compared here: a GitHub heartbeat edits the claim comment, and the winning
        claim is re-read just below, so a settled or re-claimed issue still ends `lost`."""
        refuse_uncounted(count_attempt)
        number = self._number(issue_id)
        with self.api.doing(f"release {issue_id}"), self.api.persistent():
            claim, attempts = self._our_claim(issue_id, assignee, number)
            if claim is None or not self._still_claimed(number, reaping=seen is not None):
                return Settlement(Outcome.LOST, attempts)
            attempts += 1
            parked = attempts >= max_attempts
            data = {"nonce": claim.nonce, "agent": claim.agent, "reason": reason, "attempt": attempts, "parked": parked}
            self._remember(issue_id, *self._settle_comment(number, "release", data, max_attempts))
        warnings = self._finish_labels(issue_id, "release", parked)
        return Settlement(Outcome.PARKED if parked else Outcome.RELEASED, attempts, warnings=warnings)

    # ------------------------------------------------------------------ settles that always finish
    def _settle_comment(
        self, number: int, kind: str, data: dict[str, Any], max_attempts: int = 0
    ) -> tuple[int, str, str]:
        """The durable result: the settle marker comment, posted once (found by nonce when already there)."""
        text = review.settle_text(kind, data, max_attempts)
        found = rules.find_marker(self._markers(number), kind, str(data["nonce"]))
        marker = rules.render_marker(kind, found.data if found else {**data, "at": format_timestamp()})
        if found is not None:
            return found.comment_id, marker, text
        return self._post_comment(number, marker + "\n" + text, kind, str(data["nonce"])), marker, text

    def _finish_labels(self, issue_id: str, kind: str, parked: bool) -> tuple[str, ...]:
        """After the result is durable: close (done) or park, unlabel. A failure here is a warning,
        never `stays claimed`: the next `once`, `reap` or `status --repair` finishes it."""
        number = self._number(issue_id)
        try:
            with self.api.doing(f"finish the settle of {issue_id}"), self.api.persistent():
                self._close_and_unlabel(number, kind, parked)
        except TrackerError as exc:
            return (f"{exc}; the result is recorded, and {FINISHED_LATER}",)
        return ()

    def _close_and_unlabel(self, number: int, kind: str, parked: bool, now: dict[str, Any] | None = None) -> None:
        """`now`: the issue as just read, if it was."""
        if kind == "done" and (now or self._get(number)).get("state") == "open":  # closed meanwhile: a person's call
            self.api.write(lambda: self.api.request("PATCH", f"/issues/{number}", input=_CLOSE))
        if kind == review.DELIVER:  # before the claimed label goes: never ready-looking in between
            self._add_label(number, self.settings.review_label)
        if parked:
            self._add_label(number, PARKED_LABEL)
        self._remove_label(number, rules.CLAIMED_LABEL)

    def repair(self) -> list[str]:
        """Finish settles whose result is recorded but whose issue was left open or labelled claimed."""
        notes: list[str] = []
        with self.api.doing(f"repair settles in {self.settings.repo}"), self.api.persistent():
            for raw in self._claimed_issues(keep=True):
                markers = self._markers(raw["number"])
                last = rules.last_settle(markers)
                if rules.live_claims(markers) or last is None:
                    continue  # running, or claimed by a person: the reaper's business
                notes.append(f"finished the {last.kind} settle of #{raw['number']} left half-done")
                notes += self.finish_step(raw["number"], last.kind, bool(last.data.get("parked")))
        return notes

    def finish_step(self, number: int, kind: str, parked: bool) -> list[str]:
        """Close or park and unlabel; a refusal is a note, so one stuck issue never stops a run."""
        try:
            with self.api.doing(f"finish the settle of #{number}"):
                self._close_and_unlabel(number, kind, parked)
        except TrackerError as exc:
            return [str(exc)]
        return []

    def taken_by(self, issue_id: str, assignee: str) -> str | None:
        """No jit leases on GitHub: a claim taken away shows at the heartbeat and the settle."""
        return None

    def issue_now(self, issue_id: str) -> Issue | None:
        """The command does not settle a GitHub issue with jit."""
        return None

    def heartbeat(
        self, issue_id: str, assignee: str, *, interval: float | None = None, deadline: float | None = None
    ) -> bool:
        """Record `beat` in our claim marker (an edit, not a new comment); every request ends by `deadline`."""
        held = self._held.get(issue_id)
        if held is None:
            return False
        number = self._number(issue_id)
        api = self._beat_api()
        with api.doing(f"heartbeat {issue_id}"), api.until(deadline):
            known = self.trusted() | {login for login, writes in self._writers.items() if writes}
            claim = self._ours(issue_id, assignee, rules.parse_markers(api.list(f"/issues/{number}/comments"), known))
            if claim is None:
                return False
            self._edit_claim(api, held, claim.data)
        return True

    def _beat_api(self) -> Api:
        if self._beats is None:
            self._beats = self.api.clone()
        return self._beats

    @staticmethod
    def _edit_claim(api: Api, held: _Held, data: dict[str, Any] | Any) -> None:
        """The claim comment with this beat's time (what `status` shows people)."""
        body = rules.render_marker("claim", {**data, "beat": format_timestamp()}) + "\n"
        body += rules.claim_text(held.agent, held.run)
        api.write(lambda: api.request("PATCH", f"/issues/comments/{held.comment_id}", input={"body": body}))

    def unpark(self, issue_id: str) -> bool:
        """Remove `dispatch:parked`; a reset marker starts the attempt count over."""
        number = self._number(issue_id)
        with self.api.doing(f"unpark {issue_id}"):
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
        self.api.hurry(seconds)

    def stats(self) -> dict[str, object]:
        return {}  # nothing like remote mode's sync figures (those would show as a "Remote" row)

    def confirm_dead(self, claims: Sequence[Claim], older_than: float) -> list[Claim]:
        """Nothing more to confirm here: a ref lock is watched when it is released (reflock), and for
        the comment protocol timestamps are the only evidence."""
        return list(claims)

    def flush(self) -> None:
        """Every write is complete when it returns."""

    def claim_timing(self, issue_id: str) -> ClaimTiming | None:
        """Refs mode: when the lock's creation was sent (the fence counts from it); comments: unknown."""
        held = self._held.get(issue_id)
        return ClaimTiming(held.sent, held.took) if held is not None and held.sent is not None else None

    def materialise(self, issue_id: str) -> StateCopy | None:
        """No `.jit/`: the state is the issue itself."""
        return None

    def close(self) -> None:
        self.api.close()
        if self._beats is not None:
            self._beats.close()

    # ------------------------------------------------------------------ the result comment
    def _remember(self, issue_id: str, comment_id: int, marker: str, text: str) -> None:
        held = self._held.get(issue_id)
        if held is not None:
            held.settled_comment, held.settled_head = comment_id, f"{marker}\n{text}"

    def record_result(self, result: Any, render: Callable[[Any], str]) -> str | None:
        """Put the run's Markdown summary (`render(result)`) in the settle comment. A warning, or None.

        First the token is cut out of what the command printed (it may echo its environment):
        the comment, the step summary and the JSON are all rendered from this result.
        """
        result.output_tail = self.api.scrub(result.output_tail)
        result.reason = self.api.scrub(result.reason) if result.reason else result.reason
        result.gates = [replace(run, output=self.api.scrub(run.output)) for run in result.gates]  # `--check` output
        issue = result.issue
        held = self._held.get(issue.id) if issue is not None else None
        if held is None or held.settled_comment is None:
            return None
        body, tail = "", len(result.output_tail)
        for _ in range(8):  # shrink the output tail until the comment fits
            shown = (
                replace(result, output_tail=result.output_tail[-tail:]) if tail < len(result.output_tail) else result
            )
            body = rules.fit_comment(held.settled_head, render(shown))
            if not body.endswith(rules.FIT_NOTE):
                break
            tail //= 2
        comment_id, body = held.settled_comment, self.api.scrub(body)
        try:
            with self.api.doing(f"write the result comment on {issue.id}"):
                self.api.write(
                    lambda: self.api.request("PATCH", f"/issues/comments/{comment_id}", input={"body": body})
                )
        except TrackerError as exc:
            return str(exc)
        return None


_CLOSE = rules.CLOSE
