"""The timed probe's verdicts kept on disk, one file per machine and question, so that the same command on the
same machine takes the same speed settings in every process (the probe measures again only when
``train.reprobe`` asks it to).

A verdict is keyed by what its timings depend on: the CPU (its model, its instruction-set flags, the threads
torch uses), the GPU's name where the device is one, the torch version, and the question asked (the candidates
and the stand-in's shape: model widths, batch, image size, optimiser). The files live in the per-user cache
folder, ``$XDG_CACHE_HOME/hw2p2/probe/`` (``~/.cache/hw2p2/probe/`` when it is unset). A file that cannot be
read back as a verdict for its key is ignored and measured again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import torch

from helpers.core.errors import UserError
from helpers.core.io import atomic_write_text

CACHE_VERSION = 1  # raised when what a verdict holds changes, so older files are measured again


def cache_folder() -> Path:
    """The folder of the cached verdicts: under ``$XDG_CACHE_HOME`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hw2p2" / "probe"


@functools.lru_cache(maxsize=None)
def cpu_identity() -> dict:
    """The CPU's model name and instruction-set flags, from the first processor of /proc/cpuinfo on Linux (x86's
    ``flags``, ARM's ``Features``); what ``platform`` says elsewhere."""
    try:
        first = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split("\n\n")[0]
    except OSError:
        first = ""
    fields = {name.strip(): value.strip() for name, _, value in (line.partition(":") for line in first.splitlines())}
    return {"machine": platform.machine(), "model": fields.get("model name", platform.processor()),
            "flags": fields.get("flags", fields.get("Features", ""))}


def probe_key(device: torch.device, question: dict) -> dict:
    """Everything a verdict for ``question`` (candidates, stand-in shape) on ``device`` depends on."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" and torch.cuda.is_available() else None
    key = {"version": CACHE_VERSION, "device": device.type, "gpu": gpu, "cpu": cpu_identity(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, **question}
    return json.loads(json.dumps(key))  # as a file gives it back: lists, not tuples


def _file(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_folder() / f"{digest}.json"


def read_verdict(key: dict) -> dict | None:
    """The verdict record cached for ``key``, or None (none yet, or a file that is not one for this key)."""
    try:
        saved = json.loads(_file(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("verdict"), dict):
        return None
    return saved["verdict"]


def write_verdict(key: dict, verdict: dict) -> None:
    """Cache ``verdict`` for ``key``; a cache that cannot be written costs a note, not the run."""
    path = _file(key)
    try:
        atomic_write_text(path, json.dumps({"key": key, "verdict": verdict}, indent=1) + "\n")
    except (OSError, UserError) as error:  # a failed write (WriteFailed) or a file where the folder goes
        print(f"note: the timed probe's verdict is not cached ({error}); the next run times it again",
              file=sys.stderr)
