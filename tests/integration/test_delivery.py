"""`--deliver branch` with real git, bare remotes, real merges and real `once` processes; both real
jit eras read the store at every step (docs/delivery.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from delivery_runs import assert_jit_sees, merge, once, remote_state, work_branches
from helpers import Remote, clean_env, git, make_remote, read_issue, run_cli
from jit_dispatch.trackers.jit.store import NewIssue

# The first issue's agent writes a.txt (and commits part of its work); the second needs a.txt.
CHAIN_COMMAND = (
    'if [ "$JIT_ISSUE_TITLE" = first ]; then echo A > a.txt; mkdir -p lib; echo x > lib/x.py; '
    "git add lib && git commit -qm 'agent: lib'; "
    "else cat a.txt > b.txt; fi"
)


def _chain(tmp_path: Path) -> tuple[Remote, str, str]:
    remote = make_remote(tmp_path, [NewIssue("first")])
    first = remote.ids[0]
    seed = tmp_path / "seed"
    from jit_dispatch.trackers.jit.store import JitStore

    (second,) = JitStore(seed / ".jit").create_issues([NewIssue("second", dependencies=(first,))])
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "second")
    git(seed, "push", "-q", str(remote.bare), "main")
    return remote, first, second


def _clone(remote: Remote, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", remote.url, str(dest)], check=True, capture_output=True)
    return dest


def _branch_files(remote: Remote, branch: str) -> set[str]:
    return set(git(remote.bare, "ls-tree", "-r", "--name-only", branch).split())


@pytest.mark.parametrize("how", ["merge", "squash", "rebase", "hand"])
def test_local_chain_waits_for_the_merge_however_it_is_made(tmp_path: Path, how: str) -> None:
    remote, first, second = _chain(tmp_path)
    work = _clone(remote, tmp_path / "work")
    store = work / ".jit"
    main_before = git(remote.bare, "rev-parse", "main").strip()

    run = once(work, CHAIN_COMMAND)
    assert run.returncode == 0, run.stderr
    assert run.json["outcome"] == "in-review" and run.json["issue_id"] == first
    branch = run.json["branch"]
    assert branch.startswith(f"jit/{first[:8]}-first")
    assert set(work_branches(remote)) == {branch}
    files = _branch_files(remote, branch)
    assert {"a.txt", "lib/x.py"} <= files
    issue = read_issue(store, first)
    assert issue["state"] == "gated" and issue["context"]["dispatch.branch"] == branch
    assert issue["context"]["dispatch.base"] == "main"
    # .jit/ never on the work branch: its store is exactly main's, claim and all left out
    assert git(remote.bare, "rev-parse", f"{branch}:.jit") == git(remote.bare, "rev-parse", "main:.jit")
    for sha in git(remote.bare, "rev-list", branch, f"^{main_before}").split():
        assert f"Jit-Issue: {first}" in git(remote.bare, "log", "-1", "--format=%B", sha)
    assert git(remote.bare, "rev-parse", "main").strip() == main_before  # nothing pushed to the base
    assert_jit_sees(work, available=set(), states={first: "gated", second: "backlog"})

    idle = once(work, CHAIN_COMMAND)  # the dependent is NOT dispatched: its prerequisite is unmerged
    assert idle.returncode == 0 and idle.json["outcome"] == "idle", idle.stdout
    memo = json.loads((work / ".git" / "jit-dispatch-merge-watch.json").read_text())
    assert memo["main"]["unmerged"] == [first]  # looked at this tip: the next look skips the log until main moves
    again = once(work, CHAIN_COMMAND)
    assert again.json["outcome"] == "idle" and again.json["merged"] == [], again.stdout

    merge(remote, tmp_path, branch, how)
    # The workspace catches up with main as a person would (the state in .jit/ stays uncommitted):
    # the agent's own commit and its leftovers give way to what was merged.
    (work / "a.txt").unlink()
    git(work, "fetch", "-q", "origin")
    git(work, "reset", "-q", "--keep", "origin/main")
    assert (work / "a.txt").read_text() == "A\n"

    run = once(work, CHAIN_COMMAND)
    assert run.returncode == 0, run.stderr
    assert any(f"{first[:8]} done" in w for w in run.json["merged"]), run.json["merged"]
    assert run.json["warnings"] == [], run.json["warnings"]
    assert run.json["issue_id"] == second and run.json["outcome"] == "in-review", run.stdout
    assert read_issue(store, first)["state"] == "done"
    assert "b.txt" in _branch_files(remote, run.json["branch"])  # its command saw the merged a.txt
    events = [json.loads(line) for line in (store / "events.jsonl").read_text().splitlines()]
    kinds = [(e["type"], e.get("to")) for e in events if e["issue_id"] == first]
    assert kinds[-2:] == [("issue_state_changed", "done"), ("issue_completed", None)]
    assert ("issue_state_changed", "ready") in [(e["type"], e.get("to")) for e in events if e["issue_id"] == second]
    assert_jit_sees(work, available=set(), states={first: "done", second: "gated"})


def test_remote_mode_chain_over_git_daemon(tmp_path: Path, daemon: str) -> None:
    """Remote mode, every run in a fresh clone over git://: the state on main, the work on jit/…"""
    remote, first, second = _chain(tmp_path)
    url = f"{daemon}/remote.git"

    def fresh(name: str) -> Path:
        dest = tmp_path / name
        subprocess.run(["git", "clone", "-q", url, str(dest)], check=True, capture_output=True)
        return dest

    run = once(fresh("run1"), CHAIN_COMMAND, remote_mode=True)
    assert run.returncode == 0, run.stderr
    assert run.json["outcome"] == "in-review", run.stdout
    branch = run.json["branch"]
    state = remote_state(remote, tmp_path)
    assert read_issue(state / ".jit", first)["state"] == "gated"
    assert_jit_sees(state, available=set(), states={first: "gated", second: "backlog"})
    assert git(remote.bare, "rev-parse", f"{branch}:.jit") != git(remote.bare, "rev-parse", "main:.jit")

    assert once(fresh("run2"), CHAIN_COMMAND, remote_mode=True).json["outcome"] == "idle"

    merge(remote, tmp_path, branch, "squash")
    run = once(fresh("run3"), CHAIN_COMMAND, remote_mode=True)
    assert run.returncode == 0, run.stderr
    assert run.json["issue_id"] == second and run.json["outcome"] == "in-review", run.stdout
    state = remote_state(remote, tmp_path)
    assert read_issue(state / ".jit", first)["state"] == "done"
    assert "b.txt" in _branch_files(remote, run.json["branch"])
    assert_jit_sees(state, available=set(), states={first: "done", second: "gated"})


