"""A store shaped by an attacker, or broken by the machine, through the real CLI.

Every case: the documented exit code, exactly one stderr line and no traceback, every file the
run must not change byte-identical, and nothing created or changed outside `.jit/`. Full disks
and read-only stores are real (a tiny tmpfs, a read-only bind mount; skipped where mounting is
not allowed); only EIO is simulated, in process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import CliRun, clean_env, read_events, read_issue, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

StoreFactory = Callable[..., tuple[JitStore, list[str]]]
DEEP = 100_000
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, <linux/capability.h>


def tree(top: Path) -> dict[str, bytes | str]:
    """Every file under `top` (bytes) and every symlink (its target), by relative path."""
    found: dict[str, bytes | str] = {}
    for path in sorted(top.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(top))] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(top))] = path.read_bytes()
    return found


def changed(before: dict[str, bytes | str], after: dict[str, bytes | str]) -> set[str]:
    """Paths added, removed or rewritten; lock files (created empty by any locked save) aside."""
    keys = set(before) | set(after)
    return {k for k in keys if before.get(k) != after.get(k) and not (k.endswith(".lock") and after.get(k) == b"")}


def one_line(result: CliRun, code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def once(root: Path, *extra: str, command: str = "true", env: dict[str, str] | None = None) -> CliRun:
    return run_cli("once", "--agent", "w1", "--command", command, "--jit-dir", str(root), *extra, env=env)


@pytest.fixture
def world(new_store: StoreFactory, tmp_path: Path) -> tuple[JitStore, list[str]]:
    """A store of two ready issues, and an `outside/` directory beside the repository."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("precious\n")
    return new_store(NewIssue("first", priority="high"), NewIssue("second", priority="low"))


# --------------------------------------------------------------------------- 1. nesting depth
def test_an_issue_nested_too_deep_is_skipped_with_a_warning_and_left_as_it_is(
    world: tuple[JitStore, list[str]], tmp_path: Path
) -> None:
    store, (high, low) = world
    deep = store.issue_file(high)
    deep.write_bytes(b"[" * DEEP + b"]" * DEEP)
    before = tree(tmp_path)
    for args in (("status",), ("ready",)):
        result = run_cli(*args, "--jit-dir", str(store.root))
        one_line(result, 0, str(deep), "nested deeper than 128 levels", "skipped")
    result = once(store.root)
    one_line(result, 0, str(deep), "nested deeper")
    assert read_issue(store.root, low)["state"] == "done"
    assert {k for k in changed(before, tree(tmp_path)) if "keep" not in k} == {
        f"repo/.jit/issues/{low}.json",
        "repo/.jit/events.jsonl",
    }
    assert deep.read_bytes() == b"[" * DEEP + b"]" * DEEP


def test_a_field_nested_too_deep_inside_a_valid_issue_is_skipped(world: tuple[JitStore, list[str]]) -> None:
    store, (high, low) = world
    path = store.issue_file(high)
    raw = json.loads(path.read_text())
    raw["documents"] = [json.loads("[" * 300 + "]" * 300)]  # parses in Python; jit refuses it
    path.write_text(json.dumps(raw, indent=2))
    data = path.read_bytes()
    one_line(once(store.root), 0, str(path), "nested deeper")
    assert read_issue(store.root, low)["state"] == "done"
    assert path.read_bytes() == data


@pytest.mark.parametrize("name", ["index.json", "gates.json"])
def test_index_or_gates_nested_too_deep_is_one_tracker_error(world: tuple[JitStore, list[str]], name: str) -> None:
    store, _ = world
    (store.root / name).write_text('{"gates": ' * DEEP + "{}" + "}" * DEEP)
    before = tree(store.root)
    one_line(once(store.root), 3, str(store.root / name), "nested deeper than 128 levels")
    one_line(run_cli("status", "--jit-dir", str(store.root)), 3, name)
    assert changed(before, tree(store.root)) == set()


