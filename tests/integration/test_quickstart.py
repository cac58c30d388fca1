"""docs/quickstart.md works as written: its shell blocks, run in order by bash with the real jit
(`JIT_DISPATCH_JIT_BIN`) and this jit-dispatch on PATH, take a fresh repository to a first `done`
with the agent script template; the template keeps hostile issue text inert."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import PROJECT_ROOT, clean_env, read_issue, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue
from real_jit import assert_real_jit_reads, jit_binary

QUICKSTART = (PROJECT_ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
TEMPLATE = PROJECT_ROOT / "examples" / "agent-script" / "work-on-issue.sh"


def block(marker: str) -> str:
    found = re.search(rf"<!-- quickstart: {marker} -->\n```sh\n(.*?)```", QUICKSTART, re.S)
    assert found, marker
    return found.group(1)


def test_the_quickstart_reaches_a_first_done(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "jit").symlink_to(binary)
    (tools / "jit-dispatch").symlink_to(Path(sys.executable).parent / "jit-dispatch")
    env = clean_env(PATH=f"{tools}{os.pathsep}{os.environ['PATH']}")
    store = subprocess.run(["bash", "-euo", "pipefail", "-c", block("store")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert store.returncode == 0, store.stderr
    project = tmp_path / "my-project"
    (project / "scripts").mkdir()
    shutil.copy(TEMPLATE, project / "scripts" / "work-on-issue.sh")  # step 2: the copy the text asks for
    local = subprocess.run(["bash", "-euo", "pipefail", "-c", block("local")], cwd=project, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert local.returncode == 0, local.stdout + local.stderr
    assert re.search(r"^jit-dispatch: done [0-9a-f]{8} Add a greeting$", local.stdout, re.M), local.stdout
    assert "done 1" in local.stdout, "status counts it"
    [issue] = [p.stem for p in (project / ".jit" / "issues").glob("*.json")]
    assert read_issue(project / ".jit", issue)["state"] == "done"
    assert_real_jit_reads(binary, project / ".jit")


def test_the_template_keeps_hostile_text_inert_and_reports_failures(tmp_path: Path) -> None:
    store = JitStore.init(tmp_path / ".jit")
    [issue] = store.create_issues([NewIssue("$(touch pwned) `touch pwned2`; echo x > pwned3", "high")])
    script = tmp_path / "work.sh"
    shutil.copy(TEMPLATE, script)
    result = run_cli("once", "--agent", "w", "--command", "./work.sh {issue_id}", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.json["outcome"] == "done"
    assert not list(tmp_path.glob("pwned*")), "the title was data, never code"
    # The next attempt sees why the previous one failed.
    [second] = store.create_issues([NewIssue("second", "high")])
    text = script.read_text().replace('echo "done: $JIT_ISSUE_SHORT_ID"', 'echo "tests failed"; exit 4')
    script.write_text(text)
    failed = run_cli("once", "--agent", "w", "--command", "./work.sh {issue_id}", "--json", cwd=tmp_path)
    assert failed.json["outcome"] == "released" and failed.json["reason"].startswith("exit code 4")
    script.write_text(TEMPLATE.read_text())
    retry = run_cli("once", "--agent", "w", "--command", "./work.sh {issue_id}", cwd=tmp_path, env=clean_env())
    assert "the previous attempt failed: exit code 4" in retry.stdout
    assert read_issue(store.root, issue)["state"] == "done"
    assert read_issue(store.root, second)["state"] == "done"
