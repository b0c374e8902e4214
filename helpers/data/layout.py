"""The HW2P2 data layouts: the folders and text files of a data root, parsed and checked.

Layouts (detected from the folders, or forced with ``data.layout``), each a :class:`Layout` named in
helpers/core/registry.py's LAYOUTS:

* ``f24``: ``cls_data/{train,dev}/<identity>/*.jpg``, one folder per identity;
* ``f25`` (also S25/S26): ``cls_data/{train,dev,test}/images/*.jpg`` with a
  ``labels.txt`` of ``file class_id`` lines beside ``images/`` (test may have none);
* ``packed``: what ``pack-data`` writes, one file of image bytes per split (packed.py).

Verification images live flat in ``ver_data/``; ``val_pairs.txt`` holds
``imgA imgB label`` lines and ``test_pairs.txt`` ``imgA imgB`` lines, at the data
root (the Fall 2026 notes) or under ``cls_data/`` (an earlier description). The answers
to ``test_pairs.txt`` of a demo or prepared root live beside it, never inside.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import torch

from helpers.core.errors import UserError, printable
from helpers.core.registry import LAYOUTS
from helpers.data.images import ImageReader, is_image
from helpers.data.packed import PackedImages

SPLITS = ("train", "dev", "test")
PAIR_FILES = {"val": "val_pairs.txt", "test": "test_pairs.txt"}
PAIR_PLACES = (".", "cls_data")  # where a pair file is looked for, in order, relative to the data root
SAMPLE_SUBMISSION = "sample_submission.csv"  # Kaggle's statement of a competition's submission format


def answer_key_path(root: str | Path) -> Path:
    """Where the answers to ``test_pairs.txt`` of ``root`` live: beside the root, not inside it."""
    root = Path(root)
    return root.parent / f"{root.name}.test_labels.txt"


def solution_path(root: str | Path) -> Path:
    """Where the answers to a unified (Fall 2026) submission of ``root`` live, beside it: ``ID,Label,Task``."""
    root = Path(root)
    return root.parent / f"{root.name}.solution.csv"


ANSWER_FILES = (answer_key_path, solution_path)  # the answers a demo or prepared root keeps beside it


def answer_files(root: str | Path) -> dict[str, Path]:
    """The answer files beside ``root`` (present or not), by what follows the root's name in theirs."""
    root = Path(root)
    return {where(root).name[len(root.name):]: where(root) for where in ANSWER_FILES}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data root: where (a path or ``file:line``) and what."""

    where: str
    what: str

    def __str__(self) -> str:
        return printable(f"{self.where}: {self.what}")


@dataclass
class ClassSplit:
    """One classification split: image paths and their raw labels (``None`` when unlabelled)."""

    name: str
    paths: list[Path]
    labels: list[str] | None
    origins: list[str] | None = None  # "labels.txt:LINE" of each path, for messages

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class Pair:
    """One line of a pair file: two image names inside ``ver_data/`` and the label (1 = same person)."""

    a: str
    b: str
    label: int | None
    line: int


@dataclass
class FaceData:
    """Everything a data root holds, parsed and validated (images are read lazily)."""

    root: Path
    layout: str | None
    train: ClassSplit | None
    dev: ClassSplit | None
    test: ClassSplit | None
    val_pairs: list[Pair] | None
    test_pairs: list[Pair] | None
    reader: "ImageReader" = None
    notes: list[Problem] = field(default_factory=list)  # worth knowing, not wrong (two spellings of a class id)
    pair_files: dict[str, Path] = field(default_factory=dict)  # where each pair file was found (val, test)
    linked_out: set[Path] = field(default_factory=set)  # images and folders reached through links leaving the root

    def __post_init__(self):
        if self.reader is None:
            self.reader = ImageReader()

    def ver_path(self, name: str) -> Path:
        return ver_image_path(self.root, name)

    def pair_place(self, kind: str) -> str:
        """The file the ``kind`` (val or test) pairs came from, or the places they were looked for."""
        if kind in self.pair_files:
            return str(self.pair_files[kind])
        return "none: no " + " or ".join(str(self.root / place / PAIR_FILES[kind]) for place in PAIR_PLACES)

    def pair_source(self, kind: str) -> str:
        """How many ``kind`` pairs there are and where they came from (or were looked for), in one line."""
        pairs = self.val_pairs if kind == "val" else self.test_pairs
        found = f"{len(pairs)} from " if kind in self.pair_files and pairs is not None else ""
        return f"{kind} pairs: {found}{self.pair_place(kind)}"

    def load(self, path: Path, size: int | None = None) -> torch.Tensor:
        """One image of this root (from its file or its pack) as a 3xHxW uint8 tensor."""
        return self.reader.load(path, size)


# ----------------------------------------------------------------------------- paths


def unsafe_reason(name: str) -> str | None:
    """Why a file name taken from a labels or pair file may not be opened, or None when it is safe."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return f"'{name}' is an absolute path; refused, names must stay inside the data root"
    if ".." in posix.parts:
        return f"'{name}' leaves the data root; refused"
    return None


