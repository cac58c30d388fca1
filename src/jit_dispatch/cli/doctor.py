"""`jit-dispatch doctor`: check a repository before its first scheduled run. Each check is one
line, and each failed one names its fix (docs/troubleshooting.md#doctor).

Nothing is changed: the store is only read; the push checks create a probe ref under the lock
prefix and delete it again, and test the state branch with an atomic push the server must refuse
as a whole (a branch update paired with two probe refs that conflict), so a protection rule
answers with its own refusal text while the branch never moves.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jit_dispatch.cli.settings import file_config, store_choice
from jit_dispatch.context import GitHubContext
from jit_dispatch.errors import DispatchError
from jit_dispatch.report.summary import plain
from jit_dispatch.trackers.factory import StoreChoice, current_branch, jit_roots, open_tracker
from jit_dispatch.trackers.jit.store import JitStore

# Words in a refused push, and what they mean (git's, GitHub's and common hooks' wording).
PROTECTION_WORDS = ("protected branch", "gh006", "gh013", "rule violation", "hook declined", "protected ref")
PERMISSION_WORDS = ("permission", "denied", "403", "insufficient", "read-only", "not allowed", "access denied")
PROTECTION_FIX = (
    "the state branch {branch} refuses pushes (protection or a ruleset): give the state a branch of its "
    "own that no rule covers, e.g. `git push {remote} {branch}:refs/heads/jit-state`, then pass "
    "--state-branch jit-state (Action input state-branch: jit-state)"
)
PERMISSION_FIX = (
    "the remote refuses this identity's pushes: in a workflow grant `permissions: contents: write` "
    "(docs/permissions.md); elsewhere use credentials with push access to {remote}"
)


@dataclass(frozen=True)
class Check:
    """One line of the checklist; `ok` None: not applicable here."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""

    def line(self) -> str:
        """`[FAIL] name: detail` and, indented below, the fix (terminal-safe text)."""
        mark = {True: "[ok]  ", False: "[FAIL]", None: "[skip]"}[self.ok]
        text = f"{mark} {plain(self.name)}: {plain(self.detail)}"
        return text + (f"\n       fix: {plain(self.fix)}" if self.fix else "")

    def as_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix or None}


def run_checks(options: dict[str, Any], context: GitHubContext) -> list[Check]:
    checks = [config_check(options)]
    if checks[0].ok is False:
        return checks  # the other checks would read the wrong settings
    choice = store_choice(options, read_only=True)
    if choice.tracker == "github":
        return [*checks, *github_checks(choice, context)]
    for root in jit_roots(choice.jit_dir):
        checks += store_checks(root)
        if choice.sync == "git":
            checks += remote_checks(choice, root, context)
    checks += interpreter_checks(options, choice)
    return checks


def config_check(options: dict[str, Any]) -> Check:
    try:
        loaded = file_config(options)
    except DispatchError as exc:
        return Check("dispatch.toml", False, str(exc).replace("\n", "; "), "correct the lines named (config check)")
    if loaded is None:
        return Check("dispatch.toml", None, "none here (flags, JIT_DISPATCH_* and built-in defaults apply)")
    return Check("dispatch.toml", True, f"valid ({len(loaded.agents)} agent(s))")


def store_checks(root: Path) -> list[Check]:
    try:
        store = JitStore.open(root)
        ids = store.issue_ids()
    except DispatchError as exc:
        fix = "run `jit init` in the repository, or pass --jit-dir (JIT_DATA_DIR) pointing at the .jit directory"
        return [Check(f"store {root}", False, f"not found or not readable by this version: {exc}", fix)]
    checks = [Check(f"store {root}", True, f"{len(ids)} issue(s) readable")]
    try:
        gates = store.gates()
    except DispatchError as exc:
        checks.append(Check("gate registry", False, str(exc), "repair .jit/gates.json with `jit gate` commands"))
    else:
        checks.append(Check("gate registry", True, f"{len(gates)} gate(s) defined" if gates else "no gates defined"))
    return checks


