"""Why git or the server refused, by cause: permanent (fail before the command) or transient (retry).

Each row names a cause and the words that show it (docs/remote-mode.md#refusals lists them with
their sources; tests/integration/test_remote_refusals.py has a test per row). Permanent rows are
tried first, so "RPC failed; HTTP 403" is a permission refusal, not a lost connection. What no
row recognises is transient: a hook declining, a busy server — another try may pass, within the
push budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    cause: str
    permanent: bool
    pattern: str  # a regular expression, matched case-insensitively anywhere in git's output

    def matches(self, text: str) -> bool:
        return re.search(self.pattern, text, re.IGNORECASE) is not None


REFUSALS = (
    Refusal("branch protection", True, r"\bGH006\b|protected branch update failed"),
    Refusal("repository ruleset", True, r"\bGH013\b|repository rule violations"),
    Refusal("protected branch", True, r"not allowed to (?:push|force push|update)|protected branch hook declined"),
    Refusal("archived repository", True, r"repository was archived|\bread-only\b"),
    Refusal("no write access", True, r"write access to repository not granted|permission to \S+ denied"),
    Refusal("permission denied", True, r"permission denied|\b(?:returned error|HTTP):? 403\b|HTTP code = 403\b"),
    Refusal(
        "credentials",
        True,
        r"authentication failed|could not read (?:username|password)|terminal prompts disabled"
        r"|invalid username or (?:password|token)|\b(?:returned error|HTTP):? 401\b",
    ),
    Refusal("repository not found (or not visible to these credentials)", True, r"repository not found"),
    Refusal("not a repository (yet, or not now)", False, r"does not appear to be a git repository"),
    Refusal("unreachable host", False, r"could not resolve host|name or service not known|temporary failure in name"),
    Refusal(
        "network", False, r"connection (?:refused|reset|timed out)|operation timed out|network is unreachable|no route"
    ),
    Refusal("server error", False, r"\b(?:returned error|HTTP):? 5\d\d\b|HTTP code = 5\d\d\b|internal server error"),
    Refusal("connection lost", False, r"remote end hung up|early eof|unexpected disconnect|broken pipe"),
)
UNRECOGNISED = Refusal("unrecognised (a hook, a busy server)", False, "")

# Object ids and the uuids in our ref names are hex: "…a403f…" says nothing about permissions.
_HEX_TOKEN = re.compile(r"\b[0-9a-f]{7,64}\b|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def classify(output: str) -> Refusal:
    """The first row whose words git's output shows (object ids left out); else `UNRECOGNISED`."""
    text = _HEX_TOKEN.sub(" ", output)
    return next((row for row in REFUSALS if row.matches(text)), UNRECOGNISED)
