#!/usr/bin/env python3
"""Derive the self-contained jit stores in tests/fixtures/ from real ones written by jit.

The real stores (erankavija/just-in-time at d4664f97 and 13275b61, MIT OR Apache-2.0) may not be
committed verbatim. This script keeps every structural byte of them (ids, file names, key order,
indentation, trailing newlines, escaping style, timestamps, states, priorities, assignees, labels,
dependencies, gates, documents, index, event shapes, config) and replaces only free text: issue
titles and descriptions, document labels, event titles and reasons, long gate descriptions, long
TOML comments and long TOML description/statement strings. The replacement text comes from a
small word list and a generator seeded by a fixed key and a hash of the text it replaces, so the
output is deterministic, equal texts stay equal (an issue's title and its `issue_created` event),
and each line keeps its markdown skeleton, punctuation, numbers, symbols, item ids (`REQ-01`),
markers (`[hard]`), placeholders (`{doc}`) and roughly its length.

    python tools/derive_fixtures.py SOURCE_DIR [--out DIR] [--jit-bin DIR]

SOURCE_DIR holds `jit-repo-seed-era/.jit` and `jit-repo-latest/.jit`, the `.jit/` directories of
erankavija/just-in-time at those two commits. With `--jit-bin` it also runs the real
jit binaries on the originals and on the derived stores and compares what they report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures"
STORES = {"jit-repo-seed-era": "seed-era", "jit-repo-latest": "latest"}
BINARIES = {"seed-era": "jit-seed-d4664f97", "latest": "jit-head-13275b61"}
KEY = "jit-dispatch/derive_fixtures/v1"  # change it and every generated text changes

EVENT_TEXT_KEYS = ("title", "reason", "description", "message", "comment")
TOML_TEXT_KEYS = ("description", "statement")
TEXT_KEYS = ("title", "description", "label", *EVENT_TEXT_KEYS)  # where replaced text may sit in jit's JSON
LONG_STRING = 60  # gate descriptions and TOML strings longer than this are prose
LONG_COMMENT_BLOCK = 100  # full-line comment blocks with more characters than this are prose
LONG_INLINE_COMMENT = 40
LONG_CONTEXT_VALUE = 40

# ----------------------------------------------------------------------------- generated text
_WORD_LIST = """
a o e i u an at by in of on or to up we as is it be do go no so us
and the for fox elm ash bay cob den dew fig gem hay ink jar key log map net owl pod ray sea tea yew
arch axis bolt dawn dune fern jade mesa mint mist moss pine pond rain reed salt sand reef lake hill
amber atlas badge basin birch blade bloom brook cabin canal cargo cedar chalk chart cider cliff clock
cloud coast comet coral crane creek crest delta drift eagle ember field flint frost grove hazel heron
ivory kayak larch ledge lemon linen lotus maple marsh mango north ocean olive orbit otter paper pearl
plaza quartz raven ridge river robin sable scarf shell slate smoke spark stone storm swift thorn tower
trail tulip vapor wheat anchor beacon border branch bridge candle canyon cinder circle clover copper
cotton desert engine falcon forest fossil garden garnet harbor hollow island kettle lagoon lantern
marble meadow mirror nickel paddle pebble pepper pillar planet quarry rocket saddle shadow signal silver
spruce summit sunset timber violet walnut willow window winter yarrow zephyr glacier granite horizon
prairie thistle thunder crystal orchard harvest morning blossom cascade compass current diamond emerald
feather gallery hammock journey kingdom mustard network pelican pottery rainbow sparrow station whisper
mountain sapphire seashell snowfall starling sunlight woodland highland lavender mulberry pinecone
riverbed sandbank skylight twilight windmill afternoon blueberry butterfly driftwood firelight nightfall
shoreline starlight sunflower sandstone dragonfly evergreen waterfall moonlight farmhouse stonewall
watercolor cornflower tablecloth candlewick blackberry woodpecker greenhouse springtime lighthouse
"""
WORDS = _WORD_LIST.split()
BY_LENGTH: dict[int, list[str]] = {}
for _word in WORDS:
    BY_LENGTH.setdefault(len(_word), []).append(_word)
ACCENTS = {"a": "á", "e": "é", "i": "í", "o": "ó", "u": "ú", "n": "ñ"}

LETTERS = re.compile(r"[^\W\d_]+")
# Kept verbatim: jit item markers and checkboxes, item ids (REQ-01, D-2), template placeholders, escapes.
PROTECTED = re.compile(r"\[(?:hard|x|X| )\]|\b[A-Z][A-Z0-9]*-[0-9]+\b|\{[A-Za-z_.]+\}|\\.")
FENCE = re.compile(r"^\s*(```|~~~)[\w+.-]*\s*$")
HEADING = re.compile(r"^\s*#{1,6}\s+(.*?)\s*$")
# Section headings jit's item kinds and criteria parsing look for: kept so the same items are found.
KEPT_HEADINGS = {"success criteria", "acceptance criteria", "decisions", "risks", "core concepts", "requirements"}


def _word(rng: random.Random, original: str) -> str:
    """A generated word of about the original's length, with its case pattern and any accent."""
    n = len(original)
    target = max(1, n + rng.choice((-1, 0, 0, 1))) if n > 3 else n
    if target in BY_LENGTH:
        word = rng.choice(BY_LENGTH[target])
    else:  # a compound of exactly that length
        word = ""
        while len(word) < target:
            rest = target - len(word)
            fits = [n for n in BY_LENGTH if 3 <= n <= rest - 3 or n == rest]
            word += rng.choice(BY_LENGTH[rng.choice(fits)])
    if not original.isascii():
        spots = [i for i, c in enumerate(word) if c in ACCENTS] or [0]
        i = rng.choice(spots)
        word = word[:i] + ACCENTS.get(word[i], "é") + word[i + 1 :]
    if len(original) > 1 and original.isupper():
        return word.upper()
    if original[0].isupper():
        return word[0].upper() + word[1:]
    return word


