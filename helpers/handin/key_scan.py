"""Finding Kaggle and W&B credentials in files about to leave the machine (the hand-in zip).

A notebook is parsed and each cell's source and outputs (stream text, text
data, error tracebacks) are scanned as the text the student saw; the raw bytes
of every file are scanned too. A finding names the file, the cell or line and
the kind of key, never the key itself.

A key is recognised by its context (``wandb.login(key=...)``, ``KAGGLE_KEY=...``,
a kaggle.json body, a .netrc line) or by a prefix no other string carries
(``KGAT_``, ``wandb_v1_``). Bare hexadecimal strings are not keys: checkpoint
hashes, commit ids and W&B run ids fill ordinary notebooks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

SECRET_FILES = {"kaggle.json", ".netrc", "netrc", "access_token"}

_QUOTE = r"""\\?["']"""  # a quote, JSON-escaped or not: raw .ipynb bytes hold cell text as JSON strings
_WANDB_V1 = r"wandb_v1_[A-Za-z0-9_-]{20,}"  # the 86-character keys of 2025 on
_KGAT = r"KGAT_[A-Za-z0-9]{20,}"  # Kaggle's single API token
_WANDB_KEY = rf"(?:{_WANDB_V1}|(?:[a-z]+-)?[0-9a-f]{{40}}(?![0-9a-f]))"
_TOKEN = r"(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{32,}"  # a long value with a digit: not a variable name
_NAMED = r"{names}\\?[\"']?\]?\s*[=:,]?\s*(?:{quote})?{value}"  # NAME = "v", os.environ["NAME"] = "v", %env NAME v

PATTERNS = [  # the ones that name their context first: a line reports the first kind that matches
    (re.compile(rf"\blogin\(\s*(?:key\s*=\s*)?{_QUOTE}{_WANDB_KEY}{_QUOTE}"), "a W&B API key (wandb.login)"),
    (re.compile(rf"\bwandb\s+login\s+(?:--?[a-z-]+\s+)*{_WANDB_KEY}"), "a W&B API key (wandb login)"),
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


@dataclass(frozen=True)
class Finding:
    """One credential found: where in the file (``cell 3``, ``cell 3, output``, ``line 12``) and what kind."""

    where: str
    kind: str


def scan_text(text: str) -> list[tuple[int, str]]:
    """(line number, kind) of each line of ``text`` that holds a credential."""
    text = _ANSI.sub("", text)
    found: dict[int, str] = {}
    for pattern, kind in PATTERNS:
        for match in pattern.finditer(text):
            found.setdefault(text.count("\n", 0, match.start()) + 1, kind)
    return sorted(found.items())


def scan_file(name: str, data: bytes) -> list[Finding]:
    """Every credential in a file's bytes; a notebook's cells are read as text, then its raw JSON."""
    if Path(name).name in SECRET_FILES:
        return [Finding("the whole file", f"a credentials file ({Path(name).name})")]
    text = data.decode("utf-8", errors="ignore")
    findings = _scan_notebook(text) if name.endswith(".ipynb") else []
    if not findings:
        findings = [Finding(f"line {line}", kind) for line, kind in scan_text(text)]
    return findings


def _scan_notebook(text: str) -> list[Finding]:
    try:
        cells = json.loads(text).get("cells", [])
    except (ValueError, AttributeError):
        return []  # not a notebook after all: the raw scan still runs
    findings = []
    for number, cell in enumerate(cells if isinstance(cells, list) else [], 1):
        if not isinstance(cell, dict):
            continue
        for part, content in [("", cell.get("source", ""))] + [(", output", output) for output in
                                                               cell.get("outputs", []) or []]:
            for _, kind in scan_text(_text_of(content)):
                finding = Finding(f"cell {number}{part}", kind)
                if finding not in findings:
                    findings.append(finding)
    return findings


def _text_of(content) -> str:
    """All the text in a cell source or output: strings, lists of lines, and every text field of an output
    (``text``, ``data`` of text types, ``ename``/``evalue``/``traceback``); images are skipped."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(item) for item in content)
    if isinstance(content, dict):
        return "\n".join(_text_of(value) for key, value in content.items()
                         if not str(key).startswith("image/") and key not in ("metadata", "output_type"))
    return ""


def describe(name: str, findings: list[Finding]) -> str:
    """One sentence naming the file, where and what: never the key."""
    places = "; ".join(f"{finding.where} holds {finding.kind}" for finding in findings)
    return f"{name}: {places}"
