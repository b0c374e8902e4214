"""The checkpoint choice's end-of-run report: selection.json's numbers, named as the run's records name them."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.core.records import ArmMetrics
from helpers.eval.metrics import paired_bootstrap_eers
from helpers.eval.selection import Evaluation, Selection, report_lines

LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0] * 4)


def _scores(flipped: int) -> np.ndarray:
    """Scores that separate the pairs, but for ``flipped`` genuine pairs scored like impostors."""
    scores = np.where(LABELS == 1, 0.8, 0.2) + np.linspace(0.0, 0.1, LABELS.size)
    scores[np.flatnonzero(LABELS == 1)[:flipped]] = 0.1
    return scores


def _evaluation(arm, epoch, flipped, **measured) -> Evaluation:
    return Evaluation(arm, epoch, flipped / 16, ArmMetrics(val_eer=flipped / 16, **measured), _scores(flipped),
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
        "select": "ema_best", "weights": "ema", "epoch": 1.0, "val_eer": 0.125, "val_eer_ci95": [0.05, 0.2],
        "val_score": 0.6875, "bootstrap_rounds": 50,
        "comparisons": [{"weights": weights, "role": role, "epoch": epoch, "val_eer": eer, "val_score": None,
                         "difference": test["difference"], "difference_ci95": test["ci95"],
                         "distinguishable": not test["ci95"][0] <= 0.0 <= test["ci95"][1]}
                        for (weights, role, epoch, eer), test in zip(
                            [("raw", "last and best", 2.0, 0.1875), ("ema", "last", 2.0, 0.3125)], tests)]}
    lines = report_lines(report)
    assert lines[0] == "best.pt (ema_best): EMA weights of epoch 1, val EER 0.1250 (95 % CI 0.0500-0.2000), score 0.6875"
    assert lines[1].startswith("  against the last and best trained weights (epoch 2, val EER 0.1875): difference ")


def test_an_evaluation_keeps_plain_values_whether_given_a_dict_or_arm_metrics():
    measured = ArmMetrics(val_eer=0.25, val_auc=0.8, dev_top1=0.5)
    from_record = Evaluation("raw", 1.0, 0.25, measured, top1=0.5)
    from_dict = Evaluation("raw", 1.0, 0.25, {"val_eer": 0.25, "val_auc": 0.8, "dev_top1": 0.5}, top1=0.5)
    assert from_record.state_dict() == from_dict.state_dict()
    assert from_record.state_dict()["metrics"] == {"val_eer": 0.25, "val_auc": 0.8, "dev_top1": 0.5}
    assert from_record.measured == measured == Evaluation.from_state(from_dict.state_dict()).measured


def test_a_report_without_an_interval_or_a_score_says_neither():
    selection = Selection("best")
    selection.observe({"raw": Evaluation("raw", 1.0, 0.25, {}, _scores(4))})
    report = selection.report(LABELS, rounds=20)
    assert report["val_eer_ci95"] == [None, None] and report["val_score"] is None and report["comparisons"] == []
    assert report_lines(report) == ["best.pt (best): trained weights of epoch 1, val EER 0.2500"]
    assert selection.report(LABELS, rounds=0) is None


@pytest.mark.parametrize("name, arm", [("best.pt", "ema"), ("last.pt", "ema"), ("best_raw.pt", "raw")])
def test_each_file_holds_the_arm_it_names(name, arm):
    selection = Selection("ema_best", ("raw", "ema"))
    selection.observe({"raw": _evaluation("raw", 1.0, 4), "ema": _evaluation("ema", 1.0, 2)})
    assert selection.holds(name)[0] == arm and selection.holds(name)[1].arm == arm