def find_data_root(root: str | Path) -> Path:
    """The folder holding ``cls_data/`` or ``ver_data/``: ``root`` itself or the one such folder below it.

    Kaggle archives unpack into a folder whose name changes every term, so one
    or two levels of nesting are searched.
    """
    if not str(root).strip():  # Path('') is the current folder: never what an empty setting meant
        raise UserError("the data root is an empty path; give the folder holding cls_data/ ('.' for the current "
                        "folder)")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist or is not a folder")
    found = data_roots_below(root, depth=2)
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"{root} holds no cls_data/ or ver_data/ folder: is it the HW2P2 data root?")
    raise UserError(f"{root} holds several HW2P2 data roots ({', '.join(map(str, found))}); pass one of them")


def data_roots_below(folder: Path, depth: int) -> list[Path]:
    """The data roots at ``folder`` or up to ``depth`` folders below it, in order; a data root's own folders are
    not searched, and folders that cannot be listed are passed over."""
    found, level = [], [Path(folder)]
    for _ in range(depth + 1):
        below = []
        for current in level:
            if is_data_root(current):
                found.append(current)
                continue
            try:
                below += sorted(Path(entry.path) for entry in os.scandir(current) if entry.is_dir())
            except OSError:
                continue
        level = below
    return found


def is_data_root(path: Path) -> bool:
    """Whether ``path`` holds HW2P2 data: ``cls_data/``, ``ver_data/`` or their packed form."""
    return (path / "cls_data").is_dir() or (path / "ver_data").is_dir() or (path / "ver_data.json").is_file()


def detect_layout(root: Path, layout: str = "auto") -> str | None:
    """The name of the layout (``f24``, ``f25``, ``packed``...) of the classification data under ``root``, None
    when there is none; the readable layouts are tried in LAYOUTS' order."""
    readable = LAYOUTS.names("read")
    if layout != "auto" and layout not in readable:
        raise UserError(f"data.layout must be one of auto, {', '.join(readable)}, not '{layout}'")
    train = root / "cls_data" / "train"
    found = next((name for name in readable if LAYOUTS.get(name).holds(root)), None)
    if found is None:
        if layout != "auto":
            raise UserError(f"data.layout is {layout} but {train} does not exist")
        return None
    if layout not in ("auto", found):
        raise UserError(f"data.layout is {layout} but {root / 'cls_data'} holds the {found} layout")
    return found


def ver_image_path(root: Path, name: str) -> Path:
    """Where a name from a pair file lives: ``ver_data/<name>``, or ``<root>/<name>`` if it already starts with ver_data/."""
    if name.replace("\\", "/").startswith("ver_data/"):
        return root / name
    return root / "ver_data" / name


# ----------------------------------------------------------------------------- text files


