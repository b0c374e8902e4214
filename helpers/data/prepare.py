"""Writing data roots in the HW2P2 layout, from any folder-per-identity collection (or the demo faces).

Training identities get per-identity train/dev(/test) image splits under
``cls_data/``; verification identities, disjoint from them, go flat into
``ver_data/`` under random names, with balanced ``val_pairs.txt`` and
``test_pairs.txt``. The test pairs' labels are written beside the root as
``OUT.test_labels.txt`` (one 0/1 per line), so a submission can be scored
without putting the answers inside the data.

The ``f26`` layout is Fall 2026's: ``f25``'s folders with an unlabelled
``cls_data/test/images`` and a ``sample_submission.csv`` for one unified
submission (the test images' class ids, then the test pairs' scores); its
answers go beside the root as ``OUT.solution.csv`` (``ID,Label,Task``).
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
from PIL import Image

from helpers.core.errors import UserError
from helpers.core.io import atomic_link, staged_folder
from helpers.core.registry import LAYOUTS
from helpers.data.images import BadImageError, is_image, load_image
from helpers.data.layout import PAIR_FILES, SAMPLE_SUBMISSION, Layout, answer_key_path, solution_path
from helpers.data.packed import write_pack

_ANSWERS_IN_STAGING = ".test_labels.txt"  # moved out beside the root once the root is in place
_SOLUTION_IN_STAGING = ".solution.csv"

# A picture to write: a file to convert, or a function that renders one.
ImageSource = Union[Path, Callable[[], Image.Image]]


@dataclass
class LayoutSummary:
    """What a written root holds."""

    root: Path
    train_identities: int
    verification_identities: int
    images: dict
    val_pairs: int
    test_pairs: int
    test_labels: Path
    solution: Path | None = None  # f26: the answers to the unified sample_submission.csv

    def lines(self) -> list[str]:
        split_counts = ", ".join(f"{name} {count}" for name, count in self.images.items())
        lines = [f"wrote {self.root}",
                 f"  training identities: {self.train_identities} (images: {split_counts})",
                 f"  verification identities: {self.verification_identities}",
                 f"  pairs: val {self.val_pairs}, test {self.test_pairs} (balanced)",
                 f"  test pair labels: {self.test_labels}"]
        if self.solution is not None:
            lines += [f"  unified submission: {self.root / SAMPLE_SUBMISSION} (test images unlabelled), answers: "
                      f"{self.solution}"]
        return lines


def write_layout(out: str | Path, train: dict[str, Sequence[ImageSource]], verification: dict[str, Sequence[ImageSource]],
                 *, layout: str = "f25", seed: int = 0, size: int = 112, dev_fraction: float = 0.1,
                 test_fraction: float | None = None, val_pairs: int = 1000, test_pairs: int = 1000,
                 overwrite: bool = False) -> LayoutSummary:
    """Write a complete HW2P2 data root at ``out`` in ``layout`` (one that LAYOUTS says writes), atomically: built
    beside it, then renamed into place."""
    kind: Layout = LAYOUTS.get(layout, "write", key="layout")
    if test_fraction is None:  # Fall 2026 classifies a test split; the earlier layouts need none
        test_fraction = 0.1 if kind.unified else 0.0
    if not 0 <= dev_fraction < 1 or not 0 <= test_fraction < 1 or dev_fraction + test_fraction >= 1:
        raise UserError("dev and test fractions must lie in [0, 1) and leave images for training")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"{out} already exists and is not empty; choose a new folder or pass --overwrite")
    rng = np.random.default_rng(seed)
    if kind.unified and not test_fraction:
        raise UserError(f"the {layout} layout classifies a test split: give it a test fraction above 0 (e.g. 0.1)")
    with staged_folder(out) as staging:
        counts, test_classes = _write_classification(staging, train, kind, rng, size, dev_fraction, test_fraction)
        pairs = _write_verification(staging, verification, rng, size, val_pairs, test_pairs)
        # Written inside the staged copy, so a full disk stops before anything is renamed into place.
        (staging / _ANSWERS_IN_STAGING).write_text("".join(f"{label}\n" for label in pairs["test_labels"]))
        if kind.unified:
            _write_unified(staging, test_classes, pairs["test_labels"])
    os.replace(out / _ANSWERS_IN_STAGING, answer_key_path(out))
    if kind.unified:
        os.replace(out / _SOLUTION_IN_STAGING, solution_path(out))
    return LayoutSummary(out, len(train), len(verification), counts, pairs["val"], pairs["test"],
                         answer_key_path(out), solution_path(out) if kind.unified else None)


def _write_classification(root: Path, train: dict, layout: Layout, rng, size: int, dev_fraction: float,
                          test_fraction: float) -> dict:
    counts = {"train": 0, "dev": 0, "test": 0}
    labels = {split: [] for split in counts}
    test_classes: list[tuple[str, int]] = []
    for class_id, identity in enumerate(sorted(train)):
        sources = list(train[identity])
        order = rng.permutation(len(sources))
        n_dev = int(len(sources) * dev_fraction)
        n_test = int(len(sources) * test_fraction)
        assigned = (["dev"] * n_dev + ["test"] * n_test + ["train"] * len(sources))[:len(sources)]
        for split, index in zip(assigned, order):
            counts[split] += 1
            if layout.identity_folders:
                target = root / "cls_data" / split / _safe_name(identity) / f"{counts[split]:06d}.jpg"
            else:
                name = f"{counts[split]:07d}.jpg"
                target = root / "cls_data" / split / "images" / name
                labels[split].append(f"{name} {class_id}\n")
                if split == "test":
                    test_classes.append((name, class_id))
            _save(sources[index], target, size)
    if not layout.identity_folders:
        for split, lines in labels.items():
            if lines and not (layout.unified and split == "test"):  # Fall 2026's test split is unlabelled
                (root / "cls_data" / split / "labels.txt").write_text("".join(lines))
    return {split: count for split, count in counts.items() if count}, test_classes


def _write_unified(root: Path, test_classes: list[tuple[str, int]], pair_labels: list[int]) -> None:
    """Fall 2026's one submission for both tasks: the sample (inside the root) and its answers (staged)."""
    rows = [(name, "0", str(class_id), "image") for name, class_id in test_classes]
    rows += [(str(i), "0.0", str(label), "pair") for i, label in enumerate(pair_labels)]
    (root / SAMPLE_SUBMISSION).write_text("ID,Label\n" + "".join(f"{key},{value}\n" for key, value, _, _ in rows))
    (root / _SOLUTION_IN_STAGING).write_text("ID,Label,Task\n"
                                             + "".join(f"{key},{answer},{task}\n" for key, _, answer, task in rows))


