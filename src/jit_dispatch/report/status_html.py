"""`status --format html`: one self-contained page (inline CSS, an inline SVG chart, no script)
that a person can open from a CI artifact or a laptop. Issue text is hostile: everything is
HTML-escaped, and only `https://` run URLs become links. Pure."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from jit_dispatch.report.status import Status, status_json, why_text
from jit_dispatch.report.summary import plain

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1f2328}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}code{font-family:ui-monospace,monospace}.why{color:#57606a}
.counts span{display:inline-block;margin-right:1em}
"""
BAR_WIDTH, CHART_HEIGHT = 28, 120


def status_html(status: Status, generated: datetime) -> str:
    """The dashboard as one HTML document."""
    data = status_json(status)
    counts = "".join(f"<span><b>{n}</b> {escape(state)}</span>" for state, n in status.counts.items() if n)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>jit-dispatch status · {escape(plain(status.location))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>jit-dispatch status · <code>{escape(plain(status.location))}</code></h1>",
        f'<p class="counts">{counts or "no issues"}</p>',
        f"<p>Generated {generated:%Y-%m-%d %H:%M} UTC.</p>",
        trend_svg(status.trend),
    ]
    parts += _table("Dispatchable, in order", ["Issue", "Priority", "Title"], [_cells(e) for e in data["dispatchable"]])
    parts += _table(
        "Ready but held back",
        ["Issue", "Priority", "Title", "Why"],
        [[*_cells(e), escape(plain(e["reason"]))] for e in data["held"]],
    )
    parts += _table(
        "Blocked",
        ["Issue", "Priority", "Title", "Blocked by"],
        [[*_cells(e), ", ".join(f"<code>{escape(d[:8])}</code>" for d in e["blocked_by"])] for e in data["blocked"]],
    )
    parts += _table(
        "In progress",
        ["Issue", "Priority", "Title", "Agent", "Silent for (s)", ""],
        [
            [*_cells(e), escape(plain(e["agent"])), escape(str(e["silent_seconds"] or "")), "stale" * e["stale"]]
            for e in data["in_progress"]
        ],
    )
    for title, key in (
        ("Parked", "parked"),
        ("Released after failed attempts", "released"),
        ("Gated: waiting for gates", "gated"),
    ):
        parts += _table(title, ["Issue", "Priority", "Title", "Why", "Run"], [_why_row(e) for e in data[key]])
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _cells(entry: dict[str, Any]) -> list[str]:
    return [f"<code>{escape(entry['short_id'])}</code>", escape(entry["priority"]), escape(plain(entry["title"]))]


def _why_row(entry: dict[str, Any]) -> list[str]:
    text = why_text({**entry, "run": None})
    return [*_cells(entry), f'<span class="why">{escape(plain(text))}</span>', run_link(entry["run"])]


def run_link(run: object) -> str:
    """A workflow run's URL as a link; anything else (`host:pid`) as text."""
    text = plain(str(run or ""))
    if text.startswith("https://") and not any(c in text for c in "\"'<> "):
        return f'<a href="{escape(text)}">run</a>'
    return escape(text)


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return [f"<h2>{escape(title)} ({len(rows)})</h2>", f"<table><tr>{head}</tr>{body}</table>"]


def trend_svg(trend: list[tuple[datetime, int, int]]) -> str:
    """Settles per hour as stacked bars (done green, released orange), an hour per bar; nothing to
    draw without any settle."""
    if not trend or not any(done or released for _, done, released in trend):
        return ""
    top = max(done + released for _, done, released in trend)
    width = BAR_WIDTH * len(trend)
    bars = []
    for n, (hour, done, released) in enumerate(trend):
        x = n * BAR_WIDTH + 4
        done_h = round(done * CHART_HEIGHT / top)
        released_h = round(released * CHART_HEIGHT / top)
        tip = f"{hour:%H}:00 UTC: {done} done, {released} released"
        bars.append(
            f"<g><title>{escape(tip)}</title>"
            f'<rect x="{x}" y="{CHART_HEIGHT - done_h}" width="{BAR_WIDTH - 8}" height="{done_h}" fill="#2da44e"/>'
            f'<rect x="{x}" y="{CHART_HEIGHT - done_h - released_h}" width="{BAR_WIDTH - 8}" '
            f'height="{released_h}" fill="#d4a72c"/>'
            f'<text x="{x}" y="{CHART_HEIGHT + 14}" font-size="10">{hour:%H}</text></g>'
        )
    first, last = trend[0][0], trend[-1][0]
    return (
        f"<h2>Settles per hour, {first:%H}:00–{last:%H}:00 UTC</h2>"
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{CHART_HEIGHT + 20}" '
        f'aria-label="settles per hour: done (green) and released (orange)">{"".join(bars)}</svg>'
        f"<p>done {sum(d for _, d, _ in trend)} · released {sum(r for _, _, r in trend)} (peak {top}/h)</p>"
    )