def test_a_config_nested_too_deep_is_one_usage_error(world: tuple[JitStore, list[str]], tmp_path: Path) -> None:
    store, _ = world
    config = tmp_path / "dispatch.toml"
    config.write_text("x = " + "[" * DEEP + "]" * DEEP + "\n")
    before = tree(tmp_path)
    one_line(once(store.root, "--config", str(config)), 2, str(config), "nested too deeply")
    one_line(run_cli("config", "check", "--config", str(config)), 2, str(config))
    assert changed(before, tree(tmp_path)) == set()


# --------------------------------------------------------------------------- 3. ids
@pytest.mark.parametrize("bad_id", ["../../outside/victim", "..", "a/b", "x\u0000y", "/tmp/abs"])
def test_ids_that_are_not_ids_are_skipped_and_nothing_is_created_outside(
    world: tuple[JitStore, list[str]], tmp_path: Path, bad_id: str
) -> None:
    store, (high, _low) = world
    victim = tmp_path / "outside" / "victim.json"  # a valid issue, reachable as issues/../../outside/victim
    raw = read_issue(store.root, high) | {"id": bad_id, "priority": "critical"}
    victim.write_text(json.dumps(raw, indent=2))
    index = json.loads((store.root / "index.json").read_text())
    index["all_ids"].insert(0, bad_id)
    (store.root / "index.json").write_text(json.dumps(index, indent=2))
    before = tree(tmp_path)
    one_line(once(store.root), 0, "index.json", "is not an issue id", "skipped")
    assert read_issue(store.root, high)["state"] == "done"
    assert changed(before, tree(tmp_path)) == {f"repo/.jit/issues/{high}.json", "repo/.jit/events.jsonl"}


# --------------------------------------------------------------------------- 4. symlinks
def test_a_planted_temp_file_link_is_never_written_through(world: tuple[JitStore, list[str]], tmp_path: Path) -> None:
    store, (high, _) = world
    keep = tmp_path / "outside" / "keep.txt"
    for name in (f"{high}.json.tmp", f".{high}.json.tmp"):  # the names jit's writers use
        (store.issues_dir / name).symlink_to(keep)
    result = once(store.root)
    assert result.returncode == 0, result.stderr
    assert keep.read_text() == "precious\n"
    assert read_issue(store.root, high)["state"] == "done"
    leftovers = sorted(p.name for p in store.issues_dir.glob("*tmp"))
    assert leftovers == sorted([f"{high}.json.tmp", f".{high}.json.tmp"]), "our own temp files are gone"


def test_an_events_link_is_refused_and_the_claim_is_undone(world: tuple[JitStore, list[str]], tmp_path: Path) -> None:
    store, (_high, _) = world
    target = tmp_path / "outside" / "events.txt"
    target.write_text("")
    (store.root / "events.jsonl").unlink()
    (store.root / "events.jsonl").symlink_to(target)
    before = tree(tmp_path)
    line = one_line(once(store.root, command="touch ran"), 3, "events.jsonl", "symbolic link", "put back")
    assert "ready" in line
    assert changed(before, tree(tmp_path)) == set(), "the issue is back byte for byte; nothing written outside"
    assert not (store.root.parent / "ran").exists()


@pytest.mark.parametrize("lock", [".index.lock", "issues/{id}.lock", ".events.lock"])
def test_a_lock_file_link_is_refused(world: tuple[JitStore, list[str]], tmp_path: Path, lock: str) -> None:
    store, (high, _) = world
    target = tmp_path / "outside" / "made-by-lock"
    link = store.root / lock.format(id=high)
    link.unlink(missing_ok=True)
    link.symlink_to(target)  # dangling: following it would create the target
    before = tree(tmp_path)
    one_line(once(store.root), 3, link.name, "symbolic link")
    assert not target.exists()
    assert changed(before, tree(tmp_path)) == set()


def test_an_issues_directory_link_is_refused(world: tuple[JitStore, list[str]], tmp_path: Path) -> None:
    store, _ = world
    moved = tmp_path / "outside" / "issues"
    store.issues_dir.rename(moved)
    store.issues_dir.symlink_to(moved)
    before = tree(tmp_path)
    one_line(once(store.root), 3, "issues", "symbolic link")
    assert changed(before, tree(tmp_path)) == set()


