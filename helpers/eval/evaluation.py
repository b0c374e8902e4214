"""Embeddings and what is measured with them: verification pairs, dev classification, 1:N identification.

Each unique image is embedded once, however many pairs name it. Embeddings
are unit vectors, so a pair's score is their dot product, the cosine
similarity, or that cosine normalised against the class centres
(``EvalSettings.score_norm``, see :mod:`helpers.eval.score_norm`). Flip test-time
augmentation adds the embedding of the mirrored image and renormalises.
"""

from __future__ import annotations

import io
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from helpers.core.config import Config
from helpers.core.errors import UserError
from helpers.core.progress import progress
from helpers.core.records import EvalMetrics
from helpers.core.signals import ignore_stop_signals
from helpers.core.terms import combined_score
from helpers.data.augment import normalize
from helpers.data.datasets import FaceImages, collate, decode_batch
from helpers.data.images import ImageReader
from helpers.data.layout import FaceData, Pair
from helpers.eval.metrics import verification_metrics
from helpers.eval.results import Classification, Identification, PairVerification
from helpers.eval.score_norm import ScoreNorm
from helpers.eval.score_norm import pair_scores as score_rows
from helpers.model.checkpoint import Checkpoint
from helpers.model.resnet import FaceModel
from helpers.runtime.resolve import Runtime


@dataclass(frozen=True)
class EvalSettings:
    """How to run the model for evaluation, and how pair scores are made from its embeddings."""

    device: torch.device = torch.device("cpu")
    batch_size: int = 128
    workers: int = 0
    image_size: int = 112
    amp: torch.dtype | None = None
    channels_last: bool = False
    tta: bool = False
    progress: bool = False
    decode_on_device: bool = False
    score_norm: ScoreNorm = ScoreNorm()


def eval_settings(cfg: Config, runtime: Runtime, **changes) -> EvalSettings:
    """How a model trained under ``cfg`` is evaluated in ``runtime`` (its device, fast path, loader workers and
    decoding): the one place evaluation settings are made, for training, evaluate, submit, the benchmarks and
    the self-test. ``changes`` replace fields (``tta``, ``progress``, ``batch_size``...)."""
    fast = runtime.fast_path
    settings = EvalSettings(device=runtime.device, batch_size=2 * cfg.train.batch_size, workers=runtime.workers,
                            image_size=cfg.data.image_size, amp=fast.amp, channels_last=fast.channels_last,
                            tta=cfg.train.eval_tta, decode_on_device=runtime.decode_on_device)
    return replace(settings, **changes)


def image_loader(paths: Sequence[Path], settings: EvalSettings, reader: ImageReader | None = None
                 ) -> torch.utils.data.DataLoader:
    """A loader of uint8 images in order, no shuffling; its workers leave a stop signal to their parent (a training
    evaluating when Slurm signals the job saves before it stops: core/signals.py)."""
    dataset = FaceImages(paths, None, settings.image_size, reader=reader, encoded=settings.decode_on_device)
    return torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=False,
                                       num_workers=settings.workers, collate_fn=collate,
                                       worker_init_fn=ignore_stop_signals,
                                       pin_memory=settings.device.type == "cuda",
                                       generator=torch.Generator())


@torch.no_grad()
def embed_images(model, paths: Sequence[Path], settings: EvalSettings, desc: str = "embedding",
                 reader: ImageReader | None = None) -> tuple[torch.Tensor, list]:
    """Unit-norm embeddings (N x D, float32, CPU) of ``paths`` from a PyTorch model, and the images that could not
    be read (see :func:`embed_with`)."""
    was_training = model.training
    model.eval()
    try:
        return embed_with(lambda images: torch_embeddings(model, images, settings), paths, settings, desc, reader)
    finally:
        model.train(was_training)


def torch_embeddings(model, images: torch.Tensor, settings: EvalSettings) -> torch.Tensor:
    """A uint8 batch's unit-norm embeddings from a PyTorch model, with flip TTA when ``settings`` ask; on the CPU."""
    images = normalize(images.to(settings.device, non_blocking=True))
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = (torch.autocast(settings.device.type, dtype=settings.amp) if settings.amp is not None
                else nullcontext())
    with autocast:  # the network only: embeddings are summed, normalised and compared in fp32
        embeddings = model.embed(images).float()
        flipped = model.embed(images.flip(3)).float() if settings.tta else None
    if flipped is not None:
        embeddings = F.normalize(embeddings + flipped, dim=1)
    return embeddings.cpu()


