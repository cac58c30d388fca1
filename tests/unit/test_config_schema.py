"""The JSON Schema shipped for dispatch.toml is the one the pydantic model generates (regenerate:
`jit-dispatch config schema > src/jit_dispatch/schemas/dispatch.schema.json`), and it accepts what
the loader accepts and refuses what it refuses."""

from __future__ import annotations

import json
import tomllib

import jsonschema
import pytest

from jit_dispatch.cli.schema import SCHEMA_FILE, dispatch_schema, schema_text

GOOD = [
    'poll_interval_secs = 5\n[[agents]]\nid = "a"\ncommand = "x"\nmin_priority = "HIGH"\ntimeout = "45m"\n',
    'sync = "git"\nstate_branch = "jit-state"\npush_budget = 90\n',
    'max_attempts = 2\nlabels = ["component:db"]\n',
]
BAD = [
    "max_concurent = 3\n",
    '[[agents]]\nid = "a"\ncommand = "x"\nmin_priority = "urgent"\n',
    'sync = "svn"\n',
    'timeout = "5 parsecs"\n',
    '[[agents]]\nid = "a"\n',  # no command
]


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "regenerate: jit-dispatch config schema > src/jit_dispatch/schemas/dispatch.schema.json"
    )
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


@pytest.mark.parametrize("text", GOOD)
def test_the_schema_accepts_valid_files(text: str) -> None:
    jsonschema.validate(tomllib.loads(text), dispatch_schema())


@pytest.mark.parametrize("text", BAD)
def test_the_schema_refuses_what_the_loader_refuses(text: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tomllib.loads(text), dispatch_schema())
