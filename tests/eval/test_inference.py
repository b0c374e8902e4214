"""A trained checkpoint's model ready to embed (load_trained): the precision its run recorded where the device
matches, fp32 elsewhere, and never the timed probe, which times training steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import call_cli
from helpers.eval.inference import load_trained
from helpers.runtime.probe import amp_name


def _recorded(trained_run: Path, folder: Path, device: str, amp: str, channels_last: bool) -> Path:
    """best.pt of the trained run, as if trained on ``device`` under (``amp``, ``channels_last``) with both left to
    ``auto`` (the trained run set them, which leaves nothing to choose), in a run folder of its own."""
    state = torch.load(trained_run / "best.pt", weights_only=True)
    state["config"]["train"].update(amp="auto", channels_last="auto")
    state["fast_path"] = {**state["fast_path"], "device": device, "amp": amp, "channels_last": channels_last}
    folder.mkdir()
    torch.save(state, folder / "best.pt")
    return folder / "best.pt"


@pytest.fixture
def probes(monkeypatch) -> list:
    """The calls of the timed probe from here on, wherever it is asked for."""
    from helpers.runtime import fast_path, probe, resolve

    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the timed probe ran")

    for module in (probe, fast_path, resolve):
        monkeypatch.setattr(module, "speed_probe", counted)
    return calls


def test_inference_keeps_the_recorded_precision_on_its_device_and_takes_fp32_elsewhere(trained_run, tmp_path,
                                                                                       probes):
    here = load_trained(_recorded(trained_run, tmp_path / "cpu", "cpu", "bf16", False), "cpu")
    assert (amp_name(here.settings.amp), here.settings.channels_last) == ("bf16", False)
    elsewhere = load_trained(_recorded(trained_run, tmp_path / "gpu", "cuda", "bf16", True), "cpu")
    assert (amp_name(elsewhere.settings.amp), elsewhere.settings.channels_last) == ("none", False)
    assert elsewhere.run_dir == tmp_path / "gpu" and elsewhere.checkpoint.weights == "raw" and probes == []


def test_no_command_on_a_checkpoint_from_another_device_times_the_probe(trained_run, demo_root, tmp_path, capsys,
                                                                        probes):
    checkpoint = _recorded(trained_run, tmp_path / "gpu", "cuda", "bf16", True)
    a, b = sorted((demo_root / "ver_data").iterdir())[:2]
    cpu = ["--device", "cpu"]  # export runs on the CPU always
    commands = {"evaluate": ["evaluate", "--checkpoint", checkpoint, "--json", *cpu],
                "submit": ["submit", "--checkpoint", checkpoint, "--out", tmp_path / "s.csv", *cpu],
                "export": ["export", "--checkpoint", checkpoint, "--out", tmp_path / "m.onnx"],
                "verify": ["verify", "--checkpoint", checkpoint, a, b, *cpu],
                "embed": ["embed", "--checkpoint", checkpoint, demo_root / "ver_data", "--out", tmp_path / "e.npz",
                          *cpu]}
    outputs = {}
    for name, args in commands.items():
        code, outputs[name], err = call_cli(capsys, *args)
        assert code == 0 and probes == [], (name, err)
    assert 0.0 <= json.loads(outputs["evaluate"])["eer"] <= 1.0