def embed_with(embed, paths: Sequence[Path], settings: EvalSettings, desc: str = "embedding",
               reader: ImageReader | None = None) -> tuple[torch.Tensor, list]:
    """``embed(uint8 batch)`` over the images at ``paths``, loaded in order as ``settings`` say: their embeddings
    (N x D, float32, CPU) and the images that could not be read. Any runtime's embedder (PyTorch, onnxruntime) goes
    through this one loader.

    Rows of unreadable images are NaN, so anything computed from them is
    visibly undefined rather than silently wrong.
    """
    loader = image_loader(paths, settings, reader)
    out = None
    skipped = []
    for batch in progress(loader, desc=desc, unit="batch", enabled=settings.progress):
        batch = decode_batch(batch, settings.device, settings.image_size, loader.dataset.paths)
        skipped += batch.skipped
        if not len(batch.indices):
            continue
        embeddings = embed(batch.images)
        if out is None:
            out = torch.full((len(paths), embeddings.shape[1]), float("nan"))
        out[batch.indices] = embeddings
    if out is None:
        raise UserError(f"none of the {len(paths)} images could be read (first: {skipped[0].path}: {skipped[0].reason})"
                        if skipped else "there are no images to embed")
    return out, skipped


def pair_images(data: FaceData, pairs: Sequence[Pair]) -> tuple[list[Path], dict[str, int]]:
    """The unique image paths a pair list names, and each name's row in that list."""
    names = sorted({name for pair in pairs for name in (pair.a, pair.b)})
    return [data.ver_path(name) for name in names], {name: i for i, name in enumerate(names)}


def pair_scores(embeddings: torch.Tensor, index: dict[str, int], pairs: Sequence[Pair],
                score_norm: ScoreNorm = ScoreNorm(), head=None) -> np.ndarray:
    """Score of each pair, in pair-file order: cosine similarity, or AS-norm against ``head``'s class centres."""
    return score_rows(embeddings, [index[pair.a] for pair in pairs], [index[pair.b] for pair in pairs],
                      score_norm, head)


def score_pairs(model, data: FaceData, pairs: Sequence[Pair], settings: EvalSettings,
                desc: str = "pairs") -> tuple[np.ndarray, list]:
    """Scores of ``pairs`` (unique images embedded once) and the unreadable images."""
    paths, index = pair_images(data, pairs)
    embeddings, skipped = embed_images(model, paths, settings, desc=desc, reader=data.reader)
    return pair_scores(embeddings, index, pairs, settings.score_norm, model.head), skipped


def verify_pairs(model, data: FaceData, settings: EvalSettings, bootstrap: int = 0) -> PairVerification:
    """Verification metrics on ``val_pairs.txt``; pairs with an unreadable image are left out and counted."""
    if not data.val_pairs:
        raise UserError(f"{data.root} has no val_pairs.txt to evaluate on")
    scores, skipped = score_pairs(model, data, data.val_pairs, settings, desc="val pairs")
    labels = np.array([pair.label for pair in data.val_pairs])
    usable = np.isfinite(scores)
    measured = verification_metrics(scores[usable], labels[usable], bootstrap=bootstrap)
    return PairVerification(**dict(measured), unscored_pairs=int((~usable).sum()),
                            unreadable=[s.path for s in skipped], scores=scores, labels=labels)


def unscored_note(result: PairVerification | None) -> str | None:
    """A sentence for the val pairs :func:`verify_pairs` left out (an image unreadable), naming the images; None
    when every pair was scored, or nothing was verified."""
    return None if result is None else result.unscored_note()