def remote_checks(choice: StoreChoice, root: Path, context: GitHubContext) -> list[Check]:
    from jit_dispatch.trackers.remote.git import Git, GitError, last_line, redact

    anchor = next((p for p in [root, *root.absolute().parents] if p.is_dir()), Path.cwd())
    git = Git(anchor, timeout=60)
    remote = redact(choice.remote)
    try:
        branch = choice.state_branch or current_branch(git, context)
        listing = git.run("ls-remote", "--heads", choice.remote, f"refs/heads/{branch}", check=False)
    except (DispatchError, OSError) as exc:
        return [Check("remote", False, str(exc), "run inside the repository's clone, or pass --state-branch")]
    if listing.returncode != 0:
        fix = f"check `git remote get-url {remote}` and this machine's credentials for it"
        return [Check(f"remote {remote}", False, f"unreachable: {last_line(listing)}", fix)]
    tip = listing.stdout.decode().split("\t")[0].strip()
    if not tip:
        fix = f"push the state branch first: git push {remote} HEAD:refs/heads/{branch}"
        return [Check(f"remote {remote}", False, f"reachable, but it has no branch {branch}", fix)]
    checks = [Check(f"remote {remote}", True, f"reachable; {branch} at {tip[:8]}")]
    try:
        git.run("fetch", "--quiet", "--no-tags", choice.remote, tip)
    except GitError as exc:
        return [*checks, Check("fetch", False, str(exc), f"check read access to {remote}")]
    checks.append(_branch_probe(git, choice, branch, tip))
    checks.append(_lock_probe(git, choice, tip))
    return checks


def _refusal(text: str, choice: StoreChoice, branch: str) -> str:
    lowered = text.lower()
    remote = shlex.quote(choice.remote)
    if any(word in lowered for word in PROTECTION_WORDS):
        return PROTECTION_FIX.format(branch=branch, remote=remote)
    if any(word in lowered for word in PERMISSION_WORDS):
        return PERMISSION_FIX.format(remote=remote)
    return f"see the refusal above; the state branch needs pushes from this identity ({remote})"


def _telling(text: str) -> str:
    """The refusal's line that says why (a protection rule's or a permission's words), if any."""
    from jit_dispatch.trackers.remote.git import redact

    words = PROTECTION_WORDS + PERMISSION_WORDS
    for line in text.splitlines():
        if any(word in line.lower() for word in words) and "[remote rejected]" not in line:
            return redact(line.strip().removeprefix("remote:").strip())
    return ""


def _branch_probe(git: Any, choice: StoreChoice, branch: str, tip: str) -> Check:
    """An atomic push of a child of the tip to the branch with two probe refs that conflict
    (`…/doctor-N` and `…/doctor-N/x`): the server's hooks judge the branch update, then its ref
    transaction fails, so nothing lands. Accepted-then-failed means the branch takes pushes."""
    from jit_dispatch.trackers.remote.git import last_line

    name = f"state branch {branch}"
    probe = f"{choice.lock_prefix}doctor-{secrets.token_hex(4)}"
    who = {"NAME": "jit-dispatch doctor", "EMAIL": "doctor@jit-dispatch.invalid"}
    env = {f"GIT_{role}_{key}": value for role in ("AUTHOR", "COMMITTER") for key, value in who.items()}
    child = git.out("commit-tree", f"{tip}^{{tree}}", "-p", tip, "-m", "jit-dispatch doctor probe", env=env)
    specs = [f"{child}:refs/heads/{branch}", f"{tip}:{probe}", f"{tip}:{probe}/x"]
    proc = git.run("push", "--atomic", "--porcelain", "--no-verify", choice.remote, *specs, check=False)
    text = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
    if proc.returncode == 0:  # a server that took all three: undo at once, and say so
        git.run("push", "--porcelain", choice.remote, f"+{tip}:refs/heads/{branch}", f":{probe}", f":{probe}/x",
                check=False)  # fmt: skip
        return Check(name, True, "accepts pushes (the probe landed and was undone)")
    lowered = text.lower()
    if "atomic" in lowered and ("does not support" in lowered or "not support" in lowered):
        return Check(name, None, "the server cannot test an atomic push; the lock-ref check below stands in")
    if ("cannot process" in lowered or "atomic transaction failed" in lowered) and not any(
        word in lowered for word in PROTECTION_WORDS + PERMISSION_WORDS
    ):
        return Check(name, True, "accepts pushes (tested by an atomic push the server refused whole)")
    return Check(name, False, f"refused: {_telling(text) or last_line(proc)}", _refusal(text, choice, branch))


