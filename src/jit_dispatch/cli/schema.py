"""The JSON Schema of dispatch.toml, generated from the pydantic model that validates it, and
shipped in the package (`jit_dispatch/schemas/dispatch.schema.json`) for editors: Taplo and
Even Better TOML read a `#:schema` comment at the top of the file (docs/configuration.md#editor-validation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jit_dispatch.cli.config import DispatchConfig

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "dispatch.schema.json"


def dispatch_schema() -> dict[str, Any]:
    """The schema as the model defines it, titled; stable output for a drift test."""
    schema = DispatchConfig.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "jit-dispatch dispatch.toml",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def schema_text() -> str:
    return json.dumps(dispatch_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
