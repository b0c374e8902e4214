"""The training curves read a run's records: old lines, the EMA's curve and the combined score."""

from __future__ import annotations

import json

from conftest import ROOT

from helpers.core.records import RunRecord, record_lines
from helpers.eval.plots import training_curves_figure

PNG = b"\x89PNG\r\n\x1a\n"
LINES = [
    {"epoch": 0.0, "step": 0, "val_eer": 0.5, "val_eer_ema": 0.5, "evaluated": True},
    {"epoch": 1.0, "step": 9, "train_loss": 3.0, "lr": 0.1, "val_eer": 0.2, "dev_top1": 0.6, "val_score": 0.7,
     "val_eer_ema": 0.25, "evaluated": True},
    {"epoch": 2.0, "step": 18, "train_loss": 2.0, "lr": 0.05},  # not evaluated
    {"epoch": 3.0, "step": 27, "train_loss": 1.0, "lr": 0.01, "val_eer": 0.3, "dev_top1": 0.9, "val_score": 0.8,
     "evaluated": True},  # the EMA not measured here
]


def _curves(axes) -> list[tuple[str, list, list]]:
    return [(line.get_label(), list(line.get_xdata()), list(line.get_ydata())) for line in axes.get_lines()]


def test_training_curves_show_loss_lr_both_weights_and_the_combined_score(tmp_path):
    figure = training_curves_figure(LINES, path=tmp_path / "curves.png")
    loss_ax, lr_ax, eer_ax, score_ax = figure.axes
    assert _curves(loss_ax) == [("_child0", [1.0, 2.0, 3.0], [3.0, 2.0, 1.0])]
    assert _curves(lr_ax) == [("_child0", [1.0, 2.0, 3.0], [0.1, 0.05, 0.01])]
    assert _curves(eer_ax) == [("trained weights", [0.0, 1.0, 3.0], [0.5, 0.2, 0.3]),
                               ("EMA weights", [0.0, 1.0], [0.5, 0.25])]
    assert _curves(score_ax) == [("_child0", [1.0, 3.0], [0.7, 0.8])]
    assert eer_ax.get_title() == "val EER (lower is better) and combined score"
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG)


def test_training_curves_of_an_old_run_have_no_ema_and_no_score():
    figure = training_curves_figure(record_lines(ROOT / "tests" / "fixtures" / "metrics_097e354.jsonl"))
    loss_ax, lr_ax, eer_ax = figure.axes
    assert _curves(eer_ax) == [("trained weights", [0.0, 1.0], [0.44, 0.4266666666666667])]
    assert _curves(loss_ax) == [("_child0", [1.0], [12.826202392578125])] and eer_ax.get_legend() is None
    assert eer_ax.get_title() == "val EER (lower is better)"


def test_records_and_the_lines_they_came_from_draw_the_same_figure(tmp_path):
    training_curves_figure(LINES, path=tmp_path / "lines.png")
    training_curves_figure([RunRecord.from_line(json.loads(json.dumps(line))) for line in LINES],
                           path=tmp_path / "records.png")
    assert (tmp_path / "lines.png").read_bytes() == (tmp_path / "records.png").read_bytes()
