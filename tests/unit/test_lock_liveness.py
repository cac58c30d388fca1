"""The clock-free liveness rule and the contents of lock and result refs (pure parts of remote mode)."""

from __future__ import annotations

import pytest

from jit_dispatch.domain.staleness import lock_is_dead
from jit_dispatch.engine.heartbeat import fitting_interval
from jit_dispatch.trackers.remote.git import is_permanent
from jit_dispatch.trackers.remote.locks import LockInfo, parse_lock
from jit_dispatch.trackers.remote.results import RELEASE, ResultInfo, parse_result


@pytest.mark.parametrize(
    ("unchanged_for", "interval", "age", "older_than", "dead"),
    [
        (130.0, 60.0, 7200.0, 3600.0, True),  # watched unchanged for two intervals, old enough
        (119.0, 60.0, 7200.0, 3600.0, False),  # not two intervals yet
        (124.0, 60.0, 7200.0, 3600.0, False),  # two intervals, but the holder may still be stopping its command
        (None, 60.0, 7200.0, 3600.0, False),  # it changed while watched: alive, however old it looks
        (130.0, 60.0, 60.0, 3600.0, False),  # younger than the threshold a person gave
        (None, None, 7200.0, 3600.0, True),  # no announced interval (older version): age is all there is
        (None, None, 60.0, 3600.0, False),
        (10**9, 60.0, 0.0, 0.0, False),  # a threshold of 0 still needs an age above it
    ],
)
def test_lock_is_dead(
    unchanged_for: float | None, interval: float | None, age: float, older_than: float, dead: bool
) -> None:
    assert lock_is_dead(unchanged_for=unchanged_for, interval=interval, age=age, older_than=older_than) is dead


def test_a_lock_round_trips_and_hostile_values_stay_on_one_line() -> None:
    info = LockInfo.new("agent:w1", "host:1\nheartbeat: 0.000001\nagent: agent:evil", 3, 60.0).next_beat()
    parsed = parse_lock(info.message("abc"))
    assert (parsed.agent, parsed.attempt, parsed.heartbeat, parsed.at, parsed.beat) == ("agent:w1", 3, 60.0, info.at, 1)
    assert parsed.run == "host:1 heartbeat: 0.000001 agent: agent:evil"


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon", ""])
def test_a_lock_announcing_no_usable_interval_counts_as_announcing_none(value: str) -> None:
    assert parse_lock(f"jit-dispatch lock x\n\nagent: a\nheartbeat: {value}\n").heartbeat is None


def test_a_lock_of_the_previous_version_parses() -> None:
    parsed = parse_lock("jit-dispatch lock x\n\nagent: agent:old\nrun: host:1\nat: 2026-01-01T00:00:00Z\n")
    assert (parsed.agent, parsed.run, parsed.at, parsed.heartbeat, parsed.attempt) == (
        "agent:old", "host:1", "2026-01-01T00:00:00Z", None, None,
    )  # fmt: skip


def test_a_result_round_trips() -> None:
    claim = LockInfo.new("agent:w1", "host:1", 2, 60.0)
    result = ResultInfo.new(RELEASE, claim, reason="exit code 7\n::error::x", max_attempts=3, seen=("t0", None))
    parsed = parse_result(result.message("abc"))
    assert (parsed.op, parsed.reason, parsed.max_attempts, parsed.seen, parsed.at) == (
        RELEASE, "exit code 7 ::error::x", 3, ("t0", None), result.at,
    )  # fmt: skip
    assert (parsed.claim.agent, parsed.claim.run, parsed.claim.attempt, parsed.claim.at) == (
        "agent:w1", "host:1", 2, claim.at,
    )  # fmt: skip


def test_a_refusal_is_permanent_only_when_git_or_the_server_says_so_in_words() -> None:
    """Object ids and uuids are hex: one holding "403" is no HTTP 403 (a flaky test found this)."""
    sha = "ab403cd" + "0" * 33
    ref = "refs/jit-dispatch/results/5a403f1e-1111-4403-8403-000000000403/1"
    transient = f"To file:///remote\n!\t{sha}:{ref}\t[remote rejected] (pre-receive hook declined)\nremote: busy\n"
    assert not is_permanent(transient)
    assert is_permanent("remote: Permission to org/repo.git denied to bot.\nfatal: unable to access: 403")
    assert is_permanent("error: GH006: Protected branch update failed for refs/heads/main.")
    assert not is_permanent("remote: flaky: server busy, try again later")


@pytest.mark.parametrize(
    ("interval", "took", "announced"),
    [
        (60.0, 10.0, 60.0),  # the default holds on a remote whose pushes take 10 s
        (60.0, 15.0, 60.0),
        (4.0, 1.5, 6.0),  # over a quarter of the interval: four times the beat, whole seconds
        (2.0, 4.0, 16.0),
        (60.0, 200.0, 300.0),  # never rarer than a reaper still watches
    ],
)
def test_a_slow_beat_makes_the_next_announce_an_interval_it_fits_in(
    interval: float, took: float, announced: float
) -> None:
    assert fitting_interval(interval, took) == announced
