"""``bundle --check``: the course grader's test of a hand-in zip, run before uploading it.

The grader looks for the term's members by name; this also opens each one the
way the course reads it: the JSON members parse and hold the term's fields with
their types, the pickle loads (without running any code) as a list of run
records, the model is inside the parameter budget, and (Fall 2026) the
best-ranked Kaggle submission names the W&B run it came from.

Every member is streamed (its CRC checked on the way), never read whole: a
member may unpack to at most :data:`MEMBER_LIMIT` bytes and the zip to
:data:`TOTAL_LIMIT`, and only the members parsed (JSON, pickle) are kept, up to
:data:`PARSED_LIMIT`. A damaged member (a wrong CRC, corrupt compressed data,
a zip cut short) is one sentence naming it.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from helpers.core.course import PARAMETER_BUDGET
from helpers.core.errors import UserError, printable
from helpers.core.terms import Member, Term, get_term
from helpers.handin.schema import problems as field_problems

MEMBER_LIMIT = 512 * 2**20  # bytes a member may unpack to; a hand-in's largest, the notebook, is a few MB
TOTAL_LIMIT = 2 * 2**30  # bytes the whole zip may unpack to
PARSED_LIMIT = 16 * 2**20  # bytes of a JSON or pickle member read into memory to be parsed
_CHUNK = 2**20


@dataclass
class CheckReport:
    """What ``bundle --check`` found: the members it matched, and one sentence per problem."""

    path: Path
    term: Term
    found: dict[str, str] = field(default_factory=dict)  # member as declared -> name in the zip
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        head = (f"{self.path}: passes {self.term.title}'s hand-in check ({len(self.found)} members)" if self.ok else
                f"{self.path}: FAILS {self.term.title}'s hand-in check ({len(self.problems)} problem(s)):")
        return [head] + [f"  {text}" for text in self.problems]


class _NoObjects(pickle.Unpickler):
    """Loads plain containers and numbers only: a pickle naming any class or function is refused unrun."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it holds a pickled {module}.{name}, which loading would have to run")


def check_bundle(path: str | Path, term: str | None = None) -> CheckReport:
    """Check the zip at ``path`` against ``term``'s hand-in (the newest term by default)."""
    report = CheckReport(Path(path), get_term(term))
    if not report.path.is_file() or not zipfile.is_zipfile(report.path):
        report.problems.append(f"{report.path} is not a zip file, or is cut short (the list of its members, at its "
                               "end, is missing): build or download it again")
        return report
    try:
        with zipfile.ZipFile(report.path) as archive:
            _check_members(archive, report)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        report.problems.append(f"{report.path} cannot be read as a zip: {printable(str(error))}")
    return report


def _check_members(archive: zipfile.ZipFile, report: CheckReport) -> None:
    """Match the term's members by name, then stream every member once, within the bounds."""
    names = archive.namelist()
    graded: dict[str, Member] = {}
    missing = []
    for member in report.term.graded_members:
        name = next((n for n in names if member.pattern().fullmatch(n)), None)
        if name is None:
            missing.append(member.shown)
            continue
        report.found[member.shown] = name
        graded[name] = member
    if missing:
        report.problems.append(f"missing {', '.join(missing)} (the grader looks for these names at the top of "
                               "the zip)")
    unpacked = 0
    for info in archive.infolist():
        if info.is_dir():
            continue
        if info.file_size <= MEMBER_LIMIT and unpacked + info.file_size > TOTAL_LIMIT:
            report.problems.append(f"{printable(info.filename)} unpacks to {info.file_size:,} bytes, over what is "
                                   f"left of the check's bound of {TOTAL_LIMIT:,} bytes for the whole zip; members "
                                   "after it are not checked")
            return
        member = graded.pop(info.filename, None)
        try:
            data, blank = _unpack(archive, info, bool(member and member.table))
        except UserError as error:
            report.problems.append(str(error))
            continue
        unpacked += info.file_size
        if member is not None:
            report.problems += [f"{info.filename} is empty"] if blank else _member_problems(member, info.filename,
                                                                                             data, report.term)


