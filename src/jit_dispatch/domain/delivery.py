"""Delivering an issue's work (docs/delivery.md): where it went, the names and texts it is given.

Pure: the work branch's name from `--branch-template`, checked the way `git check-ref-format`
checks it; the commit message with its `Jit-Issue:` trailer, and finding those trailers again in
`git log` output; the feedback file a returning issue's command reads. Issue text is hostile: it
reaches a branch name only as a slug of `[a-z0-9-]`, a commit message only as one inert line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from jit_dispatch.domain.issue import (
    CTX_BASE,
    CTX_BRANCH,
    CTX_DELIVERED_AT,
    CTX_HEAD_SHA,
    CTX_PULL_NUMBER,
    CTX_PULL_REQUEST,
)

TRAILER = "Jit-Issue"
DELIVER_MODES = ("none", "branch", "pull-request")
DONE_ON = ("success", "merge")
DEFAULT_BRANCH_TEMPLATE = "jit/{short_id}-{slug}"
SLUG_MAX = 40
SUBJECT_MAX = 72
LOG_FORMAT = "%H%x00%B%x1e"  # `git log --format=` whose output `trailer_ids` reads: sha NUL message RS


@dataclass(frozen=True)
class Delivery:
    """Where an issue's work went: recorded when it is delivered, read when looking for the merge."""

    branch: str  # the work branch pushed, e.g. "jit/1a2b3c4d-fix-login"
    base: str  # the branch the work must reach (PR base), e.g. "main"
    delivered_at: str  # RFC 3339 UTC
    head_sha: str = ""  # the work branch tip that was pushed
    pull_request: str | None = None  # the PR's html URL (pull-request mode)
    pull_number: int | None = None


@dataclass(frozen=True)
class InlineComment:
    path: str
    line: int | None
    body: str
    author: str


@dataclass(frozen=True)
class Feedback:
    """Why the issue is back: a review asking for changes, or the gate that failed last time.
    Written as JSON to $JIT_DISPATCH_FEEDBACK_FILE ({feedback_file}) for the next run's command."""

    reason: str  # e.g. "changes requested by alice"
    reviewer: str | None = None
    review_body: str = ""
    review_url: str | None = None
    comments: tuple[InlineComment, ...] = ()
    failed_gate: str | None = None
    gate_output_tail: str = ""

    def to_json(self) -> str:
        """The file's content: every field, comments as a list of objects (text kept as written)."""
        data = asdict(self)
        data["comments"] = [asdict(comment) for comment in self.comments]
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# --- the work branch's name -----------------------------------------------------------------

BRANCH_PLACEHOLDERS = ("issue_id", "short_id", "slug", "title", "priority", "agent")
_PLACEHOLDER = re.compile(r"\{([a-z_]*)\}")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_NOT_REF_WORD = re.compile(r"[^A-Za-z0-9._-]+")


def slug(title: str, limit: int = SLUG_MAX) -> str:
    """`[a-z0-9-]`, at most `limit` characters, no leading/trailing/double dash; `issue` when nothing is left.

    ASCII letters and digits only (no Unicode lookalikes): `Fix the "login" page!` → `fix-the-login-page`.
    """
    words = _NOT_SLUG.sub("-", title.lower()).strip("-")
    if len(words) > limit:
        words = words[:limit].rstrip("-")
    return words or "issue"


def _ref_word(value: str) -> str:
    """A value that is not issue text (ids, the agent) made safe for one ref component."""
    return _NOT_REF_WORD.sub("-", value).strip(".-") or "x"


def check_branch_template(template: str) -> str | None:
    """Why `template` cannot name work branches (one line), or None: unknown placeholders, or a
    name that git would refuse whatever the values (checked with sample values)."""
    unknown = sorted({name for name in _PLACEHOLDER.findall(template) if name not in BRANCH_PLACEHOLDERS})
    if unknown:
        known = ", ".join("{" + name + "}" for name in BRANCH_PLACEHOLDERS)
        return f"unknown placeholder {{{unknown[0]}}} (known: {known})"
    if not any("{" + name + "}" in template for name in ("issue_id", "short_id")):
        return "must contain {short_id} or {issue_id}, so each issue gets its own branch"
    sample = {name: "x" for name in BRANCH_PLACEHOLDERS}
    problem = ref_format_problem(_PLACEHOLDER.sub(lambda m: sample[m.group(1)], template))
    return None if problem is None else f"not a valid branch name: {problem}"


def branch_name(template: str, *, issue_id: str, title: str, priority: str, agent: str) -> str:
    """The work branch for an issue: `template` with its placeholders filled in ref-safe form.

    `{title}` and `{slug}` both give the slug (issue text never enters a ref as written). The
    template was checked by `check_branch_template`; ValueError should a value still break it.
    """
    values = {
        "issue_id": _ref_word(issue_id),
        "short_id": _ref_word(issue_id[:8]),
        "slug": slug(title),
        "title": slug(title),
        "priority": _ref_word(priority),
        "agent": _ref_word(agent.replace(":", "-")),
    }
    name = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    problem = ref_format_problem(name)
    if problem is not None:
        raise ValueError(f"branch {name!r} is not valid: {problem}")
    return name


def names_issue(branch: str, issue_id: str) -> bool:
    """Whether `branch` could be this issue's work branch: every template holds {short_id} or
    {issue_id}, so a name without either is some other branch (a release, a person's)."""
    return _ref_word(issue_id[:8]) in branch or _ref_word(issue_id) in branch


