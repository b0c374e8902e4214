"""The Trainer's listeners: each evaluation is heard once saved, and a stop request ends the run cleanly there."""

from __future__ import annotations

from conftest import TINY

from helpers.model.checkpoint import Checkpoint
from helpers.training.engine import train
from helpers.training.tracking import run_records


def test_a_stop_requested_at_an_evaluation_ends_the_run_there_with_valid_checkpoints(demo_root, tmp_path):
    heard = []

    def hear(trainer, record):
        heard.append(record.epoch)
        assert (trainer.run_dir / "last.pt").is_file()  # heard after the evaluation is saved
        if record.epoch >= 2:
            trainer.request_stop()

    result = train(None, TINY + [f"data.root={demo_root}", f"run.out_dir={tmp_path}", "run.name=stopped",
                                 "train.epochs=6"], on_evaluation=hear)
    assert heard == [0, 1, 2] and result.epochs == 2
    assert Checkpoint.load(result.run_dir / "last.pt").epoch == 2 and (result.run_dir / "best.pt").is_file()
    assert [r.epoch for r in run_records(result.run_dir) if r.evaluated] == [0, 1, 2]
    # the stopped run resumes like any other
    resumed = train(None, TINY + [f"data.root={demo_root}", f"run.out_dir={tmp_path}", "run.name=stopped",
                                  "train.epochs=3"], resume="auto")
    assert resumed.epochs == 3
