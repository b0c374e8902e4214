"""Checkpoint files: what they hold (:class:`Checkpoint`), safe loads, and the RNG states that make resume exact.

On disk a checkpoint is a dict of tensors and plain values (numbers, strings,
lists, dicts), so it loads with ``torch.load(weights_only=True)``: a file that
holds any other pickled object is refused, never executed. It is written with
:func:`helpers.core.io.atomic_write`. :class:`Checkpoint` is that dict typed,
field by field under the same keys, so that every file written before still
loads: a key an older file lacks takes its field's default.
"""

from __future__ import annotations

import dataclasses
import pickle
import random
import zipfile
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from helpers.core.config import Config, load_config
from helpers.core.errors import UserError
from helpers.core.io import atomic_link, atomic_write
from helpers.core.records import ArmMetrics
from helpers.model.resnet import FaceModel, build_face_model

FORMAT = "hw2p2-checkpoint"
VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A run's state when a file was saved: the trained weights (``model``) and their moving average (``ema``:
    the weights and the update count, None without ``train.ema``); the optimiser, loss-scaler and lr-schedule
    states; the position (epoch, batch in it, optimiser steps) and the data order; every RNG state; the class
    mapping (training class i is ``classes[i]``) and the configuration as plain values; the selection of best.pt
    (its state, and the best val EER and epoch); the W&B run; the fast path the run trained with; the time
    budget's clock; the skipped steps and images; when it was saved. Each file adds which weights it grades
    (``graded``: raw or ema) and their val metrics when it was saved (``val``).

    Loaded checkpoints are never changed: what another choice of weights means is asked of them
    (:meth:`grading`, :meth:`model_weights`).
    """

    model: dict
    optimizer: dict | None = None
    ema: dict | None = None
    scaler: dict | None = None
    schedule: dict | None = None
    epoch: int = 0
    batch: int = 0
    step: int = 0
    data_order: dict | None = None
    rng: dict | None = None
    classes: list[str]
    config_values: dict  # the "config" key: the configuration as plain values, as it was saved
    best_eer: float | None = None
    best_epoch: float | None = None
    selection: dict | None = None  # None in files written before weight averaging
    wandb_run_id: str | None = None
    fast_path: dict | None = None  # {"device", "amp", "channels_last", ...}; None before the fast-path record
    elapsed_seconds: float = 0.0
    planned_epochs: float = 0.0
    eval_seconds: float = 0.0
    nonfinite_steps: int = 0
    skipped_images: int = 0
    saved_at: str | None = None
    graded: str = "raw"
    val: ArmMetrics = field(default_factory=ArmMetrics)

    @cached_property
    def config(self) -> Config:
        """The configuration, validated; keys newer than the file keep their defaults."""
        return load_config(base=self.config_values)

    def to_dict(self) -> dict:
        """The plain dict a file holds, keys in the order files have always had."""
        values = {"config" if item.name == "config_values" else item.name: getattr(self, item.name)
                  for item in dataclasses.fields(self)}
        values["val"] = self.val.as_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict) -> Checkpoint:
        """A file's dict typed; its keys this version does not know are left out."""
        known = {item.name for item in dataclasses.fields(cls)} - {"config_values", "val"}
        return cls(**{key: value for key, value in values.items() if key in known},
                   config_values=values["config"], val=ArmMetrics.from_dict(values.get("val") or {}))

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read a checkpoint file (:func:`load_checkpoint`'s checks) as a Checkpoint."""
        values = load_checkpoint(path, map_location)
        missing = [key for key in ("model", "classes", "config") if key not in values]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)}: it is not a training checkpoint of this toolkit")
        return cls.from_dict(values)

    def save(self, path: str | Path) -> None:
        save_checkpoint(self.to_dict(), path)

    def model_weights(self, which: str | None = None, source: str | Path = "the checkpoint") -> dict:
        """The model weights this file grades, or ``which`` of them: ``raw`` (trained) or ``ema`` (averaged).

        Checkpoints written before weight averaging hold the trained weights only.
        """
        which = which or self.graded
        if which == "raw":
            return self.model
        if which != "ema":
            raise UserError(f"unknown weights '{which}'; use raw or ema")
        if not self.ema:
            raise UserError(f"{source} holds no averaged weights (it was trained with train.ema 0); use --weights raw")
        return self.ema["weights"]

    def grading(self, weights: str | None = None) -> Checkpoint:
        """This checkpoint as one that grades ``weights`` (raw, ema; None: the ones it grades), a new object: its
        stored val metrics go with the weights they were measured on, so choosing the other weights leaves it
        none. Asking for averaged weights a file lacks is refused in one sentence (:meth:`model_weights`)."""
        if weights is None or weights == self.graded:
            return self
        self.model_weights(weights)
        return replace(self, graded=weights, val=ArmMetrics())

    def restore_model(self, weights: str | None = None, source: str | Path = "the checkpoint") -> FaceModel:
        """The FaceModel its configuration and classes describe, holding the weights it grades (or ``weights``:
        raw, ema), on the CPU in eval mode; weights that do not fit are refused in one sentence."""
        model = build_face_model(self.config, len(self.classes))
        chosen = self.model_weights(weights, source)
        misfit = weights_misfit(model, chosen)
        if misfit:
            raise UserError(f"the weights in {source} do not fit the model that its own configuration and class "
                            f"list ({len(self.classes)} classes) describe: {misfit}; the file was changed after "
                            "training or written by another tool")
        model.load_state_dict(chosen)
        return model.eval()