def _unpack(archive: zipfile.ZipFile, info: zipfile.ZipInfo, keep: bool) -> tuple[bytes, bool]:
    """Stream one member through its CRC check: its bytes when ``keep`` (else none), and whether it is blank;
    a member over a bound or damaged raises :class:`UserError` with one sentence naming it. The stream stops at
    the size the zip declares, so that size bounds what is read."""
    name = printable(info.filename)
    if info.file_size > MEMBER_LIMIT:
        raise UserError(f"{name} unpacks to {info.file_size:,} bytes, over the check's bound of {MEMBER_LIMIT:,} "
                        "bytes per member: a hand-in holds no file that big")
    if keep and info.file_size > PARSED_LIMIT:
        raise UserError(f"{name} unpacks to {info.file_size:,} bytes, over the {PARSED_LIMIT:,} the check reads "
                        "into memory to parse it; the course's metadata files are far smaller")
    kept, blank = bytearray(), True
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                blank = blank and not chunk.strip()
                if keep:
                    kept += chunk
    except zipfile.BadZipFile as error:
        if "CRC" in str(error):
            raise UserError(f"{name} fails its CRC check: its bytes changed after it was zipped") from None
        raise UserError(f"{name} is damaged in the zip: {printable(str(error))}") from None
    except zlib.error as error:
        raise UserError(f"{name}'s compressed data is corrupt ({error}): build the zip again") from None
    except EOFError:
        raise UserError(f"{name} is cut short: the zip ends inside it") from None
    except (NotImplementedError, RuntimeError, OSError, ValueError) as error:  # encrypted, an unknown method
        raise UserError(f"{name} cannot be read: {printable(str(error))}") from None
    return bytes(kept), blank


def _member_problems(member: Member, name: str, data: bytes, term: Term) -> list[str]:
    if not member.table:
        return []
    kind = "a pickle of plain values" if name.endswith(".pkl") else "JSON"
    try:
        value = _NoObjects(io.BytesIO(data)).load() if name.endswith(".pkl") else json.loads(data)
        found = field_problems(value, member.table, name)
    except RecursionError:  # a hostile file nested thousands deep: json and the field walk recurse
        return [f"{name} nests its values too deep to be {kind} the course wrote"]
    # A pickle's opcodes can fail in many ways (an unhashable key, a missing memo entry); none runs code here.
    except Exception as error:  # noqa: BLE001 - any failure to load is the file's, said in one sentence
        return [f"{name} does not load as {kind}: {printable(str(error))}"]
    if len(found) > 5:
        found = found[:5] + [f"{name}: and {len(found) - 5} more field problems"]
    if found:
        return found
    return _budget_problems(name, value) + _provenance_problems(name, value, term)


def _budget_problems(name: str, value) -> list[str]:
    """The parameter count a model metadata file states, against the assignment's budget."""
    counts = value.get("model", {}) if isinstance(value, dict) and isinstance(value.get("model"), dict) else value
    if not isinstance(counts, dict):
        return []
    stated = [counts.get(key) for key in ("total_parameters", "trainable_parameters", "parameter_count",
                                          "total_params", "trainable_params") if isinstance(counts.get(key), int)]
    if stated and max(stated) > PARAMETER_BUDGET:
        return [f"{name} states {max(stated):,} parameters, over the assignment's {PARAMETER_BUDGET:,}"]
    return []


def _provenance_problems(name: str, value, term: Term) -> list[str]:
    """Fall 2026: each ranked submission's stored run path is what the backend reads from its description
    (``term.run_path_in``), and the backend refuses a hand-in whose best-ranked one names no W&B run."""
    if not isinstance(value, dict) or "ranked_submissions" not in value:
        return []
    ranked = value["ranked_submissions"]
    if not ranked:
        return [f"{name} ranks no scored Kaggle submission"]
    found = []
    disagreeing = [record for record in ranked
                   if record.get("wandb_run_path") != term.run_path_in(record.get("description"))]
    for record in disagreeing[:3]:
        found.append(f"{name}: the Kaggle submission {record.get('submission_ref')} stores the W&B run "
                     f"{record.get('wandb_run_path')!r} but {term.title}'s grader reads "
                     f"{term.run_path_in(record.get('description'))!r} from its description "
                     f"{str(record.get('description'))[:120]!r} (the form is '{term.description_form}')")
    if len(disagreeing) > 3:
        found.append(f"{name}: and {len(disagreeing) - 3} more Kaggle submissions whose stored W&B run disagrees")
    if not term.run_path_in(ranked[0].get("description")):
        found.append(f"{name}: the best-ranked Kaggle submission ({ranked[0].get('submission_ref')}) names no W&B "
                     f"run in its description; {term.title}'s grader reads only '{term.description_form}'")
    return found