def _lines(path: Path):
    """(line number, fields) of each non-blank, non-comment line.

    Files from any editor read alike: a UTF-8 byte-order mark is dropped and
    CRLF line ends split like LF ones.
    """
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for number, text in enumerate(handle, 1):
            fields = text.split()
            if fields and not fields[0].startswith("#"):
                yield number, fields


def read_labels(path: Path, shown: str | None = None) -> tuple[list[tuple[str, str | None, int]], list[Problem]]:
    """Parse a ``labels.txt`` (``file class_id`` per line; bare ``file`` lines when unlabelled).

    Entries ``(file, class_id, line)`` come back sorted by file name: the course
    warns not to trust file order.
    Problems name ``shown:LINE`` (``shown`` defaults to the file name).
    """
    shown = shown or path.name
    entries: dict[str, tuple[str | None, int]] = {}
    problems: list[Problem] = []
    kinds = set()
    for number, fields in _lines(path):
        where = f"{shown}:{number}"
        if len(fields) not in (1, 2):
            problems.append(Problem(where, f"expected 'file class_id', got {len(fields)} fields"))
            continue
        name, label = fields[0], (fields[1] if len(fields) == 2 else None)
        kinds.add(label is None)
        if reason := unsafe_reason(name):
            problems.append(Problem(where, reason))
            continue
        if label is not None and not is_int(label):
            problems.append(Problem(where, f"class id '{label}' is not an integer"))
            continue
        if name in entries:
            problems.append(Problem(where, f"'{name}' is listed again (first on line {entries[name][1]})"))
            continue
        entries[name] = (label, number)
    if len(kinds) > 1:
        problems.append(Problem(shown, "some lines have a class id and others do not"))
    return [(name, *entries[name]) for name in sorted(entries)], problems


def pair_file(root: Path, kind: str) -> Path | None:
    """The ``kind`` (val or test) pair file of ``root``: at the root, else under ``cls_data/``; None when neither."""
    for place in PAIR_PLACES:
        path = root / place / PAIR_FILES[kind]  # pathlib drops the "."
        if path.is_file():
            return path
    return None


def read_pairs(path: Path, labelled: bool, shown: str | None = None) -> tuple[list[Pair], list[Problem]]:
    """Parse a pair file: ``imgA imgB label`` lines when ``labelled``, else ``imgA imgB`` (a third field is kept);
    problems name it as ``shown`` (its name by default)."""
    pairs: list[Pair] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    expected = "imgA imgB label" if labelled else "imgA imgB"
    allowed = (3,) if labelled else (2, 3)
    for number, fields in _lines(path):
        where = f"{shown or path.name}:{number}"
        if len(fields) not in allowed:
            problems.append(Problem(where, f"expected '{expected}', got {len(fields)} field(s)"))
            continue
        a, b = fields[0], fields[1]
        reasons = [r for r in (unsafe_reason(a), unsafe_reason(b)) if r]
        if reasons:
            problems.append(Problem(where, reasons[0]))
            continue
        label = None
        if len(fields) == 3:
            if fields[2] not in ("0", "1"):
                problems.append(Problem(where, f"label '{fields[2]}' is not 0 or 1"))
                continue
            label = int(fields[2])
        key = (min(a, b), max(a, b))
        if key in seen:
            problems.append(Problem(where, f"duplicate of the pair on line {seen[key]}"))
        else:
            seen[key] = number
        pairs.append(Pair(a, b, label, number))
    return pairs, problems


def is_int(text: str) -> bool:
    """An integer as int() reads it and nothing else: ASCII digits after one sign at most (not '--5', not '²')."""
    return re.fullmatch(r"[+-]?[0-9]+", text) is not None


