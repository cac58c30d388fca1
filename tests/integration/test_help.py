"""`--help` guides: every command lists only its own options, grouped, then two examples and its
exit codes; and the examples name options the command really has."""

from __future__ import annotations

import re

import pytest

from helpers import clean_env, run_cli

COMMANDS = [["once"], ["ready"], ["status"], ["reap"], ["release"], ["unpark"], ["start"], ["doctor"],
            ["config", "check"]]  # fmt: skip
SCOPE = ("--label", "--exclude-label", "--min-priority", "--issue")


def help_of(command: list[str]) -> str:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_two_examples_and_the_exit_codes(command: list[str]) -> None:
    text = help_of(command)
    examples = text.split("Examples:\n")[1].split("\n\n")[0].splitlines()
    assert len(examples) == 2 and all("jit-dispatch " + " ".join(command) in line for line in examples), examples
    codes = text.split("Exit codes:\n")[1].splitlines()
    assert codes[0].strip().startswith("0 ") and any(line.strip().startswith("2 ") for line in codes), codes
    for example in examples:  # each option an example uses is one --help lists
        for option in re.findall(r"(?<=\s)--[a-z-]+", example):
            assert re.search(rf"^\s+{option}\b", text, re.M) or f"/{option}" in text, (option, command)


@pytest.mark.parametrize("command", [["release"], ["unpark"], ["status"], ["start"]], ids=" ".join)
def test_commands_without_a_scope_do_not_offer_one(command: list[str]) -> None:
    text = help_of(command)
    assert not [option for option in SCOPE if re.search(rf"^\s+{option}\b", text, re.M)]


def test_options_are_grouped() -> None:
    text = help_of(["once"])
    sections = re.findall(r"^([A-Z][^\n]*):$", text, re.M)
    assert sections[:6] == ["Options", "Which issues", "Quality gates", "Store", "Remote mode (--sync git)",
                            "GitHub Issues (--tracker github)"], sections  # fmt: skip
    which = text.split("Which issues:\n")[1].split("\n\n")[0]
    assert "--min-priority" in which and "--github-repo" not in which


def test_shell_completion_as_documented() -> None:
    """docs/configuration.md#shell-completion: the variable click reads, commands and choices."""
    env = clean_env(_JIT_DISPATCH_COMPLETE="bash_complete", COMP_WORDS="jit-dispatch sta", COMP_CWORD="1")
    assert run_cli(env=env).stdout.split() == ["plain,start", "plain,status"]
    env.update(COMP_WORDS="jit-dispatch status --format ", COMP_CWORD="3")
    assert run_cli(env=env).stdout.split() == ["plain,text", "plain,json", "plain,markdown", "plain,html"]
    script = run_cli(env=clean_env(_JIT_DISPATCH_COMPLETE="bash_source")).stdout
    assert "complete -o nosort -F _jit_dispatch_completion jit-dispatch" in script
