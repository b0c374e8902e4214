"""The fast path: `auto` follows the timed probe on the CPU, keeps its order on CUDA, never overrides a set value."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from conftest import FAST_BF16, SLOW_BF16

from helpers.core.config import load_config
from helpers.runtime import probe as probe_module
from helpers.runtime.fast_path import fast_path
from helpers.runtime.resolve import Runtime

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)
TINY_MODEL = ["model.depth=18", "model.width=0.125", "data.image_size=32", "train.batch_size=8"]


@pytest.fixture(autouse=True)
def fresh_decisions():
    """The decisions are cached per process: each test starts from, and leaves, a clean cache."""
    for cache in (probe_module.probe_problem, probe_module.timed_probe):
        cache.cache_clear()
    yield
    for cache in (probe_module.probe_problem, probe_module.timed_probe):
        cache.cache_clear()


def chosen(fast) -> tuple:
    return probe_module.amp_name(fast.amp), fast.channels_last


def test_bf16_is_taken_on_the_cpu_when_the_probe_finds_it_faster(fake_timings):
    asked = fake_timings(FAST_BF16)
    fast = fast_path(load_config(overrides=TINY_MODEL), CPU)
    assert chosen(fast) == ("bf16", True) and fast.amp == torch.bfloat16
    assert sorted(asked[0]) == sorted(FAST_BF16)  # every pair of the two auto settings was timed
    verdicts = fast.describe()["probe"]["verdicts"]
    assert "bf16: 2.20x faster here, taken" in verdicts and "channels-last: 1.22x faster here, taken" in verdicts
    assert fast.sentence() == ("fast path: autocast bf16, channels-last (timed probe: bf16: 2.20x faster here, "
                                "taken; channels-last: 1.22x faster here, taken)")


def test_fp32_stays_on_the_cpu_when_bf16_is_slower(fake_timings):
    fake_timings(SLOW_BF16)
    fast = fast_path(load_config(overrides=TINY_MODEL), CPU)
    assert chosen(fast) == ("none", True) and fast.amp is None
    probe = fast.describe()["probe"]
    assert "bf16: 0.40x here, not taken" in probe["verdicts"] and probe["decided"]
    assert probe["images_per_s"] == {"bf16 channels-last": 40.0, "bf16 NCHW": 30.0, "fp32 channels-last": 100.0,
                                     "fp32 NCHW": 80.0}


@pytest.mark.parametrize("rates,expected", [
    # bf16 faster, but not by the margin: fp32 stays
    ({("bf16", True): 105.0, ("bf16", False): 84.0, ("none", True): 100.0, ("none", False): 80.0}, ("none", True)),
    # channels-last a little slower: it stays (the default), NCHW must be the margin faster to be taken
    ({("bf16", True): 40.0, ("bf16", False): 30.0, ("none", True): 96.0, ("none", False): 100.0}, ("none", True)),
    ({("bf16", True): 40.0, ("bf16", False): 30.0, ("none", True): 80.0, ("none", False): 100.0}, ("none", False)),
    # bf16 pays only in NCHW: the fastest pair whose every change from the default pays for itself
    ({("bf16", True): 90.0, ("bf16", False): 150.0, ("none", True): 100.0, ("none", False): 95.0}, ("bf16", False)),
])
def test_a_change_from_the_default_is_taken_only_when_faster_by_the_margin(fake_timings, rates, expected):
    fake_timings(rates)
    assert chosen(fast_path(load_config(overrides=TINY_MODEL), CPU)) == expected


def test_the_margin_is_named_when_a_faster_choice_is_not_taken(fake_timings):
    fake_timings({("bf16", True): 105.0, ("bf16", False): 84.0, ("none", True): 100.0,
                               ("none", False): 80.0})
    verdicts = fast_path(load_config(overrides=TINY_MODEL), CPU).describe()["probe"]["verdicts"]
    assert "bf16: 1.05x faster here, not taken (under the 1.1x margin)" in verdicts


def test_a_fast_choice_whose_loss_is_not_finite_is_not_taken(fake_timings):
    fake_timings(FAST_BF16, not_finite=[("bf16", True), ("bf16", False)])
    fast = fast_path(load_config(overrides=TINY_MODEL), CPU)
    assert chosen(fast) == ("none", True)
    assert fast.describe()["probe"]["not_finite"] == {"bf16 channels-last": "the loss was not finite",
                                                       "bf16 NCHW": "the loss was not finite"}


@pytest.mark.parametrize("rates", [FAST_BF16, SLOW_BF16], ids=["fast bf16", "slow bf16"])
@pytest.mark.parametrize("amp,layout", [("none", True), ("none", False), ("bf16", True), ("bf16", False)])
def test_a_set_value_is_never_overridden(fake_timings, rates, amp, layout):
    asked = fake_timings(rates)
    cfg = load_config(overrides=TINY_MODEL + [f"train.amp={amp}", f"train.channels_last={str(layout).lower()}"])
    assert chosen(fast_path(cfg, CPU)) == (amp, layout)
    assert asked == []  # nothing left to decide: no probe, no start-up cost


@pytest.mark.parametrize("rates", [FAST_BF16, SLOW_BF16], ids=["fast bf16", "slow bf16"])
@pytest.mark.parametrize("setting,index", [("train.amp=none", 0), ("train.amp=bf16", 0),
                                           ("train.channels_last=true", 1), ("train.channels_last=false", 1)])
def test_one_set_value_stays_while_the_probe_decides_the_other(fake_timings, rates, setting, index):
    asked = fake_timings(rates)
    value = setting.split("=")[1]
    fast = fast_path(load_config(overrides=TINY_MODEL + [setting]), CPU)
    assert str(chosen(fast)[index]).lower() == value
    assert {pair[index] for pair in asked[0]} == {value if index == 0 else value == "true"}  # only it was timed


def test_the_probe_runs_once_per_process_and_model_shape(fake_timings):
    asked = fake_timings(FAST_BF16)
    cfg = load_config(overrides=TINY_MODEL)
    assert fast_path(cfg, CPU) == fast_path(cfg, CPU)
    assert len(asked) == 1
    fast_path(load_config(overrides=TINY_MODEL + ["model.width=0.25"]), CPU)
    assert len(asked) == 2


def test_a_resume_keeps_the_choice_its_run_trained_with(fake_timings):
    asked = fake_timings(SLOW_BF16)
    cfg = load_config(overrides=TINY_MODEL)
    kept = fast_path(cfg, CPU, previous={"device": "cpu", "amp": "bf16", "channels_last": False})
    assert chosen(kept) == ("bf16", False) and asked == []
    # trained on a GPU: this CPU decides for itself
    elsewhere = fast_path(cfg, CPU, previous={"device": "cuda", "amp": "bf16", "channels_last": True})
    assert chosen(elsewhere) == ("none", True) and len(asked) == 1
    # a value set now wins over the checkpoint's
    set_now = fast_path(load_config(overrides=TINY_MODEL + ["train.amp=none"]), CPU,
                        previous={"device": "cpu", "amp": "bf16", "channels_last": True})
    assert chosen(set_now)[0] == "none"


def test_cuda_keeps_its_order_and_its_timing_is_reported_beside_it(fake_timings, monkeypatch):
    """No GPU needed: the kernels probe as working, and the timing says fp32 would be faster."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(probe_module, "_probe_steps", lambda *args: None)
    monkeypatch.setattr(probe_module, "own_rng", lambda device: nullcontext())  # no CUDA generator here
    rates = {(amp, layout): 100.0 if amp == "none" else 50.0 for amp in ("bf16", "fp16", "none")
             for layout in (True, False)}
    asked = fake_timings(rates)
    cfg = load_config(overrides=TINY_MODEL)
    fast = fast_path(cfg, CUDA)
    assert chosen(fast) == ("bf16", True) and fast.fused and asked == []  # the order, no probe at start
    probe = Runtime(CUDA, fast, 0, False).describe_fast_path(cfg)["probe"]
    assert not probe["decided"] and len(asked) == 1
    assert "bf16: 0.50x here, taken" in probe["verdicts"] and "fp16: 0.50x here, not taken" in probe["verdicts"]