def _line(rng: random.Random, line: str) -> str:
    """Replace the letters of one line, keeping protected tokens, digits, punctuation and symbols."""
    parts, last = [], 0
    for match in PROTECTED.finditer(line):
        parts.append(LETTERS.sub(lambda m: _word(rng, m.group()), line[last : match.start()]))
        parts.append(match.group())
        last = match.end()
    parts.append(LETTERS.sub(lambda m: _word(rng, m.group()), line[last:]))
    return "".join(parts)


def fake_text(text: str) -> str:
    """Generated text in the shape of `text`: same lines, markdown skeleton, symbols; equal in, equal out."""
    rng = random.Random(hashlib.sha256(f"{KEY}\0{text}".encode()).digest())
    out = []
    for line in text.split("\n"):
        heading = HEADING.match(line)
        kept_heading = heading and re.sub(r"[^a-z ]", "", heading.group(1).lower()).strip() in KEPT_HEADINGS
        out.append(line if FENCE.match(line) or kept_heading else _line(rng, line))
    return "\n".join(out)


# ----------------------------------------------------------------------------- file styles
@dataclass(frozen=True)
class JsonStyle:
    """How a JSON document was written: indentation or compact separators, escaping, final newline."""

    indent: int | None
    separators: tuple[str, str] | None
    ascii: bool
    newline: bool

    def dumps(self, value: Any) -> str:
        text = json.dumps(value, indent=self.indent, separators=self.separators, ensure_ascii=self.ascii)
        return text + ("\n" if self.newline else "")


PRETTY = [JsonStyle(2, None, a, n) for a in (False, True) for n in (False, True)]
LINE = [JsonStyle(None, s, a, False) for s in ((",", ":"), (", ", ": ")) for a in (False, True)]


