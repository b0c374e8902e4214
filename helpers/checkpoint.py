"""Checkpoint files and safe writing: atomic writes, safe loads, and the RNG states that make resume exact.

A checkpoint is a dict of tensors and plain values (numbers, strings, lists,
dicts), so it loads with ``torch.load(weights_only=True)``: a file that holds
any other pickled object is refused, never executed.

The files the project writes go through :func:`atomic_write`,
:func:`append_text` or :func:`staged_folder`: a write that fails (a full disk,
a quota, no permission) leaves what was there before and no temporary file,
and stops with one sentence naming the file and the free space left.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

FORMAT = "hw2p2-checkpoint"
VERSION = 1

# The errors a write meets when space runs out; their message says how much is left.
_OUT_OF_SPACE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
                 errno.EFBIG: "the file is too large for its file system"}


class WriteFailed(UserError):
    """A file could not be written; the previous version of it (if any) is untouched."""


def write_failure(path: str | Path, error: OSError, kept: str) -> WriteFailed:
    """The one sentence for a failed write: the file, why, the space left, and what survived (``kept``)."""
    path = Path(path)
    if error.errno in _OUT_OF_SPACE:
        reason = f"{_OUT_OF_SPACE[error.errno]} ({_free_space(path)})"
    else:
        reason = error.strerror or str(error) or type(error).__name__
    return WriteFailed(f"could not write {path}: {reason}; {kept}")


def _kept(path: Path, existed: bool) -> str:
    return f"the previous {path.name} is intact" if existed else "nothing was left behind"


def _free_space(path: Path) -> str:
    """How much space is free on the file system holding ``path``, in words (``"1.5 MiB free on /tmp"``)."""
    place = Path(os.path.abspath(path))
    while not place.exists() and place != place.parent:
        place = place.parent
    mount = place
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        free = float(shutil.disk_usage(place).free)
    except OSError:
        return "free space unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            break
        free /= 1024
    amount = f"{free:.0f} bytes" if unit == "bytes" else f"{free:.1f} {unit}"
    return f"{amount} free on {mount}"


class _Recording:
    """A file handle that keeps the OSError of a failed write: ``torch.save`` turns it into a RuntimeError."""

    def __init__(self, handle):
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def atomic_write(path: str | Path, write) -> None:
    """Write a file through ``write(handle)`` so that a crash leaves either the old file or the new one.

    The bytes go to a temporary file beside the target, are flushed to disk,
    and the temporary file is renamed over the target; the folder is synced so
    the rename itself survives a power cut. A failed write (a full disk)
    raises :class:`WriteFailed` and leaves no temporary file.
    """
    path = Path(path)
    existed = path.exists()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    handle = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as raw:
            handle = _Recording(raw)
            write(handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)  # first, so that the message counts the space it held as free
        failed = error if isinstance(error, OSError) else handle and handle.error
        if failed is None:
            raise
        raise write_failure(path, failed, _kept(path, existed)) from None
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return  # some file systems do not let a folder be opened; the rename is done anyway
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` for text (CSV, JSON, YAML outputs)."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to a log file and sync it; a failed append is cut off again, so no record is left half written."""
    path = Path(path)
    existed = path.exists()
    try:
        with open(path, "ab", buffering=0) as handle:
            size = handle.seek(0, os.SEEK_END)
            try:
                data = memoryview(text.encode("utf-8"))
                while data:
                    data = data[handle.write(data):]
                os.fsync(handle.fileno())
            except OSError:
                handle.truncate(size)
                raise
    except OSError as error:
        raise write_failure(path, error, _kept(path, existed)) from None


@contextmanager
def staged_folder(out: str | Path):
    """Build a folder beside ``out`` and rename it into place when the block ends.

    A failure inside the block removes the partial copy and leaves ``out`` as
    it was; running out of space says so in one sentence (:class:`WriteFailed`).
    """
    out = Path(out)
    existed = out.exists()
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if error.filename is not None and not Path(os.path.abspath(os.fsdecode(error.filename))).is_relative_to(
                Path(os.path.abspath(staging))):
            raise  # reading a source failed, not writing the copy
        raise write_failure(out, error, _kept(out, existed)) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Save a training state atomically (see :func:`atomic_write`)."""
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda handle: torch.save(state, handle))


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
