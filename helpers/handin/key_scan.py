"""Finding Kaggle and W&B credentials in files about to leave the machine (the hand-in zip).

A notebook is parsed and each cell's source and outputs (stream text, text
data, HTML read as its text, error tracebacks) are scanned as the text the
student saw, joined the way nbformat joins them; the raw bytes of every file
are scanned too, and so is every file of the run folder (W&B's logs included).
A ``.wandb`` log is read record by record, each put back together across its
block headers, and a PNG's compressed text chunks are inflated (within a
bound): see :mod:`helpers.handin.embedded`. Every file's name is scanned as
well (a notebook saved under a name holding a token). A finding names the
file, the cell, line or record and the kind of key, never the key itself (a
name holding one is shown with the key cut out). The scan takes time linear in
its input.

A key is recognised three ways:

* by its context (``wandb.login(key=...)``, ``KAGGLE_KEY=...``, a kaggle.json
  body, a .netrc line);
* by a prefix no other string carries (``KGAT_``, ``wandb_v1_``), also across a
  concatenation of literals (``'KGAT_' + '...'``);
* by its value: a string literal, a YAML or JSON value or a ``NAME=VALUE``
  value that is a whole legacy W&B key (40 hex digits, optionally after a
  ``local-`` style prefix), or 32 hex digits (a Kaggle key) under a key-like
  name or beside a ``username``. Such a value may go on to be used through a
  variable (``api_key = '...'`` then ``wandb.login(key=api_key)``). In a
  cell's output, a line that is a whole legacy W&B key and nothing else is one
  too (what ``print(os.environ["WANDB_API_KEY"])`` shows).

Hex strings that are not keys: those in prose or log text (``commit 3f2a...``
in ``git log``, ``finishing run <project>/<id>``), those inside a longer value
(a path, a URL, a version ``0.31.0+3f2a...``), 32 hex digits with no key-like
name nor username near, and any value under a name that says it is a digest
or an id: ``sha``/``sha1``/``sha256``, ``hash``, ``digest``, ``checksum``,
``md5``, ``commit``, ``revision``/``rev``, ``etag``, ``oid``, ``fingerprint``,
``id`` and ``*_id`` (W&B's ``"commit": "..."`` metadata, a checkpoint's
checksum in a config).
"""

from __future__ import annotations

import bisect
import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from helpers.core.errors import UserError
from helpers.handin.embedded import PNG_TEXT_LIMIT, png_compressed_texts, wandb_records

SECRET_FILES = {"kaggle.json", ".netrc", "netrc", "access_token"}

_QUOTE = r"""\\?["']"""  # a quote, JSON-escaped or not: raw .ipynb bytes hold cell text as JSON strings
_WANDB_V1 = r"wandb_v1_[A-Za-z0-9_-]{20,}"  # the 86-character keys of 2025 on
_KGAT = r"KGAT_[A-Za-z0-9]{20,}"  # Kaggle's single API token
_HEX_KEY = r"(?:[a-z]+-)?[0-9a-f]{40}"  # the legacy W&B key (local-... on a W&B server)
_WANDB_KEY = rf"(?:{_WANDB_V1}|{_HEX_KEY}(?![0-9a-f]))"
_TOKEN = r"(?=[A-Za-z0-9_-]{0,300}[0-9])[A-Za-z0-9_-]{32}"  # a long value with a digit: not a variable name
_NAMED = r"{names}\\?[\"']?\]?\s*(?:[=:,]\s*)?(?:{quote})?{value}"  # NAME = "v", os.environ["NAME"] = "v", %env NAME v

