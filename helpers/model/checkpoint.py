"""Checkpoint files: what they hold (:class:`Checkpoint`), safe loads, and the RNG states that make resume exact.

On disk a checkpoint is a dict of tensors and plain values (numbers, strings,
lists, dicts), so it loads with ``torch.load(weights_only=True)``: a file that
holds any other pickled object is refused, never executed. It is written with
:func:`helpers.core.io.atomic_write`. :class:`Checkpoint` is that dict typed,
field by field under the same keys, so that every file written before still
loads: a key an older file lacks takes its field's default. A file's fields are checked against their types
(pydantic, strictly: ``"0.5"`` is not a number) when it is loaded, so that a changed or foreign file is refused in
one sentence before anything acts on it.
"""

from __future__ import annotations

import dataclasses
import pickle
import random
import zipfile
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import AfterValidator, ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from Python 3.12

from helpers.core.config import Config, load_config
from helpers.core.errors import UserError, one_line
from helpers.core.io import atomic_link, atomic_write
from helpers.core.records import EvalMetrics
from helpers.model.resnet import FaceModel, build_face_model

FORMAT = "hw2p2-checkpoint"
VERSION = 1


class DataOrder(TypedDict):
    """Where a run stood in its data: the seed and epoch of the order, the batch reached in it (per process) and
    the number of processes that shared each global batch."""

    seed: int
    epoch: int
    batch: int
    world: int


class Average(TypedDict):
    """The moving average of the weights (``train.ema``): its weights, keyed as the model's, and its update count."""

    weights: dict
    updates: int


