"""What a checkpoint file says of its own quality, in a form a notebook reads without knowing the file's keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.core.terms import Leaderboard, get_term
from helpers.model.checkpoint import Checkpoint


@dataclass(frozen=True)
class CheckpointSummary:
    """A checkpoint's selection: the val EER of the evaluation it holds and that evaluation's epoch (None when no
    val pairs were scored), the combined score of dev top-1 and val EER of the weights it holds (None when not
    measured), and the leaderboard of the term it is judged under."""

    path: Path
    val_eer: float | None
    epoch: float | None
    val_score: float | None
    leaderboard: Leaderboard

    @property
    def value(self) -> float | None:
        """The term's leaderboard metric of this checkpoint: its val EER or its combined score."""
        return getattr(self, self.leaderboard.record_key)

    def words(self) -> str:
        """The term's metric first, the val EER beside it, and the epoch, as every report of a best reads."""
        if self.val_eer is None:
            return "no val EER (no val pairs were scored)"
        return f"{self.leaderboard.lead(self.val_eer, self.val_score)} at epoch {self.epoch:g}"

    def line(self) -> str:
        return f"{self.path}: {self.words()}"


def checkpoint_summary(path: str | Path, term: str | None = None) -> CheckpointSummary:
    """The :class:`CheckpointSummary` of the checkpoint file at ``path``, under ``term`` (by default the course
    term the checkpoint's run was configured with)."""
    saved = Checkpoint.load(path)
    chosen = get_term(term or saved.config.course.term)
    return CheckpointSummary(Path(path), saved.best_eer, saved.best_epoch, saved.val.val_score, chosen.leaderboard)


def best_words(run_dir: str | Path, term: str | None = None) -> str:
    """What a run's best.pt holds, as the log and the notebook say it: the term's metric first, the val EER
    beside it, and the epoch."""
    path = Path(run_dir) / "best.pt"
    return checkpoint_summary(path, term).words() if path.is_file() else "no best.pt"
