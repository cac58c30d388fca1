"""Every form in which a tool may print a token, and cutting them out of text (pure: no I/O).

A tool rarely prints a token as is: `git config --list` in a workspace left by actions/checkout
shows `AUTHORIZATION: basic base64(x-access-token:TOKEN)`, `curl -v` shows `Bearer TOKEN` or
`Basic base64(TOKEN:)`, a URL shows it percent-encoded. Base64 of a longer string that contains
the token carries, at one of three alignments, a run of characters that depends on the token
alone: those runs are forms too, so any `user:TOKEN` or `TOKEN:password` is caught. See
docs/hardening.md#credentials.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterable

MIN_SECRET = 8  # shorter values are not cut out (they would mangle ordinary text)
MASK = "***"
_SKIP = (0, 2, 3)  # base64 characters mixed with the bytes before a token starting at offset 0, 1, 2


def embedded_base64(token: bytes) -> list[str]:
    """The base64 characters that depend on `token` alone, for each of its 3 alignments in a longer string."""
    runs = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + token).decode().rstrip("=")
        whole, left = divmod(offset + len(token), 3)
        runs.append(encoded[_SKIP[offset] : whole * 4 + left])
    return runs


def secret_forms(token: str) -> list[str]:
    """The token as printed literally, URL-encoded and in base64 (the Basic-auth spellings first)."""
    token = token.strip()
    if len(token) < MIN_SECRET:
        return []
    raw = token.encode()
    forms = [
        base64.b64encode(b"x-access-token:" + raw).decode(),  # actions/checkout's extraheader
        base64.b64encode(raw + b":").decode(),  # curl -u TOKEN:
        base64.b64encode(raw).decode(),
        token,
        urllib.parse.quote(token, safe=""),
        *embedded_base64(raw),
    ]
    unique = list(dict.fromkeys(f for f in forms if len(f) >= MIN_SECRET))
    return sorted(unique, key=len, reverse=True)  # the longest first: a whole header before a part of it


class Scrubber:
    """Cuts every form of the known secrets out of text; also from a stream that splits them."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self.forms: list[str] = []
        for token in tokens:
            self.add(token)

    def add(self, token: str) -> list[str]:
        """Learn a secret; its forms not known before (to register with `::add-mask::`)."""
        new = [form for form in secret_forms(token) if form not in self.forms]
        self.forms = sorted([*self.forms, *new], key=len, reverse=True)
        return new

    def __bool__(self) -> bool:
        return bool(self.forms)

    def scrub(self, text: str) -> str:
        for form in self.forms:
            text = text.replace(form, MASK)
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        for form in self.forms:
            data = data.replace(form.encode(), MASK.encode())
        return data

    def unsafe_tail(self, data: bytes) -> int:
        """How many bytes at the end of `data` may begin a form: a stream holds them back."""
        longest = max((len(f) for f in self.forms), default=0)
        for n in range(min(longest - 1, len(data)), 0, -1):
            tail = data[-n:]
            if any(form.encode().startswith(tail) for form in self.forms):
                return n
        return 0


class StreamScrub:
    """One stream's output (a live log, a log file) cut chunk by chunk: the end of a chunk that may
    begin a form is held back until the next chunk shows whether it does, or `end` lets it out."""

    def __init__(self, scrubber: Scrubber) -> None:
        self.scrubber = scrubber  # shared: secrets learned later are cut from later chunks too
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self.scrubber:
            return chunk
        data = self.scrubber.scrub_bytes(self._pending + chunk)
        keep = self.scrubber.unsafe_tail(data)
        self._pending = data[len(data) - keep :]
        return data[: len(data) - keep]

    def end(self) -> bytes:
        """What was held back: it began no secret after all."""
        rest, self._pending = self._pending, b""
        return rest
