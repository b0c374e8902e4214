"""What a run refuses in one sentence instead of a traceback, leaving every file as it was."""

from __future__ import annotations

import shutil

import pytest
from conftest import TINY, call_cli

from helpers.core.config import load_config
from helpers.core.errors import UserError


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def test_a_resume_that_would_change_the_model_says_what_to_do_and_keeps_last_pt(trained_run, demo_root, tmp_path,
                                                                               capsys):
    shutil.copytree(trained_run, tmp_path / "trained")
    last = tmp_path / "trained" / "last.pt"
    before = last.read_bytes()
    args = _sets([*TINY, f"data.root={demo_root}", f"run.out_dir={tmp_path}", "run.name=trained"])
    code, _, err = call_cli(capsys, "train", *args, "--resume", "auto", "--set", "model.depth=34")
    assert code == 1 and "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith(f"error: --resume continues the model in {last}, but model.depth 18 -> 34 changes its "
                          "shape (backbone.layer1.2.conv1.weight is missing from the file (and ")
    assert err.endswith(f"{last} is untouched. To train a new model starting from its weights, use --init-from "
                        "with another run.name\n")
    assert last.read_bytes() == before
    code, _, err = call_cli(capsys, "train", *args, "--resume", "auto", "--set", "loss.type=subcenter")
    assert code == 1 and "loss.type arcface -> subcenter changes its shape (head.weight is" in err
    # What the sentence advises works: a new run from those weights.
    code, out, err = call_cli(capsys, "train", *_sets([*TINY, f"data.root={demo_root}", f"run.out_dir={tmp_path}",
                                                       "run.name=deeper", "model.depth=34", "train.epochs=1"]),
                              "--init-from", last)
    assert code == 0, err
    assert f"initialised from {last} (" in out and "tensors left fresh, e.g. backbone.layer1.2.conv1.weight" in out


def test_a_run_name_too_long_for_a_folder_is_refused(demo_root, tmp_path, capsys):
    with pytest.raises(UserError, match=r"^config key 'run.name' must be at most 128 characters, not 300 \('x{20}"):
        load_config(None, ["run.name=" + "x" * 300])
    assert load_config(None, ["run.name=" + "x" * 128]).run.name == "x" * 128
    code, _, err = call_cli(capsys, "train", *_sets([*TINY, f"data.root={demo_root}", f"run.out_dir={tmp_path}",
                                                     "run.name=" + "x" * 300]))
    assert code == 1 and "at most 128 characters" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_run_folder_that_cannot_be_made_is_one_sentence(demo_root, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the runs folder should be")
    code, _, err = call_cli(capsys, "train", *_sets([*TINY, f"data.root={demo_root}", f"run.out_dir={tmp_path}/taken",
                                                     "run.name=r", "train.epochs=1"]))
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"error: cannot create the run folder {tmp_path}/taken/r: ")