def test_a_jit_directory_that_is_a_link_keeps_working(world: tuple[JitStore, list[str]], tmp_path: Path) -> None:
    store, (high, _) = world
    link = tmp_path / "linked-jit"
    link.symlink_to(store.root)
    result = once(link)
    assert (result.returncode, result.stderr) == (0, "")
    assert read_issue(store.root, high)["state"] == "done"


def test_a_fifo_events_log_is_refused_without_hanging(world: tuple[JitStore, list[str]]) -> None:
    store, (high, _) = world
    (store.root / "events.jsonl").unlink()
    os.mkfifo(store.root / "events.jsonl")
    before = tree(store.root)
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(store.root), timeout=20)
    one_line(result, 3, "events.jsonl", "put back")
    assert changed(before, tree(store.root)) == set()
    assert read_issue(store.root, high)["state"] == "ready"


def test_a_fifo_issue_file_is_skipped_without_hanging(world: tuple[JitStore, list[str]]) -> None:
    store, (high, low) = world
    store.issue_file(high).unlink()
    os.mkfifo(store.issue_file(high))
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(store.root), timeout=20)
    one_line(result, 0, f"{high}.json", "not a regular file")
    assert read_issue(store.root, low)["state"] == "done"


# --------------------------------------------------------------------------- 2. OS errors
@contextlib.contextmanager
def mounted(*args: str) -> Iterator[Path]:
    """A fresh mount point (world-readable) with `mount ARGS… <it>`; skips where mounting is not allowed."""
    point = Path(tempfile.mkdtemp(prefix="jit-hostile-"))
    point.chmod(0o755)
    done = subprocess.run(["mount", *args, str(point)], capture_output=True, text=True)
    if done.returncode != 0:
        point.rmdir()
        pytest.skip(f"cannot mount here: {done.stderr.strip() or done.returncode}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)
        point.rmdir()


def _copy_store(store: JitStore, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(store.root), str(dest / ".jit")], check=True)
    return dest / ".jit"


def test_a_full_disk_is_one_line_and_leaves_no_temp_file(world: tuple[JitStore, list[str]]) -> None:
    store, (high, _) = world
    with mounted("-t", "tmpfs", "-o", "size=64k", "tmpfs") as disk:
        root = _copy_store(store, disk)
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        before = tree(root)
        line = one_line(once(root, command="touch ran"), 3, f"{high}.json", "No space left on device")
        assert "Traceback" not in line
        assert changed(before, tree(root)) == set(), "no temp file, no torn event, the issue as it was"
        assert not list(root.rglob("*.tmp"))


def test_a_read_only_store_is_one_line(world: tuple[JitStore, list[str]]) -> None:
    store, (_high, _) = world
    before = tree(store.root)
    with mounted("--bind", str(store.root)) as ro:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        listed = run_cli("ready", "--jit-dir", str(ro))
        assert (listed.returncode, listed.stderr) == (0, ""), "reading needs no write access"
        one_line(once(ro, command="touch ran"), 3, str(ro), "Read-only file system")
    assert changed(before, tree(store.root)) == set()


