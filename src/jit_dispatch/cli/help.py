"""`--help` that guides: each command's options grouped by what they are about, then two examples
and the command's exit codes (the epilog). An option not named in SECTIONS lists under "Options"."""

from __future__ import annotations

import click

# Option (its Python name) → the section of --help it lists under; sections print in this order.
SECTION_ORDER = (
    "Options",
    "Which issues",
    "Quality gates",
    "Store",
    "Remote mode (--sync git)",
    "GitHub Issues (--tracker github)",
)
SECTIONS = {
    **dict.fromkeys(("labels", "exclude_labels", "min_priority", "issue"), "Which issues"),
    **dict.fromkeys(("gates", "on_gate_failure", "checks"), "Quality gates"),
    **dict.fromkeys(("jit_dir", "tracker", "config"), "Store"),
    **dict.fromkeys(
        ("sync", "remote", "state_branch", "lock_prefix", "push_budget", "wait_for_fold", "commit_author", "skip_ci"),
        "Remote mode (--sync git)",
    ),
    **dict.fromkeys(
        ("github_repo", "github_token", "github_api_url", "github_ready_label", "include_assigned"),
        "GitHub Issues (--tracker github)",
    ),
    **dict.fromkeys(
        ("github_lock", "trusted_actors", "pass_token", "priority_labels"), "GitHub Issues (--tracker github)"
    ),
}

_COMMON_CODES = "  2  usage or configuration error (one line names the option, file or key)\n  3  tracker error"
EPILOGS = {
    "once": (
        "Examples:\n"
        "  jit-dispatch once --agent ci-1 --command './scripts/work-on-issue.sh {issue_id}'\n"
        "  jit-dispatch once --agent ci-1 --command 'make fix ISSUE={issue_id}' --sync git --min-priority high\n\n"
        "Exit codes:\n  0  done, gated, idle (nothing ready) or dry-run\n"
        "  1  released, parked or lost (0 with --no-fail-on-command-failure)\n"
        f"{_COMMON_CODES}\n  130/143/129  cancelled by SIGINT/SIGTERM/SIGHUP (the issue was released)"
    ),
    "ready": (
        "Examples:\n  jit-dispatch ready --all\n  jit-dispatch ready --label component:db --json\n\n"
        f"Exit codes:\n  0  listed (also when nothing is dispatchable)\n{_COMMON_CODES}"
    ),
    "status": (
        "Examples:\n  jit-dispatch status --sync git\n  jit-dispatch status --format html > status.html\n\n"
        f"Exit codes:\n  0  printed\n{_COMMON_CODES}"
    ),
    "reap": (
        "Examples:\n  jit-dispatch reap --older-than 6h --dry-run\n"
        "  jit-dispatch reap --older-than 90m --agent-pattern 'ci-*' --sync git\n\n"
        f"Exit codes:\n  0  reaped (also when nothing was stale)\n{_COMMON_CODES}"
    ),
    "release": (
        "Examples:\n  jit-dispatch release 0587a73a 'needs a design decision first' --sync git\n"
        "  jit-dispatch release 0587a73a 'keeps timing out' --park\n\n"
        "Exit codes:\n  0  released\n  2  the issue is not claimed, or the id is unknown or ambiguous\n"
        "  3  tracker error"
    ),
    "unpark": (
        "Examples:\n  jit-dispatch unpark 0587a73a --sync git\n  JIT_DISPATCH_SYNC=git jit-dispatch unpark 0587\n\n"
        "Exit codes:\n  0  unparked\n  2  the issue is not parked, or the id is unknown or ambiguous\n"
        "  3  tracker error"
    ),
    "start": (
        "Examples:\n  jit-dispatch start --config dispatch.toml\n"
        "  jit-dispatch start --listen 9180 --log-format json\n\n"
        "Exit codes:\n  0  stopped cleanly\n  1  a command failed (--once)\n"
        f"{_COMMON_CODES}\n  130/143  stopped by SIGINT/SIGTERM (unfinished issues released)"
    ),
    "doctor": (
        "Examples:\n  jit-dispatch doctor --sync git\n  jit-dispatch doctor --tracker github --github-repo org/repo\n\n"
        f"Exit codes:\n  0  all good\n  1  something to fix (each failed line names its fix)\n{_COMMON_CODES}"
    ),
    "check": (
        "Examples:\n  jit-dispatch config check\n  jit-dispatch config check --config fleet/dispatch.toml\n\n"
        "Exit codes:\n  0  valid (the effective configuration printed)\n  2  invalid: every mistake, one line each"
    ),
}


class GroupedCommand(click.Command):
    """A command whose --help lists its options by section, then its examples and exit codes."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {title: [] for title in SECTION_ORDER}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                sections[SECTIONS.get(param.name or "", "Options")].append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The epilog verbatim (examples keep their lines), after a blank line."""
        text = self.epilog or EPILOGS.get(self.name or "")
        if text:
            formatter.write_paragraph()
            for line in text.splitlines():
                formatter.write(f"{'':>{formatter.current_indent}}{line}\n")
