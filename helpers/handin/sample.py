"""A competition's ``sample_submission.csv``: the header, the IDs and their order a submission must have.

Kaggle ships one with every competition, and it is the only public statement of
a term's format (Fall 2026's unified board, one file for both tasks, included).
Each ID is mapped to what it asks for:

* a test pair: the ID is the pair's 0-based index in ``test_pairs.txt``, written
  as a plain integer (``0``, ``17``); the value is the pair's score, or 0/1 when
  every pair value in the sample is a bare ``0`` or ``1``;
* a test image: the ID is a file name of ``cls_data/test/images``, with or
  without its extension (``0000123.jpg``, ``0000123``); the value is the
  predicted class id, in the data's own ids.

An ID that maps to neither (or to both), a repeated ID, a row or header with
other than two columns, a header naming a column twice or leaving one unnamed,
a field longer than :data:`LONGEST_FIELD` is refused in one sentence naming its
line, before anything is written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from helpers.core.errors import UserError, printable
from helpers.data.layout import SAMPLE_SUBMISSION

BINARY_TEXT = {"0", "1"}
LONGEST_FIELD = 1024  # characters: an ID (a pair index, an image file name) or a value is far shorter
LARGEST_CSV = 256 * 2**20  # bytes; a unified submission of 48,000 rows is about 1.5 MB


@dataclass(frozen=True)
class SampleRow:
    id: str
    kind: str  # "pair" or "image"
    index: int  # the pair's line in test_pairs.txt, or the image's position in the test split


@dataclass(frozen=True)
class SampleShape:
    """What a sample submission asks for, row by row."""

    path: Path
    header: tuple[str, str]
    rows: tuple[SampleRow, ...]
    binary: bool  # pair values as 0/1 decisions, not scores

    @property
    def pairs(self) -> list[SampleRow]:
        return [row for row in self.rows if row.kind == "pair"]

    @property
    def images(self) -> list[SampleRow]:
        return [row for row in self.rows if row.kind == "image"]


def is_pair_index(text: str, pairs: int) -> bool:
    """Whether ``text`` is a test pair's index written as a plain integer (no sign, no leading zeros)."""
    return text.isdigit() and text.isascii() and (text == "0" or not text.startswith("0")) and int(text) < pairs


def read_sample(path: str | Path, pairs: int, images: Sequence[str]) -> SampleShape:
    """Read and map a sample submission against ``pairs`` test pairs and the test split's file ``images``."""
    path = Path(path)
    lines = read_rows(path, "the sample submission")
    if not lines or len(lines[0]) != 2:
        found = ", ".join(printable(c) for c in lines[0]) if lines else "nothing"
        raise UserError(f"{path}:1 must name two columns, an ID and a value, not {found}")
    header = [name.strip() for name in lines[0]]
    if not all(header):
        raise UserError(f"{path}:1 leaves a column unnamed ('{printable(','.join(lines[0]))}'); a submission's header "
                        "names an ID column and a value column, such as ID,Label")
    if header[0] == header[1]:
        raise UserError(f"{path}:1 names the column '{printable(header[0])}' twice; a submission's header names an "
                        "ID column and a value column, such as ID,Label")
    by_name = {}
    for position, name in enumerate(images):
        by_name.setdefault(name, position)
        by_name.setdefault(Path(name).stem, position)
    rows, seen, values = [], {}, []
    for line, fields in enumerate(lines[1:], start=2):
        if not fields:
            continue
        if len(fields) != 2:
            raise UserError(f"{path}:{line} has {len(fields)} columns; the header names two")
        key, value = fields[0].strip(), fields[1].strip()
        if key in seen:
            raise UserError(f"{path}:{line} repeats the ID '{printable(key)}' of line {seen[key]}")
        seen[key] = line
        rows.append(_map(path, line, key, pairs, by_name))
        if rows[-1].kind == "pair":
            values.append(value)
    if not rows:
        raise UserError(f"{path} lists no IDs")
    return SampleShape(path, (header[0], header[1]), tuple(rows), bool(values) and set(values) <= BINARY_TEXT)


def read_rows(path: Path, what: str = "") -> list[list[str]]:
    """The rows of the CSV file at ``path`` (``what`` it is, for messages): a file over :data:`LARGEST_CSV` bytes,
    a field over :data:`LONGEST_FIELD` characters or a line csv cannot read is refused in one sentence."""
    named = f"{what} {path}" if what else str(path)
    try:
        if path.stat().st_size > LARGEST_CSV:
            raise UserError(f"{named} is {path.stat().st_size:,} bytes, over the {LARGEST_CSV:,} a submission file "
                            "can be; is this the right file?")
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {named}: {getattr(error, 'strerror', None) or error}") from None
    reader, rows = csv.reader(io.StringIO(text)), []
    too_long = f"holds a field of over {LONGEST_FIELD:,} characters; a submission's IDs and values are short: is " \
               "this the right file?"
    try:
        for fields in reader:
            if any(len(field) > LONGEST_FIELD for field in fields):
                raise UserError(f"{path}:{reader.line_num} {too_long}")
            rows.append(fields)
    except csv.Error as error:  # a field past csv's own limit (131,072), a NUL byte
        reason = too_long if "field limit" in str(error) else f"cannot be read as CSV: {error}"
        raise UserError(f"{path}:{reader.line_num} {reason}") from None
    return rows


def _map(path: Path, line: int, key: str, pairs: int, by_name: dict[str, int]) -> SampleRow:
    pair, image = is_pair_index(key, pairs), by_name.get(key)
    if pair and image is not None:
        raise UserError(f"{path}:{line}: the ID '{printable(key)}' is both a test pair's index and a test image's "
                        "name; the toolkit cannot tell which one the competition asks for")
    if pair:
        return SampleRow(key, "pair", int(key))
    if image is not None:
        return SampleRow(key, "image", image)
    indices = f"(0..{pairs - 1})" if pairs else "(the data root has no test_pairs.txt)"
    raise UserError(f"{path}:{line}: the ID '{printable(key)}' is neither a test pair's index {indices} nor the "
                    "name of an image in cls_data/test/images; is this the sample of another competition?")


def find_sample(root: Path, given: str | Path | None = None) -> Path | None:
    """The sample submission to follow: ``given``, else the data root's own, else None."""
    if given is not None:
        if not Path(given).is_file():
            raise UserError(f"the sample submission {given} does not exist")
        return Path(given)
    own = Path(root) / SAMPLE_SUBMISSION
    return own if own.is_file() else None