# ----------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Layout:
    """One way ``cls_data/`` holds the classification images: how it is recognised and read (where it is read),
    and how demo-data and prepare-folder write it (where it is written)."""

    marker: str | None  # what under cls_data/ shows this layout (a trailing / for a folder); None: read as another
    read: Callable[[Path, str, ImageReader | None], tuple[ClassSplit | None, list[Problem]]] | None = None
    identity_folders: bool = False  # one folder per identity, not images/ with a labels.txt
    unified: bool = False  # an unlabelled test split and one sample_submission.csv for both tasks (Fall 2026)

    def holds(self, root: Path) -> bool:
        """Whether the classification data under ``root`` is in this layout."""
        if self.marker is None:
            return False
        path = root / "cls_data" / self.marker
        return path.is_dir() if self.marker.endswith("/") else path.is_file()


def read_split(root: Path, layout: str, split: str, reader: "ImageReader | None" = None
               ) -> tuple[ClassSplit | None, list[Problem]]:
    """One classification split of a data root in ``layout``, or None when the root has no such split."""
    return LAYOUTS.get(layout, "read").read(root, split, reader)


def read_packed(root: Path, split: str, reader: "ImageReader | None") -> tuple[ClassSplit | None, list[Problem]]:
    """A packed split: its pack registered with ``reader``, its images listed as virtual paths under
    ``cls_data/<split>/images/``."""
    folder = root / "cls_data" / split
    index = root / "cls_data" / f"{split}.json"
    if not index.is_file():
        return None, []
    pack = PackedImages.open(index)
    if reader is not None:
        reader.add(folder / "images", pack)
    names = pack.names()
    labels = [pack.labels[name] for name in names]
    return ClassSplit(split, [folder / "images" / name for name in names],
                      labels if all(label is not None for label in labels) else None), []


def read_identity_folders(root: Path, split: str, reader: "ImageReader | None"
                          ) -> tuple[ClassSplit | None, list[Problem]]:
    """A split of one folder per identity, the folder's name its label."""
    folder = root / "cls_data" / split
    if not folder.is_dir():
        return None, []
    paths, labels = [], []
    for identity in sorted(p for p in folder.iterdir() if p.is_dir()):
        for image in sorted(p for p in identity.iterdir() if is_image(p)):
            paths.append(image)
            labels.append(identity.name)
    return ClassSplit(split, paths, labels), []


def read_labelled_images(root: Path, split: str, reader: "ImageReader | None"
                         ) -> tuple[ClassSplit | None, list[Problem]]:
    """A split of ``images/`` with a ``labels.txt`` beside it (unlabelled without one)."""
    folder = root / "cls_data" / split
    images = folder / "images"
    if not images.is_dir():
        return None, []
    labels_file = folder / "labels.txt"
    if not labels_file.is_file():
        paths = sorted(p for p in images.iterdir() if is_image(p))
        return ClassSplit(split, paths, None), []
    entries, problems = read_labels(labels_file, shown=f"cls_data/{split}/labels.txt")
    paths = [images / name for name, _, _ in entries]
    labelled = all(label is not None for _, label, _ in entries)
    labels = [label for _, label, _ in entries] if labelled and entries else None
    origins = [f"cls_data/{split}/labels.txt:{line}" for _, _, line in entries]
    return ClassSplit(split, paths, labels, origins), problems


PACKED = Layout("train.json", read_packed)
F25 = Layout("train/images/", read_labelled_images)
F24 = Layout("train/", read_identity_folders, identity_folders=True)
F26 = Layout(None, unified=True)  # written as f25 plus the unified submission; read as f25


def open_data(root: str | Path, layout: str = "auto", max_pixels: int | None = None,
              follow_links: bool = False) -> FaceData:
    """Parse a data root; a malformed line anywhere stops with one sentence naming ``file:line``, and so does an
    image linked from outside the root unless ``follow_links``. ``max_pixels`` bounds every image it decodes
    (``data.max_image_pixels``)."""
    data, problems = scan_root(root, layout, max_pixels, follow_links)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(f"{printable(str(data.root / problems[0].where))}: {printable(problems[0].what)}{more}; "
                        f"run `python -m helpers check-data {data.root}` for the full list")
    return data


