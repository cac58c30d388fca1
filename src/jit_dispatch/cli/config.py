"""`dispatch.toml`: the agent pool and defaults, validated strictly (unknown keys are errors).

Compatible with the original jit-dispatch format (`poll_interval_secs`, `[[agents]]` with `id`,
`type`, `max_concurrent`, `command`), extended with per-agent capabilities and run settings, and
top-level defaults for the same keys. Precedence: command-line flags, then the agent's table,
then the top-level defaults, then the built-in defaults.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from jit_dispatch.domain.delivery import DEFAULT_BRANCH_TEMPLATE, check_branch_template
from jit_dispatch.domain.issue import LABEL_PATTERN, assignee_for, parse_duration
from jit_dispatch.domain.values import Priority as PriorityName
from jit_dispatch.errors import UsageError

DEFAULT_PATH = Path("dispatch.toml")
BUILTIN_DEFAULTS: dict[str, Any] = {
    "labels": [],
    "exclude_labels": [],
    "min_priority": None,
    "timeout": None,
    "max_attempts": 3,
    "shell": "bash",
    "workdir": None,
    "gates": "run",
    "on_gate_failure": "release",
    "checks": [],
    "deliver": "none",
    "branch_template": DEFAULT_BRANCH_TEMPLATE,
    "base": None,
    "allow_empty_delivery": False,
    "done_on": None,
    "max_review_rounds": 3,
    "draft": False,
    "pr_labels": [],
    "reviewers": [],
}


def _priority(value: object) -> object:
    """Any case, as on the command line; a non-string is left for pydantic to refuse."""
    return PriorityName.parse(value).value if isinstance(value, str) else value


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# What editors validate (the JSON Schema) says what the parsers accept: durations as numbers or
# `10m`-style strings, priorities in any case.
DURATION_SCHEMA = {
    "anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": r"^\d+(\.\d+)?\s*[smhd]?$"}],
    "description": "Seconds, or a number with s/m/h/d: 600, 90s, 10m, 2h, 2d.",
}
PRIORITY_SCHEMA = {
    "type": "string",
    "pattern": "^(" + "|".join(_any_case(p) for p in PriorityName) + ")$",
    "description": "critical, high, normal or low (any case).",
}
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]
Priority = Annotated[
    Literal["critical", "high", "normal", "low"], BeforeValidator(_priority), WithJsonSchema(PRIORITY_SCHEMA)
]


def _check_labels(labels: list[str]) -> list[str]:
    bad = [label for label in labels if not LABEL_PATTERN.match(label)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a jit label (namespace:value, or namespace:*)")
    return labels


class RunSettings(BaseModel):
    """Keys an agent may set, and the top level may default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[str] | None = None
    exclude_labels: list[str] | None = None
    min_priority: Priority | None = None
    timeout: Duration | None = None
    max_attempts: int | None = Field(default=None, ge=1)
    shell: str | None = None
    workdir: Path | None = None
    gates: Literal["run", "skip"] | None = None
    on_gate_failure: Literal["release", "gated"] | None = None
    checks: list[Annotated[str, Field(min_length=1)]] | None = None
    deliver: Literal["none", "branch", "pull-request"] | None = None  # docs/delivery.md
    branch_template: str | None = None
    base: str | None = None
    allow_empty_delivery: bool | None = None
    done_on: Literal["success", "merge"] | None = None
    max_review_rounds: int | None = Field(default=None, ge=1)
    draft: bool | None = None
    pr_labels: list[Annotated[str, Field(min_length=1)]] | None = None
    reviewers: list[Annotated[str, Field(min_length=1)]] | None = None

    @field_validator("branch_template")
    @classmethod
    def _valid_template(cls, template: str | None) -> str | None:
        if template is not None and (problem := check_branch_template(template)) is not None:
            raise ValueError(problem)
        return template

    @field_validator("labels", "exclude_labels")
    @classmethod
    def _valid_labels(cls, labels: list[str] | None) -> list[str] | None:
        return None if labels is None else _check_labels(labels)