def test_done_on_success_completes_at_once_and_still_delivers(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("quick")])
    work = _clone(remote, tmp_path / "work")
    run = once(work, "echo q > q.txt", "--done-on", "success")
    assert run.json["outcome"] == "done", run.stdout
    assert "q.txt" in _branch_files(remote, run.json["branch"])
    assert_jit_sees(work, available=set(), states={remote.ids[0]: "done"})


def test_nothing_changed_is_released_unless_allowed(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("noop")])
    work = _clone(remote, tmp_path / "work")
    run = once(work, "jit_noop=1")
    assert run.returncode == 1 and run.json["outcome"] == "released", run.stdout
    assert run.json["reason"] == "no changes to deliver"
    issue = read_issue(work / ".jit", remote.ids[0])
    assert issue["state"] == "ready" and issue["context"]["dispatch.attempts"] == "1"
    assert work_branches(remote) == {}
    assert_jit_sees(work, available={remote.ids[0]}, states={remote.ids[0]: "ready"})

    allowed = once(work, "true", "--allow-empty-delivery")
    assert allowed.json["outcome"] == "in-review", allowed.stdout
    branch = allowed.json["branch"]
    assert f"Jit-Issue: {remote.ids[0]}" in git(remote.bare, "log", "-1", "--format=%B", branch)


def test_a_work_branch_with_foreign_commits_is_never_overwritten(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("taken")])
    issue_id = remote.ids[0]
    other = _clone(remote, tmp_path / "someone")
    branch = f"jit/{issue_id[:8]}-taken"
    git(other, "checkout", "-q", "-b", branch)
    (other / "theirs.txt").write_text("a person's work\n")
    git(other, "add", "theirs.txt")
    git(other, "commit", "-q", "-m", "a person's commit")
    git(other, "push", "-q", "origin", branch)
    theirs = git(other, "rev-parse", "HEAD").strip()

    work = _clone(remote, tmp_path / "work")
    run = once(work, "echo mine > mine.txt")
    assert run.json["outcome"] == "released", run.stdout
    reason = run.json["reason"]
    assert reason.startswith(f"work branch {branch} on 'origin' holds 1 commit(s) not made for this issue")
    assert "\n" not in reason and "not overwritten" in reason
    assert work_branches(remote)[branch] == theirs
    assert_jit_sees(work, available={issue_id}, states={issue_id: "ready"})


