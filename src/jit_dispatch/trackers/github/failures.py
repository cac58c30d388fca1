"""What GitHub's failed answers mean, for one clear line and the right wait: rate limits by the
book (primary, secondary: docs/github-locks.md#rate-limits) told apart from a missing permission,
and the fix each refusal names. Pure (status, message, lower-cased headers, the time in).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

PERMISSION = "issues: write"
SECONDARY_WAIT = 60.0  # GitHub: without retry-after or a reset, wait at least a minute


def limit_kind(status: int, message: str, headers: Mapping[str, str]) -> str | None:
    """`primary`, `secondary` or None, as GitHub documents them (docs/github-locks.md#rate-limits):
    a primary limit is 403/429 with `x-ratelimit-remaining: 0`; a secondary one is 403/429 whose
    message says so (or that carries `retry-after`). Any other 403 is a permission."""
    if status not in (403, 429):
        return None
    low = message.lower()
    if headers.get("x-ratelimit-remaining") == "0" and "secondary" not in low:
        return "primary"
    if "secondary rate limit" in low or "abuse" in low or "retry-after" in headers:
        return "secondary"
    if "rate limit" in low:
        return "primary" if "api rate limit exceeded" in low else "secondary"
    return "secondary" if status == 429 else None


def limit_wait(status: int, message: str, headers: Mapping[str, str], now: float) -> float | None:
    """How long GitHub asks to wait (`now`: epoch seconds): `retry-after`, else until
    `x-ratelimit-reset` when none remain, else at least a minute. None: not a rate limit."""
    if limit_kind(status, message, headers) is None:
        return None
    try:
        return max(0.0, float(headers["retry-after"]))
    except (KeyError, ValueError):
        pass
    reset = _reset(headers)
    if headers.get("x-ratelimit-remaining") == "0" and reset is not None:
        return max(0.0, reset - now) + 1.0  # the reset's second is not exact
    return SECONDARY_WAIT


def _reset(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None


def retry_wait(status: int | None, message: str, headers: Mapping[str, str], tries: int, now: float) -> float | None:
    """How long to wait before trying a write again (`status` None: no answer), or None: do not."""
    if status is None or status >= 500:
        return 0.5 * 2.0 ** (tries - 1)
    return limit_wait(status, message, headers, now)


def _limit_line(doing: str, status: int, message: str, headers: Mapping[str, str], now: float) -> str:
    kind = limit_kind(status, message, headers)
    wait = limit_wait(status, message, headers, now) or 0.0
    resource = f" for {headers['x-ratelimit-resource']}" if headers.get("x-ratelimit-resource") else ""
    limit = f" of {headers['x-ratelimit-limit']} requests an hour" if headers.get("x-ratelimit-limit") else ""
    reset = _reset(headers)
    if kind == "primary" and reset is not None:
        when = time.strftime("%H:%M:%S UTC", time.gmtime(reset))
        used_up = f"GitHub's primary rate limit{limit}{resource} is used up ({status})"
        return f"{doing}: {used_up}; it resets at {when} (in {wait:.0f}s)"
    asks = f"GitHub asks to wait {wait:g}s" if "retry-after" in headers else "GitHub asks to wait at least a minute"
    return f"{doing}: GitHub's {kind} rate limit ({status}: {message}); {asks}; the next run picks up"


def explain(doing: str, status: int, message: str, headers: Mapping[str, str], repo: str, now: float) -> str:
    """One line naming the fix (`headers` lower-cased; `now`: epoch seconds, for a limit's reset)."""
    message = message.strip() or "no message"
    if limit_kind(status, message, headers):
        return _limit_line(doing, status, message, headers, now)
    if status == 401:
        return (
            f"{doing}: GitHub rejected the token (401: {message}); set GITHUB_TOKEN or --github-token "
            f"to a token with `{PERMISSION}` on {repo}"
        )
    if status == 403:
        needs = headers.get("x-accepted-github-permissions") or PERMISSION
        return f"{doing}: GitHub refused (403: {message}); the token needs `{needs}` on {repo}"
    if status == 404:
        where = f"is --github-repo {repo} right, and can the token see it? It needs `{PERMISSION}`"
        return f"{doing}: not found (404) — {where}"
    if status == 410 and "deleted" in message.lower():
        return f"{doing}: the issue was deleted (410)"
    if status == 410:
        return f"{doing}: issues are disabled on {repo} (410)"
    return f"{doing}: GitHub API error {status}: {message}"
