"""The checkpoint choice's end-of-run report: selection.json's numbers, named as the run's records name them."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.core.config import TrainConfig
from helpers.core.records import EvalMetrics
from helpers.core.terms import get_term
from helpers.eval.metrics import paired_bootstrap_eers
from helpers.training.selection import Evaluation, Selection, report_lines, resolve_select

F26, F25 = get_term("f26"), get_term("f25")

LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0] * 4)


def _scores(flipped: int) -> np.ndarray:
    """Scores that separate the pairs, but for ``flipped`` genuine pairs scored like impostors."""
    scores = np.where(LABELS == 1, 0.8, 0.2) + np.linspace(0.0, 0.1, LABELS.size)
    scores[np.flatnonzero(LABELS == 1)[:flipped]] = 0.1
    return scores


def _evaluation(weights, epoch, flipped, **measured) -> Evaluation:
    return Evaluation(weights, epoch, flipped / 16, EvalMetrics(val_eer=flipped / 16, **measured), _scores(flipped),
                      measured.get("dev_top1"))


def test_the_report_names_its_numbers_as_the_records_do():
    selection = Selection("ema_best", ("raw", "ema"))
    selection.observe({"raw": _evaluation("raw", 1.0, 4, val_eer_low=0.1, val_eer_high=0.4),
                       "ema": _evaluation("ema", 1.0, 2, val_eer_low=0.05, val_eer_high=0.2, dev_top1=0.5,
                                          val_score=0.6875)})
    selection.observe({"raw": _evaluation("raw", 2.0, 3), "ema": _evaluation("ema", 2.0, 5)})
    report = selection.report(LABELS, rounds=50)
    tests = paired_bootstrap_eers(_scores(2), [_scores(3), _scores(5)], LABELS, 50)
    assert report == {
        "select": "ema_best", "ranked_by": "EER", "weights": "ema", "epoch": 1.0, "val_eer": 0.125, "val_eer_ci95": [0.05, 0.2],
        "val_score": 0.6875, "bootstrap_rounds": 50,
        "comparisons": [{"weights": weights, "role": role, "epoch": epoch, "val_eer": eer, "val_score": None,
                         "difference": test.difference, "difference_ci95": test.ci95.as_list(),
                         "distinguishable": not test.ci95.low <= 0.0 <= test.ci95.high}
                        for (weights, role, epoch, eer), test in zip(
                            [("raw", "last and best", 2.0, 0.1875), ("ema", "last", 2.0, 0.3125)], tests)]}
    lines = report_lines(report)
    assert lines[0] == ("best.pt (ema_best, by EER): EMA weights of epoch 1, val EER 0.1250 (score 0.6875); "
                        "val EER 95 % CI 0.0500-0.2000")
    assert lines[1].startswith("  against the last and best trained weights of epoch 2, val EER 0.1875: val EER "
                               "difference ")
    # under Fall 2026 the line leads with the combined score, the EER beside it
    assert report_lines(report, F26.leaderboard)[0].startswith(
        "best.pt (ema_best, by EER): EMA weights of epoch 1, score 0.6875 (val EER 0.1250)")


def test_an_evaluation_keeps_plain_values_whether_given_a_dict_or_eval_metrics():
    measured = EvalMetrics(val_eer=0.25, val_auc=0.8, dev_top1=0.5)
    from_record = Evaluation("raw", 1.0, 0.25, measured, top1=0.5)
    from_dict = Evaluation("raw", 1.0, 0.25, {"val_eer": 0.25, "val_auc": 0.8, "dev_top1": 0.5}, top1=0.5)
    assert from_record.state_dict() == from_dict.state_dict()
    assert from_record.state_dict()["metrics"] == {"val_eer": 0.25, "val_auc": 0.8, "dev_top1": 0.5}
    assert from_record.measured == measured == Evaluation.from_state(from_dict.state_dict()).measured


def test_the_weights_of_an_evaluation_keep_their_stored_key_arm():
    saved = {"arm": "ema", "epoch": 2.0, "eer": 0.25, "metrics": {"val_eer": 0.25}}  # as checkpoints hold it
    evaluation = Evaluation.from_state(saved)
    assert evaluation.weights == "ema" and evaluation.state_dict()["arm"] == "ema"
    assert "weights" not in evaluation.state_dict()


def test_a_report_without_an_interval_or_a_score_says_neither():
    selection = Selection("best")
    selection.observe({"raw": Evaluation("raw", 1.0, 0.25, {}, _scores(4))})
    report = selection.report(LABELS, rounds=20)
    assert report["val_eer_ci95"] == [None, None] and report["val_score"] is None and report["comparisons"] == []
    assert report_lines(report) == ["best.pt (best, by EER): trained weights of epoch 1, val EER 0.2500"]
    assert selection.report(LABELS, rounds=0) is None


@pytest.mark.parametrize("name, weights", [("best.pt", "ema"), ("last.pt", "ema"), ("best_raw.pt", "raw")])
def test_each_file_holds_the_weights_it_names(name, weights):
    selection = Selection("ema_best", ("raw", "ema"))
    selection.observe({"raw": _evaluation("raw", 1.0, 4), "ema": _evaluation("ema", 1.0, 2)})
    assert selection.holds(name)[0] == weights and selection.holds(name)[1].weights == weights


@pytest.mark.parametrize("ema", [0.0, 0.999])
def test_auto_selects_by_the_terms_leaderboard_metric(ema):
    train = TrainConfig(ema=ema)
    prefix = "ema_" if ema else ""
    assert resolve_select(train, F26.leaderboard) == prefix + "leaderboard"
    assert resolve_select(train, F25.leaderboard) == prefix + "leaderboard"  # an EER board: by val EER
    assert resolve_select(train, F26.leaderboard, combined_measurable=False) == prefix + "best"
    assert resolve_select(TrainConfig(ema=ema, select="last")) == "last"


def test_under_fall_2026_auto_keeps_the_best_combined_score_when_the_eer_disagrees():
    """Epoch 10 has the lower val EER, epoch 15 the higher combined score: Fall 2026 grades the score."""
    def evaluation(epoch, flipped, top1):
        eer = flipped / 16
        return Evaluation("raw", epoch, eer, EvalMetrics(val_eer=eer, dev_top1=top1,
                                                        val_score=0.5 * top1 + 0.5 * (1 - eer)), _scores(flipped), top1)

    lower_eer, higher_score = evaluation(10.0, 2, 0.40), evaluation(15.0, 3, 0.70)
    assert lower_eer.eer < higher_score.eer and F26.leaderboard.better_than(
        higher_score.measured.val_score, lower_eer.measured.val_score)
    for term, kept in ((F26, higher_score), (F25, lower_eer)):
        selection = Selection(resolve_select(TrainConfig(), term.leaderboard), ("raw",), term.leaderboard)
        assert selection.observe({"raw": higher_score}) == ["best.pt"]
        changed = selection.observe({"raw": lower_eer})
        assert selection.chosen is kept and changed == ([] if kept is higher_score else ["best.pt"])
    report = Selection("leaderboard", ("raw",), F26.leaderboard)
    report.observe({"raw": lower_eer})
    report.observe({"raw": higher_score})
    line = report_lines(report.report(LABELS, rounds=20), F26.leaderboard)[0]
    assert line.startswith("best.pt (leaderboard, by score): trained weights of epoch 15, score 0.7562 "
                           "(val EER 0.1875)")
