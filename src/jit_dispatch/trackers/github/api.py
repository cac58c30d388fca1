"""GitHub's REST API as the tracker uses it: bounded retries, one-line errors, the token never shown.

Requests go through PyGithub's `Requester` (auth, GitHub Enterprise base URLs, error types) and
`PaginatedList` (`Link` header pagination) with plain dicts as items: PyGithub's own objects
fetch every list item again when their `raw_data` is read.

Retries are bounded twice: PyGithub's `GithubRetry` retries reads only (a small total, each wait
capped at `MAX_WAIT`, never past a cancelled run's deadline); writes are retried by the tracker
alone (`Api.write`: a retried comment POST could post twice, so it looks for the first try, and
one layer of retries keeps a hung write to `RETRIES + 1` tries). Rate limits are honoured as GitHub
documents them (`failures.limit_wait`) up to the bound of the moment: `MAX_WAIT` for reads and
ordinary writes, `SETTLE_WAIT` for the writes of a settle or a give-back.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import requests
from github import Auth, Github, GithubException
from github.GithubRetry import GithubRetry
from github.PaginatedList import PaginatedList
from urllib3.exceptions import MaxRetryError, ResponseError

from jit_dispatch.errors import TrackerError
from jit_dispatch.process import credentials
from jit_dispatch.trackers.github import failures

RETRIES = 2  # per request, by PyGithub's retry; writes: by `Api.write`
MAX_WAIT = 2.5  # longest single retry wait: a rate limit asking for more fails fast instead
TIMEOUT = 10  # seconds per HTTP request; after `hurry`, less
SETTLE_WAIT = 65.0  # a settle outwaits a secondary rate limit (GitHub asks for up to a minute)
SETTLE_RETRIES = 6  # writes of a settle: a few 5xx in a row do not lose a result
THROTTLE = True  # PyGithub's pacing (0.25 s between requests, 1 s between writes); tests turn it off
FAILURES = (GithubException, requests.RequestException)  # what a request can raise


class Budget:
    """How long retries may still wait: each wait capped (reads always at `MAX_WAIT`; writes at
    `write_wait`, longer while settling), and after `hurry` a hard deadline."""

    def __init__(self, max_wait: float = MAX_WAIT, sleep: Callable[[float], None] = time.sleep) -> None:
        self.max_wait = max_wait
        self.write_wait = max_wait
        self.deadline: float | None = None
        self.retries = 0
        self.sleep = sleep

    def allows(self, wait: float, cap: float | None = None) -> bool:
        if wait > (self.max_wait if cap is None else cap):
            return False
        return self.deadline is None or time.monotonic() + wait < self.deadline

    def clamp(self, wait: float) -> float:
        left = self.max_wait if self.deadline is None else min(self.max_wait, self.deadline - time.monotonic())
        return max(0.0, min(wait, left))


class BoundedRetry(GithubRetry):
    """`GithubRetry` that gives up rather than wait past its budget; retries reads only (see above)."""

    def __init__(self, budget: Budget | None = None, **kwargs: Any) -> None:
        self.budget = budget or Budget()
        kwargs.setdefault("allowed_methods", frozenset({"GET", "HEAD"}))
        super().__init__(**kwargs)

    def new(self, **kw: Any) -> BoundedRetry:
        kw["budget"] = self.budget
        retry = super().new(**kw)
        assert isinstance(retry, BoundedRetry)
        return retry

    def _wait(self, response: Any) -> float:
        after = self.get_retry_after(response) if response is not None else None
        return after if after is not None else self.get_backoff_time()

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):  # type: ignore[no-untyped-def]
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        assert isinstance(retry, BoundedRetry)
        wait = retry._wait(response)
        if not self.budget.allows(wait):  # hand the last response (or error) to the caller now
            raise MaxRetryError(_pool, url, error or ResponseError(f"retry would wait {wait:g}s"))
        self.budget.retries += 1
        return retry

    def sleep(self, response: Any = None) -> None:
        self.budget.sleep(self.budget.clamp(self._wait(response)))


class _Raw(dict):  # type: ignore[type-arg]
    """A list item as the plain JSON object GitHub sent (PaginatedList's item class)."""

    def __init__(self, _requester: Any, _headers: Any, attributes: dict[str, Any], *_: Any, **__: Any) -> None:
        super().__init__(attributes)


class Api:
    """One repository's REST API: requests, lists, retried writes, errors as one-line TrackerErrors."""

    def __init__(
        self,
        repo: str,
        token: str,
        api_url: str = "https://api.github.com",
        *,
        throttle: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.repo = repo
        self.url = api_url.rstrip("/")
        self._token = token
        self._sleep = sleep
        self._throttle = THROTTLE if throttle is None else throttle
        self.budget = Budget(sleep=sleep)
        self._tries = RETRIES
        self._bounded = False  # each request's timeout is what is left before `budget.deadline`
        self._heard: tuple[datetime, float] | None = None  # GitHub's latest `Date`, when it came (monotonic)
        self.writes = 0  # requests that may have changed something: a list read before one is not reused after
        self._connect(TIMEOUT)

    def __repr__(self) -> str:  # never the token
        return f"Api({self.repo!r}, {self.url!r})"

    def _connect(self, timeout: int) -> None:
        self._github = Github(
            auth=Auth.Token(self._token),
            base_url=self.url,
            timeout=timeout,
            per_page=100,
            retry=BoundedRetry(self.budget, total=RETRIES, backoff_factor=0.5, raise_on_status=False),
            seconds_between_requests=0.25 if self._throttle else None,
            seconds_between_writes=1.0 if self._throttle else None,
        )
        self._requester = self._github.requester

    def request(self, verb: str, path: str, *, absolute: bool = False, **kwargs: Any) -> Any:
        """`path` below /repos/{repo} (or from the API root with `absolute`); the JSON answer."""
        url = path if absolute else f"/repos/{self.repo}{path}"
        self._in_time()
        self.writes += verb != "GET"
        headers, data = self._requester.requestJsonAndCheck(verb, url, **kwargs)
        with contextlib.suppress(TypeError, ValueError):  # no (valid) `Date`: keep the last one heard
            self._heard = (email.utils.parsedate_to_datetime(str(headers["date"])), time.monotonic())
        return data

    def github_now(self) -> datetime | None:
        """GitHub's clock now (whole seconds, like the commit dates it writes): the `Date` of the latest
        answer, plus the time since on this machine's monotonic clock. None before any answer.
        Ages of GitHub's records are measured with it: one clock on both sides of the subtraction."""
        if self._heard is None:
            return None
        date, received = self._heard
        return date + timedelta(seconds=time.monotonic() - received)

    def _in_time(self) -> None:
        """Bounded (a heartbeat): no time left is a timeout now; else this request may take what is left."""
        if not self._bounded or self.budget.deadline is None:
            return
        left = self.budget.deadline - time.monotonic()
        if left <= 0:
            raise requests.Timeout("no time left before the heartbeat's deadline")
        self._connect(max(1, int(left)))  # PyGithub takes whole seconds: under a second left, one more

    def list(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self._in_time()
        url = f"/repos/{self.repo}{path}"
        items = PaginatedList(_Raw, self._requester, url, {"per_page": 100, **(params or {})})  # type: ignore[type-var]
        return [dict(item) for item in items]

    @contextlib.contextmanager
    def doing(self, what: str, *, keep: type[Exception] | None = None) -> Iterator[None]:
        """GitHub's failures as one-line TrackerErrors (exit 3) that name the fix, never the token
        (`keep`: let these through, for a caller that tells them apart itself)."""
        try:
            yield
        except GithubException as exc:
            if keep is not None and isinstance(exc, keep):
                raise
            raise TrackerError(self.scrub(self.explain(what, exc))) from None
        except requests.RequestException as exc:
            raise TrackerError(self.scrub(f"{what}: cannot reach {self.url} ({type(exc).__name__})")) from None

    def limited(self, exc: GithubException) -> bool:
        """A rate limit, not a refusal (docs/github-locks.md#rate-limits)."""
        return failures.limit_kind(exc.status, *parts(exc)) is not None

    def explain(self, what: str, exc: GithubException) -> str:
        return failures.explain(what, exc.status, *parts(exc), self.repo, time.time())

    def scrub(self, text: str) -> str:
        """Every form of every known secret, this token's included (`process.credentials`)."""
        credentials.register(self._token)
        return credentials.scrub(text)

    def write(self, fn: Callable[[], Any], recheck: Callable[[], Any] | None = None) -> Any:
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
                wait = failures.retry_wait(status, *parts(exc), tries, time.time())
                if wait is None or tries > self._tries or not self.budget.allows(wait, self.budget.write_wait):
                    raise
            self.budget.retries += 1
            self._sleep(wait)
            if recheck is not None and (found := recheck()) is not None:
                return found

    @contextlib.contextmanager
    def persistent(self) -> Iterator[None]:
        """Settling: writes retry more often and may wait out a secondary limit (a cancel's deadline
        holds); reads keep their short bound, so a limited read still fails fast."""
        saved = self.budget.write_wait, self._tries
        self.budget.write_wait, self._tries = SETTLE_WAIT, SETTLE_RETRIES
        try:
            yield
        finally:
            self.budget.write_wait, self._tries = saved

    def clone(self) -> Api:
        """Another connection to the same repository (a heartbeat's own, so its deadline is its alone)."""
        return Api(self.repo, self._token, self.url, throttle=False, sleep=self._sleep)

    @contextlib.contextmanager
    def until(self, deadline: float | None) -> Iterator[None]:
        """Every request, connect and read, and every retry wait end by `deadline` (monotonic)."""
        if deadline is None:
            yield
            return
        self.budget.deadline, self._bounded = deadline, True
        try:
            yield
        finally:
            self.budget.deadline, self._bounded = None, False

    def hurry(self, seconds: float) -> None:
        """Cancelled: no retry may wait past `seconds` from now; requests get short timeouts, no pacing."""
        self.budget.deadline = time.monotonic() + seconds
        self._throttle = False
        self._connect(max(1, int(seconds / 2)))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._github.close()


def parts(exc: Exception) -> tuple[str, dict[str, str]]:
    """GitHub's message and the response headers (lower-cased) of a failed request."""
    if not isinstance(exc, GithubException):
        return "", {}
    data = exc.data if isinstance(exc.data, dict) else {}
    return str(data.get("message") or ""), {k.lower(): str(v) for k, v in (exc.headers or {}).items()}
