"""The Runtime: one resolution of where and how a configuration computes, which training, evaluation, the
benchmarks and the self-test all take."""

from __future__ import annotations

import torch
from conftest import SLOW_BF16

from helpers.core.config import load_config
from helpers.eval.evaluation import eval_settings
from helpers.runtime.device import Distributed
from helpers.runtime.probe import amp_name
from helpers.runtime.resolve import resolve_runtime

TINY_MODEL = ["model.depth=18", "model.width=0.125", "data.image_size=32", "train.batch_size=8"]


def test_a_runtime_holds_the_device_its_fast_path_workers_and_decoding(fake_timings):
    fake_timings(SLOW_BF16)
    cfg = load_config(overrides=TINY_MODEL + ["train.device=cpu", "data.num_workers=3", "data.decode=device"])
    runtime = resolve_runtime(cfg, dist=Distributed(rank=1, world=2))
    assert runtime.device == torch.device("cpu") and runtime.workers == 3 and runtime.decode_on_device
    assert (amp_name(runtime.fast_path.amp), runtime.fast_path.channels_last) == ("none", True)  # the probe's
    assert runtime.dist.world == 2 and not runtime.dist.main
    model = runtime.place(torch.nn.Conv2d(3, 4, 3))
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    settings = eval_settings(cfg, runtime)  # evaluation takes its device settings from the runtime
    assert (settings.device, settings.workers, settings.decode_on_device, settings.channels_last) == (
        runtime.device, 3, True, True)


def test_a_runtime_keeps_the_fast_path_of_the_checkpoint_it_continues(fake_timings):
    asked = fake_timings(SLOW_BF16)
    cfg = load_config(overrides=TINY_MODEL)
    kept = resolve_runtime(cfg, "cpu", previous={"device": "cpu", "amp": "bf16", "channels_last": False})
    assert (amp_name(kept.fast_path.amp), kept.fast_path.channels_last) == ("bf16", False) and asked == []


def test_a_training_runtime_turns_channels_last_off_where_torch_would_crash(fake_timings, capsys):
    fake_timings(SLOW_BF16)
    cfg = load_config(overrides=TINY_MODEL + ["train.batch_size=7"])  # odd batch, 8-channel shortcuts
    assert resolve_runtime(cfg, "cpu").fast_path.channels_last  # evaluation has no backward pass to crash
    assert "channels-last is off" not in capsys.readouterr().err
    assert not resolve_runtime(cfg, "cpu", training=True).fast_path.channels_last
    assert "note: channels-last is off for this run" in capsys.readouterr().err
    assert not resolve_runtime(cfg, "cpu", training=True, announce=False).fast_path.channels_last
    assert capsys.readouterr().err == ""