def save_checkpoint(values: dict, path: str | Path) -> None:
    """Save a checkpoint's plain dict atomically (see :func:`atomic_write`)."""
    values = {"format": FORMAT, "version": VERSION, **values}
    atomic_write(path, lambda handle: torch.save(values, handle))


def save_checkpoints(checkpoint: Checkpoint, files: dict[str, tuple[str, ArmMetrics]], folder: str | Path) -> None:
    """Save ``checkpoint`` as each of ``files`` (name -> the weights that file grades and their val metrics), in
    order, serialising each distinct content once: a file graded as an earlier one is a link to it
    (:func:`atomic_link`)."""
    written: list[tuple[tuple[str, ArmMetrics], Path]] = []
    for name, graded in files.items():
        path = Path(folder) / name
        same = next((earlier for content, earlier in written if content == graded), None)
        if same is None:
            replace(checkpoint, graded=graded[0], val=graded[1]).save(path)
            written.append((graded, path))
        else:
            atomic_link(same, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The plain dict of a checkpoint file written by :func:`save_checkpoint`, refusing anything but plain tensor
    state."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since PyTorch 1.6
        raise UserError(f"{path} is not a readable PyTorch checkpoint (truncated or another kind of file)")
    try:
        values = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path} holds pickled Python objects besides tensors and plain values; refusing to load it, "
                        "since unpickling them could run arbitrary code") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise UserError(f"{path} is not a readable PyTorch checkpoint (truncated or another kind of file: "
                        f"{str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint written by this toolkit (no '{FORMAT}' marker)")
    return values


def rng_state() -> dict:
    """Every RNG state a run touches (Python, NumPy, torch CPU, CUDA), as plain values and tensors."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(saved: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(saved["torch"].cpu())
    if saved["cuda"] and torch.cuda.is_available() and len(saved["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in saved["cuda"]])


def weights_misfit(model: torch.nn.Module, weights: dict) -> str | None:
    """How ``weights`` fail to fit ``model``, in words (the first difference and how many more), or None when
    they fit. Only names and shapes are compared, so ``model`` may live on the meta device."""
    expected = model.state_dict()
    problems = [f"{name} is missing from the file" for name in expected if name not in weights]
    problems += [f"the file's {name} has no place in the model" for name in weights if name not in expected]
    for name in (name for name in expected if name in weights):
        found = getattr(weights[name], "shape", None)
        if found is None or tuple(found) != tuple(expected[name].shape):
            shape = list(found) if found is not None else type(weights[name]).__name__
            problems.append(f"{name} is {shape} in the file but {list(expected[name].shape)} in the model")
    if not problems:
        return None
    return problems[0] + (f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else "")