PATTERNS = [  # the ones that name their context first: a line reports the first kind that matches
    (re.compile(rf"\blogin\(\s*(?:key\s*=\s*)?{_QUOTE}{_WANDB_KEY}{_QUOTE}"), "a W&B API key (wandb.login)"),
    (re.compile(rf"\bwandb\s+login\s+(?:-[a-z-]+\s+)*{_WANDB_KEY}"), "a W&B API key (wandb login)"),
    (re.compile(_NAMED.format(names="WANDB_API_KEY", quote=_QUOTE, value=_TOKEN)), "a W&B API key (WANDB_API_KEY)"),
    (re.compile(_NAMED.format(names="KAGGLE_API_TOKEN", quote=_QUOTE, value=_TOKEN)),
     "a Kaggle API token (KAGGLE_API_TOKEN)"),
    (re.compile(_NAMED.format(names="KAGGLE_KEY", quote=_QUOTE, value=_TOKEN)), "a Kaggle API key (KAGGLE_KEY)"),
    (re.compile(rf"{_QUOTE}key{_QUOTE}\s*:\s*{_QUOTE}[0-9a-f]{{32}}{_QUOTE}"), "a Kaggle API key (kaggle.json)"),
    (re.compile(r"\bmachine\s+\S+\s+login\s+\S+\s+password\s+\S{8,}"), "a password (.netrc line)"),
    (re.compile(_KGAT), "a Kaggle API token (KGAT_)"),
    (re.compile(_WANDB_V1), "a W&B API key (wandb_v1_)"),
]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour codes in tracebacks would split a key from its context
_BARE_KEY = re.compile(r"""^[ \t]*["']?(?:[a-z]+-)?[0-9a-f]{40}["']?[ \t]*\r?$""", re.MULTILINE)
_TAG = re.compile(r"<[^<>]*>")  # an HTML tag; [^<>] keeps a run of unclosed ones linear
_WORD = re.compile(r"[A-Za-z0-9_-]*")

# The end of one string literal and the start of the next, in a concatenation: 'KGAT_' + '...', or "a" "b".
_JOINED_LITERALS = re.compile(r"""\\?["']\s*(?:\+\s*)?\\?["']""")
_QUOTED = r"""(?<=["'])(?P<value>{value})(?=\\?["'])"""  # a whole literal; \" closes one in raw JSON
_YAML_VALUE = r"^[ \t]*(?:-[ \t]+)?(?P<name>[\w.-]+)[ \t]*:[ \t]+(?P<value>{value})[ \t]*(?:#.*)?$"
# --set tracking.wandb.project=..., X=... in a shell; a name starts where a word does (linear in long words)
_ASSIGNED = r"(?<![\w.-])(?P<name>[\w.-]+)=(?P<value>{value})(?![\w-])"
_VALUE_FORMS = [re.compile(form.format(value=value), re.MULTILINE) for value in (_HEX_KEY, r"[0-9a-f]{32}")
                for form in (_QUOTED, _YAML_VALUE, _ASSIGNED)]
_NAME_BEFORE = re.compile(r"(?P<name>[A-Za-z_][\w.-]*)\\?[\"']?\]?\s*[:=]\s*\\?$")  # name = '...', "name": "..."
DIGEST_NAMES = re.compile(r"sha|hash|digest|checksum|md5|commit|revision|^rev$|etag|oid|fingerprint|(?:^|[_.-])id$",
                          re.IGNORECASE)
_KEY_NAMES = re.compile(r"key|token|secret|password|api", re.IGNORECASE)
_USERNAME_NEAR = 300  # characters either side of a 32-hex value in which a username makes it a Kaggle key


@dataclass(frozen=True)
class Finding:
    """One credential found: where in the file (``cell 3``, ``cell 3, output``, ``line 12``) and what kind."""

    where: str
    kind: str


def scan_text(text: str, bare_lines: bool = False) -> list[tuple[int, str]]:
    """(line number, kind) of each line of ``text`` that holds a credential; ``bare_lines``: a line that is a
    whole legacy W&B key and nothing else counts (a cell's output)."""
    text, line_of = _join_literals(_ANSI.sub("", text))
    found: dict[int, str] = {}
    for pattern, kind in PATTERNS + ([(_BARE_KEY, "a W&B API key (a line of 40 hex)")] if bare_lines else []):
        for match in pattern.finditer(text):
            found.setdefault(line_of(match.start()), kind)
    for form in _VALUE_FORMS:
        for match in form.finditer(text):
            kind = _value_kind(text, match)
            if kind:
                found.setdefault(line_of(match.start()), kind)
    return sorted(found.items())


