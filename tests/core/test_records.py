"""Run records: a metrics.jsonl line written by the Trainer reads back and writes out unchanged, and old lines
still read."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import ROOT, TINY

from helpers.core.records import WEIGHTS, EvalMetrics, EpochStats, RunRecord, field_keys, read_records, record_lines

OLD_METRICS = ROOT / "tests" / "fixtures" / "metrics_097e354.jsonl"  # written before EMA, intervals and scores


@pytest.fixture(scope="module")
def trainer_lines(tmp_path_factory) -> list[str]:
    """The metrics.jsonl lines of a real tiny run measuring everything a line can hold: train stats, both weights
    (train.ema), bootstrap intervals, dev top-1/5 and the combined score (a root with dev images)."""
    from helpers.data.demo import make_demo_data
    from helpers.training.engine import train

    out = tmp_path_factory.mktemp("records")
    root = make_demo_data(out / "dev", identities=12, images_per_identity=10, verification_identities=20, size=32,
                          difficulty=0.5, val_pairs=100, test_pairs=100).root
    result = train(None, TINY + [f"data.root={root}", f"run.out_dir={out}", "run.name=all", "train.epochs=1",
                                 "train.ema=0.9", "train.eval_bootstrap=20"])
    return (result.run_dir / "metrics.jsonl").read_text().splitlines()


def test_a_trainer_line_round_trips_unchanged(trainer_lines):
    assert len(trainer_lines) == 2  # before training, and after the epoch
    for text in trainer_lines:
        line = json.loads(text)
        again = RunRecord.from_line(line).as_line()
        assert list(again) == list(line) and again == line  # the same keys, in the same order, the same values
        assert RunRecord.from_line(line).to_json() == text


def test_a_trainer_line_reads_as_attributes(trainer_lines):
    before, after = (RunRecord.from_line(json.loads(text)) for text in trainer_lines)
    assert before.trained is None and before.evaluated and before.step == 0
    assert after.epoch == 1.0 and after.step > 0 and after.trained.images_per_s > 0
    for weights in WEIGHTS:
        measured = after.metrics(weights)
        assert 0.0 <= measured.val_eer <= 1.0 and measured.val_eer_low <= measured.val_eer_high
        assert measured.dev_top1 is not None and measured.val_score is not None
    line = json.loads(trainer_lines[1])
    assert after.metrics("ema") == EvalMetrics(**{item.name: line.get(item.name + "_ema")
                                                 for item in dataclasses.fields(EvalMetrics)})
    assert after.metrics("ema").val_eer == line["val_eer_ema"] and after.metrics().val_eer == line["val_eer"]


def test_old_lines_read_with_the_fields_they_lack_none():
    records = read_records(OLD_METRICS)
    assert [record.epoch for record in records] == [0.0, 1.0]
    for record in records:
        assert record.metrics().val_eer is not None and record.metrics().val_score is None
        assert record.metrics().val_eer_low is None and record.metrics().dev_top1 is None
        assert not record.metrics("ema").measured and set(record.by_weights) == {"raw"}
    assert records[1].trained.train_loss == pytest.approx(12.8262, abs=1e-4)
    # a line older still, before step and the skip counters
    oldest = RunRecord.from_line({"epoch": 2.0, "train_loss": 3.0, "val_eer": 0.3, "elapsed_s": 9.0})
    assert oldest.step is None and oldest.nonfinite_steps is None and oldest.trained.grad_norm is None
    assert oldest.metrics().val_eer == 0.3 and oldest.metrics("ema").val_eer is None


def test_old_lines_write_back_as_they_were():
    for line in record_lines(OLD_METRICS):
        assert RunRecord.from_line(line).as_line() == line


def test_a_half_written_last_line_and_lines_that_are_not_records_are_ignored(tmp_path, trainer_lines):
    path = tmp_path / "metrics.jsonl"
    path.write_text(trainer_lines[0] + "\n[1, 2]\n" + trainer_lines[1] + "\n" + trainer_lines[1][:40])
    records = read_records(path)
    assert [record.step for record in records] == [json.loads(text)["step"] for text in trainer_lines]
    assert read_records(tmp_path / "absent.jsonl") == []


def test_numbers_that_are_not_finite_are_written_as_null():
    stats = EpochStats(train_loss=float("nan"), train_acc=float("nan"), grad_norm=float("nan"),
                       images_per_s=float("inf"), data_wait=0.1, lr=0.01)  # a span without batches
    record = RunRecord(epoch=1.0, step=0, trained=stats, nonfinite_steps=0, skipped_images=0,
                       by_weights={"raw": EvalMetrics(val_eer=0.2, val_tar_at_far={"0.001": float("nan")})}, evaluated=True)
    line = json.loads(record.to_json())
    assert line == {"epoch": 1.0, "step": 0, "train_loss": None, "train_acc": None, "grad_norm": None,
                    "images_per_s": None, "data_wait": 0.1, "lr": 0.01, "nonfinite_steps": 0, "skipped_images": 0,
                    "val_eer": 0.2, "val_tar_at_far": {"0.001": None}, "evaluated": True}
    assert RunRecord.from_line(line).as_line() == line  # the span keeps its keys though it measured nothing


def test_the_ema_weights_are_read_from_their_suffixed_keys():
    line = {"epoch": 3.0, "step": 30, "val_eer": 0.2, "dev_top1": 0.7, "val_eer_ema": 0.15, "val_auc_ema": 0.9,
            "val_score_ema": 0.8, "evaluated": True}
    record = RunRecord.from_line(line)
    assert record.metrics("ema") == EvalMetrics(val_eer=0.15, val_auc=0.9, val_score=0.8)
    assert record.metrics() == EvalMetrics(val_eer=0.2, dev_top1=0.7)
    assert record.as_line() == line


def test_field_keys_spell_each_key_once():
    assert field_keys(EvalMetrics).val_eer == "val_eer" and field_keys(EvalMetrics, "ema").val_score == "val_score_ema"
    assert field_keys(EpochStats).images_per_s == "images_per_s"
    assert EvalMetrics(val_eer=0.1).as_dict("_ema") == {field_keys(EvalMetrics, "ema").val_eer: 0.1}
    with pytest.raises(AttributeError):
        field_keys(EvalMetrics).val_err  # noqa: B018 - a mistyped key fails loudly
