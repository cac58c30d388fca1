"""Fixtures shared by every test: stores written by the real jit, new stores, bare remotes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import Remote, fixture_store, make_remote
from jit_dispatch.trackers.jit.store import JitStore, NewIssue


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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        ["git", "daemon", "--export-all", "--enable=receive-pack", "--reuseaddr", "--listen=127.0.0.1",
         f"--port={port}", f"--base-path={tmp_path}", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip  # a group of its own: `git daemon` runs git-daemon as a child, which must go too
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "git daemon did not start"
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