_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def ref_format_problem(branch: str) -> str | None:
    """What `git check-ref-format --branch` would object to in `branch`, or None when git accepts it.

    The rules of git-check-ref-format(1), applied to `refs/heads/<branch>`.
    """
    if not branch:
        return "empty"
    if branch.startswith("-"):
        return "starts with '-'"
    if branch == "@":
        return "is '@'"
    if (bad := _REF_FORBIDDEN.search(branch)) is not None:
        return f"contains {bad.group()!r}"
    for part, why in (("..", "'..'"), ("@{", "'@{'"), ("//", "'//'")):
        if part in branch:
            return f"contains {why}"
    if branch.startswith("/") or branch.endswith("/"):
        return "starts or ends with '/'"
    if branch.endswith("."):
        return "ends with '.'"
    for component in branch.split("/"):
        if component.startswith("."):
            return f"a component starts with '.' ({component!r})"
        if component.endswith(".lock"):
            return f"a component ends with '.lock' ({component!r})"
    return None


# --- commit messages and trailers --------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_TRAILER_LINE = re.compile(r"^\s*" + TRAILER + r":\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


# What GitHub reads as an issue reference, and closes after `fixes`/`closes` in a commit message that
# reaches the default branch (a squash merge's message is the PR title): `#12`, `o/r#12`, `GH-12`, URLs.
_REFERENCES = re.compile(r"#(?=\d)|(?<=[A-Za-z]):(?=//)|\bGH-(?=\d)", re.IGNORECASE)


def _unreference(match: re.Match[str]) -> str:
    """`#` → `＃`, `:` → `∶`, `GH-` → `GH‐`: the same to read, nothing GitHub links."""
    found = match.group(0)
    return {"#": "＃", ":": "∶"}.get(found, found[:2] + "‐")


def inert_line(text: str, limit: int = SUBJECT_MAX) -> str:
    """Untrusted text as one plain line: controls and bidi overrides gone, whitespace runs one space,
    no issue reference (`#12` reads `＃12`), so a title can close no issue as a commit subject."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    flat = _REFERENCES.sub(_unreference, flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def trailer_line(issue_id: str) -> str:
    return f"{TRAILER}: {issue_id}"


def commit_message(title: str, issue_id: str, body: str = "") -> str:
    """Subject (the title, inert; never a trailer itself), an optional body of our own words, the trailer."""
    subject = inert_line(title) or f"issue {issue_id[:8]}"
    if _TRAILER_LINE.match(subject):
        subject = f"[{issue_id[:8]}] {subject}"
    parts = [subject]
    if body:
        parts.append(body.strip())
    parts.append(trailer_line(issue_id))
    return "\n\n".join(parts) + "\n"


def with_trailer(message: str, issue_id: str) -> str:
    """An existing commit message (the agent's own commit) with our trailer appended, unless it has it.

    A `Jit-Issue:` line naming another issue is quoted (`> Jit-Issue: …`): the agent (steered by a
    hostile issue body, say) must not be able to finish another waiting issue by this work's merge.
    """
    quoted = quote_other_trailers(message, issue_id)
    if issue_id in message_trailer_ids(quoted):
        return quoted
    return quoted.rstrip("\n") + "\n\n" + trailer_line(issue_id) + "\n"


def quote_other_trailers(text: str, issue_id: str) -> str:
    """`text` with every `Jit-Issue:` line naming another issue quoted (`> Jit-Issue: …`): read as
    before, found by no merge watch."""
    return _TRAILER_LINE.sub(lambda m: m.group(0) if m.group(1) == issue_id else "> " + m.group(0).lstrip(), text)


def inert_for_commit(text: str, issue_id: str) -> str:
    """Rendered text that may become a commit message (GitHub can make a squash merge's message of
    the pull request body): code blocks and spans are plain text there, so no issue reference
    (`Closes #99`) and no other issue's trailer may be left in them."""
    return _REFERENCES.sub(_unreference, quote_other_trailers(text, issue_id))


def message_trailer_ids(message: str) -> set[str]:
    """The issue ids named by `Jit-Issue:` lines of a commit message, its subject line excepted.

    Any line counts, not only the final trailer block: a squash merge lists every squashed
    commit's message in its body. The subject never counts: it is the (hostile) issue title.
    """
    _, _, rest = message.partition("\n")
    return set(_TRAILER_LINE.findall(rest))


def trailer_ids(log_output: str) -> dict[str, str]:
    """`git log --format=LOG_FORMAT` output → {issue id: the newest commit naming it}."""
    found: dict[str, str] = {}
    for record in log_output.split("\x1e"):
        sha, sep, message = record.strip("\n").partition("\x00")
        if not sep:
            continue
        for issue_id in message_trailer_ids(message):
            found.setdefault(issue_id, sha)
    return found


def delivery_context(delivery: Delivery) -> dict[str, str]:
    """The `dispatch.*` context keys that record a delivery (docs/jit-format.md#context)."""
    values = {
        CTX_BRANCH: delivery.branch,
        CTX_BASE: delivery.base,
        CTX_DELIVERED_AT: delivery.delivered_at,
        CTX_HEAD_SHA: delivery.head_sha,
        CTX_PULL_REQUEST: delivery.pull_request,
        CTX_PULL_NUMBER: None if delivery.pull_number is None else str(delivery.pull_number),
    }
    return {key: value for key, value in values.items() if value}


def delivery_from_context(context: Mapping[str, str]) -> Delivery | None:
    """The delivery an issue's context records, or None when it has none (no branch or base)."""
    branch, base = context.get(CTX_BRANCH), context.get(CTX_BASE)
    if not branch or not base:
        return None
    number = context.get(CTX_PULL_NUMBER, "")
    return Delivery(
        branch=branch,
        base=base,
        delivered_at=context.get(CTX_DELIVERED_AT, ""),
        head_sha=context.get(CTX_HEAD_SHA, ""),
        pull_request=context.get(CTX_PULL_REQUEST) or None,
        pull_number=int(number) if number.isdigit() else None,
    )