def style_of(text: str, candidates: list[JsonStyle]) -> tuple[Any, JsonStyle]:
    """Parse `text` and find the style that reproduces it byte for byte (or fail loudly)."""
    value = json.loads(text)
    for style in candidates:
        if style.dumps(value) == text:
            return value, style
    raise SystemExit(f"derive_fixtures: no known JSON style reproduces {text[:80]!r}")


# ----------------------------------------------------------------------------- derivation
@dataclass
class Derivation:
    """The derived files of one store, and every text replaced on the way (original → generated)."""

    files: dict[str, bytes] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def fake(self, text: str) -> str:
        if not LETTERS.search(text):
            return text
        self.texts[text] = fake_text(text)
        return self.texts[text]


def derive_issue(d: Derivation, raw: dict[str, Any]) -> dict[str, Any]:
    """An issue with its free text replaced; everything else (and the key order) untouched."""
    out = dict(raw)
    for key in ("title", "description"):
        if isinstance(out.get(key), str):
            out[key] = d.fake(out[key])
    if isinstance(out.get("context"), dict):
        out["context"] = {
            k: d.fake(v) if isinstance(v, str) and " " in v and len(v) > LONG_CONTEXT_VALUE else v
            for k, v in out["context"].items()
        }
    if isinstance(out.get("documents"), list):
        out["documents"] = [
            {**doc, "label": d.fake(doc["label"])} if " " in (doc.get("label") or "") else doc
            for doc in out["documents"]
        ]
    return out


def derive_event(d: Derivation, event: dict[str, Any]) -> dict[str, Any]:
    """An event with its free text (titles, reasons) replaced; type, ids, timestamps and order kept."""
    return {k: d.fake(v) if k in EVENT_TEXT_KEYS and isinstance(v, str) else v for k, v in event.items()}


def derive_gates(d: Derivation, registry: dict[str, Any]) -> dict[str, Any]:
    """The gate registry with long descriptions replaced; keys, titles, commands and shapes kept."""
    gates = {}
    for name, gate in registry["gates"].items():
        text = gate.get("description")
        long = isinstance(text, str) and len(text) > LONG_STRING
        gates[name] = {**gate, "description": d.fake(text)} if long else gate
    return {**registry, "gates": gates}


def split_comment(line: str) -> tuple[str, str | None]:
    """A TOML line as (code, comment body after '#'), honouring basic and literal strings."""
    quote = None
    i = 0
    while i < len(line):
        c = line[i]
        if quote == '"' and c == "\\":
            i += 2
            continue
        if quote and c == quote:
            quote = None
        elif not quote and c in "\"'":
            quote = c
        elif not quote and c == "#":
            return line[:i], line[i + 1 :]
        i += 1
    return line, None


# `key = "value"` for TOML_TEXT_KEYS: a statement is always prose, a description only when long.
TOML_STRING = re.compile(r'^(\s*(description|statement)\s*=\s*")((?:[^"\\]|\\.)*)(".*)$')


def derive_toml(d: Derivation, text: str) -> str:
    """Config kept as is, except long comment blocks, long inline comments and long description strings."""
    if '"""' in text or "'''" in text:
        raise SystemExit("derive_fixtures: multi-line TOML strings are not handled")
    lines = text.split("\n")
    split = [split_comment(line) for line in lines]
    out = list(lines)
    i = 0
    while i < len(lines):
        code, comment = split[i]
        if comment is not None and not code.strip():
            j = i
            while j < len(lines) and split[j][1] is not None and not split[j][0].strip():
                j += 1
            block = [split[k][1] or "" for k in range(i, j)]
            if sum(map(len, block)) > LONG_COMMENT_BLOCK:
                for k, body in zip(range(i, j), d.fake("\n".join(block)).split("\n"), strict=True):
                    out[k] = split[k][0] + "#" + body
            i = j
            continue
        if comment is not None and len(comment) > LONG_INLINE_COMMENT:
            out[i] = code + "#" + d.fake(comment)
        match = TOML_STRING.match(out[i])
        if match and (match.group(2) == "statement" or len(match.group(3)) > LONG_STRING):
            out[i] = match.group(1) + d.fake(match.group(3)) + match.group(4)
        i += 1
    return "\n".join(out)


