"""Which weights a run chooses: the checkpoint choice behind best.pt.

Each evaluation measures one or two sets of *weights*: the trained weights (``raw``)
and, with ``train.ema``, their moving average (``ema``). ``train.select``
names what best.pt holds: the evaluation with the lowest val EER of one set
(``best``, ``ema_best``), the best by the course term's leaderboard metric
(``leaderboard``, ``ema_leaderboard``: val EER, or Fall 2026's combined score
of dev top-1 and val EER) or their latest evaluation (``last``,
``ema_last``); ``auto`` is ``ema_leaderboard`` when the EMA is on and
``leaderboard`` otherwise: the term's leaderboard metric (by val EER where the data
cannot measure the combined score). With both weights the run also keeps ``best_raw.pt`` and
``best_ema.pt``, so that every candidate can be scored on the test pairs.

The lowest of dozens of evaluations on one set of val pairs is partly luck.
At the end of a run :meth:`Selection.report` compares best.pt's weights with
every other candidate (the latest and best evaluation of each set) by a paired
bootstrap on the same val pairs: a 95 % interval of the EER difference that
holds 0 means the val pairs cannot tell the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from helpers.core.config import TrainConfig
from helpers.core.records import KEYS, EvalMetrics
from helpers.core.terms import Leaderboard
from helpers.eval.metrics import paired_bootstrap_eers

# train.select -> (weights, which evaluation of them)
RULES = {"best": ("raw", "best"), "ema_best": ("ema", "best"), "last": ("raw", "last"), "ema_last": ("ema", "last"),
         "leaderboard": ("raw", "leaderboard"), "ema_leaderboard": ("ema", "leaderboard")}
BY_EER = Leaderboard(metric="eer", better="lower", wandb_key="EER")  # what best and ema_best rank by
WEIGHTS_NAMES = {"raw": "trained weights", "ema": "EMA weights"}
EER_INTERVAL = f"{KEYS.val_eer}_ci95"


def resolve_select(train: TrainConfig, leaderboard: Leaderboard = BY_EER, combined_measurable: bool = True) -> str:
    """``train.select`` with ``auto`` made concrete: the term's leaderboard metric, of the averaged weights with
    ``train.ema``; by val EER when that metric is the combined score and ``combined_measurable`` is false."""
    if train.select != "auto":
        return train.select
    by_board = leaderboard.metric == "eer" or combined_measurable
    return ("ema_" if train.ema else "") + ("leaderboard" if by_board else "best")


@dataclass
class Evaluation:
    """One set of weights at one evaluation: its val EER and dev top-1, the fields it measured (``metrics``; a
    checkpoint stores them as plain values), the scores of the val pairs."""

    weights: str  # stored as "arm", the key checkpoints have always had
    epoch: float
    eer: float
    metrics: EvalMetrics  # plain values given here (a checkpoint's) are read into their fields
    scores: np.ndarray | None = None  # in val_pairs.txt order; NaN where a pair could not be scored
    top1: float | None = None  # dev top-1 of these weights, for the combined score

    def __post_init__(self):
        if isinstance(self.metrics, dict):
            self.metrics = EvalMetrics.from_dict(self.metrics)

    @property
    def measured(self) -> EvalMetrics:
        """The fields this evaluation measured."""
        return self.metrics

    def state_dict(self) -> dict:
        return {"arm": self.weights, "epoch": self.epoch, "eer": self.eer, "metrics": self.metrics.as_dict(),
                "top1": self.top1,
                "scores": None if self.scores is None else torch.from_numpy(np.asarray(self.scores, np.float64))}

    @classmethod
    def from_state(cls, saved: dict) -> "Evaluation":
        scores = saved.get("scores")
        return cls(saved["arm"], saved["epoch"], saved["eer"], saved.get("metrics", {}),
                   None if scores is None else scores.numpy(), saved.get("top1"))


class Selection:
    """The best and latest evaluation of each set of weights evaluated, and which of them best.pt holds."""

    def __init__(self, rule: str, evaluated: tuple[str, ...] = ("raw",), leaderboard: Leaderboard = BY_EER):
        self.rule = rule
        self.weights, self.mode = RULES[rule]
        self.evaluated = evaluated
        self.leaderboard = leaderboard  # the term's: what reports of the best lead with
        # what "best" means: the lowest val EER, or for the leaderboard rules the term's metric
        self.ranking = leaderboard if self.mode == "leaderboard" else BY_EER
        self.best: dict[str, Evaluation] = {}
        self.latest: dict[str, Evaluation] = {}

    def rank_value(self, evaluation: Evaluation) -> float | None:
        """The value ``evaluation`` is ranked by (val EER, or the term's leaderboard metric)."""
        return self.ranking.value(evaluation.eer, evaluation.top1)

    @property
    def chosen(self) -> Evaluation | None:
        """The evaluation whose weights best.pt holds (None before the first, or without val pairs)."""
        return (self.latest if self.mode == "last" else self.best).get(self.weights)

    def observe(self, evaluations: dict[str, Evaluation]) -> list[str]:
        """Record one evaluation of every set of weights; returns the best files whose weights it replaces.

        Without val pairs (no evaluations) the latest weights are the best one can tell.
        """
        self.latest.update(evaluations)
        improved = [weights for weights in self.evaluated
                    if weights not in evaluations or weights not in self.best
                    or self._improves(evaluations[weights], self.best[weights])]
        for weights in improved:
            if weights in evaluations:
                self.best[weights] = evaluations[weights]
        files = ["best.pt"] if self.mode == "last" or self.weights in improved else []
        if len(self.evaluated) > 1:
            files += [f"best_{weights}.pt" for weights in improved]
        return files

    def _improves(self, new: Evaluation, old: Evaluation) -> bool:
        new_value, old_value = self.rank_value(new), self.rank_value(old)
        if new_value is None or old_value is None:  # the combined score needs dev images; fall back to the EER
            return new.eer < old.eer
        return self.ranking.better_than(new_value, old_value)

    def report(self, labels: np.ndarray, rounds: int) -> dict | None:
        """best.pt's evaluation against each other candidate, by a paired bootstrap of ``rounds`` resamplings.

        None when nothing can be compared (no val pairs, or no resamplings asked for).
        """
        chosen = self.chosen
        if chosen is None or chosen.scores is None or not rounds:
            return None
        roles: dict[tuple, list] = {}
        for role, table in (("last", self.latest), ("best", self.best)):
            for weights in self.evaluated:
                candidate = table.get(weights)
                if candidate is not None and candidate.scores is not None:
                    roles.setdefault((candidate.weights, candidate.epoch), [candidate, []])[1].append(role)
        # Not the weights of best.pt themselves (before its first update the average is the trained model).
        others = [(candidate, role) for (weights, epoch), (candidate, role) in roles.items()
                  if (weights, epoch) != (chosen.weights, chosen.epoch)
                  and not np.array_equal(candidate.scores, chosen.scores, equal_nan=True)]
        usable = np.isfinite(chosen.scores)  # pairs every set scored: unreadable images fail every set alike
        for candidate, _ in others:
            usable &= np.isfinite(candidate.scores)
        tests = paired_bootstrap_eers(chosen.scores[usable], [c.scores[usable] for c, _ in others], labels[usable],
                                      rounds) if others else []
        comparisons = []
        for (candidate, role), test in zip(others, tests):
            comparisons.append({"weights": candidate.weights, "role": " and ".join(role), "epoch": candidate.epoch,
                                KEYS.val_eer: candidate.eer, KEYS.val_score: candidate.measured.val_score,
                                "difference": test.difference, "difference_ci95": test.ci95.as_list(),
                                "distinguishable": not test.ci95.low <= 0.0 <= test.ci95.high})
        measured = chosen.measured
        return {"select": self.rule, "ranked_by": self.ranking.label, "weights": chosen.weights, "epoch": chosen.epoch, KEYS.val_eer: chosen.eer,
                EER_INTERVAL: [measured.val_eer_low, measured.val_eer_high],
                KEYS.val_score: measured.val_score, "bootstrap_rounds": rounds, "comparisons": comparisons}

    def holds(self, name: str) -> tuple[str, Evaluation | None]:
        """The weights a checkpoint file holds, and the evaluation they had: last.pt, best.pt, best_raw.pt,
        best_ema.pt."""
        if name == "best.pt":
            return self.weights, self.chosen
        if name == "last.pt":
            return self.weights, self.latest.get(self.weights)
        weights = name[len("best_"):-len(".pt")]
        return weights, self.best.get(weights)

    def state_dict(self) -> dict:
        return {"rule": self.rule, "best": {weights: e.state_dict() for weights, e in self.best.items()},
                "latest": {weights: e.state_dict() for weights, e in self.latest.items()}}

    def load_state_dict(self, saved: dict) -> None:
        self.best = {weights: Evaluation.from_state(s) for weights, s in saved["best"].items()}
        self.latest = {weights: Evaluation.from_state(s) for weights, s in saved["latest"].items()}

    @staticmethod
    def legacy_state(best_eer: float | None, best_epoch: float | None) -> dict:
        """The selection state of a checkpoint written before weight averaging, which kept only the trained
        weights' best val EER and its epoch."""
        if best_eer is None:
            return {"best": {}, "latest": {}}
        best = {"arm": "raw", "epoch": best_epoch, "eer": best_eer, "metrics": {}}
        return {"best": {"raw": best}, "latest": {}}


def report_lines(report: dict, leaderboard: Leaderboard = BY_EER) -> list[str]:
    """The end-of-run comparison for the log: one line for best.pt (``leaderboard``'s metric first, the val EER
    beside it), one per other candidate (their val EER difference from it)."""
    low, high = report[EER_INTERVAL]
    interval = f"; val EER 95 % CI {low:.4f}-{high:.4f}" if low is not None else ""
    ranked = f", by {report['ranked_by']}" if report.get("ranked_by") else ""
    lines = [f"best.pt ({report['select']}{ranked}): {WEIGHTS_NAMES[report['weights']]} of epoch {report['epoch']:g}, "
             f"{leaderboard.lead(report[KEYS.val_eer], report.get(KEYS.val_score))}{interval}"]
    for item in report["comparisons"]:
        low, high = item["difference_ci95"]
        verdict = "distinguishable" if item["distinguishable"] else "within the noise of the val pairs"
        lines.append(f"  against the {item['role']} {WEIGHTS_NAMES[item['weights']]} of epoch {item['epoch']:g}, "
                     f"{leaderboard.lead(item[KEYS.val_eer], item.get(KEYS.val_score))}: val EER difference "
                     f"{item['difference']:+.4f}, paired 95 % CI {low:+.4f} to {high:+.4f}: {verdict}")
    return lines
