"""What a checkpoint file says of its own quality, in a form a notebook reads without knowing the file's keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.model.checkpoint import Checkpoint


@dataclass(frozen=True)
class CheckpointSummary:
    """A checkpoint's selection: the best val EER of its run and the epoch that reached it (None when no val
    pairs were scored), and the combined score of dev top-1 and val EER of the weights it grades (None when not
    measured)."""

    path: Path
    val_eer: float | None
    epoch: float | None
    val_score: float | None

    def line(self) -> str:
        eer = ("no val EER (no val pairs were scored)" if self.val_eer is None
               else f"val EER {self.val_eer:.4f} (epoch {self.epoch})")
        return f"{self.path}: {eer}" + ("" if self.val_score is None else f", combined score {self.val_score:.4f}")


def checkpoint_summary(path: str | Path) -> CheckpointSummary:
    """The :class:`CheckpointSummary` of the checkpoint file at ``path``."""
    saved = Checkpoint.load(path)
    return CheckpointSummary(Path(path), saved.best_eer, saved.best_epoch, saved.val.val_score)