@torch.no_grad()
def known_dev_images(data: FaceData, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    """The dev images of identities among ``classes`` (the ones the head knows), with their class indices."""
    dev = data.dev
    if dev is None or not dev.labels:
        return [], []
    index = {name: i for i, name in enumerate(classes)}
    known = [(path, index[label]) for path, label in zip(dev.paths, dev.labels) if label in index]
    return [path for path, _ in known], [label for _, label in known]


def dev_accuracy(model: FaceModel, data: FaceData, classes: Sequence[str], settings: EvalSettings
                 ) -> Classification | None:
    """The margin head's top-1 and top-5 on the dev images of known identities; None when there are none."""
    paths, labels = known_dev_images(data, classes)
    return classify(model, paths, labels, settings, reader=data.reader) if paths else None


def classify(model, paths: Sequence[Path], labels: Sequence[int], settings: EvalSettings, desc: str = "dev",
             reader: ImageReader | None = None) -> Classification:
    """Top-1 and top-5 accuracy of the margin head's plain cosine logits on labelled images."""
    embeddings, _ = embed_images(model, paths, settings, desc=desc, reader=reader)
    usable = torch.isfinite(embeddings).all(dim=1)
    targets = torch.as_tensor(list(labels))[usable]
    logits = model.head.cosine(embeddings[usable].to(settings.device)).cpu()
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return Classification(top1=float((top[:, 0] == targets).float().mean()),
                          top5=float((top == targets[:, None]).any(dim=1).float().mean()), images=int(usable.sum()))


def eval_metrics(model: FaceModel, data: FaceData, classes: Sequence[str], settings: EvalSettings,
                 bootstrap: int = 0) -> tuple[EvalMetrics, PairVerification | None]:
    """One set of weights measured as a run records it: val verification (with val pairs), dev top-1/5 (with dev
    images of known identities) and the combined score of the two; and the verification result (None without
    val pairs)."""
    verification = verify_pairs(model, data, settings, bootstrap=bootstrap) if data.val_pairs else None
    accuracy = dev_accuracy(model, data, classes, settings)
    measured = EvalMetrics.from_measures(val=verification, dev=accuracy)
    # a run's lines have always left out a count of no unscored pairs
    return replace(measured, val_unscored_pairs=measured.val_unscored_pairs or None,
                   val_score=combined_score(measured.dev_top1, measured.val_eer)), verification


@torch.no_grad()
def identify(gallery: torch.Tensor, gallery_labels: Sequence[int], probes: torch.Tensor,
             probe_labels: Sequence[int]) -> Identification:
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
    return Identification(
        rank1=float((ranked[:, 0] == probe_labels).float().mean()) if len(probes) else float("nan"),
        rank5=float((ranked == probe_labels[:, None]).any(dim=1).float().mean()) if len(probes) else float("nan"),
        probes=int(len(probes)), identities=int(len(identities)))


def stored_threshold(checkpoint: Checkpoint, settings: EvalSettings) -> float | None:
    """The val EER threshold stored for the weights ``checkpoint`` holds (:meth:`Checkpoint.holding`), when
    ``settings`` make scores the way it was found: raw cosines, with the training run's TTA setting; else None."""
    same_scoring = settings.tta == checkpoint.config.train.eval_tta and settings.score_norm.method == "none"
    return checkpoint.val.val_threshold if same_scoring else None


def hardest_pairs(pairs: Sequence[Pair], scores: np.ndarray, labels: np.ndarray, threshold: float, count: int = 4):
    """Indices of the worst errors at ``threshold``: highest-scored different-person pairs, lowest-scored same-person."""
    order = np.argsort(scores)
    accepts = [i for i in order[::-1] if labels[i] == 0 and scores[i] >= threshold][:count]
    rejects = [i for i in order if labels[i] == 1 and scores[i] < threshold][:count]
    return [(i, "false accept") for i in accepts] + [(i, "false reject") for i in rejects]


def existing_images(images: Sequence[str | Path]) -> list[Path]:
    """``images`` as paths, each checked to be a file."""
    paths = [Path(p) for p in images]
    for path in paths:
        if not path.is_file():
            raise UserError(f"image {path} does not exist")
    return paths


def consecutive_pairs(paths: Sequence[Path], embeddings: torch.Tensor, skipped: list,
                      score_norm: ScoreNorm = ScoreNorm(), head=None) -> list[tuple[str, str, float]]:
    """``(a, b, score)`` of the image pairs (paths[0], paths[1]), (paths[2], paths[3])...; an unreadable one stops."""
    if skipped:
        raise UserError(f"{skipped[0].path}: {skipped[0].reason}")
    scores = score_rows(embeddings, range(0, len(paths), 2), range(1, len(paths), 2), score_norm, head)
    return [(str(paths[2 * i]), str(paths[2 * i + 1]), float(score)) for i, score in enumerate(scores)]


def folder_images(folder: str | Path) -> list[Path]:
    """Every image under ``folder``, sorted."""
    from helpers.data.images import is_image

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    paths = sorted(p for p in folder.rglob("*") if is_image(p))
    if not paths:
        raise UserError(f"{folder} holds no images")
    return paths


def save_embeddings(folder: Path, paths: Sequence[Path], embeddings: torch.Tensor, skipped: list,
                    out: str | Path) -> int:
    """Write the readable images' embeddings to ``out`` (.npz: names relative to ``folder``, embeddings), warning
    about the others; returns how many were written."""
    from helpers.core.io import atomic_write

    keep = torch.isfinite(embeddings).all(dim=1).numpy()
    names = np.array([p.relative_to(folder).as_posix() for p in paths])[keep]
    for item in skipped:
        print(f"warning: skipped {item.path}: {item.reason}")
    buffer = io.BytesIO()
    np.savez(buffer, names=names, embeddings=embeddings.numpy()[keep])
    atomic_write(out, lambda handle: handle.write(buffer.getvalue()))
    return int(keep.sum())