def _write_verification(root: Path, verification: dict, rng, size: int, n_val: int, n_test: int) -> dict:
    ver = root / "ver_data"
    ver.mkdir(parents=True)
    names = _random_names(rng, sum(len(images) for images in verification.values()))
    people = []
    for identity in sorted(verification):
        files = []
        for source in verification[identity]:
            name = names.pop()
            _save(source, ver / name, size)
            files.append(name)
        people.append(files)
    val, test = balanced_pairs(people, rng, n_val, n_test)
    (root / "val_pairs.txt").write_text("".join(f"{a} {b} {label}\n" for a, b, label in val))
    (root / "test_pairs.txt").write_text("".join(f"{a} {b}\n" for a, b, _ in test))
    return {"val": len(val), "test": len(test), "test_labels": [label for _, _, label in test]}


def balanced_pairs(people: list[list[str]], rng, n_val: int, n_test: int):
    """Disjoint val and test pair lists, each half same-person and half different-person, shuffled.

    Positives pick a person uniformly, then two of their images, so that people
    with many photos do not dominate. When fewer distinct positives exist than
    asked, both lists shrink in proportion.
    """
    eligible = [files for files in people if len(files) >= 2]
    if not eligible or len(people) < 2:
        raise UserError("verification needs at least two people, one of them with two or more images")
    available = sum(len(files) * (len(files) - 1) // 2 for files in eligible)
    want_pos = n_val // 2 + n_test // 2
    take = min(want_pos, available)
    positives = _draw_unique(take, rng, lambda: _positive(eligible, rng))
    negatives = _draw_unique(take, rng, lambda: _negative(people, rng))
    val_pos = round(take * (n_val // 2) / max(want_pos, 1))
    val = positives[:val_pos] + negatives[:val_pos]
    test = positives[val_pos:] + negatives[val_pos:]
    return [val[i] for i in rng.permutation(len(val))], [test[i] for i in rng.permutation(len(test))]


def _positive(eligible, rng):
    files = eligible[rng.integers(len(eligible))]
    a, b = rng.choice(len(files), size=2, replace=False)
    return files[a], files[b], 1


def _negative(people, rng):
    p, q = rng.choice(len(people), size=2, replace=False)
    return people[p][rng.integers(len(people[p]))], people[q][rng.integers(len(people[q]))], 0


def _draw_unique(count: int, rng, draw) -> list:
    seen, result = set(), []
    tries = 0
    while len(result) < count and tries < 50 * count + 1000:
        tries += 1
        a, b, label = draw()
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            result.append((a, b, label))
    if len(result) < count:
        raise UserError(f"could only draw {len(result)} distinct pairs of the {count} needed; ask for fewer pairs")
    return result


def _random_names(rng, count: int) -> list[str]:
    """Distinct random 8-character names, as the course's ver_data uses (they reveal nothing)."""
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    names: set[str] = set()
    while len(names) < count:
        names.add("".join(rng.choice(alphabet, size=8)) + ".jpg")
    ordered = sorted(names)  # set order depends on the hash seed; sort before shuffling
    return [ordered[i] for i in rng.permutation(len(ordered))]


def _safe_name(identity: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity).strip(".")
    return cleaned or "identity"


def _save(source: ImageSource, target: Path, size: int) -> None:
    """Write ``source`` as a ``size`` x ``size`` RGB JPEG; a file already in that form is copied byte for byte."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, Path):
        data = source.read_bytes()
        if data[:2] == b"\xff\xd8" and _jpeg_size(data) == (size, size):
            target.write_bytes(data)
            return
        try:
            tensor = load_image(source)
        except BadImageError as error:
            raise UserError(f"{error}; fix or remove it in the source folder") from None
        image = Image.fromarray(tensor.permute(1, 2, 0).numpy())
    else:
        image = source()
    _fit(image, size).save(target, format="JPEG", quality=95)


def _fit(image: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to ``size`` and cut the centre square (faces are centred in face crops)."""
    image = image.convert("RGB")
    if image.size == (size, size):
        return image
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except OSError:
        return None


def prepare_folder(src: str | Path, out: str | Path, *, verification_identities: float = 0.2, seed: int = 0,
                   layout: str = "f25", size: int = 112, dev_fraction: float = 0.1, test_fraction: float | None = None,
                   val_pairs: int = 1000, test_pairs: int = 1000, overwrite: bool = False) -> LayoutSummary:
    """Turn a folder-per-identity collection into an HW2P2 data root.

    ``verification_identities`` is a count (>= 1) or a fraction (< 1) of the
    people with at least two images, the only ones who can form same-person
    pairs; they are drawn with ``seed`` and kept out of training.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"source folder {src} does not exist")
    people = {}
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if is_image(p))
        if images:
            people[folder.name] = images
    if len(people) < 3:
        raise UserError(f"{src} must hold one folder of images per person; found {len(people)} such folders")
    eligible = [name for name, images in people.items() if len(images) >= 2]
    count = (int(verification_identities) if verification_identities >= 1
             else round(verification_identities * len(eligible)))
    if not 2 <= count <= len(eligible) or count >= len(people):
        raise UserError(f"--verification-identities gives {count} people, but it must be between 2 and "
                        f"{min(len(eligible), len(people) - 1)} (people with two or more images, leaving some to train on)")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(eligible, size=count, replace=False).tolist())
    verification = {name: people[name] for name in chosen}
    train = {name: images for name, images in people.items() if name not in chosen}
    return write_layout(out, train, verification, layout=layout, seed=seed, size=size, dev_fraction=dev_fraction,
                        test_fraction=test_fraction, val_pairs=val_pairs, test_pairs=test_pairs, overwrite=overwrite)


def pack_root(root: str | Path, out: str | Path, overwrite: bool = False) -> dict[str, int]:
    """Pack every split and ``ver_data/`` of a data root into ``out``; returns image counts per pack."""
    from helpers.data.layout import answer_files, open_data

    data = open_data(root)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} already exists and is not empty; choose a new folder or pass --overwrite")
    counts = {}
    with staged_folder(out) as staging:
        (staging / "cls_data").mkdir()
        for split in (data.train, data.dev, data.test):
            if split is None:
                continue
            labels = split.labels or [None] * len(split)
            folders = LAYOUTS.get(data.layout).identity_folders
            items = [(f"{label}/{path.name}" if folders else path.name, data.reader(path), label)
                     for path, label in zip(split.paths, labels)]
            write_pack(staging / "cls_data" / f"{split.name}.json", items)
            counts[split.name] = len(items)
        names = sorted({name for pairs in (data.val_pairs or [], data.test_pairs or []) for pair in pairs
                        for name in (pair.a, pair.b)})
        if names:
            ver = data.root / "ver_data"
            items = [(data.ver_path(name).relative_to(ver).as_posix(), data.reader(data.ver_path(name)), None)
                     for name in names]
            write_pack(staging / "ver_data.json", items)
            counts["ver_data"] = len(names)
        for kind, found in data.pair_files.items():  # at the root of the pack, wherever the root kept them
            shutil.copyfile(found, staging / PAIR_FILES[kind])
        if (data.root / SAMPLE_SUBMISSION).is_file():
            shutil.copyfile(data.root / SAMPLE_SUBMISSION, staging / SAMPLE_SUBMISSION)
    for suffix, answers in answer_files(data.root).items():  # the answers of a demo or prepared root travel with it
        if answers.is_file():
            atomic_link(answers, answer_files(out)[suffix])
    return counts
