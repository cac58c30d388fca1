"""The CI runner's environment, read once per command into one object.

GitHub Actions describes the run in `GITHUB_*` and `RUNNER_*` variables (docs/github-actions.md#environment).
Elsewhere they are absent and every field keeps its neutral default, so the same code runs on a
laptop, in cron or in a Kubernetes Job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitHubContext:
    """The `GITHUB_*` and `RUNNER_*` variables the dispatcher reads (neutral defaults elsewhere)."""

    in_actions: bool = False
    output_file: Path | None = None  # $GITHUB_OUTPUT: step outputs
    summary_file: Path | None = None  # $GITHUB_STEP_SUMMARY: the run's Markdown summary
    runner_temp: str | None = None  # $RUNNER_TEMP: scratch space the runner cleans up
    repository: str | None = None
    server_url: str = "https://github.com"
    run_id: str | None = None
    run_attempt: str | None = None
    ref: str = ""
    ref_name: str = ""

    @classmethod
    def from_environ(cls, env: Mapping[str, str] = os.environ) -> GitHubContext:
        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        return cls(
            in_actions=env.get("GITHUB_ACTIONS") == "true",
            output_file=path("GITHUB_OUTPUT"),
            summary_file=path("GITHUB_STEP_SUMMARY"),
            runner_temp=env.get("RUNNER_TEMP") or None,
            repository=env.get("GITHUB_REPOSITORY") or None,
            server_url=env.get("GITHUB_SERVER_URL") or "https://github.com",
            run_id=env.get("GITHUB_RUN_ID") or None,
            run_attempt=env.get("GITHUB_RUN_ATTEMPT") or None,
            ref=env.get("GITHUB_REF", ""),
            ref_name=env.get("GITHUB_REF_NAME", ""),
        )

    @property
    def branch(self) -> str | None:
        """The branch being run, when the run is on one (not a tag or a pull request merge ref)."""
        return self.ref_name if self.ref.startswith("refs/heads/") and self.ref_name else None

    def run_reference(self) -> str:
        """Where a claim came from: the workflow run's URL, or host:pid outside Actions."""
        if self.run_id and self.repository:
            url = f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"
            return f"{url}/attempts/{self.run_attempt}" if self.run_attempt else url
        return f"{os.uname().nodename}:{os.getpid()}"