def _drop_file_override() -> None:
    """In the child before exec: root without CAP_DAC_OVERRIDE obeys file modes like anyone."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            os._exit(99)


def test_permission_denied_is_one_line(world: tuple[JitStore, list[str]]) -> None:
    """The store belongs to another user: readable, not writable (root runs without its override)."""
    store, _ = world
    if os.geteuid() == 0:
        for path in [store.root, *store.root.rglob("*")]:
            os.chown(path, 65534, 65534, follow_symlinks=False)
        preexec = _drop_file_override
    else:
        for path in [store.root, *store.root.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        preexec = None
    before = tree(store.root)
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--agent", "w1", "--command", "true"]
    proc = subprocess.run(
        [*argv, "--jit-dir", str(store.root)], env=clean_env(), preexec_fn=preexec, capture_output=True, text=True
    )
    assert proc.returncode != 99, "could not drop CAP_DAC_OVERRIDE"
    one_line(CliRun(proc.returncode, proc.stdout, proc.stderr), 3, ".index.lock", "Permission denied")
    assert changed(before, tree(store.root)) == set()


def test_an_unreadable_issues_directory_is_one_line_not_one_per_file(world: tuple[JitStore, list[str]]) -> None:
    store, _ = world
    if os.geteuid() != 0:
        pytest.skip("needs root to run the dispatcher as another user")
    os.chown(store.issues_dir, 65534, 65534)
    store.issues_dir.chmod(0o700)
    argv = [sys.executable, "-m", "jit_dispatch", "status", "--jit-dir", str(store.root)]
    proc = subprocess.run(argv, env=clean_env(), preexec_fn=_drop_file_override, capture_output=True, text=True)
    one_line(CliRun(proc.returncode, proc.stdout, proc.stderr), 3, str(store.issues_dir), "Permission denied")


def test_an_io_error_mid_event_leaves_no_torn_line_and_undoes_the_claim(
    world: tuple[JitStore, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In process: EIO after half an event line has reached the file (simulated at os.write)."""
    from jit_dispatch.cli.main import main
    from jit_dispatch.trackers.jit import files

    store, (_high, _) = world
    before = tree(store.root)
    real_write = os.write

    def failing_write(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("events.jsonl"):
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", failing_write)
    with pytest.raises(SystemExit) as ended:
        main(["once", "--agent", "w1", "--command", "touch ran", "--jit-dir", str(store.root)])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert ended.value.code == 3
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "events.jsonl" in err and "Input/output error" in err and "put back" in err
    assert changed(before, tree(store.root)) == set()
    assert read_events(store.root) == [json.loads(line) for line in before["events.jsonl"].splitlines()]


def test_a_store_turned_read_only_while_the_command_runs_says_the_issue_stays_claimed(
    world: tuple[JitStore, list[str]],
) -> None:
    store, (high, _) = world
    with mounted("--bind", str(store.root)) as view:
        result = once(view, command=f"mount -o remount,bind,ro {view}")
        if result.returncode == 0:
            pytest.skip("cannot remount read-only")
        one_line(result, 3, "settling failed", "Read-only file system", f"{high[:8]} stays claimed")
    claimed = read_issue(store.root, high)
    assert (claimed["state"], claimed["assignee"]) == ("in_progress", "agent:w1")
    assert not list(store.root.rglob("*.tmp"))


# --------------------------------------------------------------------------- 5. long text
def test_a_title_over_the_kernel_limit_is_capped_in_the_environment_and_the_log(
    new_store: StoreFactory, tmp_path: Path
) -> None:
    title = "T" * 50 + "é" * 100_000  # 200 KB of UTF-8: over MAX_ARG_STRLEN (128 KiB)
    store, (issue_id,) = new_store(NewIssue(title))
    command = 'printf %s "$JIT_ISSUE_TITLE" > env-title; cp "$JIT_ISSUE_FILE" issue.json'
    result = run_cli("once", "--agent", "w1", "--command", command, "--jit-dir", str(store.root), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, ""), result.stdout[-500:]
    seen = (tmp_path / "env-title").read_bytes()
    assert len(seen) <= 32 * 1024 and seen.endswith(b"the full value is in $JIT_ISSUE_FILE]")
    assert title.startswith(seen.decode().split(" [")[0]), "the head of the title, cut between characters"
    assert json.loads((tmp_path / "issue.json").read_text())["title"] == title
    assert max(len(line) for line in result.stdout.splitlines()) < 400, "no log line carries the whole title"
    assert read_issue(store.root, issue_id)["state"] == "done"


def test_a_command_that_cannot_start_says_why(new_store: StoreFactory, tmp_path: Path) -> None:
    store, (issue_id,) = new_store(NewIssue("fine"))
    config = tmp_path / "dispatch.toml"
    config.write_text(f'[[agents]]\nid = "w1"\ncommand = "true {"x" * 200_000}"\n')
    before = tree(tmp_path)
    result = run_cli("once", "--config", str(config), "--jit-dir", str(store.root), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, ""), "released: the summary says why, no error line"
    assert "command could not start: argument list too long" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) < 400, "the command is not echoed whole"
    released = read_issue(store.root, issue_id)
    assert (released["state"], released["context"]["dispatch.last_reason"]) == (
        "ready",
        "command could not start: argument list too long",
    )
    assert changed(before, tree(tmp_path)) == {f"repo/.jit/issues/{issue_id}.json", "repo/.jit/events.jsonl"}
