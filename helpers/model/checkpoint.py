"""Checkpoint files: safe loads, the weights they hold, and the RNG states that make resume exact.

A checkpoint is a dict of tensors and plain values (numbers, strings, lists,
dicts), so it loads with ``torch.load(weights_only=True)``: a file that holds
any other pickled object is refused, never executed. It is written with
:func:`helpers.core.io.atomic_write`.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from helpers.core.errors import UserError
from helpers.core.io import atomic_link, atomic_write

FORMAT = "hw2p2-checkpoint"
VERSION = 1


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Save a training state atomically (see :func:`atomic_write`)."""
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda handle: torch.save(state, handle))


def save_checkpoints(state: dict, files: dict[str, dict], folder: str | Path) -> None:
    """Save ``state`` as each of ``files`` (name -> the fields that file overrides), in order, serialising each
    distinct content once: a file whose fields equal an earlier one's is a link to it (:func:`atomic_link`)."""
    written: list[tuple[dict, Path]] = []
    for name, fields in files.items():
        path = Path(folder) / name
        same = next((earlier for content, earlier in written if content == fields), None)
        if same is None:
            save_checkpoint({**state, **fields}, path)
            written.append((fields, path))
        else:
            atomic_link(same, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything but plain tensor state."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since PyTorch 1.6
        raise UserError(f"{path} is not a readable PyTorch checkpoint (truncated or another kind of file)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path} holds pickled Python objects besides tensors and plain values; refusing to load it, "
                        "since unpickling them could run arbitrary code") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise UserError(f"{path} is not a readable PyTorch checkpoint (truncated or another kind of file: "
                        f"{str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint written by this toolkit (no '{FORMAT}' marker)")
    return state


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


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def model_weights(state: dict, which: str | None = None, source: str | Path = "the checkpoint") -> dict:
    """The model weights a checkpoint grades, or ``which`` of them: ``raw`` (trained) or ``ema`` (averaged).

    Checkpoints written before weight averaging hold the trained weights only.
    """
    which = which or state.get("graded", "raw")
    if which == "raw":
        return state["model"]
    if which != "ema":
        raise UserError(f"unknown weights '{which}'; use raw or ema")
    if not state.get("ema"):
        raise UserError(f"{source} holds no averaged weights (it was trained with train.ema 0); use --weights raw")
    return state["ema"]["weights"]


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