def derive_store(source: Path) -> Derivation:
    """Every file of one `.jit/` directory, derived in memory."""
    d = Derivation()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source).as_posix()
        data = path.read_bytes()
        if not data.strip():
            d.files[rel] = data  # an empty file stays empty
        elif rel.startswith("issues/") and rel.endswith(".json"):
            raw, style = style_of(data.decode(), PRETTY)
            d.files[rel] = style.dumps(derive_issue(d, raw)).encode()
        elif rel == "events.jsonl":
            lines = []
            for line in data.decode().split("\n"):
                if line.strip():
                    event, style = style_of(line, LINE)
                    line = style.dumps(derive_event(d, event))
                lines.append(line)
            d.files[rel] = "\n".join(lines).encode()
        elif rel == "gates.json":
            registry, style = style_of(data.decode(), PRETTY)
            d.files[rel] = style.dumps(derive_gates(d, registry)).encode()
        elif rel == "index.json" or rel.startswith("schemas/"):
            value, style = style_of(data.decode(), PRETTY)  # ids and generated schemas: no prose
            d.files[rel] = style.dumps(value).encode()
        elif rel.endswith(".toml"):
            d.files[rel] = derive_toml(d, data.decode()).encode()
        else:
            raise SystemExit(f"derive_fixtures: no rule for {source / rel}; add one before deriving")
    return d


# ----------------------------------------------------------------------------- self-check
def masked(value: Any, keys: tuple[str, ...]) -> Any:
    """`value` with the string leaves under `keys` blanked, keeping key order (for order-sensitive dumps)."""
    if isinstance(value, dict):
        return {k: "…" if k in keys and isinstance(v, str) else masked(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, keys) for v in value]
    return value


