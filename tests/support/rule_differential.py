"""Random small stores and random enforced `[[rules]]`, judged by the newest jit and by jit-dispatch
(docs/jit-format.md#rule-differential). Shared by tests/integration/test_rule_differential.py (a
few fixed-seed cases) and bench/rules_differential.py (many).

A case is built with the real binary (issues, dependencies, gates, states) before its rules are
written, so jit itself made every byte; gate ages are then set in the issue files. On a copy, jit
takes the target `in_progress` then `done`; on the original, `jit-dispatch once --issue` runs it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TYPES = ("epic", "task", "release", "qa-signoff", "goal", "breakdown")
GATES = ("code-review", "tests", "verify-REQ-1", "verify-REQ-2")
GIT = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
GIT["GIT_COMMITTER_EMAIL"] = "t@t"


@dataclass
class Spec:
    """One issue: its type, labels (`@N` names issue N's short id), body, dependencies, state, gates."""

    kind: str
    labels: list[str]
    body: str
    deps: list[int]
    done: bool
    gates: dict[str, float | None] = field(default_factory=dict)  # key → age in hours (None: not passed)


@dataclass
class Case:
    seed: int
    issues: list[Spec]
    target: int
    rules: str


def _body(rng: random.Random) -> str:
    parts = []
    if rng.random() < 0.7:
        items = [
            f"- {rng.choice(['[hard] ', '', '[soft] '])}REQ-{n} item"
            for n in rng.sample(range(1, 4), rng.randint(1, 3))
        ]
        parts.append("## Success Criteria\n\n" + "\n".join(items) + "\n")
    if rng.random() < 0.4:
        items = [f"- H-{n} guess" for n in rng.sample(range(1, 4), rng.randint(1, 2))]
        parts.append("## Hypotheses\n\n" + "\n".join(items) + "\n")
    return "\n".join(parts)


def _labels(rng: random.Random, count: int, me: int) -> list[str]:
    labels = []
    for namespace, ids in (("satisfies", "REQ"), ("req", "REQ"), ("checks", "REQ"), ("hyp", "H")):
        if rng.random() < 0.35:
            labels.append(f"{namespace}:{ids}-{rng.randint(1, 3)}")
    if rng.random() < 0.2 and count > 1:
        labels.append(f"brackets:@{rng.choice([i for i in range(count) if i != me])}")
    return labels


def generate(seed: int) -> Case:
    rng = random.Random(seed)
    below, above = rng.randint(0, 3), rng.randint(0, 2)
    count = below + 1 + above
    issues: list[Spec] = []
    for index in range(count):
        deps = []
        if index < below:
            deps = [d for d in range(index) if rng.random() < 0.4]
        elif index == below:
            deps = [d for d in range(below) if rng.random() < 0.6]
        else:
            deps = [below] + [d for d in range(below + 1, index) if rng.random() < 0.3]
        spec = Spec(rng.choice(TYPES), _labels(rng, count, index), _body(rng), deps, False)
        issues.append(spec)
    for index in range(below):  # a dependency of the target must be done for it to be ready
        issues[index].done = index in issues[below].deps or rng.random() < 0.5
    for index in reversed(range(below)):  # a done issue's dependencies are done
        if issues[index].done:
            for dep in issues[index].deps:
                issues[dep].done = True
    target = issues[below]
    for gate in rng.sample(GATES, rng.randint(0, 2)):
        target.gates[gate] = rng.choice([1.0, 30.0, 24 * 10.0, 24 * 10.0, None])
    return Case(seed, issues, below, _rules(rng, target.kind))


def _when(rng: random.Random, kind: str) -> str:
    parts = []
    if rng.random() < 0.85:
        parts.append(f'type = "{kind if rng.random() < 0.8 else rng.choice(TYPES)}"')
    if rng.random() < 0.2:
        parts.append(f'label = "{rng.choice(["satisfies:*", "req:*", "hyp:*", "type:*"])}"')
    states = ['"done"', '"done"', '["in_progress", "done"]', '"in_progress"', '["gated", "done"]', '"gated"']
    state = rng.choice([None, *states])
    if state is not None:
        parts.append(f"state = {state}")
    return "{ " + ", ".join(parts) + " }"


def _criteria(rng: random.Random) -> list[str]:
    keys = []
    if rng.random() < 0.5:
        keys.append(f'marker = "{rng.choice(["[hard]", "[soft]"])}"')
    if rng.random() < 0.3:
        keys.append('id-pattern = "REQ-[0-9]+"')
    return keys


def _assertion(rng: random.Random) -> str:
    kind = rng.choice(
        ["gate-recency", "label-coverage", "label-reference", "dependency-shape", "criteria-to-check",
         "criteria-label-match", "require-label", "label-uniqueness", "label-value-pattern", "require-section",
         "require-doc-type"]
    )  # fmt: skip
    if kind == "gate-recency":
        age = rng.choice(["max-age-days = 7", "max-age-hours = 24", "max-age-days = 1"])
        listed = rng.choice(["", ', gates = ["code-review"]', ', gates = ["tests", "code-review"]'])
        return f"{{ gate-recency = {{ {age}{listed} }} }}"
    if kind == "label-coverage":
        keys = _criteria(rng) + ['satisfies-namespace = "satisfies"'] * (rng.random() < 0.5)
        keys.append(f'child-link = "{rng.choice(["dependents", "dependencies", "any"])}"')
        if rng.random() < 0.5:
            keys.append(f'child-state = "{rng.choice(["done", "ready", "backlog"])}"')
        if rng.random() < 0.3:
            keys.append('child-type-exclude = ["breakdown", "qa-signoff"]')
        if rng.random() < 0.2:
            keys.append('container-from-label = "brackets"')
        return "{ label-coverage = { " + ", ".join(keys) + " } }"
    if kind == "label-reference":
        source, to = rng.choice([("req", "satisfies"), ("satisfies", "req"), ("hyp", "checks")])
        scope = rng.choice(["linked", "linked", "global"])
        return f'{{ label-reference = {{ from = "{source}", to = "{to}", scope = "{scope}" }} }}'
    if kind == "dependency-shape":
        target = rng.choice(
            [f'{{ type = "{rng.choice(TYPES)}" }}', '{ label = "satisfies:*" }', '{ state = "done" }',
             f'{{ type = "{rng.choice(TYPES)}", state = "done" }}']
        )  # fmt: skip
        mode = rng.choice(["must", "should"])
        transitive = rng.choice(["", ", transitive = true", ", transitive = false"])
        return f'{{ dependency-shape = {{ target = {target}, mode = "{mode}"{transitive} }} }}'
    if kind == "criteria-to-check":
        keys = _criteria(rng)
        gate, label = 'gate-prefix = "verify-"', 'check-namespace = "checks"'
        keys += rng.choice([[gate], [label], [gate, label]])
        return "{ criteria-to-check = { " + ", ".join(keys) + " } }"
    if kind == "criteria-label-match":
        section, namespace, pattern = rng.choice(
            [("hypotheses", "hyp", "H-[0-9]+"), ("success_criteria", "satisfies", "REQ-[0-9]+"),
             ("success_criteria", "checks", "REQ-[0-9]+")]
        )  # fmt: skip
        return (
            f'{{ criteria-label-match = {{ namespace = "{namespace}", criteria-section = "{section}", '
            f"id-pattern = '{pattern}' }} }}"
        )
    if kind == "require-label":
        label = rng.choice(["satisfies:*", "checks:*", "resolution:*", "req:REQ-1", "hyp:*"])
        counts = rng.choice(["min = 1", "", "max = 1", "min = 0, max = 0", "min = 2"])
        return f'{{ require-label = {{ label = "{label}"{", " if counts else ""}{counts} }} }}'
    if kind == "label-value-pattern":
        namespace, regex = rng.choice([("satisfies", "^REQ-[12]$"), ("req", "^REQ-[0-9]+$"), ("hyp", "^H-3$")])
        return f'{{ label-value-pattern = {{ namespace = "{namespace}", regex = "{regex}" }} }}'
    if kind == "require-section":
        heading = rng.choice(["Success Criteria", "Hypotheses", "Success Criterion", "Notes"])
        return f'{{ require-section = {{ heading = "{heading}" }} }}'
    if kind == "require-doc-type":
        return '{ require-doc-type = { doc-type = "design" } }'
    scope = rng.choice(["", ', scope = "all"', ', scope = "all"', ', scope = "linked"'])
    return f'{{ label-uniqueness = {{ namespace = "satisfies"{scope} }} }}'


def _rules(rng: random.Random, kind: str) -> str:
    blocks = []
    for number in range(rng.randint(1, 3)):
        severity = "error" if rng.random() < 0.85 else "warn"
        enforce = "true" if rng.random() < 0.9 else "false"
        blocks.append(
            f'[[rules]]\nname = "r{number}"\nwhen = {_when(rng, kind)}\nseverity = "{severity}"\n'
            f"enforce = {enforce}\nassert = {_assertion(rng)}\n"
        )
    return "\n".join(blocks)


class Jit:
    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("JIT_")}
        self._template: Path | None = None

    def template(self) -> Path:
        """A repository with an empty store and the gates defined, made once (copied for each case)."""
        if self._template is None:
            self._template = Path(tempfile.mkdtemp(prefix="rules-differential-")) / "repo"
            repo = self._template
            subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
            subprocess.run(["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "i"], check=True, env=GIT)
            self.ok(repo, "init")
            (repo / ".jit" / "rules.toml").write_text("")  # no rule while jit builds the store
            for gate in GATES:
                self.ok(repo, "gate", "define", gate, "--title", gate, "--description", gate, "--mode", "manual")
        return self._template

    def __call__(self, where: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args], cwd=where, env=self.env, capture_output=True, text=True, timeout=60
        )

    def ok(self, where: Path, *args: str) -> str:
        done = self(where, *args)
        if done.returncode != 0:
            raise RuntimeError(f"jit {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout


def build(jit: Jit, case: Case, repo: Path) -> str:
    """The case's store, made by jit; the target's id."""
    shutil.copytree(jit.template(), repo, symlinks=True)
    ids: list[str] = []
    for spec in case.issues:
        made = jit.ok(
            repo, "issue", "create", "--title", spec.kind, "-d", spec.body, "--label", f"type:{spec.kind}", "--json"
        )
        ids.append(str(json.loads(made)["id"]))
    for index, spec in enumerate(case.issues):
        labels = [re.sub(r"@(\d+)", lambda m: ids[int(m.group(1))][:8], label) for label in spec.labels]
        if labels:
            jit.ok(repo, "issue", "update", ids[index], *[a for label in labels for a in ("--label", label)])
        for dep in spec.deps:
            jit.ok(repo, "dep", "add", ids[index], ids[dep])
        for gate in spec.gates:
            jit.ok(repo, "gate", "add", ids[index], gate)
            if spec.gates[gate] is not None:
                jit.ok(repo, "gate", "pass", ids[index], gate)
    for index, spec in enumerate(case.issues):
        if spec.done:
            jit.ok(repo, "issue", "update", ids[index], "--state", "done")
    now = datetime.now(UTC)
    for index, spec in enumerate(case.issues):
        if spec.gates:
            path = repo / ".jit" / "issues" / f"{ids[index]}.json"
            raw = json.loads(path.read_text())
            for gate, age in spec.gates.items():
                if age is not None:
                    stamp = (now - timedelta(hours=age)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    raw["gates_status"][gate]["updated_at"] = stamp
            path.write_text(json.dumps(raw, indent=2, ensure_ascii=False))
    (repo / ".jit" / "rules.toml").write_text(case.rules)
    return ids[case.target]


@dataclass(frozen=True)
class Verdict:
    """How the target's run ended: `held` (the claim refused), `refused` (done refused, `gated`
    allowed), `parked` (the `gated` refused too: docs/jit-format.md#refused-gated), `gated` (done
    held back by a gate), `done`; the blocking rules with jit's messages; validate's result."""

    end: str
    blockers: tuple[tuple[str, str], ...]
    validates: bool


def _gates_open(issue: dict[str, Any]) -> bool:
    """A required gate not passed: jit's `--state done` writes (and validates) `gated` instead."""
    status = issue.get("gates_status") or {}
    return any((status.get(gate) or {}).get("status") != "passed" for gate in issue.get("gates_required") or [])


BLOCKER = re.compile(r"^  - \[([^\]]+)\] (.*)$", re.MULTILINE)


def blockers(stderr: str) -> list[tuple[str, str]]:
    """The `[rule] message` lines of jit's refusal, not those under `Warnings (non-blocking):`."""
    return BLOCKER.findall(stderr.split("Warnings (non-blocking):")[0])


def jits_verdict(jit: Jit, repo: Path, target: str, copy: Path) -> Verdict:
    shutil.copytree(repo, copy, symlinks=True)
    end, found = "done", []
    for state in ("in_progress", "done"):  # the claim as jit's `issue claim`: no local rule checked
        args = ("claim", target, "agent:w1") if state == "in_progress" else ("update", target, "--state", state)
        moved = jit(copy, "issue", *args)
        if moved.returncode != 0:
            found = blockers(moved.stderr)
            issue = json.loads((copy / ".jit" / "issues" / f"{target}.json").read_text())
            stored = issue["state"]
            end = "held" if state == "in_progress" else ("gated" if stored == "gated" and not found else "refused")
            if stored == "done":  # done, but the promotion of a dependent refused: not the target's verdict
                end, found = "done", []
            if end == "refused" and ("Cannot transition to 'gated'" in moved.stderr or _gates_open(issue)):
                end = "parked"  # a gate held the done back, and the gated (its local rules too) is refused
            elif end == "refused":  # where jit-dispatch would end instead: is that refused too?
                again = jit(copy, "issue", "update", target, "--state", "gated")
                if again.returncode != 0 and (more := blockers(again.stderr)):
                    end, found = "parked", found + more
            break
    return Verdict(end, tuple(found), jit(copy, "validate").returncode == 0)


RULE = re.compile(r"rule '([^']+)' (?:blocks done|blocks gated|refuses in_progress): ")


def dispatch_verdict(jit: Jit, repo: Path, target: str, env: dict[str, str]) -> tuple[Verdict, str]:
    """jit-dispatch's run of the target (and its raw reason, for a report)."""
    args = ["once", "--agent", "w1", "--command", "true", "--json", "--jit-dir", str(repo / ".jit"), "--issue", target]
    run = subprocess.run(
        [sys.executable, "-m", "jit_dispatch", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60
    )
    try:
        result = json.loads(run.stdout)
    except json.JSONDecodeError:
        return Verdict(f"crashed ({run.returncode}): {run.stderr.strip()[-200:]}", (), False), ""
    reason = str(result.get("reason") or "")
    outcome = result.get("outcome")
    if outcome == "done":
        end = "done"
    elif outcome == "gated":
        end = "refused" if RULE.search(reason) else "gated"
    elif outcome in ("idle", "held", None) and not result.get("issue_id"):
        end = "held"
        ready = subprocess.run(
            [sys.executable, "-m", "jit_dispatch", "ready", "--all", "--json", "--jit-dir", str(repo / ".jit")],
            cwd=repo, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        held = [h for h in json.loads(ready.stdout).get("held", []) if h.get("id", "").startswith(target[:8])]
        reason = str(held[0].get("reason", "")) if held else reason
    else:
        end = str(outcome)
    return Verdict(end, _blockers(reason), jit(repo, "validate").returncode == 0), reason


def _blockers(reason: str) -> tuple[tuple[str, str], ...]:
    """`rule 'R' blocks done: M; rule 'S' …` as jit's (R, M) pairs."""
    found = []
    reason = reason.removesuffix("; parked: fix what the rule finds, then unpark it")
    for part in re.split(r"; (?=rule ')", reason):
        if m := RULE.search(part):
            found.append((m.group(1), part[m.end() :]))
    return tuple(found)


def mismatch(jits: Verdict, ours: Verdict) -> str | None:
    """What differs, in one line; None when jit-dispatch agrees with jit."""
    theirs = jits.blockers
    if jits.end == "held":  # jit-dispatch names the first rule that holds a claim
        theirs = theirs[:1]
    if (jits.end, theirs) != (ours.end, ours.blockers):
        return f"jit: {jits.end} {list(jits.blockers)}; jit-dispatch: {ours.end} {list(ours.blockers)}"
    if jits.validates and not ours.validates:
        return "jit validate fails after jit-dispatch's write (passes after jit's)"
    return None