class AgentConfig(RunSettings):
    id: str = Field(min_length=1)
    type: str = "agent"
    max_concurrent: int = Field(default=1, ge=1)
    command: str = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        assignee_for(value)  # raises ValueError with a readable message
        return value


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT`, or `PORT` / `:PORT` for loopback (127.0.0.1): where `start` listens."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:9180")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (port 0-65535; 0 = any free port)")
    return host or "127.0.0.1", int(port)


class StoreSettings(BaseModel):
    """Where the store is and how state is shared: the store options of every command, at the top
    level only (one store for the whole file). A flag or `JIT_DISPATCH_*` variable beats them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sync: Literal["none", "git"] | None = None
    remote: str | None = None
    state_branch: str | None = None
    lock_prefix: str | None = None
    push_budget: Duration | None = None
    wait_for_fold: bool | None = None
    commit_author: str | None = None
    skip_ci: bool | None = None
    heartbeat: Duration | None = None
    tracker: Literal["jit", "github"] | None = None
    github_repo: str | None = None
    github_api_url: str | None = None
    github_ready_label: str | None = None
    include_assigned: bool | None = None
    priority_labels: str | None = None
    github_lock: Literal["refs", "comments"] | None = None
    trusted_actors: list[str] | None = None
    pass_token: bool | None = None

    def store_values(self) -> dict[str, Any]:
        """The keys the file sets (the CLI's option names)."""
        return {key: value for key in StoreSettings.model_fields if (value := getattr(self, key)) is not None}


class DispatchConfig(RunSettings, StoreSettings):
    poll_interval_secs: float = Field(default=30, gt=0)
    repos: list[Path] = Field(default_factory=list)
    agents: list[AgentConfig] = Field(default_factory=list)
    listen: str | None = None  # `start` serves probes, metrics and webhooks here (docs/service.md)

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @field_validator("agents")
    @classmethod
    def _unique_ids(cls, agents: list[AgentConfig]) -> list[AgentConfig]:
        seen: set[str] = set()
        for agent in agents:
            if agent.id in seen:
                raise ValueError(f"agent id {agent.id!r} appears twice")
            seen.add(agent.id)
        return agents

    def agent(self, agent_id: str) -> AgentConfig | None:
        return next((a for a in self.agents if a.id == agent_id), None)

    def effective(self, agent: AgentConfig) -> dict[str, Any]:
        """The agent's settings: its own table, then the top-level defaults, then the built-in ones."""
        merged = dict(BUILTIN_DEFAULTS)
        merged.update({key: getattr(self, key) for key in RunSettings.model_fields if getattr(self, key) is not None})
        merged.update({key: value for key, value in agent.model_dump().items() if value is not None})
        return merged


def _location(error: dict[str, Any], raw: dict[str, Any]) -> str:
    """`agents[1].max_concurrent` → `agents[1] (id "x").max_concurrent` for a readable message."""
    parts: list[str] = []
    for item in error["loc"]:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(str(item))
    where = ".".join(parts) or "(top level)"
    loc = error["loc"]
    if len(loc) >= 2 and loc[0] == "agents" and isinstance(loc[1], int):
        agents = raw.get("agents") or []
        if loc[1] < len(agents) and isinstance(agents[loc[1]], dict) and "id" in agents[loc[1]]:
            where = where.replace(f"agents[{loc[1]}]", f"agents[{loc[1]}] (id {agents[loc[1]]['id']!r})", 1)
    return where


def load_config(path: Path) -> DispatchConfig:
    """Parse and validate; every mistake at once, one line each naming the file, line, key and
    reason (a UsageError of one line per mistake)."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise UsageError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if at := _TOML_AT.search(message):  # "… (at line 3, column 5)": the line first, as compilers do
            message = f"{message[: at.start()].rstrip()} (column {at.group(2)})"
            raise UsageError(f"{path}:{at.group(1)}: not valid TOML: {message}") from None
        raise UsageError(f"{path}: not valid TOML: {message}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise UsageError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
    try:
        return DispatchConfig.model_validate(raw)
    except ValidationError as exc:
        lines = KeyLines(text)
        found = sorted((lines.find(e["loc"]) or 0, _error_line(path, dict(e), raw, lines)) for e in exc.errors())
        raise UsageError("\n".join(line for _, line in found)) from None


_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def _error_line(path: Path, error: dict[str, Any], raw: dict[str, Any], lines: KeyLines) -> str:
    """`dispatch.toml:7: agents[1] (id "x").max_concurent: unknown key (did you mean max_concurrent?)`."""
    message = error["msg"].removeprefix("Value error, ")
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        in_agent = len(loc) >= 2 and loc[0] == "agents"
        known = [*AgentConfig.model_fields, *([] if in_agent else DispatchConfig.model_fields)]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        message = "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
        if close and not in_agent and close[0] not in DispatchConfig.model_fields:
            message = f"unknown key (did you mean {close[0]}? it is set per agent, in an [[agents]] table)"
    line = lines.find(loc)
    return f"{path}{f':{line}' if line else ''}: {_location(error, raw)}: {message}"


class KeyLines:
    """Where a key is written in the file (tomllib keeps no positions): `key = …` lines at the top
    level, in `[table]`s and in the Nth `[[array]]` table. Dotted keys and inline tables: unknown."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")

    def __init__(self, text: str) -> None:
        self.keys: dict[tuple[Any, ...], int] = {}
        table: tuple[Any, ...] = ()
        counts: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if header := self._HEADER.match(line):
                name = header.group(2)
                if header.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                    table = (name, counts[name])
                else:
                    table = (name,)
                self.keys.setdefault(table, number)
            elif key := self._KEY.match(line):
                self.keys.setdefault((*table, key.group(1)), number)

    def find(self, loc: tuple[Any, ...]) -> int | None:
        """The line of `loc`, else of its nearest enclosing table that has one."""
        for end in range(len(loc), 0, -1):
            if (line := self.keys.get(tuple(loc[:end]))) is not None:
                return line
        return None
