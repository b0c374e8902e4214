"""Weight averaging (train.ema) and the checkpoint choice: the average itself, the files a run keeps, resume."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, call_cli
from helpers.core.errors import UserError
from helpers.core.io import read_metrics
from helpers.eval.inference import evaluate_checkpoint
from helpers.model.checkpoint import load_checkpoint, save_checkpoint
from helpers.training.averaging import WeightAverage
from helpers.training.engine import Trainer, train
from helpers.training.selection import resolve_select

DECAY = 0.9


def _run_args(demo_root, out, name, *extra):
    return TINY + [f"data.root={demo_root}", f"run.out_dir={out}", f"run.name={name}", f"train.ema={DECAY}",
                   "optim.name=adam", "optim.lr=0.005", *extra]


def _hand_ema(snapshots: list[dict], decay: float) -> dict:
    """The documented average, in float64: the first update copies, then decay min(decay, (1+n)/(10+n)) after n."""
    average = {}
    for n, weights in enumerate(snapshots):
        for key, value in weights.items():
            if n == 0 or not value.is_floating_point():
                average[key] = value.clone()  # integer buffers (BatchNorm's step counter) are copied
            else:
                d = min(decay, (1 + n) / (10 + n))
                average[key] = d * average[key] + (1 - d) * value
    return average


def _snapshot(model: torch.nn.Module) -> dict:
    return {k: v.detach().double() if v.is_floating_point() else v.detach().clone()
            for k, v in model.state_dict().items()}


def test_average_of_a_small_model_equals_the_hand_computation():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    average = WeightAverage(model, decay=0.8)
    snapshots = []
    for _ in range(6):
        optimizer.zero_grad()
        model(torch.randn(8, 3)).square().mean().backward()
        optimizer.step()
        average.update(model)
        snapshots.append(_snapshot(model))
    expected = _hand_ema(snapshots, 0.8)
    got = average.module.state_dict()
    assert average.updates == 6 and got["1.num_batches_tracked"].item() == 6
    for key, value in expected.items():
        torch.testing.assert_close(got[key].to(value.dtype), value, rtol=1e-6, atol=1e-7, msg=key)
    # Neither the last weights nor a plain 0.8 average: the warmup decays were used.
    assert not torch.allclose(got["0.weight"].double(), snapshots[-1]["0.weight"])


@pytest.fixture(scope="module")
def ema_run(demo_root, tmp_path_factory):
    """A two-epoch run with train.ema, and the trained weights after each optimiser step."""
    out = tmp_path_factory.mktemp("ema")
    snapshots = []
    update = WeightAverage.update

    def spy(self, model):
        snapshots.append(_snapshot(model))
        update(self, model)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WeightAverage, "update", spy)
        result = train(None, _run_args(demo_root, out, "ema", "train.epochs=2"))
    return result, snapshots


def test_the_run_averages_every_step_as_computed_by_hand(ema_run):
    result, snapshots = ema_run
    state = load_checkpoint(result.run_dir / "last.pt")
    assert state["ema"]["updates"] == state["step"] == len(snapshots) == 2 * (72 // 8)
    expected = _hand_ema(snapshots, DECAY)
    for key, value in expected.items():
        torch.testing.assert_close(state["ema"]["weights"][key].to(value.dtype), value, rtol=1e-5, atol=1e-6, msg=key)
    # BatchNorm statistics are averaged too, so they differ from the trained model's own.
    stats = [k for k in expected if k.endswith("running_mean")]
    assert stats and any(not torch.equal(state["ema"]["weights"][k], state["model"][k]) for k in stats)


def test_each_evaluation_measures_both_and_best_pt_holds_the_average(ema_run, capsys):
    result, _ = ema_run
    run = result.run_dir
    records = [r for r in read_metrics(run / "metrics.jsonl") if r.get("evaluated")]
    assert all({"val_eer", "val_eer_ema", "val_threshold_ema"} <= set(r) for r in records)
    best_ema = min(records, key=lambda r: r["val_eer_ema"])
    best_raw = min(records, key=lambda r: r["val_eer"])
    assert result.weights == "ema" and result.best_eer == best_ema["val_eer_ema"]

    best = load_checkpoint(run / "best.pt")
    assert best["graded"] == "ema" and best["best_eer"] == best_ema["val_eer_ema"]
    assert best["val"]["val_threshold"] == best_ema["val_threshold_ema"]
    assert load_checkpoint(run / "best_ema.pt")["graded"] == "ema"
    assert load_checkpoint(run / "best_raw.pt")["graded"] == "raw"
    # evaluate uses the weights each file holds, and --weights picks the other ones of the same file.
    assert evaluate_checkpoint(run / "best.pt").eer == pytest.approx(best_ema["val_eer_ema"], abs=1e-9)
    assert evaluate_checkpoint(run / "best.pt", weights="raw").eer == pytest.approx(best_ema["val_eer"], abs=1e-9)
    assert evaluate_checkpoint(run / "best_raw.pt").eer == pytest.approx(best_raw["val_eer"], abs=1e-9)
    code, out, err = call_cli(capsys, "evaluate", "--checkpoint", run / "last.pt", "--weights", "raw", "--json")
    assert code == 0, err
    assert json.loads(out)["eer"] == pytest.approx(records[-1]["val_eer"], abs=1e-9)


def test_a_checkpoint_from_before_averaging_still_evaluates_and_resumes(ema_run, demo_root, tmp_path, capsys):
    result, _ = ema_run
    state = load_checkpoint(result.run_dir / "best_raw.pt")
    # The layout before averaging: best_eer and best_epoch described the (trained) weights of the file.
    state["best_eer"], state["best_epoch"] = state["val"]["val_eer"], state["selection"]["best"]["raw"]["epoch"]
    for key in ("ema", "graded", "selection"):
        del state[key]
    state["config"]["train"] = {k: v for k, v in state["config"]["train"].items() if k not in ("ema", "select")}
    state["config"]["run"]["out_dir"] = str(tmp_path)
    old = tmp_path / "ema" / "last.pt"
    save_checkpoint(state, old)
    assert evaluate_checkpoint(old).eer == pytest.approx(state["best_eer"], abs=1e-9)
    code, _, err = call_cli(capsys, "evaluate", "--checkpoint", old, "--weights", "ema")
    assert code == 1 and "holds no averaged weights" in err
    one_more = state["epoch"] + 1
    resumed = train(None, [f"run.out_dir={tmp_path}", f"train.epochs={one_more}"], resume=str(old))
    assert resumed.epochs == one_more and resumed.weights == "raw"  # the old run's configuration had no EMA


def test_resume_after_a_crash_keeps_the_average_exact(demo_root, tmp_path, monkeypatch):
    common = ["train.deterministic=true", "train.epochs=1", "train.checkpoint_every_steps=1", "model.dropout=0.2",
              "augment.erasing=0.3"]
    straight = train(None, _run_args(demo_root, tmp_path, "straight", *common))

    step = Trainer._optimizer_step

    class Crash(Exception):
        pass

    def crash_mid_epoch(self):
        if self.step == 5:  # last.pt now holds step 5 of 9
            raise Crash
        return step(self)

    monkeypatch.setattr(Trainer, "_optimizer_step", crash_mid_epoch)
    with pytest.raises(Crash):
        train(None, _run_args(demo_root, tmp_path, "crashed", *common))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "crashed" / "last.pt")["step"] == 5
    resumed = train(None, _run_args(demo_root, tmp_path, "crashed", *common), resume="auto")

    a, b = load_checkpoint(straight.run_dir / "last.pt"), load_checkpoint(resumed.run_dir / "last.pt")
    assert a["ema"]["updates"] == b["ema"]["updates"] == 9
    for key in a["ema"]["weights"]:
        assert torch.equal(a["ema"]["weights"][key], b["ema"]["weights"][key]), key
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["best_eer"] == b["best_eer"] and a["best_epoch"] == b["best_epoch"]
    curve = [(r["val_eer"], r["val_eer_ema"]) for r in read_metrics(straight.run_dir / "metrics.jsonl")]
    assert curve == [(r["val_eer"], r["val_eer_ema"]) for r in read_metrics(resumed.run_dir / "metrics.jsonl")]

    # Averaging only reads the weights: the trained weights are the run one gets without it, so one run measures both.
    plain = train(None, _run_args(demo_root, tmp_path, "plain", *common, "train.ema=0"))
    c = load_checkpoint(plain.run_dir / "last.pt")
    assert c["ema"] is None and all(torch.equal(a["model"][key], c["model"][key]) for key in a["model"])
    assert [r["val_eer"] for r in read_metrics(plain.run_dir / "metrics.jsonl")] == [eer for eer, _ in curve]


def test_selecting_averaged_weights_needs_the_average():
    from helpers.core.config import load_config

    with pytest.raises(UserError, match="'train.select' is ema_best but train.ema is 0"):
        load_config(overrides=["train.select=ema_best"])
    assert resolve_select(load_config(overrides=["train.ema=0.99"]).train) == "ema_leaderboard"
    assert resolve_select(load_config().train) == "leaderboard"


def test_each_evaluation_records_its_interval_and_the_run_ends_with_a_paired_comparison(ema_run):
    result, _ = ema_run
    records = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r.get("evaluated")]
    for record in records:
        for suffix in ("", "_ema"):
            assert record["val_eer_low" + suffix] <= record["val_eer" + suffix] <= record["val_eer_high" + suffix]
            assert record["val_eer_high" + suffix] - record["val_eer_low" + suffix] > 0  # 300 pairs are noisy
    report = json.loads((result.run_dir / "selection.json").read_text())
    graded = min(records, key=lambda r: r["val_eer_ema"])
    assert (report["weights"], report["epoch"], report["val_eer"]) == ("ema", graded["epoch"], graded["val_eer_ema"])
    assert report["val_eer_ci95"] == [graded["val_eer_low_ema"], graded["val_eer_high_ema"]]
    by_epoch = {r["epoch"]: r for r in records}
    compared = {(c["weights"], c["epoch"]) for c in report["comparisons"]}
    last = records[-1]["epoch"]
    # The trained weights at the end are always a candidate; so are the EMA's unless best.pt holds them.
    assert ("raw", last) in compared and (("ema", last) in compared) == (graded["epoch"] != last)
    for item in report["comparisons"]:
        eer = by_epoch[item["epoch"]]["val_eer" + ("" if item["weights"] == "raw" else "_ema")]
        assert item["val_eer"] == eer and item["difference"] == pytest.approx(graded["val_eer_ema"] - eer)
        low, high = item["difference_ci95"]
        assert low <= item["difference"] <= high and item["distinguishable"] == (not low <= 0 <= high)


def test_report_and_curves_show_the_average_beside_the_trained_weights(ema_run, tmp_path):
    from helpers.eval.plots import training_curves_figure
    from helpers.training.tracking import run_summary

    result, _ = ema_run
    records = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r.get("evaluated")]
    summary = run_summary(result.run_dir)
    assert summary["best_val_eer_ema"] == min(r["val_eer_ema"] for r in records)
    assert summary["final_val_eer_ema"] == records[-1]["val_eer_ema"]
    eer_axes = training_curves_figure(records).axes[2]
    assert [line.get_label() for line in eer_axes.get_lines()] == ["trained weights", "EMA weights"]
