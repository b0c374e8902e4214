"""A trained checkpoint's model ready to embed (:class:`TrainedModel`), made by :func:`load_trained` alone, and
what is done with one: ``evaluate`` (:func:`evaluate_checkpoint`), ``verify`` (:func:`compare_images`), ``embed``
(:func:`embed_folder`); ``submit``, ``export``, the notebooks and the benchmarks start from it too.

Inference keeps the precision and memory format its run recorded where it runs on that kind of device, and
runs in fp32 elsewhere: it never times training steps (:func:`helpers.runtime.fast_path.inference_fast_path`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from helpers.core.config import Config
from helpers.core.errors import UserError
from helpers.core.records import RunRecord
from helpers.core.terms import get_term
from helpers.data.layout import FaceData, open_data
from helpers.data.stage import evaluation_root
from helpers.eval.evaluation import (EvalSettings, consecutive_pairs, dev_accuracy, embed_images, eval_settings,
                                     existing_images, folder_images, hardest_pairs, identify, known_dev_images,
                                     save_embeddings, stored_threshold, verify_pairs)
from helpers.eval.results import CheckpointEvaluation, Identification, PairVerification
from helpers.eval.score_norm import ScoreNorm
from helpers.model.checkpoint import Checkpoint
from helpers.model.resnet import FaceModel
from helpers.runtime.resolve import Runtime, resolve_runtime


@dataclass(frozen=True)
class TrainedModel:
    """A trained model ready to embed: the checkpoint file (``path``; its folder is the run's), the checkpoint as
    holding the weights chosen, their model placed on the runtime's device, and the eval settings."""

    path: Path
    checkpoint: Checkpoint
    model: FaceModel
    runtime: Runtime
    settings: EvalSettings

    @property
    def config(self) -> Config:
        return self.checkpoint.config

    @property
    def run_dir(self) -> Path:
        """The folder of the run that wrote the checkpoint."""
        return self.path.parent

    def open_data(self, data_root: str | Path | None = None) -> FaceData:
        """The data root ``data_root``, or the one the run trained on (a complete staged copy of it, from
        ``data.stage_to``, where there is one)."""
        cfg = self.config.data
        # '' is refused, not the checkpoint's root; without one, a complete staged copy (data.stage_to), else data.root
        root = evaluation_root(cfg) if data_root is None else data_root
        if root is None:
            raise UserError(f"{self.path} does not name its data root; pass --data-root")
        return open_data(root, cfg.layout if data_root is None else "auto", cfg.max_image_pixels, cfg.follow_links)

    def stored_threshold(self) -> float | None:
        """The val EER threshold stored for these weights, when the settings make scores the way it was found."""
        return stored_threshold(self.checkpoint, self.settings)


def load_trained(checkpoint: str | Path, device: str = "auto", weights: str | None = None,
                 **changes) -> TrainedModel:
    """The model of ``checkpoint`` as holding ``weights`` (raw, ema; default: the ones it holds) on ``device``,
    ready to embed; ``changes`` replace eval settings (``tta``, ``progress``, ``batch_size``, ``score_norm``...),
    a change to None leaving the setting as it is."""
    path = Path(checkpoint)
    opened = Checkpoint.load(path).holding(weights)
    runtime = resolve_runtime(opened.config, device, inference=True, previous=opened.fast_path)
    model = runtime.place(opened.restore_model(source=path))
    settings = eval_settings(opened.config, runtime, **{key: value for key, value in changes.items()
                                                      if value is not None})
    return TrainedModel(path, opened, model, runtime, settings)


def evaluate_checkpoint(checkpoint: str | Path, data_root: str | Path | None = None, tta: bool = False,
                        device: str = "auto", bootstrap: int = 0, gallery_per_identity: int = 10,
                        plots_dir: str | Path | None = None, progress: bool = False,
                        weights: str | None = None, score_norm: ScoreNorm = ScoreNorm(),
                        term: str | None = None, history: Sequence[RunRecord] = ()) -> CheckpointEvaluation:
    """Everything ``evaluate`` reports: verification on val pairs, dev top-1/top-5, the combined score, 1:N
    identification, plots; and the leaderboard metric of ``term`` (default: the checkpoint's course.term).

    ``weights`` (raw or ema) overrides which of the checkpoint's weights are evaluated. ``history``: the records
    of the run that wrote the checkpoint, drawn as training curves among the plots.
    """
    trained = load_trained(checkpoint, device, weights, tta=tta, progress=progress, score_norm=score_norm)
    model, opened, data, settings = trained.model, trained.checkpoint, trained.open_data(data_root), trained.settings
    verification = verify_pairs(model, data, settings, bootstrap=bootstrap) if data.val_pairs else None
    accuracy = dev_accuracy(model, data, opened.classes, settings)
    identification = None
    if accuracy is not None and data.train is not None and data.train.labels:
        index = {name: i for i, name in enumerate(opened.classes)}
        identification = _identification(model, data, index, *known_dev_images(data, opened.classes), settings,
                                          gallery_per_identity)
    plots = None if plots_dir is None else _write_plots(data, verification, settings, Path(plots_dir), history)
    return CheckpointEvaluation(checkpoint=str(checkpoint), data_root=str(data.root), tta=tta, weights=opened.weights,
                                score_norm=score_norm.describe(model.head),
                                term=get_term(term or opened.config.course.term), verification=verification,
                                classification=accuracy, identification=identification, plots=plots)


def _write_plots(data: FaceData, verification: PairVerification | None, settings: EvalSettings, plots_dir: Path,
                 history: Sequence[RunRecord]) -> list[str]:
    """ROC, DET, the score histogram and the hardest val pairs (with val pairs), the training curves (with
    ``history``), into ``plots_dir``; the paths written."""
    from helpers.eval import plots

    written = []
    if verification is not None:
        scores, labels = verification.scores, verification.labels
        usable = np.isfinite(scores)
        eer, threshold = verification.eer, verification.threshold
        plots.roc_figure(scores[usable], labels[usable], eer, plots_dir / "roc.png")
        plots.det_figure(scores[usable], labels[usable], eer, plots_dir / "det.png")
        plots.score_histogram_figure(scores[usable], labels[usable], threshold, plots_dir / "scores.png")
        chosen = hardest_pairs(data.val_pairs, np.where(usable, scores, np.nan), labels, threshold)
        if chosen:
            first = [data.load(data.ver_path(data.val_pairs[i].a), settings.image_size) for i, _ in chosen]
            second = [data.load(data.ver_path(data.val_pairs[i].b), settings.image_size) for i, _ in chosen]
            plots.hardest_pairs_figure([a.permute(1, 2, 0).numpy() for a in first],
                                       [b.permute(1, 2, 0).numpy() for b in second],
                                       [float(scores[i]) for i, _ in chosen], [kind for _, kind in chosen],
                                       plots_dir / "hardest_pairs.png")
        written += ["roc.png", "det.png", "scores.png"] + (["hardest_pairs.png"] if chosen else [])
    if history:
        plots.training_curves_figure(history, plots_dir / "training_curves.png")
        written.append("training_curves.png")
    return [str(plots_dir / name) for name in written]


def _identification(model, data: FaceData, index: dict, probe_paths, probe_labels, settings,
                    per_identity: int) -> Identification:
    """Rank-1/5 of dev images against per-identity mean embeddings of up to ``per_identity`` train images."""
    taken: dict[str, int] = {}
    gallery_paths, gallery_labels = [], []
    for path, label in zip(data.train.paths, data.train.labels):
        if label in index and taken.get(label, 0) < per_identity:
            taken[label] = taken.get(label, 0) + 1
            gallery_paths.append(path)
            gallery_labels.append(index[label])
    gallery, _ = embed_images(model, gallery_paths, settings, desc="gallery", reader=data.reader)
    probes, _ = embed_images(model, list(probe_paths), settings, desc="probes", reader=data.reader)
    return identify(gallery, gallery_labels, probes, probe_labels)


def compare_images(checkpoint: str | Path, images: Sequence[str | Path], tta: bool = False, device: str = "auto",
                   score_norm: ScoreNorm = ScoreNorm(), weights: str | None = None):
    """Scores of consecutive image pairs, and the checkpoint's stored val EER threshold when it fits them (or None).

    The stored threshold was found on raw cosines, with the training run's
    TTA setting; scores made any other way get None.
    """
    trained = load_trained(checkpoint, device, weights, tta=tta, score_norm=score_norm)
    paths = existing_images(images)
    rows = consecutive_pairs(paths, *embed_images(trained.model, paths, trained.settings), score_norm,
                             trained.model.head)
    return rows, trained.stored_threshold()


def embed_folder(checkpoint: str | Path, folder: str | Path, out: str | Path, tta: bool = False,
                 device: str = "auto") -> int:
    """Write the embeddings of every image in ``folder`` to ``out`` (.npz: names, embeddings); returns the count."""
    paths = folder_images(folder)
    trained = load_trained(checkpoint, device, tta=tta)
    return save_embeddings(Path(folder), paths, *embed_images(trained.model, paths, trained.settings), out)
