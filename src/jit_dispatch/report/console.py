"""What the dispatcher shows while and after it runs: live output, summary, outputs, warnings."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TextIO

from jit_dispatch.context import GitHubContext
from jit_dispatch.domain.gates import GateRun, Step
from jit_dispatch.domain.issue import Issue
from jit_dispatch.domain.result import Result
from jit_dispatch.domain.secrets import StreamScrub
from jit_dispatch.domain.values import Outcome
from jit_dispatch.process import credentials
from jit_dispatch.process.child import RunResult
from jit_dispatch.report import actions, summary


class ConsoleHooks:
    """Shows the command's output live; in Actions inside a log group, workflow commands fenced."""

    def __init__(self, sink: TextIO, *, in_actions: bool, allow_workflow_commands: bool) -> None:
        """Every known secret, in every form (`process.credentials`), is cut out of the live output."""
        self.sink = sink
        self.in_actions = in_actions
        self.fence_output = in_actions and not allow_workflow_commands
        self._stop_token: str | None = None
        self._scrub = StreamScrub(credentials.scrubber())

    def say(self, text: str) -> None:
        """A dispatcher line carrying issue text (already `plain`): fenced from workflow commands."""
        actions.print_line(self.sink, actions.fenced(text) if self.in_actions else text)

    def command_starting(self, issue: Issue, attempt: int) -> None:
        title = summary.title_line(issue.title)
        self.say(f"jit-dispatch: claimed {issue.short_id} ({issue.priority}, attempt {attempt}): {title}")
        self._start_output(f"jit-dispatch: command output for {issue.short_id}")

    def output(self, chunk: bytes) -> None:
        self._write(self._scrub.feed(chunk))

    def _write(self, chunk: bytes) -> None:
        try:
            self.sink.flush()
            self.sink.buffer.write(chunk)
            self.sink.buffer.flush()
        except BrokenPipeError:
            actions.discard(self.sink)  # nobody reads the log any more; the tail is still kept for the summary
        except ValueError:
            pass  # the sink was closed

    def command_finished(self, run: RunResult) -> None:
        self._end_output(run.tail)

    def _start_output(self, group: str) -> None:
        if self.in_actions:
            actions.print_line(self.sink, f"::group::{group}")
        if self.fence_output:
            self._stop_token = actions.new_stop_token()
            actions.print_line(self.sink, f"::stop-commands::{self._stop_token}")

    def _end_output(self, tail: str) -> None:
        if rest := self._scrub.end():  # held back in case it began a secret: it did not
            self._write(rest)
        if tail and not tail.endswith("\n"):
            actions.print_line(self.sink, "")
        if self._stop_token:
            actions.print_line(self.sink, f"::{self._stop_token}::")
            self._stop_token = None
        if self.in_actions:
            actions.print_line(self.sink, "::endgroup::")

    def gate_starting(self, step: Step) -> None:
        """Each checker's output in its own log group, `gate KEY` (`check CMD`), fenced like the command's."""
        self.say(f"jit-dispatch: running {summary.plain(step.label)}")
        self._start_output(f"{step.kind} {summary.plain(step.key)}")

    def gate_finished(self, run: GateRun) -> None:
        self._end_output(run.output)
        seconds = run.duration_ms / 1000
        verdict = f"{run.step.label} passed" if run.passed else run.reason
        self.say(f"jit-dispatch: {summary.plain(verdict)} ({seconds:.2f}s)")


def publish(result: Result, context: GitHubContext, *, max_attempts: int, as_json: bool, hooks: ConsoleHooks) -> None:
    """Summary, outputs, annotation (in Actions) and the stdout report; every known secret cut out first."""
    scrub_result(result)
    if context.summary_file:
        actions.append_summary(context.summary_file, summary.summary_markdown(result, max_attempts))
    if context.output_file:
        actions.write_outputs(context.output_file, summary.step_outputs(result))
    if not hooks.in_actions and result.outcome == Outcome.ERROR:  # exit 3: the one line that says why
        actions.print_line(sys.stderr, f"jit-dispatch: error: {summary.plain(result.reason or result.outcome)}")
    if hooks.in_actions and result.outcome.failed:
        level = "warning" if result.outcome == Outcome.RELEASED else "error"
        where = f"{result.issue.short_id}: " if result.issue else ""
        actions.print_line(
            sys.stderr,
            actions.command(level, where + (result.reason or result.outcome), title=f"jit-dispatch {result.outcome}"),
        )
    if as_json:
        actions.print_line(sys.stdout, json.dumps(summary.result_json(result), ensure_ascii=False))
    else:
        hooks.say(summary.summary_text(result, max_attempts))


def warn(warnings: list[str], context: GitHubContext) -> None:
    """Skipped files and the like: an annotation in Actions, a stderr line elsewhere."""
    for warning in map(credentials.scrub, warnings):
        if context.in_actions:
            actions.print_line(sys.stderr, actions.command("warning", warning, title="jit-dispatch"))
        else:
            actions.print_line(sys.stderr, f"jit-dispatch: warning: {summary.plain(warning)}")


def scrub_result(result: Result) -> Result:
    """What the command and the tracker said, without any known secret: the summary, `--json`, the
    outputs and the result comment are all rendered from it (docs/hardening.md#credentials)."""
    scrub = credentials.scrub
    result.output_tail = scrub(result.output_tail)
    result.reason = scrub(result.reason) if result.reason else result.reason
    result.warnings = [scrub(w) for w in result.warnings]
    result.gates = [
        dataclasses.replace(run, output=scrub(run.output), message=run.message and scrub(run.message))
        for run in result.gates
    ]
    return result
