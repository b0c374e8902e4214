"""What a resume takes from its checkpoint and what it does not.

A resume continues the checkpoint's model, optimiser, schedule and position; where the run writes is this
command's choice, never the file's: ``run.out_dir``, ``run.name`` and ``data.stage_to`` come from the command's
config and ``--set`` (defaulting as for a new run), so a classmate's ``last.pt`` cannot write into the folders its
own configuration names (:func:`adopt_paths`). A run folder holding the records of another run is not resumed
into unless asked (:func:`refuse_other_run`). On another number of processes or another batch size, the epoch
goes on at the same sample where the new batches allow it and starts again otherwise (:func:`resume_position`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.core.config import Config, changed
from helpers.core.errors import UserError
from helpers.core.records import record_lines
from helpers.model.checkpoint import Checkpoint
from helpers.training.tracking import METRICS_FILE, REPLACED_FILE

# The keys that say where a run writes: taken from the command, never from the checkpoint it resumes.
PATH_KEYS = ("run.out_dir", "run.name", "data.stage_to")
# What a resume restores besides the weights; a file without one of them can be evaluated but not resumed.
RESUME_STATES = ("optimizer", "scaler", "schedule", "rng")


def run_directory(cfg: Config) -> Path:
    return Path(cfg.run.out_dir) / (cfg.run.name or "run")


def adopt_paths(saved: Config, command: Config) -> Config:
    """``saved`` (the checkpoint's configuration with this command's overrides) writing where ``command`` (this
    command's own configuration) says."""
    return changed(saved, {key: _value(command, key) for key in PATH_KEYS})


def _value(cfg: Config, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def refuse_unresumable(checkpoint: Checkpoint, path: Path) -> None:
    """A checkpoint without the states a resume restores is refused in one sentence."""
    missing = [name for name in RESUME_STATES if getattr(checkpoint, name) is None]
    if missing:
        raise UserError(f"{path} holds no {', '.join(missing)} state, so it cannot be resumed; it can still be "
                        "evaluated, or start a new run with --init-from")


def other_run_ids(folder: Path, checkpoint: Checkpoint) -> list[str]:
    """The run ids in ``folder``'s metrics.jsonl that are not the checkpoint's run (lines written before runs had
    ids count as its own)."""
    ids = {line.get("run_id") for line in record_lines(folder / METRICS_FILE)} - {None, checkpoint.run_id}
    return sorted(str(run_id) for run_id in ids)


def refuse_other_run(folder: Path, checkpoint: Checkpoint, path: Path) -> None:
    """Resuming ``path`` into a folder whose metrics.jsonl records another run is refused in one sentence."""
    others = other_run_ids(folder, checkpoint)
    if others:
        raise UserError(f"{folder} holds the records of another run ({others[0]} in its {METRICS_FILE}) than the one "
                        f"{path} continues; resume into another run.name, or pass --take-over to resume there anyway "
                        f"(that run's records move to {REPLACED_FILE})")


def folder_note(checkpoint: Checkpoint, folder: Path) -> str | None:
    """One line naming the run folder a checkpoint was saved in when it is not the one the run now writes to."""
    saved = run_directory(checkpoint.config)
    if saved.absolute() == folder.absolute():
        return None
    return f"note: the checkpoint comes from the run folder {saved}; this run writes to {folder}"


@dataclass(frozen=True)
class Position:
    """Where a resumed run goes on in its epoch (``batch``: per process) and the lines that say how."""

    batch: int
    notes: tuple[str, ...]


def resume_position(checkpoint: Checkpoint, cfg: Config, world: int, batches: int) -> Position:
    """Where a run saved with ``checkpoint`` goes on, on ``world`` processes with ``cfg``'s batch size and
    ``batches`` batches per process in an epoch.

    An epoch's order is one permutation cut into global batches, so the samples a save had consumed are a
    prefix of it; the run goes on at that sample when it falls on a boundary of the new global batches (and of an
    optimiser step), and starts the epoch again otherwise. A change of the global batch (per-process batch x
    processes x accumulated batches) is said in one line either way."""
    saved = checkpoint.config.train
    saved_world = (checkpoint.data_order or {}).get("world", world)
    before = (saved.batch_size, saved_world, saved.accumulate)
    now = (cfg.train.batch_size, world, cfg.train.accumulate)
    notes = []
    if before != now:
        notes.append(f"the global batch changes from {_global(*before)} to {_global(*now)} with this resume: the "
                     f"lr schedule is kept as it is (optim.lr {cfg.optim.lr:g})")
    if checkpoint.batch == 0:
        return Position(0, tuple(notes))
    sample = checkpoint.batch * saved.batch_size * saved_world
    per_batch = cfg.train.batch_size * world
    batch, left = divmod(sample, per_batch)
    if left == 0 and batch < batches and batch % cfg.train.accumulate == 0:
        if before != now:
            notes.append(f"epoch {checkpoint.epoch + 1} goes on at sample {sample} (batch {batch} of {batches} "
                         "per process)")
        return Position(batch, tuple(notes))
    notes.append(f"epoch {checkpoint.epoch + 1} starts again: its {sample} samples trained so far end inside a "
                 f"batch of {per_batch} samples on {world} process(es)")
    return Position(0, tuple(notes))


def _global(batch_size: int, world: int, accumulate: int) -> str:
    words = f"{batch_size} per process x {world} process(es)" + (f" x {accumulate} batches" if accumulate > 1 else "")
    return f"{batch_size * world * accumulate} ({words})"
