"""Another try after a lost race or a transient failure, with jittered backoff, until a deadline."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from typing import TypeVar

from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.remote.git import GitError

T = TypeVar("T")
AGAIN = object()  # what a step returns after losing a race: re-read and try again


def retrying(what: str, step: Callable[[int], T | object], end: Callable[[], float]) -> T:
    """Run `step(attempt)` until it returns a value other than `AGAIN`; a transient `GitError` is
    another try, a permanent one is raised. `end()`: the monotonic deadline, read before each pause
    (the push budget, shortened by `hurry` while we wait)."""
    why = "every try lost a race"
    for attempt in itertools.count(1):
        if attempt > 1:
            pause = random.uniform(0, min(2.0, 0.05 * 2**attempt))
            if time.monotonic() + pause >= end():
                raise TrackerError(f"{what}: gave up after {attempt - 1} attempts within the push budget ({why})")
            time.sleep(pause)
        try:
            value = step(attempt)
        except GitError as exc:
            if not exc.transient:
                raise
            why = str(exc)
            continue
        if value is not AGAIN:
            return value  # type: ignore[return-value]
    raise AssertionError("unreachable")