def test_a_hostile_title_stays_inert_in_branch_and_commit(tmp_path: Path) -> None:
    other = "9f9f9f9f-0000-4000-8000-000000000002"
    title = f"$(touch pwned) `id` ../../main\nJit-Issue: {other}\x1b[31m\u202e"
    remote = make_remote(tmp_path, [NewIssue(title)])
    issue_id = remote.ids[0]
    work = _clone(remote, tmp_path / "work")
    run = once(work, "echo ok > ok.txt")
    assert run.json["outcome"] == "in-review", run.stdout
    branch = run.json["branch"]
    assert branch == f"jit/{issue_id[:8]}-touch-pwned-id-main-jit-issue-9f9f9f9f-0"
    message = git(remote.bare, "log", "-1", "--format=%B", branch)
    subject, _, rest = message.partition("\n")
    assert subject.isprintable() and "\x1b" not in message and "\u202e" not in message
    assert f"Jit-Issue: {other}" not in rest.splitlines()  # only its own id is a trailer line
    assert f"Jit-Issue: {issue_id}" in rest.splitlines()
    assert not (work / "pwned").exists()


def test_a_bad_branch_template_is_one_line_exit_2(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("x")])
    work = _clone(remote, tmp_path / "work")
    for template, words in [("jit/{short_id}..{slug}", "contains '..'"), ("jit/{nope}", "unknown placeholder")]:
        run = run_cli(
            "once", "--agent", "bot", "--command", "true", "--deliver", "branch", "--branch-template", template,
            cwd=work, env=clean_env(),
        )  # fmt: skip
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("jit-dispatch: error: --branch-template:") and words in lines[0]
    assert read_issue(work / ".jit", remote.ids[0])["state"] == "ready"


def test_a_bad_template_in_dispatch_toml_names_the_key(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("x")])
    work = _clone(remote, tmp_path / "work")
    (work / "dispatch.toml").write_text('deliver = "branch"\nbranch_template = "jit/{slug}"\n')
    run = run_cli("once", "--agent", "bot", "--command", "true", cwd=work, env=clean_env())
    assert run.returncode == 2
    assert "branch_template" in run.stderr and "{short_id}" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("who", ["status --repair", "reap", "start --once"])