def _lock_probe(git: Any, choice: StoreChoice, tip: str) -> Check:
    """A probe ref under the lock prefix, created and deleted: what every claim does."""
    from jit_dispatch.trackers.remote.git import last_line

    probe = f"{choice.lock_prefix}doctor-{secrets.token_hex(4)}"
    name = f"lock refs {choice.lock_prefix}"
    created = git.run("push", "--porcelain", "--no-verify", choice.remote, f"{tip}:{probe}", check=False)
    if created.returncode != 0:
        text = (created.stdout + created.stderr).decode("utf-8", errors="replace")
        detail = f"cannot create a lock ref: {_telling(text) or last_line(created)}"
        return Check(name, False, detail, _refusal(text, choice, "?"))
    deleted = git.run("push", "--porcelain", "--no-verify", choice.remote, f":{probe}", check=False)
    if deleted.returncode != 0:
        fix = f"delete it by hand: git push {shlex.quote(choice.remote)} :{probe}; lock refs must be deletable"
        return Check(name, False, f"created, but not deleted again: {last_line(deleted)}", fix)
    return Check(name, True, "a probe lock ref was created and deleted")


def github_checks(choice: StoreChoice, context: GitHubContext) -> list[Check]:
    if not choice.github_token:
        fix = "set GITHUB_TOKEN (in a workflow: env: GITHUB_TOKEN: ${{ github.token }}) with issues: write"
        return [Check("GitHub token", False, "missing", fix)]
    try:
        # Writable, as a run opens it: with refs, `contents: write` is checked first (one unreferenced
        # git tree is created, nothing else is written).
        with open_tracker(replace(choice, read_only=False), context) as tracker:
            snapshot = tracker.snapshot()
    except DispatchError as exc:
        text = str(exc)
        fix = "grant the job `issues: write`" + (", `contents: write`" if choice.github_lock == "refs" else "")
        fix += " (docs/permissions.md), or use a token with those scopes"
        if "--github-lock comments" in text or "contents: write" in text:
            fix = "grant `contents: write` (docs/permissions.md), or choose --github-lock comments"
        return [Check(f"GitHub {choice.github_repo}", False, text, fix)]
    scopes = "issues, contents: write" if choice.github_lock == "refs" else "issues"
    return [Check(f"GitHub {choice.github_repo}", True, f"{len(snapshot.states)} ready issue(s) readable; {scopes}")]


def interpreter_checks(options: dict[str, Any], choice: StoreChoice) -> list[Check]:
    """Each agent's shell and the program its command starts (dispatch.toml), and each auto
    gate's command (gates.json): found on PATH or as an executable file, with its #! interpreter."""
    commands: list[tuple[str, str]] = []
    loaded = file_config(options)
    for agent in loaded.agents if loaded else []:
        settings = loaded.effective(agent) if loaded else {}
        commands.append((f"agent {agent.id} shell", str(settings.get("shell") or "bash")))
        commands.append((f"agent {agent.id} command", agent.command))
    for root in jit_roots(choice.jit_dir):
        try:
            gates = JitStore.open(root).gates()
        except DispatchError:
            continue
        for key, gate in gates.items():
            checker = gate.checker or {}
            if isinstance(checker.get("command"), str):
                commands.append((f"gate {key}", str(checker["command"])))
    return [_program_check(name, command) for name, command in commands]


def _program_check(name: str, command: str) -> Check:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    program = next((w for w in words if "=" not in w or w.startswith(("./", "/"))), "")
    if not program or "{" in program:
        return Check(name, None, "starts with a placeholder or an assignment; not checked")
    for missing in _missing_programs(program):
        return Check(name, False, f"{missing} not found", f"install {missing}, or fix the path in {name}")
    return Check(name, True, f"{program} found")


def _missing_programs(program: str) -> Iterator[str]:
    """The program, then its #! interpreter, whichever is missing (a shell builtin counts as found)."""
    if "/" in program:
        path = Path(program)
        if not (path.is_file() and os.access(path, os.X_OK)):
            yield f"{program} (an executable file)"
            return
        first = path.read_bytes()[:256].split(b"\n")[0]
        if first.startswith(b"#!"):
            interpreter = first[2:].decode("utf-8", errors="replace").split()
            if interpreter and interpreter[0] == "/usr/bin/env" and len(interpreter) > 1:
                if shutil.which(interpreter[1]) is None:
                    yield f"{interpreter[1]} (the #! interpreter of {program})"
            elif interpreter and not Path(interpreter[0]).is_file():
                yield f"{interpreter[0]} (the #! interpreter of {program})"
        return
    if shutil.which(program) is None and program not in _BUILTINS:
        yield program


_BUILTINS = frozenset({"true", "false", "exit", "echo", "test", "[", "cd", "exec", "set", "export", ":"})
