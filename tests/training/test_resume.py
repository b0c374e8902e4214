"""A resume takes the checkpoint's state, never its paths; a changed or foreign checkpoint, or a model over the
budget, is refused in one sentence before anything is written; on another number of processes the epoch goes on
at the right sample or starts again, and says which."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, call_cli

from helpers.core.config import load_config
from helpers.core.errors import UserError
from helpers.core.io import read_metrics
from helpers.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from helpers.training import run as run_module
from helpers.training.resume import resume_position


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def _copy(trained_run: Path, folder: Path) -> Path:
    shutil.copytree(trained_run, folder)
    return folder


def _edit(path: Path, change) -> None:
    """Rewrite the checkpoint at ``path`` with ``change(values)`` applied to its plain dict."""
    values = load_checkpoint(path)
    change(values)
    save_checkpoint(values, path)


def _contents(folder: Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_a_classmates_checkpoint_trains_where_this_command_says(trained_run, tmp_path, monkeypatch, capsys):
    theirs = _copy(trained_run, tmp_path / "theirs")
    victim = tmp_path / "victim" / "demo"  # where their file says its run lives, and where it stages the data

    def elsewhere(values):
        values["config"]["run"].update(out_dir=str(victim.parent), name=victim.name)
        values["config"]["data"]["stage_to"] = str(tmp_path / "staged")

    _edit(theirs / "last.pt", elsewhere)
    victim.mkdir(parents=True)
    (victim / "config.yaml").write_text("mine\n")
    (victim / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    mine = tmp_path / "mine"
    mine.mkdir()
    monkeypatch.chdir(mine)
    code, out, err = call_cli(capsys, "train", "--resume", theirs / "last.pt", "--set", "train.epochs=7")
    assert code == 0, err
    assert f"note: the checkpoint comes from the run folder {victim}; this run writes to runs/run\n" in out
    assert _contents(victim) == {"config.yaml": b"mine\n", "metrics.jsonl": b'{"epoch": 0}\n{"epoch": 1}\n'}
    assert not (tmp_path / "staged").exists()
    assert load_checkpoint(mine / "runs" / "run" / "last.pt")["epoch"] == 7  # a new run's default folder
    assert load_config(mine / "runs" / "run" / "config.yaml").run.out_dir == "runs"
    assert load_checkpoint(theirs / "last.pt")["epoch"] == 6


def test_a_checkpoint_from_another_folder_starts_its_own_wandb_run(trained_run, tmp_path, monkeypatch, capsys):
    """Their W&B run id is theirs: resumed elsewhere, the run logs to a W&B run of its own; in its own folder
    the same W&B run goes on."""
    started = []

    class Recording(run_module.Tracker):
        def __init__(self, run_dir, cfg, run_id=None, name=None):
            started.append(run_id)
            super().__init__(run_dir, cfg, run_id=run_id, name=name)

    monkeypatch.setattr(run_module, "Tracker", Recording)
    theirs = _copy(trained_run, tmp_path / "theirs")

    def saved_in_theirs(values):
        values.update(wandb_run_id="theirrun")
        values["config"]["run"].update(out_dir=str(tmp_path), name="theirs")

    _edit(theirs / "last.pt", saved_in_theirs)
    code, _, err = call_cli(capsys, "train", "--resume", theirs / "last.pt",
                            *_sets([f"run.out_dir={tmp_path / 'mine'}", "run.name=run", "train.epochs=7"]))
    assert code == 0, err
    code, _, err = call_cli(capsys, "train", "--resume", theirs / "last.pt",
                            *_sets([f"run.out_dir={tmp_path}", "run.name=theirs", "train.epochs=7"]))
    assert code == 0, err
    assert started == [None, "theirrun"]


def test_a_resume_into_another_runs_folder_is_refused_unless_told_to_take_it_over(trained_run, tmp_path, capsys):
    theirs = _copy(trained_run, tmp_path / "theirs")
    _edit(theirs / "last.pt", lambda values: values.update(run_id="theirs0000000000"))
    mine = _copy(trained_run, tmp_path / "trained")
    before = _contents(mine)
    args = ["train", "--resume", theirs / "last.pt", *_sets([f"run.out_dir={tmp_path}", "run.name=trained",
                                                               "train.epochs=7"])]
    code, _, err = call_cli(capsys, *args)
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    mine_id = read_metrics(mine / "metrics.jsonl")[0]["run_id"]
    assert err == (f"error: {mine} holds the records of another run ({mine_id} in its metrics.jsonl) than the one "
                   f"{theirs / 'last.pt'} continues; resume into another run.name, or pass --take-over to resume "
                   "there anyway (that run's records move to metrics.replaced.jsonl)\n")
    assert _contents(mine) == before
    code, _, err = call_cli(capsys, *args, "--take-over")
    assert code == 0, err
    assert (mine / "metrics.replaced.jsonl").read_bytes() == before["metrics.jsonl"]  # set aside, not lost
    records = read_metrics(mine / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [7] and {r["run_id"] for r in records} == {"theirs0000000000"}


def _shuffled_optimizer(values):
    values["optimizer"]["param_groups"] = []


@pytest.mark.parametrize("field, change, said", [
    ("rng", lambda values: values.update(rng=None), "holds no rng state, so it cannot be resumed"),
    ("config", lambda values: values.update(config=[1, 2]), "checkpoint field 'config' is wrong: input should be a "
                                                            "valid dictionary, not list"),
    ("fast_path", lambda values: values.update(fast_path="bf16"), "checkpoint field 'fast_path' is wrong"),
    ("val", lambda values: values["val"].update(val_eer="0.1"), "checkpoint field 'val.val_eer' is wrong: input "
                                                               "should be a valid number, not str"),
    ("optimizer", _shuffled_optimizer, "the checkpoint's optimizer state does not fit this run"),
], ids=["rng", "config", "fast_path", "val", "optimizer"])
def test_a_checkpoint_field_of_another_type_is_one_sentence_before_anything_is_written(field, change, said,
                                                                                      trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path / "trained")
    _edit(run / "last.pt", change)
    before = _contents(run)
    code, _, err = call_cli(capsys, "train", "--resume", "auto", *_sets([f"run.out_dir={tmp_path}",
                                                                         "run.name=trained", "train.epochs=7"]))
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert said in err
    assert _contents(run) == before  # config.yaml and metrics.jsonl untouched


def test_a_model_over_the_budget_is_refused_before_it_is_allocated(trained_run, demo_root, tmp_path, capsys,
                                                                   monkeypatch):
    code, _, err = call_cli(capsys, "train", *_sets([*TINY, f"data.root={demo_root}", f"run.out_dir={tmp_path}",
                                                     "run.name=huge", "model.width=64"]))
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("error: the model of this configuration (ResNet-18, model.width 64, model.embedding_dim "
                          "512) has ") and " parameters before its margin head, over the assignment's 30,000,000" in err
    assert list(tmp_path.iterdir()) == []
    # A checkpoint whose configuration asks for one is refused alike, before its weights are compared.
    run = _copy(trained_run, tmp_path / "trained")
    _edit(run / "last.pt", lambda values: values["config"]["model"].update(width=64))
    code, _, err = call_cli(capsys, "train", "--resume", "auto", *_sets([f"run.out_dir={tmp_path}",
                                                                         "run.name=trained"]))
    assert code == 1 and "parameters with its margin head over 12 classes, over the assignment's 30,000,000" in err
    # Within the budget, the weights and optimiser state must fit the device's memory too.
    monkeypatch.setattr(run_module, "memory_of", lambda device: 1000)
    with pytest.raises(UserError, match=r"needs at least .* more than the 1000 bytes of cpu; lower model.width"):
        run_module.refuse_oversized(load_config(None, TINY), 12, torch.device("cpu"))


def _saved(batch: int, world: int, batch_size: int = 8, accumulate: int = 1, epoch: int = 5) -> Checkpoint:
    config = load_config(None, [f"train.batch_size={batch_size}", f"train.accumulate={accumulate}"]).as_dict()
    return Checkpoint(model={}, classes=["a"], config_values=config, epoch=epoch, batch=batch,
                      data_order={"seed": 0, "epoch": epoch, "batch": batch, "world": world})


def test_another_number_of_processes_goes_on_at_the_same_sample_or_starts_the_epoch_again():
    one = load_config(None, ["train.batch_size=8"])
    # 72 images: 4 batches of 8 per process on two processes, 9 on one
    to_one = resume_position(_saved(batch=3, world=2), one, world=1, batches=9)
    assert to_one.batch == 6 and to_one.notes == (
        "the global batch changes from 16 (8 per process x 2 process(es)) to 8 (8 per process x 1 process(es)) with "
        "this resume: the lr schedule is kept as it is (optim.lr 0.001)",
        "epoch 6 goes on at sample 48 (batch 6 of 9 per process)")
    assert resume_position(_saved(batch=6, world=1), one, world=2, batches=4).batch == 3
    again = resume_position(_saved(batch=5, world=1), one, world=2, batches=4)  # sample 40: inside a batch of 16
    assert again.batch == 0 and again.notes[-1] == ("epoch 6 starts again: its 40 samples trained so far end "
                                                    "inside a batch of 16 samples on 2 process(es)")
    accumulating = load_config(None, ["train.batch_size=8", "train.accumulate=4"])
    assert resume_position(_saved(batch=3, world=2), accumulating, world=1, batches=9).batch == 0  # mid-step
    at_boundary = resume_position(_saved(batch=0, world=2), one, world=1, batches=9)
    assert at_boundary.batch == 0 and len(at_boundary.notes) == 1 and "global batch changes" in at_boundary.notes[0]
    assert resume_position(_saved(batch=4, world=1), one, world=1, batches=9).notes == ()  # nothing changed: silent


def test_a_mid_epoch_save_of_two_processes_resumes_on_one_at_the_right_sample(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path / "trained")

    def two_processes(values):  # as if saved at batch 3 of 4 per process by two processes (sample 48 of 64)
        values.update(epoch=5, batch=3, step=5 * 4 + 3)
        values["data_order"].update(epoch=5, batch=3, world=2)

    _edit(run / "last.pt", two_processes)
    code, out, err = call_cli(capsys, "train", "--resume", "auto", *_sets([f"run.out_dir={tmp_path}",
                                                                           "run.name=trained", "sched.name=cosine"]))
    assert code == 0, err
    assert "epoch 6 goes on at sample 48 (batch 6 of 9 per process)\n" in out
    assert "the global batch changes from 16 (8 per process x 2 process(es)) to 8 " in out
    assert f"resuming {run} at epoch 5.67 " in out
    state = load_checkpoint(run / "last.pt")
    assert (state["epoch"], state["batch"], state["step"]) == (6, 0, 5 * 4 + 3 + 3)  # the 3 batches left
    last = read_metrics(run / "metrics.jsonl")[-1]
    assert last["epoch"] == 6 and last["lr"] == 0.0 and last["train_loss"] is not None  # the schedule's end
