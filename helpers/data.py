"""The HW2P2 data layer: both official layouts, the pair files, and datasets of uint8 images.

Layouts (detected from the folders, or forced with ``data.layout``):

* ``f24``: ``cls_data/{train,dev}/<identity>/*.jpg``, one folder per identity;
* ``f25`` (also S25/S26): ``cls_data/{train,dev,test}/images/*.jpg`` with a
  ``labels.txt`` of ``file class_id`` lines beside ``images/`` (test may have none);
* ``packed``: what ``pack-data`` writes, one file of image bytes per split (packed.py).

Verification images live flat in ``ver_data/``; ``val_pairs.txt`` holds
``imgA imgB label`` lines and ``test_pairs.txt`` ``imgA imgB`` lines.

Images leave the datasets as 3xHxW uint8 tensors: augmentation and
normalisation happen later, in batches, on the training device (see augment.py).
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from .codec import decode_image, decode_jpegs
from .errors import UserError, printable
from .packed import PackedImages

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff", ".gif"})
LAYOUTS = ("auto", "f24", "f25", "packed")
SPLITS = ("train", "dev", "test")
PAIR_FILES = {"val": "val_pairs.txt", "test": "test_pairs.txt"}


class BadImageError(UserError):
    """An image file that cannot be decoded (missing, empty, truncated or not an image)."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{printable(where)}: {reason}")
        self.where = where
        self.reason = reason


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

    def __post_init__(self):
        if self.reader is None:
            self.reader = ImageReader()

    def ver_path(self, name: str) -> Path:
        return ver_image_path(self.root, name)

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
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist or is not a folder")
    if is_data_root(root):
        return root
    found = sorted({p.parent for pattern in ("*/cls_data", "*/ver_data", "*/*/cls_data", "*/*/ver_data")
                    for p in root.glob(pattern) if p.is_dir() and is_data_root(p.parent)})
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"{root} holds no cls_data/ or ver_data/ folder: is it the HW2P2 data root?")
    raise UserError(f"{root} holds several HW2P2 data roots ({', '.join(map(str, found))}); pass one of them")


def is_data_root(path: Path) -> bool:
    """Whether ``path`` holds HW2P2 data: ``cls_data/``, ``ver_data/`` or their packed form."""
    return (path / "cls_data").is_dir() or (path / "ver_data").is_dir() or (path / "ver_data.json").is_file()


def detect_layout(root: Path, layout: str = "auto") -> str | None:
    """``f24``, ``f25`` or ``packed`` for the classification data under ``root``, None when there is none."""
    if layout not in LAYOUTS:
        raise UserError(f"data.layout must be one of {', '.join(LAYOUTS)}, not '{layout}'")
    train = root / "cls_data" / "train"
    if (root / "cls_data" / "train.json").is_file():
        found = "packed"
    elif (train / "images").is_dir():
        found = "f25"
    elif train.is_dir():
        found = "f24"
    else:
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


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


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
        if label is not None and not _is_int(label):
            problems.append(Problem(where, f"class id '{label}' is not an integer"))
            continue
        if name in entries:
            problems.append(Problem(where, f"'{name}' is listed again (first on line {entries[name][1]})"))
            continue
        entries[name] = (label, number)
    if len(kinds) > 1:
        problems.append(Problem(shown, "some lines have a class id and others do not"))
    return [(name, *entries[name]) for name in sorted(entries)], problems


def read_pairs(path: Path, labelled: bool) -> tuple[list[Pair], list[Problem]]:
    """Parse a pair file: ``imgA imgB label`` lines when ``labelled``, else ``imgA imgB`` (a third field is kept)."""
    pairs: list[Pair] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    expected = "imgA imgB label" if labelled else "imgA imgB"
    allowed = (3,) if labelled else (2, 3)
    for number, fields in _lines(path):
        where = f"{path.name}:{number}"
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


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()


# ----------------------------------------------------------------------------- splits


def read_split(root: Path, layout: str, split: str, reader: "ImageReader | None" = None
               ) -> tuple[ClassSplit | None, list[Problem]]:
    """One classification split of a data root, or None when the root has no such split.

    A packed split registers its pack with ``reader`` and lists virtual paths
    under ``cls_data/<split>/images/``.
    """
    folder = root / "cls_data" / split
    if layout == "packed":
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
    if layout == "f24":
        if not folder.is_dir():
            return None, []
        paths, labels = [], []
        for identity in sorted(p for p in folder.iterdir() if p.is_dir()):
            for image in sorted(p for p in identity.iterdir() if is_image(p)):
                paths.append(image)
                labels.append(identity.name)
        return ClassSplit(split, paths, labels), []
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