def test_reap_status_repair_and_the_pool_notice_merges_too(tmp_path: Path, who: str) -> None:
    remote, first, second = _chain(tmp_path)
    work = _clone(remote, tmp_path / "work")
    run = once(work, CHAIN_COMMAND)
    assert run.json["outcome"] == "in-review", run.stdout
    merge(remote, tmp_path, run.json["branch"], "hand")
    if who == "start --once":  # the pool: its cycle finishes the merge, then dispatches the dependent
        (work / "a.txt").unlink()
        git(work, "fetch", "-q", "origin")
        git(work, "reset", "-q", "--keep", "origin/main")
        (work / "dispatch.toml").write_text(
            f'deliver = "branch"\n[[agents]]\nid = "pool"\ncommand = """{CHAIN_COMMAND}"""\n'
        )
        args = ["start", "--once"]
    else:
        args = [*who.split(), "--older-than", "1h"] if who == "reap" else who.split()
    done = run_cli(*args, cwd=work, env=clean_env(**__import__("helpers").GIT_IDENTITY), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_issue(work / ".jit", first)["state"] == "done"
    expected_second = "gated" if who == "start --once" else "ready"
    assert read_issue(work / ".jit", second)["state"] == expected_second, done.stdout + done.stderr
    assert_jit_sees(
        work,
        available={second} if expected_second == "ready" else set(),
        states={first: "done", second: expected_second},
    )


def test_protected_main_state_on_a_branch_of_its_own_started_on_first_use(tmp_path: Path) -> None:
    """main refuses every push (protected); the state goes to jit-state, created from main's .jit/,
    the code to jit/… work branches; a merge by hand reaches main and the next run finishes it."""
    remote, first, second = _chain(tmp_path)
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text('#!/bin/sh\nwhile read old new ref; do [ "$ref" = refs/heads/main ] && '
                    '{ echo "protected branch: main" >&2; exit 1; }; done; exit 0\n')  # fmt: skip
    hook.chmod(0o755)
    main_before = git(remote.bare, "rev-parse", "main").strip()
    extra = ("--state-branch", "jit-state")

    run = once(_clone(remote, tmp_path / "run1"), CHAIN_COMMAND, *extra, remote_mode=True)
    assert run.returncode == 0 and run.json["outcome"] == "in-review", run.stdout + run.stderr
    assert "created state branch 'jit-state' on 'origin' from main's .jit/" in run.stderr
    state_files = git(remote.bare, "ls-tree", "-r", "--name-only", "jit-state").split()
    assert state_files and all(name.startswith(".jit/") for name in state_files)
    assert git(remote.bare, "rev-parse", "main").strip() == main_before
    again = once(_clone(remote, tmp_path / "run2"), CHAIN_COMMAND, *extra, remote_mode=True)
    assert "created state branch" not in again.stderr and again.json["outcome"] == "idle", again.stdout

    hook.unlink()  # a person merges (their push to main is allowed)
    merge(remote, tmp_path, run.json["branch"], "hand")
    run = once(_clone(remote, tmp_path / "run3"), CHAIN_COMMAND, *extra, remote_mode=True)
    assert run.json["issue_id"] == second and run.json["outcome"] == "in-review", run.stdout + run.stderr
    view = tmp_path / "state-view"
    subprocess.run(["git", "clone", "-q", "-b", "jit-state", remote.url, str(view)], check=True, capture_output=True)
    assert read_issue(view / ".jit", first)["state"] == "done"
    assert_jit_sees(view, available=set(), states={first: "done", second: "gated"})


def test_make_demo_shows_a_delivery_turning_done_on_the_merge() -> None:
    """`make demo` (its module, as a process): the delivery part ends with the dependent ready."""
    proc = subprocess.run(
        [__import__("sys").executable, "-m", "jit_dispatch.demo"], capture_output=True, text=True, timeout=300,
        env=clean_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "jit-dispatch: in-review" in out and "delivered: jit/" in out
    assert "Jit-Issue: " in out
    waiting, _, after = out.partition("(a person merges")
    listed_before = waiting.rsplit("$ jit-dispatch ready", 1)[1].split("\n", 1)[1]  # the listing, not the comment
    listed_after = after.rsplit("$ jit-dispatch ready", 1)[1].split("\n", 1)[1]
    assert "Document the registry" not in listed_before
    assert "critical  Document the registry" in listed_after
    assert " done: jit/" in proc.stderr + out


def test_a_claim_taken_away_during_the_command_pushes_nothing(tmp_path: Path) -> None:
    """The push is fenced like a settle: a person released the issue while the agent worked."""
    remote = make_remote(tmp_path, [NewIssue("contested")])
    work = _clone(remote, tmp_path / "work")
    release = f"{__import__('sys').executable} -m jit_dispatch release {remote.ids[0][:8]} 'taken back by a person'"
    run = once(work, f"echo late > late.txt; {release} >/dev/null")
    assert run.json["outcome"] == "lost", run.stdout
    assert work_branches(remote) == {}
    issue = read_issue(work / ".jit", remote.ids[0])
    assert issue["state"] == "ready" and "dispatch.branch" not in issue["context"]


def _hook(remote: Remote, body: str) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n" + body)
    hook.chmod(0o755)


def test_a_refused_workflow_change_is_named_in_one_line(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("ci tweak")])
    _hook(  # what GitHub answers a token without the `workflows` permission
        remote,
        "echo 'refusing to allow a GitHub App to create or update workflow `.github/workflows/ci.yml` "
        "without `workflows` permission' >&2; exit 1\n",
    )
    work = _clone(remote, tmp_path / "work")
    run = once(work, "mkdir -p .github/workflows && echo x > .github/workflows/ci.yml")
    assert run.json["outcome"] == "released", run.stdout
    reason = run.json["reason"]
    assert "\n" not in reason and "lacks the `workflows` permission" in reason and ".github/workflows/" in reason


def test_a_rejected_push_is_retried_within_the_push_budget(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("flaky server")])
    count = tmp_path / "pushes"
    _hook(remote, f'n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}\n'
                  f'[ "$n" -lt 2 ] && {{ echo "server busy, try again" >&2; exit 1; }}; exit 0\n')  # fmt: skip
    work = _clone(remote, tmp_path / "work")
    run = once(work, "echo ok > ok.txt")
    assert run.json["outcome"] == "in-review", run.stdout
    assert count.read_text().strip() == "3"
    assert "ok.txt" in _branch_files(remote, run.json["branch"])


