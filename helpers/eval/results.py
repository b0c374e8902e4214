"""What an evaluation measures, typed from the metrics to the command line and the notebooks: verification of
labelled pairs, classification of known faces, 1:N identification, a submission's leaderboard score, and all that
``evaluate`` reports of one checkpoint.

Each result describes itself in lines (``lines()``), which the command line prints, and as the plain values
``--json`` prints (``as_dict()``, keys as they have always been); nothing outside this module reads a result by key.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict

from helpers.core.terms import Term, combined_score, get_term
from helpers.eval.score_norm import norm_words


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)


class Interval(_Result):
    """A 95 % interval, from its low end to its high end."""

    low: float
    high: float

    def as_list(self) -> list[float]:
        """``[low, high]``, as JSON files hold an interval."""
        return [self.low, self.high]


class EerDifference(_Result):
    """How much lower one set of scores' EER is than another's on the same pairs (``difference``, the other's
    subtracted), with a paired bootstrap 95 % interval of it."""

    difference: float
    ci95: Interval


class Verification(_Result):
    """Labelled pairs scored: the EER (a fraction) and its threshold, ROC AUC, the best accuracy and its threshold,
    TAR at each FAR (None where the pairs cannot measure that FAR), the pair counts, and a bootstrap 95 % interval
    of the EER when one was asked for."""

    eer: float
    threshold: float
    auc: float
    accuracy: float
    accuracy_threshold: float
    tar_at_far: dict[str, Optional[float]]
    pairs: int
    positives: int
    negatives: int
    eer_ci95: Optional[Interval] = None

    @property
    def eer_low(self) -> float | None:
        return None if self.eer_ci95 is None else self.eer_ci95.low

    @property
    def eer_high(self) -> float | None:
        return None if self.eer_ci95 is None else self.eer_ci95.high

    def as_dict(self) -> dict:
        """The values as ``evaluate --json`` prints them: the interval as ``[low, high]``, left out when not asked."""
        values = self.model_dump(exclude={"scores", "labels"})
        if self.eer_ci95 is None:
            del values["eer_ci95"]
        else:
            values["eer_ci95"] = self.eer_ci95.as_list()
        return values

    def lines(self) -> list[str]:
        interval = f" (95 % CI {self.eer_low:.4f}-{self.eer_high:.4f})" if self.eer_ci95 is not None else ""
        tar = ", ".join(f"{far}: {'n/a' if value is None else f'{value:.4f}'}" for far, value in self.tar_at_far.items())
        unmeasured = (" (n/a: too few different-person pairs to measure that FAR)"
                      if None in self.tar_at_far.values() else "")
        return [f"val pairs {self.pairs}: EER {self.eer:.4f}{interval} at threshold {self.threshold:.4f}, "
                f"AUC {self.auc:.4f}, best accuracy {self.accuracy:.4f}", f"TAR at FAR {tar}{unmeasured}"]


class PairVerification(Verification):
    """A data root's val pairs verified: the metrics of the pairs scored, the pairs left out because an image could
    not be read (and those images), and every pair's score (NaN where left out) and label, in pair-file order."""

    unscored_pairs: int = 0
    unreadable: list[str] = []
    scores: np.ndarray
    labels: np.ndarray

    def unscored_note(self) -> str | None:
        """A sentence for the pairs left out, naming the images; None when every pair was scored."""
        if not self.unscored_pairs:
            return None
        more = f" and {len(self.unreadable) - 1} more" if len(self.unreadable) > 1 else ""
        return (f"{self.unscored_pairs} val pair(s) left out of the EER: an image of each cannot be read "
                f"({self.unreadable[0]}{more}); run `python -m helpers check-data`")


class Classification(_Result):
    """The margin head's top-1 and top-5 accuracy on labelled images, and how many it classified."""

    top1: float
    top5: float
    images: int

    def lines(self) -> list[str]:
        return [f"dev classification: top-1 {self.top1:.4f}, top-5 {self.top5:.4f} ({self.images} images)"]


class Identification(_Result):
    """1:N identification: rank-1 and rank-5 of the probes against per-identity mean embeddings (NaN without
    probes), and the counts of probes and identities."""

    rank1: float
    rank5: float
    probes: int
    identities: int

    def lines(self) -> list[str]:
        return [f"1:N identification against {self.identities} identities: rank-1 {self.rank1:.4f}, "
                f"rank-5 {self.rank5:.4f}"]


