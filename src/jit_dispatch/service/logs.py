"""The pool's event log: one line per event, as text for people or as JSON for Loki/Cloud Logging.

Every JSON line is one object with `ts` (UTC, RFC 3339), `event`, then the event's fields, always
the same keys for the same event (null when unknown) — docs/service.md#json-logs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from jit_dispatch.report.summary import plain


def _claim(f: Mapping[str, Any]) -> str:
    return f"claim   {f['short_id']} → {f['assignee']} ({f['busy']}/{f['capacity']} busy)  {f['priority']}"


def _settle(f: Mapping[str, Any]) -> str:
    code = "–" if f["exit_code"] is None else f["exit_code"]
    reason = f"  {plain(f['reason'])}" if f["reason"] else ""
    return f"settle  {f['short_id']} {f['outcome']} ({f['assignee']}, exit {code}){reason}"


def _status(f: Mapping[str, Any]) -> str:
    busy = " · ".join(f"{a['agent']} {a['busy']}/{a['capacity']}" for a in f["agents"])
    return f"pool    {busy} · settled {f['settled']}"


def _cycle(f: Mapping[str, Any]) -> str | None:
    return None if f["error"] is None else f"error   cycle failed ({f['trigger']}): {plain(f['error'])}"


def _webhook(f: Mapping[str, Any]) -> str:
    what = " ".join(plain(str(part)) for part in (f["kind"], f["action"]) if part)
    wake = " → wake" if f["wake"] else ""
    return f"webhook {f['source']} {what or '-'} {f['status']} {plain(f['message'])}{wake}"


TEXT: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    "start": lambda f: f"jit-dispatch: pool of {len(f['agents'])} agent(s) on {f['store']}",
    "logs": lambda f: f"jit-dispatch: command logs in {f['log_dir']}",
    "listen": lambda f: f"jit-dispatch: listening on {f['url']} (webhooks {'on' if f['webhooks'] else 'off'})",
    "watch": lambda f: f"jit-dispatch: watching {', '.join(f['paths'])} for changes",
    "claim": _claim,
    "settle": _settle,
    "status": _status,
    "cycle": _cycle,
    "webhook": _webhook,
}


class EventLog:
    """Writes each event to `out` as `text` (the default) or `json`; safe to call from any thread."""

    def __init__(self, out: TextIO, fmt: str = "text") -> None:
        self.out = out
        self.json = fmt == "json"
        self._lock = threading.Lock()

    def emit(self, event: str, fields: Mapping[str, Any]) -> None:
        if self.json:
            ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            line: str | None = json.dumps({"ts": ts, "event": event, **fields}, ensure_ascii=False)
        else:
            line = TEXT[event](fields)
        if line is None:
            return
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()