def test_the_agents_own_jit_writes_stay_in_the_store_never_on_the_branch(tmp_path: Path) -> None:
    from real_jit import jit_binary

    binary = jit_binary("newest")
    remote = make_remote(tmp_path, [NewIssue("split me")])
    work = _clone(remote, tmp_path / "work")
    split = (  # a subtask the issue now depends on (connected: the seed era refuses isolated issues)
        f"sub=$({binary} issue create -t 'a subtask the agent found' | grep -o '[0-9a-f-]\\{{36\\}}' | head -1) && "
        f'{binary} dep add "$JIT_ISSUE_ID" "$sub" >/dev/null && echo w > w.txt'
    )
    run = once(work, split)
    assert run.json["outcome"] == "in-review", run.stdout + run.stderr
    titles = [json.loads(p.read_text())["title"] for p in (work / ".jit" / "issues").glob("*.json")]
    assert "a subtask the agent found" in titles
    branch = run.json["branch"]
    assert git(remote.bare, "rev-parse", f"{branch}:.jit") == git(remote.bare, "rev-parse", "main:.jit")
    assert_jit_sees(work, available={i for i in json.loads((work / ".jit" / "index.json").read_text())["all_ids"]
                                     if i != remote.ids[0]}, states={remote.ids[0]: "gated"})  # fmt: skip


def test_the_next_attempt_reads_the_failed_gate_in_its_feedback_file(tmp_path: Path) -> None:
    from jit_dispatch.demo import TESTS_GATE

    remote = make_remote(tmp_path, [NewIssue("gated work", gates_required=("tests",))])
    work = _clone(remote, tmp_path / "work")
    (work / ".jit" / "gates.json").write_text(json.dumps({"gates": {"tests": TESTS_GATE}}, indent=2))
    out = tmp_path / "feedback.json"
    command = (
        f'if [ -n "$JIT_DISPATCH_FEEDBACK_FILE" ]; then cp "$JIT_DISPATCH_FEEDBACK_FILE" {out}; touch tests-pass; fi; '
        "echo x > x.txt"
    )
    first = once(work, command)
    assert first.json["outcome"] == "released" and first.json["failed_gate"] == "tests", first.stdout
    second = once(work, command)
    assert second.json["outcome"] == "in-review", second.stdout
    feedback = json.loads(out.read_text())
    assert feedback["failed_gate"] == "tests" and "test_plugin_api FAILED" in feedback["gate_output_tail"]
    assert feedback["reason"] == first.json["reason"]
    assert "tests-pass" in _branch_files(remote, second.json["branch"])


@pytest.mark.parametrize("era", ["seed", "newest"])
def test_jit_gate_pass_cannot_complete_a_waiting_issue_by_accident(tmp_path: Path, era: str) -> None:
    """A person passing a gate the issue does not require: both eras refuse, the issue keeps waiting."""
    from real_jit import jit, jit_binary

    binary = jit_binary(era)
    remote = make_remote(tmp_path, [NewIssue("waits")])
    work = _clone(remote, tmp_path / "work")
    review = {"key": "review", "title": "Review", "description": "a person's review", "stage": "postcheck",
              "mode": "manual", "version": 1, "checker": None, "priority": 100, "reserved": {}, "auto": False,
              "example_integration": None}  # fmt: skip
    (work / ".jit" / "gates.json").write_text(json.dumps({"gates": {"review": review}}, indent=2))
    run = once(work, "echo w > w.txt")
    assert run.json["outcome"] == "in-review", run.stdout
    passed = jit(binary, work, "gate", "pass", remote.ids[0], "review")
    assert "not required" in (passed.stdout + passed.stderr), passed.stdout + passed.stderr
    assert read_issue(work / ".jit", remote.ids[0])["state"] == "gated"
    assert_jit_sees(work, available=set(), states={remote.ids[0]: "gated"})


def test_delivering_from_no_repository_or_remote_is_exit_2_before_any_claim(tmp_path: Path) -> None:
    from jit_dispatch.trackers.jit.store import JitStore

    plain = tmp_path / "plain"
    (issue,) = JitStore.init(plain / ".jit").create_issues([NewIssue("x")])
    run = run_cli("once", "--agent", "bot", "--command", "true", "--deliver", "branch", cwd=plain, env=clean_env())
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "--deliver:" in run.stderr and "not inside a git repository" in run.stderr
    assert read_issue(plain / ".jit", issue)["state"] == "ready"
    subprocess.run(["git", "init", "-q", str(plain)], check=True)
    run = run_cli("once", "--agent", "bot", "--command", "true", "--deliver", "branch", cwd=plain, env=clean_env())
    assert run.returncode == 2 and "remote 'origin' is not configured" in run.stderr, run.stderr
    assert read_issue(plain / ".jit", issue)["state"] == "ready"


