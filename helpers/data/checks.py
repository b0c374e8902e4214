"""``check-data``: counts and every problem of a data root, before a long run meets them."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from helpers.core.progress import progress
from helpers.data.images import BadImageError, ImageReader
from helpers.data.layout import Problem, class_names, scan_root
from helpers.data.stage import link_loops

SHOWN = 20  # problems or warnings listed by the text report; --json lists every one
SMALL_SIDE = 16  # an image narrower or shorter than this (the least data.image_size) is noted


@dataclass
class DataReport:
    """What ``check-data`` found: counts, problems (fatal) and warnings (worth knowing)."""

    root: Path
    layout: str | None
    classes: int | None
    images: dict[str, int]
    ver_images: int
    pairs: dict[str, dict[str, int]]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    pair_places: dict[str, str] = field(default_factory=dict)  # where each pair file was found or looked for

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"ok": self.ok, "root": str(self.root), "layout": self.layout, "classes": self.classes,
                "images": self.images, "ver_images": self.ver_images, "pairs": self.pairs,
                "pair_places": self.pair_places,
                "problems": [str(p) for p in self.problems], "warnings": [str(w) for w in self.warnings]}

    def lines(self) -> list[str]:
        out = [f"data root: {self.root}", f"layout: {self.layout or 'no classification data'}"]
        if self.classes is not None:
            out.append(f"classes: {self.classes}")
        out += [f"{split} images: {count}" for split, count in self.images.items()]
        out.append(f"verification images used by pairs: {self.ver_images}")
        for kind, place in self.pair_places.items():
            detail = ", ".join(f"{key} {value}" for key, value in self.pairs.get(kind, {}).items())
            out.append(f"{kind} pairs: {detail}, from {place}" if detail else f"{kind} pairs: {place}")
        for title, items in (("warnings", self.warnings), ("problems", self.problems)):
            if items:
                out.append(f"{len(items):,} {title}:")
                out += [f"  {item}" for item in items[:SHOWN]]
            if len(items) > SHOWN:
                out.append(f"  ... and {len(items) - SHOWN:,} more {title} (check-data --json lists every one)")
        out.append("OK" if self.ok else f"FAILED: {len(self.problems)} problem(s)")
        return out


def check_data(root: str | Path, layout: str = "auto", workers: int | None = None, progress: bool = False,
               max_pixels: int | None = None, follow_links: bool = False) -> DataReport:
    """Scan a data root: parse every text file, open and fully decode every image it names (none claiming more
    than ``max_pixels``, ``data.max_image_pixels`` by default; those under SMALL_SIDE pixels are noted), name
    the images linked from outside it (problems, or warnings with ``follow_links``) and the links a copy
    (``stage-data``) would follow forever."""
    data, problems = scan_root(root, layout, max_pixels, follow_links)
    problems += [Problem(where, f"{why}; a copy (stage-data, data.stage_to) would never end: remove it")
                 for where, why in link_loops(data.root)]
    warnings: list[Problem] = list(data.notes)
    images: dict[str, int] = {}
    to_decode: dict[Path, str] = {}
    classes = None
    if data.train is not None and data.train.labels is not None:
        classes = len(class_names(data.train.labels))
    for split in (data.train, data.dev, data.test):
        if split is None:
            continue
        images[split.name] = len(split)
        for i, path in enumerate(split.paths):
            where = split.origins[i] if split.origins else _relative(path, data.root)
            if not data.reader.exists(path):
                problems.append(Problem(where, f"{_relative(path, data.root)} does not exist"))
            elif follow_links or not _linked_out(path, data.linked_out):
                to_decode[path] = _relative(path, data.root)
        if split.name != "train" and split.labels and data.train and data.train.labels:
            unknown = sorted(set(split.labels) - set(data.train.labels))
            if unknown:
                warnings.append(Problem(f"cls_data/{split.name}", f"{len(unknown)} class id(s) have no training "
                                        f"images (e.g. {unknown[0]})"))
        if split.origins:  # a labels.txt: are there images it does not list?
            folder = data.root / "cls_data" / split.name / "images"
            listed = set(split.paths)
            unlisted = [p for p in sorted(folder.iterdir()) if p.is_file() and p not in listed]
            if unlisted:
                warnings.append(Problem(f"cls_data/{split.name}/labels.txt", f"{len(unlisted)} image(s) in images/ "
                                        f"are not listed (e.g. {unlisted[0].name})"))
    pair_counts: dict[str, dict[str, int]] = {}
    ver_names: set[str] = set()
    for kind, pairs in (("val", data.val_pairs), ("test", data.test_pairs)):
        if pairs is None:
            continue
        labels = Counter(pair.label for pair in pairs)
        counts = {"count": len(pairs)}
        if kind == "val":
            counts.update(positives=labels[1], negatives=labels[0])
            if pairs and (not labels[1] or not labels[0]):
                problems.append(Problem(_relative(data.pair_files[kind], data.root), "needs both same-person (1) "
                                        "and different-person (0) "
                                        "pairs: the EER is undefined otherwise"))
        pair_counts[kind] = counts
        for pair in pairs:
            for name in (pair.a, pair.b):
                path = data.ver_path(name)
                if name in ver_names:
                    continue
                ver_names.add(name)
                if not data.reader.exists(path):
                    problems.append(Problem(f"{_relative(data.pair_files[kind], data.root)}:{pair.line}",
                                            f"{name} does not exist in ver_data/"))
                elif follow_links or not _linked_out(path, data.linked_out):
                    to_decode[path] = _relative(path, data.root)
    if data.train is None and data.val_pairs is None:
        problems.append(Problem(str(data.root), "holds neither cls_data/<split> nor val_pairs.txt"))
    found, small = _decode_all(data.reader, to_decode, workers, progress)
    problems += found
    if small:
        where, (height, width) = small[0]
        more = f" (and {len(small) - 1:,} more image(s) as small)" if len(small) > 1 else ""
        warnings.append(Problem(where, f"is {width}x{height} pixels, under {SMALL_SIDE} on a side{more}: accepted "
                                       "and resized to data.image_size, though so few pixels show little of a face"))
    places = {kind: data.pair_place(kind) for kind in ("val", "test")}
    return DataReport(data.root, data.layout, classes, images, len(ver_names), pair_counts, problems, warnings,
                      places)


def _decode_all(reader: ImageReader, paths: dict[Path, str], workers: int | None, show_progress: bool
                ) -> tuple[list[Problem], list[tuple[str, tuple[int, int]]]]:
    """Decode every image fully (a truncated JPEG only shows when decoded), in parallel threads: the problems,
    and the images under SMALL_SIDE pixels on a side with their (height, width), each sorted by name."""

    def check(path: Path) -> Problem | tuple[int, int]:
        try:
            return tuple(reader.load(path).shape[-2:])
        except BadImageError as error:
            return Problem(paths[path], error.reason)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(progress(pool.map(check, list(paths)), total=len(paths), desc="decoding", unit="img",
                                enabled=show_progress))
    found = sorted((result for result in results if isinstance(result, Problem)), key=lambda p: p.where)
    small = sorted((paths[path], result) for path, result in zip(paths, results)
                   if not isinstance(result, Problem) and min(result) < SMALL_SIDE)
    return found, small


def _linked_out(path: Path, linked_out: set[Path]) -> bool:
    """Whether a refused link leads to ``path`` (it or its folder): such a file is named, never read."""
    return path in linked_out or path.parent in linked_out


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
