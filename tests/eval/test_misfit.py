"""A checkpoint whose weights do not fit its own configuration or class list is refused in one sentence."""

from __future__ import annotations

import pytest
from conftest import call_cli

from helpers.model.checkpoint import load_checkpoint, save_checkpoint, weights_misfit
from helpers.model.resnet import build_face_model


@pytest.mark.parametrize("edit,words", [
    (lambda state: state["config"]["model"].update(depth=34), "backbone.layer1.2.conv1.weight is missing from the file"),
    (lambda state: state.update(classes=state["classes"][:-1]), "head.weight is [12, 512] in the file but [11, 512]"),
], ids=["config", "classes"])
def test_evaluate_refuses_weights_that_do_not_fit_the_checkpoints_own_model(trained_run, tmp_path, capsys, edit,
                                                                           words):
    state = load_checkpoint(trained_run / "best.pt")
    edit(state)
    save_checkpoint(state, tmp_path / "edited.pt")
    for command in ("evaluate", "submit"):
        code, _, err = call_cli(capsys, command, "--checkpoint", tmp_path / "edited.pt", "--out" if command == "submit"
                                else "--bootstrap", tmp_path / "s.csv" if command == "submit" else 0)
        assert code == 1 and "Traceback" not in err and len(err.splitlines()) == 1
        assert f"the weights in {tmp_path / 'edited.pt'} do not fit the model that its own configuration" in err
        assert words in err
    assert not (tmp_path / "s.csv").exists()


def test_weights_misfit_names_the_first_difference_and_counts_the_rest(trained_run):
    from helpers.core.config import load_config

    state = load_checkpoint(trained_run / "best.pt")
    model = build_face_model(load_config(base=state["config"]), len(state["classes"]))
    assert weights_misfit(model, state["model"]) is None
    weights = dict(state["model"], extra=state["model"]["head.weight"])
    del weights["embedding.0.weight"]
    assert weights_misfit(model, weights) == ("embedding.0.weight is missing from the file (and 1 more "
                                              "differences)")