@pytest.mark.parametrize("aimed", ["main", "release"])
def test_a_context_naming_another_branch_as_work_branch_never_aims_the_push_there(tmp_path: Path, aimed: str) -> None:
    """`dispatch.branch` is data (another issue's agent can write the store in local mode): naming the
    base, or any branch that is not this issue's (every work branch name holds its id), it must not
    make the run continue that branch and fast-forward it with unreviewed work."""
    from jit_dispatch.trackers.jit.files import dumps_pretty, ordered_issue

    remote = make_remote(tmp_path, [NewIssue("aimed at main")])
    subprocess.run(["git", "-C", str(remote.bare), "branch", "release", "main"], check=True)
    work = _clone(remote, tmp_path / "work")
    path = work / ".jit" / "issues" / f"{remote.ids[0]}.json"
    raw = json.loads(path.read_text())
    raw["context"]["dispatch.branch"] = aimed
    path.write_text(dumps_pretty(ordered_issue(raw)))
    before = git(remote.bare, "rev-parse", aimed).strip()
    run = once(work, "echo w > w.txt")
    assert run.json["outcome"] == "in-review", run.stdout
    assert run.json["branch"].startswith(f"jit/{remote.ids[0][:8]}-")
    assert any(f"'{aimed}' is not a work branch" in w for w in run.json["warnings"]), run.json["warnings"]
    assert git(remote.bare, "rev-parse", aimed).strip() == before


def test_a_delivering_pool_agent_runs_one_issue_at_a_time(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("x")])
    work = _clone(remote, tmp_path / "work")
    (work / "dispatch.toml").write_text(
        'deliver = "branch"\n[[agents]]\nid = "a"\ncommand = "true"\nmax_concurrent = 2\n'
    )
    run = run_cli("start", "--once", cwd=work, env=clean_env())
    assert run.returncode == 2 and "deliver needs max_concurrent = 1" in run.stderr, run.stderr
    assert read_issue(work / ".jit", remote.ids[0])["state"] == "ready"


def test_remote_mode_says_when_the_agent_wrote_what_is_not_carried(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("notes")])
    clone = _clone(remote, tmp_path / "run")
    note = "echo note > .jit/agent-note.txt; echo w > w.txt"
    run = once(clone, note, "--state-branch", "jit-state", remote_mode=True)
    assert run.json["outcome"] == "in-review", run.stdout + run.stderr
    assert any("not carried to the state branch" in w for w in run.json["warnings"]), run.json["warnings"]
    assert ".jit/agent-note.txt" not in _branch_files(remote, run.json["branch"])
    assert ".jit/agent-note.txt" not in git(remote.bare, "ls-tree", "-r", "--name-only", "jit-state")
    assert not (clone / ".jit" / "agent-note.txt").exists()  # the workspace's .jit/ is back as it was
    quiet = make_remote(tmp_path / "quiet", [NewIssue("quiet")])
    run = once(_clone(quiet, tmp_path / "quiet-run"), "echo w > w.txt", "--state-branch", "jit-state", remote_mode=True)
    assert run.json["warnings"] == [], run.json["warnings"]


def _delivered(tmp_path: Path, title: str, command: str) -> tuple[Remote, str, Path, str]:
    """One issue delivered from a clone, waiting for its merge: (remote, its id, the clone, the branch)."""
    remote = make_remote(tmp_path, [NewIssue(title)])
    work = _clone(remote, tmp_path / "work")
    run = once(work, command)
    assert run.json["outcome"] == "in-review", run.stdout
    return remote, remote.ids[0], work, run.json["branch"]