def scan_root(root: str | Path, layout: str = "auto", max_pixels: int | None = None,
              follow_links: bool = False) -> tuple[FaceData, list[Problem]]:
    """Parse a data root, collecting every problem in the text files instead of stopping at the first; images
    reached through a link that leaves the root are problems too, or notes with ``follow_links``."""
    root = find_data_root(root)
    layout = detect_layout(root, layout)
    reader = ImageReader() if max_pixels is None else ImageReader(max_pixels)
    if (root / "ver_data.json").is_file():
        reader.add(root / "ver_data", PackedImages.open(root / "ver_data.json"))
    problems: list[Problem] = []
    splits = {}
    for split in SPLITS:
        splits[split], found = read_split(root, layout, split, reader) if layout else (None, [])
        problems += found
    pairs, pair_files = {}, {}
    for kind in PAIR_FILES:
        path = pair_file(root, kind)
        pairs[kind] = None
        if path is not None:
            pairs[kind], found = read_pairs(path, labelled=(kind == "val"), shown=_shown(path, root))
            problems += found
            pair_files[kind] = path
    notes = unify_class_ids([split for split in splits.values() if split is not None and split.labels])
    data = FaceData(root, layout, splits["train"], splits["dev"], splits["test"], pairs["val"], pairs["test"], reader,
                    notes, pair_files)
    data.linked_out, leaving = links_leaving(data, follow_links)
    (data.notes if follow_links else problems).extend(leaving)
    return data, problems


def unify_class_ids(splits: list[ClassSplit]) -> list[Problem]:
    """Class ids compare as integers: ``01`` and ``1`` are one class, spelt as it is first met (train first).
    Each split's labels are rewritten to that spelling; a note names each other spelling where first met."""
    spelling: dict[int, str] = {}
    notes: dict[str, Problem] = {}
    for split in splits:
        for i, label in enumerate(split.labels):
            if not is_int(label):
                continue
            first = spelling.setdefault(int(label), label)
            if first != label:
                split.labels[i] = first
                where = split.origins[i] if split.origins else f"cls_data/{split.name}/{label}"
                notes.setdefault(label, Problem(where, f"class id '{label}' is read as the class '{first}' (ids "
                                                       "compare as integers)"))
    return list(notes.values())


def links_leaving(data: FaceData, followed: bool = False) -> tuple[set[Path], list[Problem]]:
    """The image folders of a root, and the images in them, reached through a link whose target lies outside
    the root (the real places of the root, its cls_data/ and its ver_data/), and a problem naming each: a
    shared data root may hold a link to any file of the machine it is opened on. ``followed`` words them as
    followed (``data.follow_links``) rather than refused."""
    inside = [Path(os.path.realpath(data.root / part)) for part in ("", "cls_data", "ver_data")]
    verdict = "followed (data.follow_links is true)" if followed else "refused (data.follow_links: true follows it)"

    def leaves(path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return not any(real.is_relative_to(place) for place in inside)

    folders = {path.parent for split in (data.train, data.dev, data.test) if split for path in split.paths}
    folders.add(data.root / "ver_data")
    found: dict[Path, str] = {}
    for folder in sorted(folder for folder in folders if folder.is_dir()):
        if leaves(folder):
            found[folder] = "is reached through a link to a folder outside the data root"
            continue
        with os.scandir(folder) as entries:
            found.update({Path(entry.path): "is a link to a file outside the data root" for entry in entries
                          if entry.is_symlink() and leaves(Path(entry.path))})
    return set(found), [Problem(_shown(path, data.root), f"{what}; {verdict}") for path, what in sorted(found.items())]


def _shown(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def class_names(labels: Sequence[str]) -> list[str]:
    """The sorted distinct raw labels: integers in numeric order, names in text order.

    Index ``i`` of this list is the training class ``i``; checkpoints store it so
    that predictions map back to the data's own (possibly non-contiguous) ids.
    """
    distinct = set(labels)
    if all(is_int(label) for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)