def open_data(root: str | Path, layout: str = "auto") -> FaceData:
    """Parse a data root; a malformed line anywhere stops with one sentence naming ``file:line``."""
    data, problems = scan_root(root, layout)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(f"{printable(str(data.root / problems[0].where))}: {printable(problems[0].what)}{more}; "
                        f"run `python -m helpers check-data {data.root}` for the full list")
    return data


def scan_root(root: str | Path, layout: str = "auto") -> tuple[FaceData, list[Problem]]:
    """Parse a data root, collecting every problem in the text files instead of stopping at the first."""
    root = find_data_root(root)
    layout = detect_layout(root, layout)
    reader = ImageReader()
    if (root / "ver_data.json").is_file():
        reader.add(root / "ver_data", PackedImages.open(root / "ver_data.json"))
    problems: list[Problem] = []
    splits = {}
    for split in SPLITS:
        splits[split], found = read_split(root, layout, split, reader) if layout else (None, [])
        problems += found
    pairs = {}
    for kind, name in PAIR_FILES.items():
        path = root / name
        if path.is_file():
            pairs[kind], found = read_pairs(path, labelled=(kind == "val"))
            problems += found
        else:
            pairs[kind] = None
    data = FaceData(root, layout, splits["train"], splits["dev"], splits["test"], pairs["val"], pairs["test"], reader)
    return data, problems


def class_names(labels: Sequence[str]) -> list[str]:
    """The sorted distinct raw labels: integers in numeric order, names in text order.

    Index ``i`` of this list is the training class ``i``; checkpoints store it so
    that predictions map back to the data's own (possibly non-contiguous) ids.
    """
    distinct = set(labels)
    if all(_is_int(label) for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


# ----------------------------------------------------------------------------- images


def decode_rgb(data: bytes | torch.Tensor, size: int | None = None, where: str = "image") -> torch.Tensor:
    """Decode image bytes of any mode (L, LA, P, RGBA, CMYK, 16-bit) into a 3xHxW uint8 RGB tensor.

    TorchCodec or torchvision (codec.py) decodes JPEG, PNG, WEBP and GIF; anything else goes through PIL.
    When ``size`` is given the image is resized to ``size`` x ``size``, as the
    assignment's ``Resize((112, 112))`` does.
    """
    if len(data) == 0:
        raise BadImageError(where, "empty (zero-byte) file")
    raw = data if isinstance(data, torch.Tensor) else torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        image = decode_image(raw)
        if image.dtype != torch.uint8:
            image = TF.to_dtype(image, torch.uint8, scale=True)
    except (RuntimeError, ValueError):  # ValueError: TorchCodec's answer to a format it does not know
        image = _decode_with_pil(raw.numpy().tobytes(), where)
    if size is not None and tuple(image.shape[-2:]) != (size, size):
        image = TF.resize(image, [size, size], antialias=True)
    return image


def _decode_with_pil(data: bytes, where: str) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # PIL's own conversion clips 16-bit values at 255; rescale instead.
                array = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if img.mode.startswith("I;16") else max(float(array.max()), 1.0)
                img = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
            elif img.mode == "P":
                img = img.convert("RGBA")
            rgb = np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError as error:
        raise BadImageError(where, f"too many pixels to decode safely ({error})") from None
    except (OSError, ValueError):
        raise BadImageError(where, f"not a readable image: {describe_bytes(data)}") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


# Leading bytes of the kinds of file met under an image's name, and what to call them.
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"%PDF", "PDF document"), (b"PK\x03\x04", "zip archive"),
               (b"\x1f\x8b", "gzip archive"))
# Bytes a complete file of the kind ends with: without them the file was cut short.
_ENDINGS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
_IMAGE_KINDS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WebP")
_PHOTO_BRANDS = ("heic", "heix", "heif", "mif1", "msf1", "avif", "avis")


