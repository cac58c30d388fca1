"""Remote mode puts the state branch's `.jit/` into the workspace while the command runs, so the
agent's own `jit` calls see the real state, and leaves the checkout's `.jit/` as it found it
(docs/delivery.md#when-the-agent-writes-jit-itself). Real git, a bare remote, the real newest jit
as the agent's tool, both jit eras reading the state branch afterwards."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from delivery_runs import assert_jit_sees
from helpers import GIT_IDENTITY, Remote, clean_env, git, make_remote, read_issue, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from real_jit import jit_binary

STATE = "jit-state"


def _state_branch_ahead(remote: Remote, tmp_path: Path) -> str:
    """`jit-state` made from main, then moved on: its issue renamed (main's `.jit/` keeps the old title)."""
    from jit_dispatch.trackers.jit.files import dumps_pretty, ordered_issue

    seed = tmp_path / "state-seed"
    subprocess.run(["git", "clone", "-q", remote.url, str(seed)], check=True, capture_output=True)
    git(seed, "checkout", "-q", "-b", STATE)
    path = seed / ".jit" / "issues" / f"{remote.ids[0]}.json"
    raw = json.loads(path.read_text())
    raw["title"] = "renamed on the state branch"
    path.write_text(dumps_pretty(ordered_issue(raw)))
    git(seed, "commit", "-q", "-am", "state moved on")
    git(seed, "push", "-q", "origin", STATE)
    return remote.ids[0]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def _state_view(remote: Remote, tmp_path: Path) -> Path:
    view = tmp_path / "state-view"
    subprocess.run(["git", "clone", "-q", "-b", STATE, remote.url, str(view)], check=True, capture_output=True)
    return view


def test_the_agents_jit_reads_the_state_branch_and_the_checkout_is_left_as_found(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    remote = make_remote(tmp_path, [NewIssue("on main too")])
    only = _state_branch_ahead(remote, tmp_path)
    work = tmp_path / "work"  # the code branch (main) checked out: its .jit/ lacks the state's issue
    subprocess.run(["git", "clone", "-q", remote.url, str(work)], check=True, capture_output=True)
    before = _tree_digest(work / ".jit")
    shown = tmp_path / "shown.json"
    command = (  # the agent reads its issue, then files a follow-up subtask that waits for it
        f'"$AGENT_JIT" issue show "$JIT_ISSUE_ID" --json > {shown} && '
        'sub=$("$AGENT_JIT" issue create "subtask of $JIT_ISSUE_SHORT_ID" -q) && '
        '"$AGENT_JIT" dep add "$sub" "$JIT_ISSUE_ID" > /dev/null'
    )
    env = clean_env(**GIT_IDENTITY, AGENT_JIT=str(binary))
    run = run_cli(
        "once", "--agent", "agent:bot", "--command", command, "--sync", "git", "--state-branch", STATE, "--json",
        cwd=work, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["issue_id"] == only and result["outcome"] == "done", run.stdout
    assert result["warnings"] == [], result["warnings"]

    data = json.loads(shown.read_text())
    data = data.get("data", data)
    assert data["id"] == only and data["state"] == "in_progress" and data["assignee"] == "agent:bot", data
    assert data["title"] == "renamed on the state branch"

    assert _tree_digest(work / ".jit") == before  # the checkout's own .jit/, as it was
    assert git(work, "status", "--porcelain") == ""
    assert read_issue(work / ".jit", only)["state"] == "ready" and len(list((work / ".jit" / "issues").iterdir())) == 1

    view = _state_view(remote, tmp_path)
    assert read_issue(view / ".jit", only)["state"] == "done"
    titles = {
        json.loads(p.read_text())["title"]: json.loads(p.read_text()) for p in (view / ".jit" / "issues").glob("*.json")
    }
    assert f"subtask of {only[:8]}" in titles, sorted(titles)
    sub = titles[f"subtask of {only[:8]}"]
    assert sub["dependencies"] == [only] and sub["state"] == "ready", sub  # promoted by the settle, as jit would
    events = [json.loads(line) for line in (view / ".jit" / "events.jsonl").read_text().splitlines()]
    assert any(e.get("type") == "issue_created" and e.get("issue_id") == sub["id"] for e in events), events[-5:]
    assert_jit_sees(view, available={sub["id"]}, states={only: "done", sub["id"]: "ready"})


def test_a_workspace_without_jit_gets_none_back(tmp_path: Path) -> None:
    """A code branch without `.jit/` at all: the agent sees the state, and none is left behind."""
    remote = make_remote(tmp_path, [NewIssue("x")])
    _state_branch_ahead(remote, tmp_path)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", remote.url, str(work)], check=True, capture_output=True)
    git(work, "rm", "-q", "-r", ".jit")
    git(work, "commit", "-q", "-m", "code only")
    seen = tmp_path / "seen.txt"
    command = f'ls .jit/issues > {seen}; test -f ".jit/issues/$JIT_ISSUE_ID.json"'
    run = run_cli(
        "once", "--agent", "bot", "--command", command, "--sync", "git", "--state-branch", STATE, "--json",
        cwd=work, env=clean_env(**GIT_IDENTITY), timeout=120,
    )  # fmt: skip
    assert run.returncode == 0 and json.loads(run.stdout)["outcome"] == "done", run.stdout + run.stderr
    assert seen.read_text().split() == [f"{remote.ids[0]}.json"]
    assert not (work / ".jit").exists()
    assert git(work, "status", "--porcelain") == ""


def test_the_settle_wins_its_own_fields_and_keeps_the_agents_other_edits(tmp_path: Path) -> None:
    """The agent labels its issue, assigns it to someone else and fails: the release is the
    settle's (ready, unassigned, an attempt counted); the label is the agent's, kept."""
    binary = jit_binary("newest")
    remote = make_remote(tmp_path, [NewIssue("labelled")])
    only = _state_branch_ahead(remote, tmp_path)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", remote.url, str(work)], check=True, capture_output=True)
    command = '"$AGENT_JIT" issue update "$JIT_ISSUE_ID" --label "component:agent" --assignee "agent:other" -q; exit 1'
    run = run_cli(
        "once", "--agent", "agent:bot", "--command", command, "--sync", "git", "--state-branch", STATE, "--json",
        cwd=work, env=clean_env(**GIT_IDENTITY, AGENT_JIT=str(binary)), timeout=120,
    )  # fmt: skip
    result = json.loads(run.stdout)
    assert result["outcome"] == "released", run.stdout + run.stderr
    view = _state_view(remote, tmp_path)
    stored = read_issue(view / ".jit", only)
    assert stored["state"] == "ready" and stored["assignee"] is None, stored
    assert "component:agent" in stored["labels"] and stored["title"] == "renamed on the state branch", stored
    assert stored["context"]["dispatch.attempts"] == "1", stored["context"]
    assert read_issue(work / ".jit", only)["labels"] == []  # the checkout's copy, as it was
    assert_jit_sees(view, available={only}, states={only: "ready"})


def test_the_fold_merges_the_agents_writes_with_what_others_folded_meanwhile(tmp_path: Path) -> None:
    """carried.apply on a real store: another runner claimed issue B after the copy was made, the
    agent labelled B and created C; B keeps the claim and gets the label, C and its id and event
    arrive, the agent's rewritten events.jsonl adds only its new lines; `undo` puts all back."""
    from jit_dispatch.domain.selection import Filters
    from jit_dispatch.trackers.jit.files import dumps_pretty, ordered_issue
    from jit_dispatch.trackers.jit.store import JitStore
    from jit_dispatch.trackers.remote import carried

    store = JitStore.init(tmp_path / "state" / ".jit")
    a, b = store.create_issues([NewIssue("a"), NewIssue("b")])
    copy = {p: (store.root / p).read_bytes() for p in ("index.json", "events.jsonl", f"issues/{b}.json")}
    store.claim(b, "agent:other", "run", Filters(issue_id=b))  # folded by another runner meanwhile
    agent = tmp_path / "agent" / ".jit"  # the agent's copy: B labelled, C created
    JitStore.init(agent)
    for path, data in copy.items():
        (agent / path).parent.mkdir(parents=True, exist_ok=True)
        (agent / path).write_bytes(data)
    labelled = {**json.loads(copy[f"issues/{b}.json"]), "labels": ["component:agent"]}
    (agent / "issues" / f"{b}.json").write_text(dumps_pretty(ordered_issue(labelled)))
    (c,) = JitStore(agent).create_issues([NewIssue("c")])
    events = (agent / "events.jsonl").read_bytes()
    (agent / "events.jsonl").write_bytes(b"\n".join(reversed(events.splitlines())) + b"\n")  # rewritten
    after = {p: (agent / p).read_bytes() for p in (*copy, f"issues/{c}.json")}
    before_apply = {p: (store.root / p).read_bytes() for p in copy}

    undo = carried.apply(store, a, carried.read_writes(copy, after, sorted(after)))
    stored = read_issue(store.root, b)
    assert (stored["state"], stored["assignee"]) == ("in_progress", "agent:other")  # the other runner's claim
    assert stored["labels"] == ["component:agent"]  # and the agent's label
    assert read_issue(store.root, c)["title"] == "c"
    assert json.loads((store.root / "index.json").read_text())["all_ids"] == [a, b, c]
    lines = (store.root / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(before_apply["events.jsonl"].splitlines()) + 1 and json.loads(lines[-1])["issue_id"] == c
    carried.undo(store, undo)
    assert {p: (store.root / p).read_bytes() for p in copy} == before_apply
    assert not (store.root / "issues" / f"{c}.json").exists()
