"""Fixtures shared by every test: stores written by the real jit, new stores, bare remotes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import Remote, fixture_store, make_remote
from jit_dispatch.trackers.jit.store import JitStore, NewIssue
from remote_runs import git_daemon


@pytest.fixture
def seed_store(tmp_path: Path) -> Path:
    return fixture_store(tmp_path, "seed-era")


@pytest.fixture
def latest_store(tmp_path: Path) -> Path:
    return fixture_store(tmp_path, "latest")


@pytest.fixture
def new_store(tmp_path: Path) -> Callable[..., tuple[JitStore, list[str]]]:
    """`new_store(NewIssue(...), ...)` → an initialised store holding those issues, and their ids."""

    def make(*specs: NewIssue) -> tuple[JitStore, list[str]]:
        store = JitStore.init(tmp_path / "repo" / ".jit")
        ids = store.create_issues(specs) if specs else []
        return store, ids

    return make


@pytest.fixture
def remote_factory(tmp_path: Path) -> Callable[..., Remote]:
    return lambda specs, **kw: make_remote(tmp_path, specs, **kw)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """`git daemon` on 127.0.0.1 serving tmp_path (push enabled); its base URL. Killed afterwards."""
    with git_daemon(tmp_path) as url:
        yield url
