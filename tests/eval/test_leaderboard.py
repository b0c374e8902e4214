"""The term's leaderboard metric everywhere a run is graded: the combined score beside the EER in records,
evaluate and selection, train.select leaderboard, and course.term checked like every other key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, call_cli

from helpers.core.config import load_config
from helpers.core.errors import UserError
from helpers.core.io import read_metrics
from helpers.core.terms import combined_score, get_term
from helpers.training.selection import Evaluation, Selection


def test_the_combined_score_is_half_accuracy_half_one_minus_eer():
    assert combined_score(0.8, 0.1) == pytest.approx(0.85)
    assert combined_score(None, 0.1) is None and combined_score(0.8, None) is None
    board = get_term("f26").leaderboard
    assert board.better_than(0.9, 0.8) and board.passes(0.8, 0.8) and not board.passes(0.79, 0.8)
    eer = get_term("s26").leaderboard
    assert eer.better_than(0.05, 0.06) and eer.passes(0.09, 0.09) and eer.value(0.05, 0.9) == 0.05


def test_select_leaderboard_grades_by_the_terms_metric_and_best_by_the_eer():
    def evaluation(epoch, eer, top1):
        return {"raw": Evaluation("raw", epoch, eer, {"val_score": combined_score(top1, eer)}, top1=top1)}

    # epoch 2 has the lower EER, epoch 3 the higher combined score (its classification is much better)
    history = [evaluation(1, 0.30, 0.10), evaluation(2, 0.10, 0.20), evaluation(3, 0.12, 0.60)]
    by_eer, by_score = Selection("best"), Selection("leaderboard", leaderboard=get_term("f26").leaderboard)
    by_s26 = Selection("leaderboard", leaderboard=get_term("s26").leaderboard)
    for step in history:
        by_eer.observe(step), by_score.observe(step), by_s26.observe(step)
    assert by_eer.chosen.epoch == 2 and by_score.chosen.epoch == 3 and by_s26.chosen.epoch == 2
    restored = Selection("leaderboard", leaderboard=get_term("f26").leaderboard)
    restored.load_state_dict(by_score.state_dict())
    assert restored.chosen.top1 == 0.60  # the dev top-1 survives a resume


def test_course_term_is_checked_like_any_key(tmp_path):
    assert load_config().course.term == "newest"
    assert load_config(overrides=["course.term=s26"]).course.term == "s26"
    with pytest.raises(UserError, match="config key 'course.term': unknown course term 'f99'; the known terms are"):
        load_config(overrides=["course.term=f99"])


def test_a_run_records_scores_and_evaluate_prints_the_combined_score(demo_root, tmp_path, capsys):
    from helpers.data.demo import make_demo_data
    from helpers.training.engine import train

    settings = TINY + [f"run.out_dir={tmp_path}", "train.epochs=2", "train.select=leaderboard",
                       "train.eval_bootstrap=50"]
    with pytest.raises(UserError, match="lacks val pairs or dev images of the training identities"):
        train(None, settings + [f"data.root={demo_root}", "run.name=no_dev"])  # 6 images a person: no dev split
    root = make_demo_data(tmp_path / "dev", identities=12, images_per_identity=10, verification_identities=20,
                          size=32, difficulty=0.5, val_pairs=100, test_pairs=100).root
    result = train(None, settings + [f"data.root={root}", "run.name=score"])
    records = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r.get("val_eer") is not None]
    for record in records:
        assert record["val_score"] == pytest.approx(combined_score(record["dev_top1"], record["val_eer"]))
    selection = json.loads((result.run_dir / "selection.json").read_text())
    assert selection["select"] == "leaderboard"
    assert selection["val_score"] == max(r["val_score"] for r in records)
    code, out, err = call_cli(capsys, "evaluate", "--checkpoint", result.run_dir / "best.pt")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("combined score"))
    assert "Fall 2026" in line and "higher is better" in line
    code, out, _ = call_cli(capsys, "evaluate", "--checkpoint", result.run_dir / "best.pt", "--json", "--term", "s26")
    value = json.loads(out)
    assert value["leaderboard"]["metric"] == "EER" and value["leaderboard"]["value"] == value["eer"]
    assert np.isclose(value["score"], combined_score(value["top1"], value["eer"]))


def test_the_metric_a_run_can_measure_is_the_terms_where_the_data_has_dev_images(demo_root, tmp_path):
    from helpers.data.demo import make_demo_data
    from helpers.training.run import measured_board

    with_dev = make_demo_data(tmp_path / "dev", identities=12, images_per_identity=10, verification_identities=20,
                              size=32, val_pairs=100, test_pairs=100).root
    newest = get_term("newest").leaderboard
    assert measured_board(load_config(overrides=[f"data.root={with_dev}"])) == newest
    assert newest.record_key == "val_score"
    # the demo root has 6 images a person: no dev split, so the combined score's top-1 cannot be measured
    assert measured_board(load_config(overrides=[f"data.root={demo_root}"])).record_key == "val_eer"
    s26 = load_config(overrides=[f"data.root={demo_root}", "course.term=s26"])
    assert measured_board(s26) == get_term("s26").leaderboard and get_term("s26").leaderboard.record_key == "val_eer"
