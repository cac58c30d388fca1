"""GitHub Issues as a tracker: the pure part (no I/O, no PyGithub). See docs/github-issues.md.

GitHub has no compare-and-set on issues, so the claim is a protocol over labels and comments:

* A runner that finds an issue dispatchable adds `dispatch:claimed`, posts a comment whose first
  line is a hidden marker `<!-- jit-dispatch:claim {json} -->` (agent, run, a random nonce, time),
  then re-reads the comments. Among the *live* claim markers the lowest comment id wins; every
  runner reading the same comments agrees on the winner. A loser deletes its own comment.
* A claim is live until a later `release` or `done` marker carries its nonce, or a later claim
  *supersedes* it: a runner that saw the issue without `dispatch:claimed` although a claim was
  live (someone removed the label to take the issue back) lists that claim's nonce in its own.
  It reads the comments *before* it reads the labels, so it can only supersede claims whose
  label was removed after they were posted — never a claim racing it.
* Markers count only in comments by a trusted author: the identity the dispatcher runs as (the
  token's login, or the Actions bot), a `--trusted-actor` login, or a person whose repository
  permission (the collaborator permission endpoint, asked once per run) is write or higher
  (manual take-backs). Anyone can comment on a public issue, any installed app can comment as a
  bot, and an organization member (`author_association: MEMBER`) may have no write access at all:
  their markers are ignored.

With `--github-lock refs` (the default) the claim itself is a git ref (see `records`): the
comments stay the record people read, and the attempt count.

Issue ids are `#<number>` (`short_id` is the same). Order is priority, then creation time, then
number: `created_at` carries the number in its microseconds (GitHub's timestamps are whole
seconds), so `selection.dispatch_order` gives exactly that order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from jit_dispatch.domain import boundedjson
from jit_dispatch.domain.issue import (
    CTX_ATTEMPTS,
    CTX_CLAIMED_AT,
    CTX_HEARTBEAT_AT,
    CTX_LAST_REASON,
    CTX_RUN,
    PARKED_LABEL,
    Issue,
    parse_timestamp,
)
from jit_dispatch.domain.markdown import md_code_span, md_text
from jit_dispatch.domain.values import DEFAULT_READY_LABEL, PRIORITY_RANK, Priority, State
from jit_dispatch.trackers.github import review

CLAIMED_LABEL = "dispatch:claimed"
CLOSE = {"state": "closed", "state_reason": "completed"}  # the PATCH that closes an issue as done
DEFAULT_PRIORITY_LABELS: tuple[tuple[str, str], ...] = tuple((p, f"priority:{p}") for p in PRIORITY_RANK)
COMMENT_LIMIT = 65_536  # characters GitHub accepts in one comment
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
MARKER_KINDS = ("claim", "release", "done", "reset", review.DELIVER, review.RETURN)
CLAIM_ENDINGS = ("release", "done", review.DELIVER)  # a later one of these with its nonce ends a claim
_MARKER = re.compile(r"\A<!-- jit-dispatch:(claim|release|done|reset|deliver|return) (\{[^\n]*\}) -->")
_ISSUE_REF = re.compile(r"^(?:#|(?:https?://[^\s]+/)?issues/)?(\d{1,12})$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class GitHubSettings:
    """What the GitHub tracker needs to know besides how to reach the API."""

    repo: str  # owner/name
    ready_label: str = DEFAULT_READY_LABEL
    include_assigned: bool = False
    priority_labels: tuple[tuple[str, str], ...] = DEFAULT_PRIORITY_LABELS  # (priority, label)
    lock: str = "refs"  # refs: a git ref per claim (needs contents: write); comments: markers only
    lock_prefix: str = "refs/jit-dispatch/claims/"
    trusted_actors: tuple[str, ...] = ()  # logins whose markers count besides the dispatcher's own
    review_label: str = review.DEFAULT_REVIEW_LABEL  # delivered, waiting for the merge (docs/delivery.md#github)

    @property
    def location(self) -> str:
        return f"github:{self.repo}"


def check_repo(repo: str) -> str:
    if not _REPO.match(repo or ""):
        raise ValueError(f"{repo!r} is not owner/name")
    return repo


def parse_priority_labels(text: str) -> tuple[tuple[str, str], ...]:
    """`critical=P0,high=P1,normal=P2,low=P3` → ((priority, label), ...). Partial mappings are fine."""
    pairs: list[tuple[str, str]] = []
    for part in (p.strip() for p in re.split(r"[,\n]", text)):
        if not part:
            continue
        priority, sep, label = (s.strip() for s in part.partition("="))
        if not sep or not label:
            raise ValueError(f"{part!r} is not PRIORITY=LABEL")
        if priority not in PRIORITY_RANK:
            raise ValueError(f"{priority!r} is not a priority ({', '.join(PRIORITY_RANK)})")
        if any(p == priority for p, _ in pairs):
            raise ValueError(f"priority {priority!r} is mapped twice")
        if any(lbl.casefold() == label.casefold() for _, lbl in pairs):
            raise ValueError(f"label {label!r} is mapped to two priorities")
        pairs.append((priority, label))
    if not pairs:
        raise ValueError("empty mapping (expected e.g. critical=P0,high=P1,normal=P2,low=P3)")
    return tuple(pairs)


def priority_of(labels: Iterable[str], mapping: Iterable[tuple[str, str]]) -> Priority:
    """The most urgent priority whose label the issue carries (case-insensitive); none: normal."""
    present = {label.casefold() for label in labels}
    found = [p for p, label in mapping if label.casefold() in present]
    return Priority(min(found, key=PRIORITY_RANK.__getitem__)) if found else Priority.NORMAL


def issue_id(number: int) -> str:
    return f"#{number}"


def parse_issue_ref(given: str) -> int:
    """`#12`, `12` or an issue URL → 12."""
    match = _ISSUE_REF.match(given.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{given!r} is not a GitHub issue number (use #12 or 12)")
    return int(match.group(1))


def in_repo(raw: Mapping[str, Any], repo: str) -> bool:
    """Whether an issue payload belongs to `repo` (a transferred issue's URL answers 301 to its new home)."""
    url = str(raw.get("repository_url") or "")
    return not url or url.rstrip("/").lower().endswith("/repos/" + repo.lower())


def dependency_ref(blocker: Mapping[str, Any], own_repo: str) -> str:
    """`#12` for an issue of this repository, `owner/name#12` for another one."""
    number = int(blocker.get("number") or 0)
    url = str(blocker.get("repository_url") or "")
    if url and not url.rstrip("/").lower().endswith("/repos/" + own_repo.lower()):
        return f"{'/'.join(url.rstrip('/').split('/')[-2:])}#{number}"
    return issue_id(number)


# ---------------------------------------------------------------------------- markers


@dataclass(frozen=True)
class Marker:
    kind: str  # claim | release | done | reset | deliver | return
    comment_id: int
    data: Mapping[str, Any] = field(compare=False)

    @property
    def nonce(self) -> str:
        return str(self.data.get("nonce", ""))

    @property
    def agent(self) -> str:
        return str(self.data.get("agent", ""))

    @property
    def supersedes(self) -> tuple[str, ...]:
        value = self.data.get("supersedes") or ()
        return tuple(str(v) for v in value) if isinstance(value, list) else ()


def render_marker(kind: str, data: Mapping[str, Any]) -> str:
    """One line no value can break out of: `<`, `>` and `&` are JSON-escaped."""
    assert kind in MARKER_KINDS
    text = json.dumps(dict(data), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"<!-- jit-dispatch:{kind} {text} -->"


def is_trusted(comment: Mapping[str, Any], logins: frozenset[str]) -> bool:
    """One of `logins` (casefolded: the dispatcher's own, `--trusted-actor`, people found to have write access).

    `author_association` is not evidence: MEMBER means membership of the owning organization, not
    write access to the repository (the tracker asks the collaborator permission endpoint instead)."""
    user = comment.get("user") or {}
    return str(user.get("login", "")).casefold() in logins


def marker_authors(comments: Iterable[Mapping[str, Any]], logins: frozenset[str]) -> set[str]:
    """People (not bots) not yet in `logins` whose comments start with a marker: whose write access matters."""
    found = set()
    for comment in comments:
        user = comment.get("user") or {}
        login = str(user.get("login", ""))
        body = comment.get("body")
        person = login and user.get("type") != "Bot" and login.casefold() not in logins
        if person and isinstance(body, str) and _MARKER.match(body):
            found.add(login)
    return found


def can_write(permission: Mapping[str, Any]) -> bool:
    """The collaborator permission endpoint's answer: write, maintain or admin on the repository."""
    return permission.get("permission") in WRITE_PERMISSIONS or permission.get("role_name") in WRITE_PERMISSIONS


def parse_marker(comment: Mapping[str, Any], logins: frozenset[str]) -> Marker | None:
    """The marker on the first line of a trusted comment, or None."""
    body = comment.get("body")
    if not isinstance(body, str) or not is_trusted(comment, logins):
        return None
    match = _MARKER.match(body)
    if match is None:
        return None
    try:
        data = boundedjson.loads(match.group(2))
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("nonce"), str) or not data["nonce"]:
        return None
    return Marker(match.group(1), int(comment["id"]), data)


def parse_markers(comments: Iterable[Mapping[str, Any]], logins: frozenset[str]) -> list[Marker]:
    markers = [m for c in comments if (m := parse_marker(c, logins)) is not None]
    return sorted(markers, key=lambda m: m.comment_id)


def live_claims(markers: Iterable[Marker]) -> list[Marker]:
    """Claims not ended by a later release/done/deliver marker of their nonce, nor superseded by a later claim."""
    ordered = sorted(markers, key=lambda m: m.comment_id)
    live: list[Marker] = []
    for claim in (m for m in ordered if m.kind == "claim"):
        later = [m for m in ordered if m.comment_id > claim.comment_id]
        ended = any(m.kind in CLAIM_ENDINGS and m.nonce == claim.nonce for m in later)
        superseded = any(m.kind == "claim" and claim.nonce in m.supersedes for m in later)
        if not ended and not superseded:
            live.append(claim)
    return live


def winning_claim(markers: Iterable[Marker]) -> Marker | None:
    """The live claim with the lowest comment id: every runner reading the same comments agrees."""
    live = live_claims(markers)
    return live[0] if live else None


def find_marker(markers: Iterable[Marker], kind: str, nonce: str) -> Marker | None:
    return next((m for m in markers if m.kind == kind and m.nonce == nonce), None)


def last_settle(markers: Iterable[Marker]) -> Marker | None:
    """The latest settle of a claim: done, release or deliver (markers come in comment order), if any."""
    settles = [m for m in markers if m.kind in CLAIM_ENDINGS]
    return settles[-1] if settles else None


def failed_attempts(markers: Iterable[Marker]) -> int:
    """Failure markers since the last reset (`unpark`): the attempts the issue has used up.

    One per claim nonce: a settle finished twice (its runner and a repair) posts no extra attempt."""
    nonces: set[str] = set()
    for marker in sorted(markers, key=lambda m: m.comment_id):
        if marker.kind == "reset":
            nonces.clear()
        elif marker.kind == "release":
            nonces.add(marker.nonce)
    return len(nonces)


def marker_context(markers: list[Marker]) -> dict[str, str]:
    """The dispatcher's `context` keys, as the jit backend keeps them, read from the markers."""
    context = {CTX_ATTEMPTS: str(failed_attempts(markers))}
    reasons = [m for m in markers if m.kind in ("release", review.RETURN) and m.data.get("reason")]
    if reasons:
        context[CTX_LAST_REASON] = str(reasons[-1].data["reason"])
    context |= review.review_context(markers)
    winner = winning_claim(markers)
    if winner is not None:
        context[CTX_CLAIMED_AT] = str(winner.data.get("at", ""))
        context[CTX_RUN] = str(winner.data.get("run", ""))
        if winner.data.get("beat"):
            context[CTX_HEARTBEAT_AT] = str(winner.data["beat"])
    return context


# ---------------------------------------------------------------------------- issues


def label_names(raw: Mapping[str, Any]) -> tuple[str, ...]:
    labels = raw.get("labels") or []
    return tuple(str(label.get("name", "")) if isinstance(label, dict) else str(label) for label in labels)


def has_label(raw: Mapping[str, Any], wanted: str) -> bool:
    return wanted.casefold() in {label.casefold() for label in label_names(raw)}


def is_pull_request(raw: Mapping[str, Any]) -> bool:
    """The issues API lists pull requests too; they carry a `pull_request` key."""
    return raw.get("pull_request") is not None


def human_assignees(raw: Mapping[str, Any]) -> list[str]:
    """Logins of assigned people (assigned bots, e.g. a coding agent, do not count)."""
    people = raw.get("assignees")
    if people is None:
        people = [raw["assignee"]] if raw.get("assignee") else []
    return [str(p.get("login", "")) for p in people if isinstance(p, dict) and p.get("type", "User") != "Bot"]


def state_of(raw: Mapping[str, Any], ready_label: str, review_label: str = review.DEFAULT_REVIEW_LABEL) -> State:
    """A jit state for a GitHub issue, so selection, status and reap work unchanged.

    closed → `done` (completed) or `rejected` (not planned, duplicate); open with
    `dispatch:claimed` → `in_progress`; open with the review label → `gated` (delivered, waiting
    for the merge); open with the ready label → `ready`; other open → `backlog`.
    """
    if raw.get("state") == "closed":
        return State.DONE if raw.get("state_reason") in (None, "completed") else State.REJECTED
    if has_label(raw, CLAIMED_LABEL):
        return State.IN_PROGRESS
    if has_label(raw, review_label):
        return State.GATED
    return State.READY if has_label(raw, ready_label) else State.BACKLOG


def open_blockers(raw: Mapping[str, Any]) -> int | None:
    """Open "blocked by" dependencies GitHub counts for the issue; None when it reports none."""
    summary = raw.get("issue_dependencies_summary")
    if not isinstance(summary, dict) or not isinstance(summary.get("blocked_by"), int):
        return None
    return int(summary["blocked_by"])


def ordering_time(raw: Mapping[str, Any]) -> Any:
    """`created_at` with the issue number in its microseconds: same second → lower number first."""
    created = parse_timestamp(str(raw["created_at"]).replace("Z", "+00:00"))
    return created.replace(microsecond=0) + timedelta(microseconds=min(int(raw["number"]), 999_999))


def to_issue(
    raw: Mapping[str, Any],
    settings: GitHubSettings,
    markers: list[Marker] | None = None,
    dependencies: tuple[str, ...] = (),
) -> Issue:
    """A GitHub issue payload as the dispatcher's `Issue`; `raw` keeps the payload for JIT_ISSUE_FILE."""
    labels = tuple(_canonical(label) for label in label_names(raw))
    state = state_of(raw, settings.ready_label, settings.review_label)
    context = marker_context(markers) if markers is not None else {}
    if markers is None and PARKED_LABEL in labels:
        context[CTX_LAST_REASON] = "see the issue's comments"
    assignee: str | None = None
    if state == State.IN_PROGRESS:
        winner = winning_claim(markers or [])
        assignee = winner.agent if winner else None
    elif state == State.READY and not settings.include_assigned and (people := human_assignees(raw)):
        assignee = "github:" + people[0]
    return Issue(
        id=issue_id(int(raw["number"])),
        title=str(raw.get("title") or ""),
        state=state,
        priority=priority_of(labels, settings.priority_labels),
        assignee=assignee,
        dependencies=dependencies,
        labels=labels,
        gates_required=(),
        gates_passed=frozenset(),
        context=context,
        created_at=ordering_time(raw),
        raw=dict(raw),
    )


def _canonical(label: str) -> str:
    """GitHub label names are case-insensitive: `Dispatch:Parked` is `dispatch:parked`."""
    for known in (PARKED_LABEL, CLAIMED_LABEL):
        if label.casefold() == known:
            return known
    return label


def parked_label_present(raw: Mapping[str, Any]) -> bool:
    return has_label(raw, PARKED_LABEL)


# ---------------------------------------------------------------------------- comments


FIT_NOTE = "\n\n… (cut to fit GitHub's comment limit)\n"


def fit_comment(head: str, body: str, limit: int = COMMENT_LIMIT) -> str:
    """`head` (the marker line and a headline), then as much of `body` as fits GitHub's comment limit."""
    text = f"{head}\n\n{body}"
    if len(text) <= limit:
        return text
    return text[: limit - len(FIT_NOTE)] + FIT_NOTE


def claim_text(agent: str, run: str) -> str:
    link = f" — [workflow run]({run})" if run.startswith("https://") and not re.search(r"[\s()<>]", run) else ""
    return f"🤖 **jit-dispatch**: claimed by {md_code_span(agent, 120)}{link}."


def done_text(agent: str, attempt: int) -> str:
    return f"✅ **jit-dispatch**: done by {md_code_span(agent, 120)} (attempt {attempt})."


def release_text(agent: str, reason: str, attempt: int, max_attempts: int, parked: bool) -> str:
    text = f"↩️ **jit-dispatch**: released by {md_code_span(agent, 120)} after attempt {attempt} of {max_attempts}: "
    text += md_text(reason) + "."
    if parked:
        text += f"\n\n🅿️ Parked: remove the `{PARKED_LABEL}` label to let runners take it again."
    return text