def _join_literals(text: str):
    """``text`` with concatenated string literals made one (``'KGAT_' + 'x'`` reads ``'KGAT_x'``), and the line
    of the original text that a position in the joined text falls on."""
    pieces, starts, newlines_before, kept, length, removed = [], [0], [0], 0, 0, 0
    for match in _JOINED_LITERALS.finditer(text):
        pieces.append(text[kept:match.start()])
        length += len(pieces[-1])
        removed += match.group().count("\n")
        starts.append(length)
        newlines_before.append(removed)
        kept = match.end()
    joined = "".join(pieces) + text[kept:]
    newlines = [match.start() for match in re.finditer("\n", joined)]

    def line_of(position: int) -> int:
        return (bisect.bisect_left(newlines, position) + newlines_before[bisect.bisect_right(starts, position) - 1]
                + 1)

    return joined, line_of


def _value_kind(text: str, match: re.Match) -> str | None:
    """The kind of key a whole value is (a 40-hex W&B key, a 32-hex Kaggle key), or None when its name says it
    is a digest or an id, or a 32-hex value has no key-like name and no username near."""
    name = match.groupdict().get("name") or _name_before(text, match.start())
    if DIGEST_NAMES.search(name):
        return None
    if len(match.group("value")) != 32:
        return "a W&B API key (a 40-hex value)"
    near = text[max(0, match.start() - _USERNAME_NEAR):match.end() + _USERNAME_NEAR]
    return "a Kaggle API key (a 32-hex value)" if _KEY_NAMES.search(name) or "username" in near.lower() else None


def _name_before(text: str, start: int) -> str:
    """The name a quoted value is given (``api_key = '...'``, ``"commit": "..."``, ``key='...'``), or ''."""
    found = _NAME_BEFORE.search(text, max(0, start - 120), max(0, start - 1))
    return found.group("name") if found else ""


def scan_file(name: str, data: bytes) -> list[Finding]:
    """Every credential in a file's name and bytes: a notebook's cells are read as text, then its raw JSON; a
    ``.wandb`` log record by record; a PNG's compressed text inflated."""
    if Path(name).name in SECRET_FILES:
        return [Finding("the whole file", f"a credentials file ({Path(name).name})")]
    named = [Finding("its name", kind) for _, kind in scan_text(name.replace("/", "\n").replace("\\", "\n"))]
    return list(dict.fromkeys(named + _scan_content(name, data)))


def _scan_content(name: str, data: bytes) -> list[Finding]:
    records = wandb_records(data) if name.endswith(".wandb") else None
    if records is not None:
        return _scan_records(*records)
    text = data.decode("utf-8", errors="ignore")
    findings = _scan_notebook(text) if name.endswith(".ipynb") else []
    if not findings:
        findings = [Finding(f"line {line}", kind) for line, kind in scan_text(text)]
    compressed = png_compressed_texts(data)
    if compressed is not None:
        texts, cut = compressed
        for number, chunk in enumerate(texts, 1):
            findings += [Finding(f"compressed text chunk {number}", kind)
                         for _, kind in scan_text(chunk.decode("utf-8", errors="ignore"))]
        if cut:
            findings.append(Finding("its compressed text chunks", "more text than the scan inflates (over "
                                    f"{PNG_TEXT_LIMIT:,} bytes), which cannot be checked"))
    return findings


def _scan_records(records: list[bytes], rest: bytes) -> list[Finding]:
    """The findings of a ``.wandb`` log's records (``record 12``), and of the bytes after where it breaks off."""
    first_lines, line = [], 1
    for record in records:
        first_lines.append(line)
        line += record.count(b"\n") + 1
    text = b"\n".join(records).decode("utf-8", errors="ignore")
    findings = [Finding(f"record {bisect.bisect_right(first_lines, line)}", kind) for line, kind in scan_text(text)]
    return findings + [Finding(f"line {line} of its damaged end", kind)
                       for line, kind in scan_text(rest.decode("utf-8", errors="ignore"))]


def _scan_notebook(text: str) -> list[Finding]:
    try:
        cells = json.loads(text).get("cells", [])
    except (ValueError, AttributeError, RecursionError):
        return []  # not a notebook after all: the raw scan still runs
    findings: dict[Finding, None] = {}
    for number, cell in enumerate(cells if isinstance(cells, list) else [], 1):
        if not isinstance(cell, dict):
            continue
        for part, content in [("", cell.get("source", ""))] + [(", output", output) for output in
                                                               cell.get("outputs", []) or []]:
            try:
                content = _text_of(content)
            except RecursionError:
                continue  # nested past any notebook: the raw scan reads it
            for _, kind in scan_text(content, bare_lines=bool(part)):
                findings.setdefault(Finding(f"cell {number}{part}", kind))
    return list(findings)