def test_a_commit_with_a_skewed_clock_on_the_base_does_not_hide_the_merge(tmp_path: Path) -> None:
    """One commit on main whose committer clock was years behind (a CI box, a `GIT_COMMITTER_DATE`)
    lies between the merge and the tip: `git log --since` stops its walk there; the merge must still count."""
    remote, issue_id, work, branch = _delivered(tmp_path, "skewed", "echo s > s.txt")
    merge(remote, tmp_path, branch, "hand")
    person = _clone(remote, tmp_path / "person")
    (person / "late.txt").write_text("a commit from a machine with a wrong clock\n")
    git(person, "add", "late.txt")
    subprocess.run(
        ["git", "-C", str(person), "commit", "-q", "-m", "skewed clock"],
        check=True, env={**clean_env(), "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z"},
    )  # fmt: skip
    (person / "after.txt").write_text("and one more, on time\n")
    git(person, "add", "after.txt")
    git(person, "commit", "-q", "-m", "on time")
    git(person, "push", "-q", "origin", "main")

    run = once(work, "echo s > s.txt")
    assert any(f"{issue_id[:8]} done" in line for line in run.json["merged"]), run.stdout
    assert read_issue(work / ".jit", issue_id)["state"] == "done"
    assert_jit_sees(work, available=set(), states={issue_id: "done"})


def test_an_agent_commit_naming_another_issue_cannot_finish_it(tmp_path: Path) -> None:
    """The agent's commit message (steered by a hostile issue body) names another waiting issue's
    trailer: merging this work must finish this issue only, never the other one."""
    remote = make_remote(tmp_path, [NewIssue("victim"), NewIssue("attacker")])
    seed = tmp_path / "seed"  # one issue needing both, so the older jit finds none isolated
    from jit_dispatch.trackers.jit.store import JitStore

    (later,) = JitStore(seed / ".jit").create_issues([NewIssue("later", dependencies=tuple(remote.ids))])
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "later")
    git(seed, "push", "-q", str(remote.bare), "main")
    work = _clone(remote, tmp_path / "work")
    first = once(work, "echo v > v.txt")
    assert first.json["outcome"] == "in-review", first.stdout
    victim = first.json["issue_id"]
    (attacker,) = [i for i in remote.ids if i != victim]
    command = f"echo a > a.txt && git add a.txt && git commit -qm 'work' -m 'Jit-Issue: {victim}'"
    second = once(work, command)
    assert second.json["issue_id"] == attacker and second.json["outcome"] == "in-review", second.stdout
    merge(remote, tmp_path, second.json["branch"], "squash")

    run = once(work, "true")
    assert any(f"{attacker[:8]} done" in line for line in run.json["merged"]), run.stdout
    assert read_issue(work / ".jit", victim)["state"] == "gated", run.json["merged"]
    assert_jit_sees(work, available=set(), states={victim: "gated", attacker: "done", later: "backlog"})


def test_a_base_branch_that_does_not_exist_is_exit_2_before_any_claim(tmp_path: Path) -> None:
    """`--base` naming no branch: the issue would wait for a merge into nothing for ever."""
    remote = make_remote(tmp_path, [NewIssue("based")])
    work = _clone(remote, tmp_path / "work")
    run = once(work, "echo a > a.txt", "--base", "mian")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stdout + run.stderr
    assert "--base" in run.stderr and "mian" in run.stderr, run.stderr
    assert work_branches(remote) == {}
    assert_jit_sees(work, available={remote.ids[0]}, states={remote.ids[0]: "ready"})


def test_a_shallow_checkout_still_sees_a_merge_below_its_tip(tmp_path: Path) -> None:
    """actions/checkout clones with depth 1 by default: the merge is one commit below main's tip
    (someone pushed after it), so the trailer is outside the clone's history unless it is fetched."""
    remote, first, second = _chain(tmp_path)

    def shallow(name: str) -> Path:
        dest = tmp_path / name
        url = f"file://{remote.bare}"
        subprocess.run(["git", "clone", "-q", "--depth", "1", url, str(dest)], check=True, capture_output=True)
        return dest

    run = once(shallow("run1"), CHAIN_COMMAND, remote_mode=True)
    assert run.json["outcome"] == "in-review", run.stdout + run.stderr
    merge(remote, tmp_path, run.json["branch"], "squash")
    person = _clone(remote, tmp_path / "person")
    (person / "later.txt").write_text("pushed after the merge\n")
    git(person, "add", "later.txt")
    git(person, "commit", "-q", "-m", "later")
    git(person, "push", "-q", "origin", "main")

    run = once(shallow("run2"), CHAIN_COMMAND, remote_mode=True)
    assert any(f"{first[:8]} done" in line for line in run.json["merged"]), run.stdout + run.stderr
    assert run.json["issue_id"] == second and run.json["outcome"] == "in-review", run.stdout
    state = remote_state(remote, tmp_path)
    assert_jit_sees(state, available=set(), states={first: "done", second: "gated"})


