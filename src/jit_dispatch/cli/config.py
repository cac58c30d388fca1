"""`dispatch.toml`: the agent pool and defaults, validated strictly (unknown keys are errors).

Compatible with the original jit-dispatch format (`poll_interval_secs`, `[[agents]]` with `id`,
`type`, `max_concurrent`, `command`), extended with per-agent capabilities and run settings, and
top-level defaults for the same keys. Precedence: command-line flags, then the agent's table,
then the top-level defaults, then the built-in defaults.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from jit_dispatch.domain.issue import LABEL_PATTERN, assignee_for, parse_duration
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
}


Duration = Annotated[float, BeforeValidator(parse_duration)]
Priority = Literal["critical", "high", "normal", "low"]


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


class DispatchConfig(RunSettings):
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
    """Parse and validate; any mistake is one UsageError naming the file, key and reason."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise UsageError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
    try:
        return DispatchConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UsageError(f"{path}: {_location(dict(first), raw)}: {message}{more}") from None