def _rng_fits(saved: dict | None) -> dict | None:
    """``saved`` unchanged when it is an RNG state :func:`set_rng_state` can restore (tried on fresh
    generators, never the global ones); a ValueError saying what does not fit otherwise."""
    if saved is not None:
        try:
            python, numpy_state, torch_state, cuda = _rng_parts(saved)
            random.Random().setstate(python)
            np.random.RandomState().set_state(numpy_state)
            torch.Generator().set_state(torch_state)
            if not all(isinstance(state, torch.Tensor) for state in cuda):
                raise TypeError("the CUDA states are not tensors")
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as error:
            raise ValueError(f"not a restorable RNG state ({one_line(error)})") from None
    return saved


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A run's state when a file was saved: the trained weights (``model``) and their moving average (``ema``:
    the weights and the update count, None without ``train.ema``); the optimiser, loss-scaler and lr-schedule
    states; the position (epoch, batch in it, optimiser steps) and the data order; every RNG state; the class
    mapping (training class i is ``classes[i]``) and the configuration as plain values; the selection of best.pt
    (its state, and the best val EER and epoch); the W&B run; the fast path the run trained with; the time
    budget's clock; the skipped steps and images; when it was saved; the run's id (its metrics.jsonl lines hold
    it too). Each file adds which weights it holds
    (``weights``: raw or ema; stored under the key ``graded``) and their val metrics when it was saved (``val``).

    Loaded checkpoints are never changed: what another choice of weights means is asked of them
    (:meth:`holding`, :meth:`model_weights`).
    """

    __pydantic_config__ = ConfigDict(strict=True, revalidate_instances="always")  # for :meth:`from_dict`

    model: dict
    optimizer: dict | None = None
    ema: Average | None = None
    scaler: dict | None = None
    schedule: dict | None = None
    epoch: int = 0
    batch: int = 0
    step: int = 0
    data_order: DataOrder | None = None
    rng: Annotated[dict | None, AfterValidator(_rng_fits)] = None
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
    run_id: str | None = None  # the run's own id, kept across resumes; None in files written before it
    weights: str = "raw"  # stored as "graded", the key files have always had
    val: EvalMetrics = field(default_factory=EvalMetrics)

    @cached_property
    def config(self) -> Config:
        """The configuration, validated; keys newer than the file keep their defaults."""
        return load_config(base=self.config_values)

    def to_dict(self) -> dict:
        """The plain dict a file holds, keys in the order files have always had."""
        values = {_STORED.get(item.name, item.name): getattr(self, item.name) for item in dataclasses.fields(self)}
        values["val"] = self.val.as_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict, source: str | Path = "the checkpoint") -> Checkpoint:
        """A file's dict typed, each field checked against its type; its keys this version does not know are
        left out. A field of another type is refused in one sentence naming ``source`` and the field."""
        known = {item.name for item in dataclasses.fields(cls)} - {*_STORED, "val"}
        val = values.get("val") or {}
        if not isinstance(val, dict):
            raise UserError(_wrong(source, "val", "input should be a valid dictionary", val))
        unchecked = cls(**{key: value for key, value in values.items() if key in known},
                        **{name: values[key] for name, key in _STORED.items() if key in values},
                        val=EvalMetrics.from_dict(val))
        try:
            return _CHECKED.validate_python(unchecked)
        except ValidationError as error:
            raise UserError(_field_sentence(error, source)) from None

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read a checkpoint file (:func:`load_checkpoint`'s checks) as a Checkpoint, its fields checked."""
        values = load_checkpoint(path, map_location)
        missing = [key for key in ("model", "classes", "config") if key not in values]
        if missing:
            raise UserError(f"{path} lacks {', '.join(missing)}: it is not a training checkpoint of this toolkit")
        return cls.from_dict(values, path)

    def save(self, path: str | Path) -> None:
        save_checkpoint(self.to_dict(), path)

    def model_weights(self, which: str | None = None, source: str | Path = "the checkpoint") -> dict:
        """The model weights this file holds, or ``which`` of them: ``raw`` (trained) or ``ema`` (averaged).

        Checkpoints written before weight averaging hold the trained weights only.
        """
        which = which or self.weights
        if which == "raw":
            return self.model
        if which != "ema":
            raise UserError(f"unknown weights '{which}'; use raw or ema")
        if not self.ema:
            raise UserError(f"{source} holds no averaged weights (it was trained with train.ema 0); use --weights raw")
        return self.ema["weights"]

    def holding(self, weights: str | None = None) -> Checkpoint:
        """This checkpoint as one that holds ``weights`` (raw, ema; None: the ones it holds), a new object: its
        stored val metrics go with the weights they were measured on, so choosing the other weights leaves it
        none. Asking for averaged weights a file lacks is refused in one sentence (:meth:`model_weights`)."""
        if weights is None or weights == self.weights:
            return self
        self.model_weights(weights)
        return replace(self, weights=weights, val=EvalMetrics())

    def restore_model(self, weights: str | None = None, source: str | Path = "the checkpoint") -> FaceModel:
        """The FaceModel its configuration and classes describe, with the weights it holds (or ``weights``:
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


_CHECKED = TypeAdapter(Checkpoint)
_STORED = {"config_values": "config", "weights": "graded"}  # field -> its key in the file, where they differ


def _field_sentence(error: ValidationError, source: str | Path) -> str:
    """The first wrong field of a checkpoint, in one sentence, named by its key in the file (:data:`_STORED`)."""
    first = error.errors()[0]
    name = ".".join(_STORED.get(str(part), str(part)) for part in first["loc"])
    what = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"].lower()
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return _wrong(source, name, what + more, None if first["type"] == "missing" else first["input"])


def _wrong(source: str | Path, name: str, what: str, found) -> str:
    found = "" if found is None else f", not {type(found).__name__}"
    return (f"{source}: checkpoint field '{name}' is wrong: {what}{found}; the file was changed after training or "
            "written by another tool")


def save_checkpoint(values: dict, path: str | Path) -> None:
    """Save a checkpoint's plain dict atomically (see :func:`atomic_write`)."""
    values = {"format": FORMAT, "version": VERSION, **values}
    atomic_write(path, lambda handle: torch.save(values, handle))


def save_checkpoints(checkpoint: Checkpoint, files: dict[str, tuple[str, EvalMetrics]], folder: str | Path) -> None:
    """Save ``checkpoint`` as each of ``files`` (name -> the weights that file holds and their val metrics), in
    order, serialising each distinct content once: a file holding what an earlier one holds is a link to it
    (:func:`atomic_link`)."""
    written: list[tuple[tuple[str, EvalMetrics], Path]] = []
    for name, held in files.items():
        path = Path(folder) / name
        same = next((earlier for content, earlier in written if content == held), None)
        if same is None:
            replace(checkpoint, weights=held[0], val=held[1]).save(path)
            written.append((held, path))
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


def _rng_parts(saved: dict) -> tuple[tuple, tuple, torch.Tensor, list]:
    """The Python, NumPy, torch CPU and CUDA states in what :func:`rng_state` saved, as each library takes them."""
    version, internal, gauss = saved["python"]
    kind, keys, pos, has_gauss, cached = saved["numpy"]
    return ((version, tuple(internal), gauss), (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached),
            saved["torch"].cpu(), list(saved["cuda"]))


def set_rng_state(saved: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    python, numpy_state, torch_state, cuda = _rng_parts(saved)
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


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
