"""Figures a person would rather look at than read: ROC, DET, score histograms, hardest pairs, curves.

Every function returns a matplotlib ``Figure`` (the notebook shows it inline)
and, given ``path``, also writes it as a PNG atomically. The object-oriented
API is used throughout, so nothing depends on a display or a pyplot backend.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import norm
from sklearn.metrics import det_curve, roc_curve

from helpers.core.io import atomic_write
from helpers.core.records import RunRecord


def save(figure: Figure, path: str | Path | None) -> Figure:
    """Write ``figure`` as a PNG at ``path`` (when given) and return it."""
    if path is not None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
    return figure


def roc_figure(scores, labels, eer: float | None = None, path=None) -> Figure:
    """ROC with a log-scale FPR axis, where the low false-accept rates that matter are visible."""
    fpr, tpr, _ = roc_curve(labels, scores)
    figure = Figure(figsize=(5.5, 4.2))
    ax = figure.subplots()
    floor = 1.0 / max(int(np.sum(np.asarray(labels) == 0)), 1)
    ax.plot(np.clip(fpr, floor / 2, 1), tpr, lw=2)
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, 1)
    ax.set_ylim(0, 1.01)
    if eer is not None:
        ax.plot([eer], [1 - eer], "o", color="C3", label=f"EER {eer:.4f}")
        ax.legend(loc="lower right")
    ax.set_xlabel("false accept rate (log scale)")
    ax.set_ylabel("true accept rate")
    ax.set_title("ROC")
    ax.grid(True, which="both", alpha=0.3)
    return save(figure, path)


def det_figure(scores, labels, eer: float | None = None, path=None) -> Figure:
    """Detection error trade-off: false rejects against false accepts on normal-deviate axes."""
    fpr, fnr, _ = det_curve(labels, scores)
    keep = (fpr > 0) & (fpr < 1) & (fnr > 0) & (fnr < 1)
    figure = Figure(figsize=(5.5, 4.2))
    ax = figure.subplots()
    ax.plot(norm.ppf(fpr[keep]), norm.ppf(fnr[keep]), lw=2)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ax.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_xlim(norm.ppf(0.0005), norm.ppf(0.99))
    ax.set_ylim(norm.ppf(0.0005), norm.ppf(0.99))
    ax.plot(norm.ppf([0.0005, 0.99]), norm.ppf([0.0005, 0.99]), ":", color="grey", lw=1)
    if eer is not None and 0 < eer < 1:
        ax.plot([norm.ppf(eer)], [norm.ppf(eer)], "o", color="C3", label=f"EER {eer:.4f}")
        ax.legend(loc="upper right")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("false reject rate")
    ax.set_title("DET")
    ax.grid(True, alpha=0.3)
    return save(figure, path)


def score_histogram_figure(scores, labels, threshold: float | None = None, path=None) -> Figure:
    """Genuine (same person) and impostor score distributions, with the EER threshold."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    bins = np.linspace(min(-1.0, scores.min()), max(1.0, scores.max()), 60)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, color="C3", label="impostor (different people)")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, color="C0", label="genuine (same person)")
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", label=f"EER threshold {threshold:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    ax.set_title("Score distributions")
    return save(figure, path)


def hardest_pairs_figure(images_a: Sequence, images_b: Sequence, scores: Sequence[float], kinds: Sequence[str],
                         path=None) -> Figure:
    """The actual image pairs the model gets most wrong, each with its score and kind (false accept/reject).

    Images are HxWx3 uint8 arrays.
    """
    count = len(scores)
    columns = min(count, 4) or 1
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(3.2 * columns, 1.9 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, a, b, score, kind in zip(axes, images_a, images_b, scores, kinds):
        ax.imshow(np.concatenate([a, np.full((a.shape[0], 4, 3), 255, np.uint8), b], axis=1))
        ax.set_title(f"{kind}\nscore {score:.3f}", fontsize=8, color="C3" if kind == "false accept" else "C0")
    figure.suptitle("Hardest pairs: different people scored alike, and the same person scored apart", fontsize=10)
    return save(figure, path)


def training_curves_figure(records: Sequence[RunRecord | dict], path=None) -> Figure:
    """Train loss, learning rate and val EER per epoch (and the EMA's val EER, and the combined score of dev top-1
    and val EER when it was measured), from a run's metrics.jsonl (its records, or its lines as read)."""
    records = [r if isinstance(r, RunRecord) else RunRecord.from_line(r) for r in records]
    trained = [r for r in records if r.trained is not None and r.trained.train_loss is not None]
    evaluated = [r for r in records if r.metrics().val_eer is not None]
    figure = Figure(figsize=(12, 3.4))
    loss_ax, lr_ax, eer_ax = figure.subplots(1, 3)
    loss_ax.plot([r.epoch for r in trained], [r.trained.train_loss for r in trained], marker=".")
    loss_ax.set_title("train loss")
    lr_ax.plot([r.epoch for r in trained], [r.trained.lr for r in trained], marker=".", color="C1")
    lr_ax.set_title("learning rate (end of epoch)")
    eer_ax.plot([r.epoch for r in evaluated], [r.metrics().val_eer for r in evaluated], marker=".", color="C2",
                label="trained weights")
    averaged = [r for r in evaluated if r.metrics("ema").val_eer is not None]
    if averaged:  # train.ema: the moving average's curve beside the trained weights'
        eer_ax.plot([r.epoch for r in averaged], [r.metrics("ema").val_eer for r in averaged], marker=".",
                    color="C4", label="EMA weights")
        eer_ax.legend(fontsize=8)
    eer_ax.set_title("val EER (lower is better)")
    scored = [r for r in evaluated if r.metrics().val_score is not None]
    if scored:  # Fall 2026's combined score, on its own axis: higher is better
        score_ax = eer_ax.twinx()
        score_ax.plot([r.epoch for r in scored], [r.metrics().val_score for r in scored], ls="--", color="C5")
        score_ax.set_ylabel("combined score (dashed, higher is better)", color="C5", fontsize=8)
        eer_ax.set_title("val EER (lower is better) and combined score")
    for ax in (loss_ax, lr_ax, eer_ax):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    return save(figure, path)


def margin_figure(m: float = 0.35, cosface_m: float = 0.35, path=None) -> Figure:
    """The target-class logit against the angle θ for softmax, CosFace and ArcFace (unscaled)."""
    theta = np.linspace(0, math.pi, 400)
    arcface = np.where(theta + m <= math.pi, np.cos(theta + m), np.cos(theta) - m * math.sin(m))
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    ax.plot(np.degrees(theta), np.cos(theta), label="softmax: cos θ")
    ax.plot(np.degrees(theta), np.cos(theta) - cosface_m, label=f"CosFace: cos θ − {cosface_m}")
    ax.plot(np.degrees(theta), arcface, label=f"ArcFace: cos(θ + {m})")
    ax.axvline(math.degrees(math.pi - m), color="grey", ls=":", lw=1)
    ax.set_xlabel("angle θ between embedding and its class centre (degrees)")
    ax.set_ylabel("target logit / s")
    ax.legend()
    ax.grid(True, alpha=0.3)
    ax.set_title("Margins make the target class harder to score")
    return save(figure, path)


def image_grid_figure(images: Sequence, titles: Sequence[str] | None = None, columns: int = 8, path=None) -> Figure:
    """A grid of HxWx3 uint8 (or [0, 1] float) images."""
    rows = max(1, math.ceil(len(images) / columns))
    figure = Figure(figsize=(1.5 * columns, 1.6 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    return save(figure, path)


def histogram_figure(values: Sequence[float], title: str, xlabel: str, path=None) -> Figure:
    """A plain histogram (images per identity, for instance)."""
    figure = Figure(figsize=(6, 3.5))
    ax = figure.subplots()
    values = np.asarray(values)
    ax.hist(values, bins=np.arange(values.min(), values.max() + 2) - 0.5 if len(values) else 10)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return save(figure, path)


def series_figure(series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str,
                  path=None, logy: bool = False) -> Figure:
    """Several named (x, y) lines on one axis: val EER against time for recipes, or EER per run."""
    figure = Figure(figsize=(7, 4.2))
    ax = figure.subplots()
    for name, (x, y) in series.items():
        ax.plot(x, y, marker=".", label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save(figure, path)


def augmentation_figures(data, image_size: int, augment_config, count: int = 16, seed: int = 0) -> tuple[Figure, Figure]:
    """A grid of training images with their identities, and the same images after training augmentation."""
    import torch

    from helpers.data.augment import BatchAugment, denormalize

    generator = np.random.default_rng(seed)
    picks = sorted(generator.choice(len(data.train.paths), size=min(count, len(data.train.paths)), replace=False))
    images = torch.stack([data.load(data.train.paths[i], image_size) for i in picks])
    titles = [str(data.train.labels[i]) if data.train.labels else "" for i in picks]
    augmented = BatchAugment(augment_config, image_size)(images, torch.Generator().manual_seed(seed))
    originals = image_grid_figure([im.permute(1, 2, 0).numpy() for im in images], titles)
    originals.suptitle("training images (class id above each)")
    changed = image_grid_figure([im.permute(1, 2, 0).numpy() for im in denormalize(augmented)], titles)
    changed.suptitle("the same images after training augmentation")
    return originals, changed