class LeaderboardScore(_Result):
    """A submission scored against its answers: the EER of its test pairs, the classification accuracy of its test
    images, and Fall 2026's combined score where both are there; the counts of pairs and images (None where the
    answers do not say)."""

    eer: Optional[float] = None
    accuracy: Optional[float] = None
    score: Optional[float] = None
    pairs: Optional[int] = None
    images: Optional[int] = None

    def lines(self, term: str | None = None) -> list[str]:
        """One line: the EER alone for a pairs-only answer key, else each part measured, and the board of ``term``
        (a name; default the newest) where it ranks by the combined score."""
        if self.score is None and self.accuracy is None:
            return [f"EER {self.eer:.6f}"]
        term = get_term(term)
        parts = [f"score {self.score:.6f}" if self.score is not None else "",
                 f"classification accuracy {self.accuracy:.6f} ({self.images} images)"
                 if self.accuracy is not None else "",
                 f"EER {self.eer:.6f} ({self.pairs} pairs)" if self.eer is not None else ""]
        board = (f" ({term.title}'s leaderboard: 0.5 x accuracy + 0.5 x (1 - EER), higher is better)"
                 if term.leaderboard.metric == "combined" and self.score is not None else "")
        return [", ".join(part for part in parts if part) + board]


class CheckpointEvaluation(_Result):
    """All that ``evaluate`` measures of one checkpoint on a data root: val verification (without val pairs None),
    dev classification and 1:N identification (None without dev images of known identities, or train labels for
    the gallery), the combined score and ``term``'s leaderboard value, and the plots written."""

    checkpoint: str
    data_root: str
    tta: bool
    weights: str
    score_norm: dict
    term: Term
    verification: Optional[PairVerification] = None
    classification: Optional[Classification] = None
    identification: Optional[Identification] = None
    plots: Optional[list[str]] = None

    @property
    def eer(self) -> float | None:
        return None if self.verification is None else self.verification.eer

    @property
    def top1(self) -> float | None:
        return None if self.classification is None else self.classification.top1

    @property
    def score(self) -> float | None:
        """0.5 x dev top-1 + 0.5 x (1 - val EER), when both are measured."""
        return combined_score(self.top1, self.eer)

    @property
    def leaderboard_value(self) -> float | None:
        """The value of the term's leaderboard metric on val/dev; None when an input it needs is missing."""
        return self.term.leaderboard.value(self.eer, self.top1)

    def as_dict(self) -> dict:
        """The plain values ``evaluate --json`` prints, in one flat object as it always has."""
        values = {"checkpoint": self.checkpoint, "data_root": self.data_root, "tta": self.tta,
                  "weights": self.weights, "score_norm": self.score_norm}
        if self.verification is not None:
            values.update(self.verification.as_dict())
        if self.classification is not None:
            found = self.classification
            values.update(top1=found.top1, top5=found.top5, dev_images=found.images)
        if self.identification is not None:
            found = self.identification
            values.update(rank1=found.rank1, rank5=found.rank5, gallery_identities=found.identities)
        if self.score is not None:
            values["score"] = self.score
        board = self.term.leaderboard
        values.update(term=self.term.name, leaderboard={"metric": board.label, "better": board.better,
                                                        "term": self.term.title, "value": self.leaderboard_value})
        if self.plots is not None:
            values["plots"] = self.plots
        return values

    def table(self) -> dict:
        """Every number measured, by name (TAR at each FAR as its own row, n/a where unmeasurable), for a
        notebook's table."""
        values = self.as_dict()
        rows = {key: value for key, value in values.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)}
        if self.verification is not None:
            rows.update({f"TAR @ FAR {far}": "n/a" if tar is None else tar
                         for far, tar in self.verification.tar_at_far.items()})
        return rows

    def lines(self) -> list[str]:
        """The report ``evaluate`` prints."""
        notes = ", ".join(note for note in ("flip TTA" if self.tta else "", norm_words(self.score_norm)) if note)
        lines = [f"checkpoint {self.checkpoint} ({self.weights} weights) on {self.data_root}"
                 + (f" ({notes})" if notes else "")]
        note = self.verification.unscored_note() if self.verification is not None else None
        lines += [f"warning: {note}"] if note else []
        board = self.term.leaderboard
        lines.append(f"{self.term.title}'s leaderboard metric on val/dev: {board.lead(self.eer, self.score)}")
        lines += self.verification.lines() if self.verification is not None else []
        lines += self.classification.lines() if self.classification is not None else []
        if self.score is not None:
            lines.append(f"combined score {self.score:.4f} = 0.5 x dev top-1 + 0.5 x (1 - val EER)"
                         + (f" (the leaderboard metric of {self.term.title}, higher is better)"
                            if board.label == "score" else ""))
        elif board.label == "score":
            lines.append(f"no combined score (the {self.term.title} leaderboard metric): it needs val pairs "
                         "and dev images of the training identities")
        lines += self.identification.lines() if self.identification is not None else []
        return lines + [f"wrote {path}" for path in self.plots or []]