def _text_of(content, joiner: str = "") -> str:
    """All the text in a cell source or output: strings, lists of lines, and every text field of an output
    (``text``, ``data`` of text types, HTML as its text, ``ename``/``evalue``/``traceback``); images are
    skipped. Lists are joined as nbformat joins them: a multiline string's pieces with nothing (a line may be
    split across them), a traceback's lines with newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return joiner.join(_text_of(item) for item in content)
    if isinstance(content, dict):
        return "\n".join(_html_text(_text_of(value)) if key == "text/html" else
                         _text_of(value, "\n" if key == "traceback" else "") for key, value in content.items()
                         if not str(key).startswith("image/") and key not in ("metadata", "output_type"))
    return ""


def _html_text(markup: str) -> str:
    """What an HTML output shows, a line per element (``<pre>KEY</pre>`` reads as a line holding the key)."""
    return html.unescape(_TAG.sub("\n", markup))


def describe(name: str, findings: list[Finding]) -> str:
    """One sentence naming the file, where and what: never the key (cut out of a name that holds one)."""
    places = "; ".join(f"{finding.where} holds {finding.kind}" for finding in findings)
    return f"{redacted(name)}: {places}"


def redacted(name: str) -> str:
    """``name`` with each key it holds replaced by ``[key]``, and the rest of that word with it."""
    hidden = [False] * len(name)
    for pattern in [pattern for pattern, _ in PATTERNS] + _VALUE_FORMS:
        for match in pattern.finditer(name):
            start, end = match.start(), _WORD.match(name, match.end()).end()
            hidden[start:end] = [True] * (end - start)
    return re.sub(r"\0+", "[key]", "".join("\0" if hide else char for char, hide in zip(name, hidden)))


# Not text: only their names are scanned in the run folder (what is packed is scanned whatever it is).
BINARY_SUFFIXES = {".pt", ".jpg", ".jpeg", ".zip"}
_LARGEST_SCANNED = 20_000_000  # bytes; a run folder's text files are far smaller


def files_inside(folder: str | Path, boundary: str | Path | None = None) -> list[Path]:
    """The files under ``folder`` whose real path lies inside ``boundary`` (default ``folder``), sorted: a file
    reached through a link that leaves it is not listed (W&B links its ``debug-core.log`` into ``~/.cache``),
    and linked folders are not entered (their files are listed where they really are, if inside)."""
    inside = Path(os.path.realpath(boundary if boundary is not None else folder))
    found = []
    for current, _, names in os.walk(folder):
        for name in names:
            path = Path(current) / name
            if path.is_file() and Path(os.path.realpath(path)).is_relative_to(inside):
                found.append(path)
    return sorted(found)


def folder_texts(folder: str | Path) -> list[tuple[str, bytes]]:
    """``(path, bytes)`` of every file :func:`files_inside` lists, for the key scan: W&B's logs, ``.wandb``
    files and PNGs whole; checkpoints, JPEGs, zips and files of 20 MB or more as no bytes (their names only)."""
    return [(str(path), b"" if path.suffix.lower() in BINARY_SUFFIXES or path.stat().st_size >= _LARGEST_SCANNED
             else path.read_bytes()) for path in files_inside(folder)]


def refuse_links_out(folder: str | Path) -> None:
    """Refuse an entry directly in ``folder`` (what a hand-in packs by name: ``config.yaml``, ``submission.csv``,
    ``wandb/``...) that is a link to outside it: one sentence naming it. Checkpoints are read, never packed."""
    inside = Path(os.path.realpath(folder))
    for path in sorted(Path(folder).iterdir()):
        if path.is_symlink() and path.suffix != ".pt" and not Path(os.path.realpath(path)).is_relative_to(inside):
            raise UserError(f"{path} is a link to {'a folder' if path.is_dir() else 'a file'} outside the run "
                            "folder; the hand-in packs only the run's own files: put the file itself there")
