"""Where a run's numbers go: ``metrics.jsonl`` in the run folder, and Weights & Biases when it works.

W&B never stops training: no network, no login or any W&B failure gives
one warning and the run carries on offline or without it. The val EER is
logged under the key ``EER``, the key the course's hand-in tooling ranks runs by.
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
from pathlib import Path

from helpers.core.io import append_text, atomic_write_text, read_metrics


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class Tracker:
    """Appends one JSON record per evaluation to ``metrics.jsonl`` and mirrors it to W&B."""

    def __init__(self, run_dir: Path, cfg: dict, run_id: str | None = None, name: str | None = None):
        self.path = run_dir / "metrics.jsonl"
        self.run = None
        self.run_id = run_id
        mode = cfg["tracking"]["wandb"]["mode"]
        if mode != "disabled":
            self._start_wandb(run_dir, cfg, mode, name)

    def _start_wandb(self, run_dir: Path, cfg: dict, mode: str, name: str | None) -> None:
        settings = cfg["tracking"]["wandb"]
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(project=settings["project"], entity=settings["entity"], name=name, id=self.run_id,
                                  resume="allow", mode=mode, dir=str(run_dir), config=cfg,
                                  settings=wandb.Settings(console="off", init_timeout=60))
        except Exception as error:  # noqa: BLE001 - any W&B failure must leave training running
            if mode == "online":
                warnings.warn(f"W&B online failed ({error}); logging offline instead", stacklevel=2)
                self._start_wandb(run_dir, cfg, "offline", name)
                return
            warnings.warn(f"W&B {mode} failed ({error}); continuing without W&B", stacklevel=2)
            self.run = None
            return
        self.run_id = self.run.id

    def truncate(self, keep_until_step: int) -> None:
        """Drop records logged after ``keep_until_step`` optimiser steps (work a resume will redo)."""
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= keep_until_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict) -> None:
        record = _jsonable(record)
        append_text(self.path, json.dumps(record) + "\n")
        if self.run is not None:
            wandb_record = {k: v for k, v in record.items() if v is not None and not isinstance(v, (dict, str))}
            if record.get("val_eer") is not None:
                wandb_record["EER"] = record["val_eer"]
            self._safely(lambda: self.run.log(wandb_record, step=record["step"], commit=True))

    def summarise(self, **values) -> None:
        if self.run is not None:
            self._safely(lambda: self.run.summary.update(_jsonable(values)))

    def finish(self) -> None:
        if self.run is not None:
            self._safely(self.run.finish)
            self.run = None

    def _safely(self, action) -> None:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - W&B trouble must not end a run
            warnings.warn(f"W&B failed ({error}); continuing without it", stacklevel=3)
            self.run = None


_WANDB_BLOCK = 32768  # .wandb files are a LevelDB-style log: 32 KiB blocks of checksummed chunks


def _wandb_records(path: Path):
    """The raw protobuf records of an offline ``run-*.wandb`` file."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = _WANDB_BLOCK - pos % _WANDB_BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def offline_summary(run_file: str | Path) -> dict:
    """The summary (final key values) of an offline W&B run, read from its ``run-*.wandb`` file without a login."""
    from wandb.proto import wandb_internal_pb2

    summary: dict = {}
    for raw in _wandb_records(Path(run_file)):
        record = wandb_internal_pb2.Record.FromString(raw)
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                key = item.key or ".".join(item.nested_key)
                if not key.startswith("_"):
                    summary[key] = json.loads(item.value_json)
    return summary


def offline_runs(run_dir: str | Path) -> list[Path]:
    """The offline W&B run files under a run folder, oldest first."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