def check_store(source: Path, d: Derivation) -> list[str]:
    """What differs between original and derived beyond the replaced free text (empty = fine)."""
    problems = []
    originals = {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    if set(originals) != set(d.files):
        problems.append(f"file sets differ: {sorted(set(originals) ^ set(d.files))}")
    text_keys = TEXT_KEYS
    for rel, old_bytes in originals.items():
        old, new = old_bytes.decode(), d.files.get(rel, b"").decode()
        if rel.endswith(".json"):
            old_value, old_style = style_of(old, PRETTY) if old.strip() else (None, None)
            new_value, new_style = style_of(new, PRETTY) if new.strip() else (None, None)
            if old_style != new_style or ("\\u" in old) != ("\\u" in new):
                problems.append(f"{rel}: JSON style changed")
            if json.dumps(masked(old_value, text_keys)) != json.dumps(masked(new_value, text_keys)):
                problems.append(f"{rel}: structure changed")
            if rel.startswith("issues/") and "\n" in new_value.get("title", ""):
                problems.append(f"{rel}: multi-line title")
        elif rel.endswith(".jsonl"):
            old_lines, new_lines = old.split("\n"), new.split("\n")
            if len(old_lines) != len(new_lines):
                problems.append(f"{rel}: line count changed")
            for n, (a, b) in enumerate(zip(old_lines, new_lines, strict=False), 1):
                if a.strip() and (style_of(a, LINE)[1] != style_of(b, LINE)[1] or masked_line(a) != masked_line(b)):
                    problems.append(f"{rel}:{n}: event changed")
        elif rel.endswith(".toml"):
            old_toml, new_toml = tomllib.loads(old), tomllib.loads(new)
            if json.dumps(masked(old_toml, TOML_TEXT_KEYS)) != json.dumps(masked(new_toml, TOML_TEXT_KEYS)):
                problems.append(f"{rel}: TOML structure changed")
            if old.count("\n") != new.count("\n"):
                problems.append(f"{rel}: line count changed")
    derived_text = b"\n".join(d.files.values()).decode()
    leaked = [t for t in d.texts if len(t) >= 24 and " " in t and t in derived_text]
    problems += [f"original text still present: {t[:60]!r}" for t in leaked[:5]]
    return problems


def masked_line(line: str) -> str:
    """One event line, free text blanked, as an order-sensitive string."""
    return json.dumps(masked(json.loads(line), EVENT_TEXT_KEYS))


# ----------------------------------------------------------------------------- comparison with real jit
@dataclass
class Run:
    """What one jit process did."""

    code: int
    out: str
    err: str


def run_jit(binary: Path, cwd: Path, *args: str) -> Run:
    """Run jit from `cwd` (the directory holding `.jit/`) with a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JIT_", "GIT_"))}
    env["HOME"] = str(cwd)  # no ~/.config/jit/agent.toml from the caller
    proc = subprocess.run([str(binary), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def substitute(text: str, texts: list[tuple[str, str]]) -> str:
    """`text` with each (old, new) pair replaced, in the given order."""
    for old, new in texts:
        if old in text:
            text = text.replace(old, new)
    return text


def normalise(value: Any, texts: dict[str, str], pairs: list[tuple[str, str]], unordered: bool, key: str = "") -> Any:
    """An original's output in terms of the derived texts; list order dropped where jit's is random."""
    if isinstance(value, dict):
        return {k: normalise(v, texts, pairs, unordered, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [normalise(v, texts, pairs, unordered, key) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True)) if unordered else items
    if isinstance(value, str):
        return texts[value] if key in TEXT_KEYS and value in texts else substitute(value, pairs)
    return value


def comparable(run: Run, repo: Path, texts: dict[str, str], pairs: list[tuple[str, str]], unordered: bool) -> Any:
    """Exit code, stderr and stdout (parsed as JSON or JSON lines where possible) of one jit run."""
    pairs = [(str(repo), "<repo>"), *pairs]
    if unordered:
        generic = "in issue <id>: file <path> not found"
        run = Run(run.code, RANDOM_DOCUMENT.sub(generic, run.out), RANDOM_DOCUMENT.sub(generic, run.err))
    out: Any
    try:
        out = normalise(json.loads(run.out), texts, pairs, unordered)
    except ValueError:
        try:
            out = [normalise(json.loads(x), texts, pairs, unordered) for x in run.out.splitlines() if x.strip()]
        except ValueError:
            lines = substitute(run.out, pairs).splitlines()
            out = sorted(lines) if unordered else lines
    return run.code, substitute(run.err, pairs).strip(), out


def prepare(repo: Path, mode: str) -> None:
    """Set up a copied store for `mode`: "plain" (no git), "git" (committed, documents missing as in
    the originals) or "stubbed" (committed, every referenced document a stub, pinned commits dropped)."""
    if mode == "plain":
        return
    if mode == "stubbed":
        for path in (repo / ".jit" / "issues").glob("*.json"):
            raw, style = style_of(path.read_text(encoding="utf-8"), PRETTY)
            for doc in raw.get("documents", []):
                target = repo / doc["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.write_text("# stub\n")
                doc["commit"] = None
            path.write_text(style.dumps(raw), encoding="utf-8")
    git = ["git", "-c", "user.name=fixture", "-c", "user.email=fixture@example.invalid", "-C", str(repo)]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", mode]):
        subprocess.run([*git, *args], check=True, capture_output=True)


MODES = ("plain", "git", "stubbed")
# The seed jit names whichever missing document its HashSet yields first: compare the kind of error.
RANDOM_DOCUMENT = re.compile(r"in issue '[0-9a-f-]{36}': file '[^']*' not found")


def commands(era: str, ids: list[str]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(mode, argv) of every jit command compared (modes: see `prepare`)."""
    for mode in MODES:
        yield mode, ("validate",)
        yield mode, ("validate", "--json")
    yield "plain", ("query", "available", "--json")
    if era == "latest":
        yield "plain", ("query", "ready", "--json")
    yield "plain", ("query", "all", "--json")
    yield "plain", ("query", "blocked", "--json")
    yield "plain", ("events", "tail")
    yield "plain", ("events", "tail", "-n", "1000000")
    for issue_id in ids:
        yield "plain", ("issue", "show", issue_id, "--json")
        if era == "latest":
            yield "stubbed", ("validate", issue_id, "--json")


def compare_with_jit(source: Path, out: Path, bin_dir: Path, texts: dict[str, dict[str, str]]) -> bool:
    """Run the real jit on originals and derived stores; report per command family; True if all agree."""
    ok = True
    for src_name, name in STORES.items():
        binary = bin_dir / BINARIES[name]
        index = json.loads((source / src_name / ".jit" / "index.json").read_text())
        ids = index["all_ids"] + index.get("deleted_ids", [])
        mapping = texts[name]
        # Titles embedded in messages (blocked reasons): multi-word ones only, so no accidental hits.
        embedded = ((k, v) for k, v in mapping.items() if " " in k and len(k) >= 10 and "\n" not in k)
        pairs = sorted(embedded, key=lambda kv: -len(kv[0]))
        unordered = name == "seed-era"  # the seed jit lists HashSet/HashMap contents in random order
        with tempfile.TemporaryDirectory(prefix="derive-fixtures-") as tmp:
            repos = {}
            for side, store in (("original", source / src_name / ".jit"), ("derived", out / name / ".jit")):
                for mode in MODES:
                    repo = Path(tmp) / f"{side}-{mode}"
                    shutil.copytree(store, repo / ".jit")
                    for p in repo.rglob("*"):
                        p.chmod(0o755 if p.is_dir() else 0o644)
                    prepare(repo, mode)
                    repos[side, mode] = repo
            tally: dict[str, list[int]] = {}
            for mode, argv in commands(name, ids):
                family = " ".join(a for a in argv[:3] if not re.fullmatch(r"[0-9a-f-]{36}", a))
                family = f"{family} ({mode})" if mode != "plain" else family
                repo = repos["original", mode]
                orig = comparable(run_jit(binary, repo, *argv), repo, mapping, pairs, unordered)
                repo = repos["derived", mode]
                derived = comparable(run_jit(binary, repo, *argv), repo, {}, [], unordered)
                counts = tally.setdefault(family, [0, 0, 0])
                counts[0] += 1
                counts[1] += orig == derived
                counts[2] += orig[0] != 0
                if orig != derived and counts[0] - counts[1] <= 2:
                    print(f"  MISMATCH {name}: jit {' '.join(argv)} ({mode})\n    {orig!r:.300}\n    {derived!r:.300}")
            for family, (runs, same, failing) in tally.items():
                ok &= runs == same
                note = f", exit≠0 in {failing}" if failing else ""
                print(f"  {name:8} {BINARIES[name]}: {family:38} {same}/{runs} identical{note}")
    return ok


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Derive both stores into --out (replacing what is there); optionally compare with real jit."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="dir with jit-repo-seed-era/.jit and jit-repo-latest/.jit")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where seed-era/ and latest/ go")
    parser.add_argument("--jit-bin", type=Path, help="dir with the real jit binaries: also compare their answers")
    args = parser.parse_args(argv)
    source, out = args.source.resolve(), args.out.resolve()
    texts: dict[str, dict[str, str]] = {}
    for src_name, name in STORES.items():
        store = source / src_name / ".jit"
        if not store.is_dir():
            print(f"derive_fixtures: {store} not found", file=sys.stderr)
            return 2
        d = derive_store(store)
        problems = check_store(store, d)
        if problems:
            print("\n".join(f"derive_fixtures: {name}: {p}" for p in problems[:20]), file=sys.stderr)
            return 1
        target = out / name / ".jit"
        if target.exists():
            shutil.rmtree(target)
        for rel, data in d.files.items():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(data)
        texts[name] = d.texts
        print(f"{name}: {len(d.files)} files, {len(d.texts)} texts replaced -> {target}")
    if args.jit_bin:
        return 0 if compare_with_jit(source, out, args.jit_bin.resolve(), texts) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