def test_a_reopened_issue_waits_for_its_new_work_not_its_old_merge(tmp_path: Path) -> None:
    """Done and merged this morning, reopened by a person this afternoon (a regression), delivered
    again: its old merge commit names it too, but only the new work's merge may finish it."""
    from real_jit import jit, jit_binary

    binary = jit_binary("newest")
    remote, issue_id, work, branch = _delivered(tmp_path, "regress", "echo 1 > one.txt")
    merge(remote, tmp_path, branch, "squash")
    (work / "one.txt").unlink()
    git(work, "fetch", "-q", "origin")
    git(work, "reset", "-q", "--keep", "origin/main")
    assert once(work, "true").json["outcome"] == "idle"
    assert read_issue(work / ".jit", issue_id)["state"] == "done"

    for step in (("update", issue_id, "--state", "ready"), ("unassign", issue_id)):
        reopened = jit(binary, work, "issue", *step)
        assert reopened.returncode == 0, reopened.stdout + reopened.stderr
    run = once(work, "echo 2 > two.txt")
    assert run.json["outcome"] == "in-review" and run.json["issue_id"] == issue_id, run.stdout
    again = once(work, "true")
    assert not any(issue_id[:8] in line for line in again.json["merged"]), again.stdout
    assert read_issue(work / ".jit", issue_id)["state"] == "gated"
    assert_jit_sees(work, available=set(), states={issue_id: "gated"})

    merge(remote, tmp_path, run.json["branch"], "squash")
    done = once(work, "true")
    assert any(f"{issue_id[:8]} done" in line for line in done.json["merged"]), done.stdout
    assert_jit_sees(work, available=set(), states={issue_id: "done"})


def test_in_a_kept_workspace_the_next_issues_branch_holds_only_its_own_work(tmp_path: Path) -> None:
    """The pool or a self-hosted runner reuses the workspace: the first agent's own commit stays on
    the local branch it was made on; the next issue's work branch builds on the base's tip, so it
    does not propose that commit again (raw, without its trailer) besides its own work."""
    remote, _first, second = _chain(tmp_path)
    work = _clone(remote, tmp_path / "work")
    run = once(work, CHAIN_COMMAND)
    merge(remote, tmp_path, run.json["branch"], "squash")
    run = once(work, CHAIN_COMMAND)
    assert run.json["issue_id"] == second and run.json["outcome"] == "in-review", run.stdout
    messages = git(remote.bare, "log", "--format=%B%x00", run.json["branch"], "^main").split("\0")
    assert all(f"Jit-Issue: {second}" in m for m in messages if m.strip()), messages


def test_a_reopened_issue_waits_for_its_new_work_in_fresh_clones_too(tmp_path: Path) -> None:
    """As in Actions: remote mode, every run a fresh shallow clone of main (actions/checkout's
    default), which never holds the new work's objects."""
    from real_jit import jit, jit_binary

    binary = jit_binary("newest")
    remote = make_remote(tmp_path, [NewIssue("regress")])
    issue_id = remote.ids[0]
    runs = iter(range(100))

    def fresh() -> Path:
        dest, url = tmp_path / f"run{next(runs)}", f"file://{remote.bare}"
        subprocess.run(["git", "clone", "-q", "--depth", "1", url, str(dest)], check=True, capture_output=True)
        return dest

    first = once(fresh(), "echo 1 > one.txt", remote_mode=True)
    merge(remote, tmp_path, first.json["branch"], "squash")
    assert once(fresh(), "true", remote_mode=True).json["outcome"] == "idle"
    person = fresh()
    for step in (("update", issue_id, "--state", "ready"), ("unassign", issue_id)):
        reopened = jit(binary, person, "issue", *step)
        assert reopened.returncode == 0, reopened.stdout + reopened.stderr
    git(person, "add", "-A", ".jit")
    git(person, "commit", "-q", "-m", "reopen")
    git(person, "push", "-q", "origin", "main")

    again = once(fresh(), "echo 2 > two.txt", remote_mode=True)
    assert again.json["outcome"] == "in-review" and again.json["issue_id"] == issue_id, again.stdout
    look = once(fresh(), "true", remote_mode=True)
    assert not any(issue_id[:8] in line for line in look.json["merged"]), look.stdout
    assert_jit_sees(remote_state(remote, tmp_path), available=set(), states={issue_id: "gated"})
    merge(remote, tmp_path, again.json["branch"], "squash")
    done = once(fresh(), "true", remote_mode=True)
    assert any(f"{issue_id[:8]} done" in line for line in done.json["merged"]), done.stdout
