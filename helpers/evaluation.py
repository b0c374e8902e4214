"""Embeddings and what is measured with them: verification pairs, dev classification, 1:N identification.

Each unique image is embedded once, however many pairs name it. Embeddings
are unit vectors, so a pair's score is their dot product, the cosine
similarity. Flip test-time augmentation adds the embedding of the mirrored
image and renormalises.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .augment import normalize
from .data import FaceData, FaceImages, Pair, collate
from .errors import UserError
from .metrics import verification_metrics


@dataclass(frozen=True)
class EvalSettings:
    """How to run the model for evaluation."""

    device: torch.device = torch.device("cpu")
    batch_size: int = 128
    workers: int = 0
    image_size: int = 112
    amp: torch.dtype | None = None
    channels_last: bool = False
    tta: bool = False
    progress: bool = False


def image_loader(items: Sequence, settings: EvalSettings, labels=None, read_bytes=None) -> torch.utils.data.DataLoader:
    """A loader of uint8 images in order, no shuffling."""
    dataset = FaceImages(items, labels, settings.image_size, read_bytes=read_bytes)
    return torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=False,
                                       num_workers=settings.workers, collate_fn=collate,
                                       pin_memory=settings.device.type == "cuda",
                                       generator=torch.Generator())


@torch.no_grad()
def embed_images(model, items: Sequence, settings: EvalSettings, desc: str = "embedding",
                 read_bytes=None) -> tuple[torch.Tensor, list]:
    """Unit-norm embeddings (N x D, float32, CPU) of ``items``, and the images that could not be read.

    Rows of unreadable images are NaN, so anything computed from them is
    visibly undefined rather than silently wrong.
    """
    was_training = model.training
    model.eval()
    loader = image_loader(items, settings, read_bytes=read_bytes)
    out = None
    skipped = []
    autocast = (torch.autocast(settings.device.type, dtype=settings.amp) if settings.amp is not None
                else nullcontext())
    try:
        for batch in tqdm(loader, desc=desc, disable=not settings.progress, unit="batch", leave=False):
            skipped += batch.skipped
            if not len(batch.indices):
                continue
            images = normalize(batch.images.to(settings.device, non_blocking=True))
            if settings.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                embeddings = model.embed(images)
                if settings.tta:
                    embeddings = F.normalize(embeddings + model.embed(images.flip(3)), dim=1)
            embeddings = embeddings.float().cpu()
            if out is None:
                out = torch.full((len(items), embeddings.shape[1]), float("nan"))
            out[batch.indices] = embeddings
    finally:
        model.train(was_training)
    if out is None:
        raise UserError(f"none of the {len(items)} images could be read (first: {skipped[0].path}: {skipped[0].reason})"
                        if skipped else "there are no images to embed")
    return out, skipped


def pair_images(data: FaceData, pairs: Sequence[Pair]) -> tuple[list[Path], dict[str, int]]:
    """The unique image paths a pair list names, and each name's row in that list."""
    names = sorted({name for pair in pairs for name in (pair.a, pair.b)})
    return [data.ver_path(name) for name in names], {name: i for i, name in enumerate(names)}


def pair_scores(embeddings: torch.Tensor, index: dict[str, int], pairs: Sequence[Pair]) -> np.ndarray:
    """Cosine similarity of each pair, in pair-file order."""
    a = embeddings[[index[pair.a] for pair in pairs]]
    b = embeddings[[index[pair.b] for pair in pairs]]
    return (a * b).sum(dim=1).numpy().astype(np.float64)


def score_pairs(model, data: FaceData, pairs: Sequence[Pair], settings: EvalSettings,
                desc: str = "pairs") -> tuple[np.ndarray, list]:
    """Scores of ``pairs`` (unique images embedded once) and the unreadable images."""
    paths, index = pair_images(data, pairs)
    embeddings, skipped = embed_images(model, paths, settings, desc=desc)
    return pair_scores(embeddings, index, pairs), skipped


def verify_pairs(model, data: FaceData, settings: EvalSettings, bootstrap: int = 0) -> dict:
    """Verification metrics on ``val_pairs.txt``; pairs with an unreadable image are left out and counted."""
    if not data.val_pairs:
        raise UserError(f"{data.root} has no val_pairs.txt to evaluate on")
    scores, skipped = score_pairs(model, data, data.val_pairs, settings, desc="val pairs")
    labels = np.array([pair.label for pair in data.val_pairs])
    usable = np.isfinite(scores)
    result = verification_metrics(scores[usable], labels[usable], bootstrap=bootstrap)
    result["unscored_pairs"] = int((~usable).sum())
    result["scores"] = scores
    result["labels"] = labels
    result["unreadable"] = [s.path for s in skipped]
    return result


@torch.no_grad()
def classify(model, items: Sequence, labels: Sequence[int], settings: EvalSettings, desc: str = "dev") -> dict:
    """Top-1 and top-5 accuracy of the margin head's plain cosine logits on labelled images."""
    embeddings, _ = embed_images(model, items, settings, desc=desc)
    usable = torch.isfinite(embeddings).all(dim=1)
    targets = torch.as_tensor(list(labels))[usable]
    logits = model.head.cosine(embeddings[usable].to(settings.device)).cpu()
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return {"top1": float((top[:, 0] == targets).float().mean()),
            "top5": float((top == targets[:, None]).any(dim=1).float().mean()),
            "images": int(usable.sum())}


@torch.no_grad()
def identify(gallery: torch.Tensor, gallery_labels: Sequence[int], probes: torch.Tensor,
             probe_labels: Sequence[int]) -> dict:
    """1:N identification: rank-1 and rank-5 of each probe against per-identity mean embeddings."""
    gallery_labels = torch.as_tensor(list(gallery_labels))
    probe_labels = torch.as_tensor(list(probe_labels))
    keep = torch.isfinite(gallery).all(dim=1)
    gallery, gallery_labels = gallery[keep], gallery_labels[keep]
    identities, inverse = torch.unique(gallery_labels, return_inverse=True)
    centres = torch.zeros(len(identities), gallery.shape[1]).index_add_(0, inverse, gallery)
    centres = F.normalize(centres, dim=1)
    usable = torch.isfinite(probes).all(dim=1) & torch.isin(probe_labels, identities)
    probes, probe_labels = probes[usable], probe_labels[usable]
    ranked = identities[(probes @ centres.T).topk(min(5, len(identities)), dim=1).indices]
    return {"rank1": float((ranked[:, 0] == probe_labels).float().mean()) if len(probes) else float("nan"),
            "rank5": float((ranked == probe_labels[:, None]).any(dim=1).float().mean()) if len(probes) else float("nan"),
            "probes": int(len(probes)), "identities": int(len(identities))}