def describe_bytes(data: bytes) -> str:
    """What a file that would not decode seems to be, from its size and first bytes, in words for a message.

    E.g. ``a truncated JPEG (2,048 bytes, its end marker missing)``, ``an HTML
    page (5,120 bytes; ...)``, ``a Git LFS pointer (...)``, ``12 bytes of text starting '...'``.
    """
    size = f"{len(data):,} byte{'s' if len(data) != 1 else ''}"
    if not data:
        return "an empty (zero-byte) file"
    kind = next((name for signature, name in _SIGNATURES if data.startswith(signature)), None)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "WebP"
    elif data[4:8] == b"ftyp":  # the ISO media container: HEIC and AVIF photos, or MP4 and QuickTime videos
        brand = printable(data[8:12].decode("latin-1").strip())
        if brand in _PHOTO_BRANDS:
            return f"an {brand.upper()} photo ({size}; this format is not decoded here, convert it to JPEG)"
        return f"an MP4/QuickTime file (brand '{brand}', {size})"
    if kind in _ENDINGS and not data.rstrip(b"\x00\r\n ").endswith(_ENDINGS[kind]):
        return f"a truncated {kind} ({size}, its end marker missing)"
    if kind in _IMAGE_KINDS:
        return f"a damaged {kind} ({size})"
    if kind is not None:
        return f"a {kind} ({size})"
    text = _as_text(data[:512])
    if text is None:
        return f"{size} of unrecognised binary data starting {data[:8].hex(' ')}"
    start = text.lstrip().lower()
    if start.startswith("version https://git-lfs"):
        return f"a Git LFS pointer ({size} of text; fetch the real file with git lfs pull)"
    if start.startswith(("<!doctype html", "<html")) or "<html" in start[:200]:
        return f"an HTML page ({size}; a download that returned a web page?)"
    if start.startswith(("<?xml", "<svg")):
        return f"XML or SVG text ({size})"
    return f"{size} of text starting '{printable(text.strip()[:24])}'"


def _as_text(head: bytes) -> str | None:
    """The start of a file as text, or None when it is binary (control bytes, or not UTF-8)."""
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # a character cut at the 512-byte mark is still text
            return None
        text = head[:error.start].decode("utf-8-sig")
    return text if all(char.isprintable() or char in "\t\r\n" for char in text) else None


class ImageReader:
    """Reads an image's bytes from its file, or from the pack holding its folder (see packed.py).

    Picklable, so loader workers get their own copy (each opens its own pack descriptor).
    """

    def __init__(self):
        self.packs: list[tuple[Path, PackedImages]] = []

    def add(self, folder: Path, pack: PackedImages) -> None:
        self.packs.append((folder, pack))

    def _locate(self, path: Path):
        for folder, pack in self.packs:
            if path.is_relative_to(folder):
                return pack, path.relative_to(folder).as_posix()
        return None, None

    def exists(self, path: Path) -> bool:
        pack, name = self._locate(path)
        return name in pack if pack is not None else path.is_file()

    def __call__(self, path: Path) -> bytes:
        pack, name = self._locate(path)
        try:
            return pack.read(name) if pack is not None else path.read_bytes()
        except KeyError:
            raise BadImageError(str(path), "missing from its pack") from None
        except OSError as error:
            raise BadImageError(str(path), f"cannot be read ({error.strerror or error})") from None

    def load(self, path: Path, size: int | None = None) -> torch.Tensor:
        return decode_rgb(self(path), size, where=str(path))


def load_image(path: Path, size: int | None = None) -> torch.Tensor:
    """Read one image file as a 3xHxW uint8 RGB tensor (see :func:`decode_rgb`)."""
    return ImageReader().load(Path(path), size)


class Skipped(NamedTuple):
    """Stands in a batch for an image that could not be loaded."""

    path: str
    reason: str


class Batch(NamedTuple):
    """A collated batch: uint8 images, integer labels, dataset indices, and the images skipped."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list


class FaceImages(torch.utils.data.Dataset):
    """Images of a split as uint8 tensors with integer labels (-1 when unlabelled).

    A file that cannot be decoded does not raise inside a loader worker (which
    would bury the path in a traceback): it comes back as :class:`Skipped`, and
    the consumer counts it or stops, as ``data.strict`` says.
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None = None, image_size: int | None = 112,
                 reader: ImageReader | None = None, encoded: bool = False):
        self.paths = [Path(p) for p in paths]
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        if len(self.labels) != len(self.paths):
            raise ValueError("paths and labels differ in length")
        self.image_size = image_size
        self.reader = reader or ImageReader()
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        """``(image, label, index)``; with ``encoded``, a JPEG stays as its bytes for the device to decode."""
        path = self.paths[index]
        try:
            if self.encoded:
                data = self.reader(path)
                if data[:2] == b"\xff\xd8":
                    return torch.frombuffer(bytearray(data), dtype=torch.uint8), self.labels[index], index
                image = decode_rgb(data, self.image_size, where=str(path))
            else:
                image = self.reader.load(path, self.image_size)
        except BadImageError as error:
            return Skipped(str(path), error.reason)
        return image, self.labels[index], index


