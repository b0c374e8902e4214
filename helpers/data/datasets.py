"""Datasets of uint8 images and the training set a config selects.

Images leave the datasets as 3xHxW uint8 tensors: augmentation and
normalisation happen later, in batches, on the training device (see augment.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from helpers.core.errors import UserError
from helpers.data.codec import decode_jpegs
from helpers.data.images import BadImageError, ImageReader, decode_rgb, describe_bytes, refuse_oversized
from helpers.data.layout import FaceData, class_names


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
                    refuse_oversized(data, str(path), self.reader.max_pixels)  # before the device decodes it
                    return torch.frombuffer(bytearray(data), dtype=torch.uint8), self.labels[index], index
                image = decode_rgb(data, self.image_size, where=str(path), max_pixels=self.reader.max_pixels)
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


def refill(batch: Batch, size: int) -> Batch:
    """``batch`` (stacked) grown back to ``size`` images: each skipped image's slot is taken by another image of
    the same batch, in order. Training keeps the one batch shape its fast path was chosen for: torch's CPU
    channels-last backward crashes natively on some odd batches (helpers.runtime.fast_path.channels_last_crash)."""
    missing = size - len(batch.labels)
    if missing <= 0 or not len(batch.labels):
        return batch
    again = torch.arange(missing) % len(batch.labels)
    return Batch(torch.cat([batch.images, batch.images[again.to(batch.images.device)]]),
                 torch.cat([batch.labels, batch.labels[again]]), torch.cat([batch.indices, batch.indices[again]]),
                 batch.skipped)


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