def collate(items: list) -> Batch:
    """Stack the loaded images of a batch and set aside the skipped ones.

    Still-encoded images (1-D byte tensors, see ``FaceImages(encoded=True)``)
    stay a list, for :func:`decode_batch` on the training device.
    """
    loaded = [item for item in items if not isinstance(item, Skipped)]
    skipped = [item for item in items if isinstance(item, Skipped)]
    labels = torch.tensor([label for _, label, _ in loaded], dtype=torch.long)
    indices = torch.tensor([index for _, _, index in loaded], dtype=torch.long)
    if not loaded:
        return Batch(torch.empty(0, 3, 0, 0, dtype=torch.uint8), labels, indices, skipped)
    images = [image for image, _, _ in loaded]
    if all(image.dim() == 3 for image in images):
        images = torch.stack(images)
    return Batch(images, labels, indices, skipped)


def decodes_on_device(setting: str) -> bool:
    """``data.decode``: ``auto`` decodes in the loader workers, which keep up with a CPU step (BENCHMARKS.md)."""
    return setting == "device"


def decode_batch(batch: Batch, device: torch.device, size: int, paths: Sequence[Path]) -> Batch:
    """Decode a batch's still-encoded JPEGs on ``device`` in one call (nvJPEG on a GPU) and stack it there.

    An image the batched call cannot decode is found by decoding one by one;
    it leaves the batch as :class:`Skipped`, like a bad image met in a worker.
    """
    if isinstance(batch.images, torch.Tensor):
        return batch
    encoded = [i for i, image in enumerate(batch.images) if image.dim() == 1]
    decoded = dict(zip(encoded, _decode_jpegs([batch.images[i] for i in encoded], device)))
    images, keep, skipped = [], [], list(batch.skipped)
    for i, image in enumerate(batch.images):
        if i in decoded and decoded[i] is None:
            reason = f"not a readable image: {describe_bytes(batch.images[i].cpu().numpy().tobytes())}"
            skipped.append(Skipped(str(paths[int(batch.indices[i])]), reason))
            continue
        image = decoded.get(i, image).to(device, non_blocking=True)
        if tuple(image.shape[-2:]) != (size, size):
            image = TF.resize(image, [size, size], antialias=True)
        images.append(image)
        keep.append(i)
    keep = torch.tensor(keep, dtype=torch.long)
    stacked = torch.stack(images) if images else torch.empty(0, 3, size, size, dtype=torch.uint8, device=device)
    return Batch(stacked, batch.labels[keep], batch.indices[keep], skipped)


def _decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    if not data:
        return []
    try:
        return decode_jpegs(data, device)
    except RuntimeError:
        pass
    out = []
    for blob in data:
        try:
            out.append(decode_jpegs([blob], device)[0])
        except RuntimeError:
            out.append(None)
    return out


@dataclass
class TrainingSet:
    """The training images after the config's filters, with integer labels and the class list they index."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]
    dropped_singletons: int = 0


def training_set(data: FaceData, singletons: str = "keep", max_images: int = 0, seed: int = 0,
                 classes: list[str] | None = None) -> TrainingSet:
    """Select and label the training images.

    ``singletons``: what to do with identities that have one image: ``keep``
    them as classes, ``drop`` them, or use them as ``negatives`` only (label
    -1, no class of their own). ``max_images`` keeps a seeded random subset.
    ``classes`` (from a checkpoint being resumed) fixes the class list, which
    must then match the data's.
    """
    split = data.train
    if split is None or not split.paths:
        raise UserError(f"{data.root} has no training images (cls_data/train)")
    if split.labels is None:
        raise UserError(f"{data.root / 'cls_data/train'} has no labels.txt; training needs labelled images")
    counts = Counter(split.labels)
    chosen = list(range(len(split.paths)))
    dropped = 0
    if singletons == "drop":
        chosen = [i for i in chosen if counts[split.labels[i]] > 1]
        dropped = len(split.paths) - len(chosen)
    if max_images and max_images < len(chosen):
        picked = np.random.default_rng(seed).choice(len(chosen), size=max_images, replace=False)
        chosen = [chosen[i] for i in sorted(picked)]
    negative = {label for label, n in counts.items() if n == 1} if singletons == "negatives" else set()
    found = class_names([split.labels[i] for i in chosen if split.labels[i] not in negative])
    if classes is not None and list(classes) != found:
        raise UserError(f"the training classes of {data.root} ({len(found)}) differ from the checkpoint's "
                        f"({len(classes)}); resume on the data (and data.* settings) it was trained on")
    if not found:
        raise UserError(f"{data.root} has no training identity left after data.singletons={singletons}")
    index = {name: i for i, name in enumerate(found)}
    labels = [index.get(split.labels[i], -1) for i in chosen]
    return TrainingSet([split.paths[i] for i in chosen], labels, found, dropped)
