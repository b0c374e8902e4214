"""The timed probe: the stand-in it trains, how it chooses among what it measured, the random state it leaves."""

from __future__ import annotations

import torch
from conftest import FAST_BF16

from helpers.core.config import load_config
from helpers.runtime.probe import Measured, choose_timed, probe_shape, timed_probe

CPU = torch.device("cpu")
TINY_MODEL = ["model.depth=18", "model.width=0.125", "data.image_size=32", "train.batch_size=8"]


def test_choose_timed_uses_the_screen_for_candidates_dropped_early():
    measured = (Measured("bf16", True, 10.0, None), Measured("bf16", False, 8.0, None),
                Measured("none", True, 40.0, 100.0), Measured("none", False, 38.0, 80.0))
    assert choose_timed(measured, ("none", True)) == ("none", True)
    # a candidate that ran the timed rounds is compared with a dropped one by their screening rates
    measured = (Measured("bf16", True, 90.0, 300.0), Measured("bf16", False, 20.0, None),
                Measured("none", True, 40.0, 100.0), Measured("none", False, 30.0, 80.0))
    assert choose_timed(measured, ("none", True)) == ("bf16", True)


def test_the_stand_in_follows_the_configured_model_and_its_batch_shrinks_with_its_cost():
    starter = probe_shape(load_config())
    fast = probe_shape(load_config("fast"))
    assert starter.widths == (64, 128, 256, 512) and fast.widths == (32, 64, 128, 256)
    assert (starter.stem, starter.image_size, starter.optimizer, fast.optimizer) == ("imagenet", 112, "sgd", "adamw")
    assert 2 <= starter.batch < fast.batch <= 64  # a wider model gets fewer images per probe step
    assert probe_shape(load_config(overrides=["model.depth=50"])).bottleneck
    assert probe_shape(load_config(overrides=TINY_MODEL)).batch == 8  # never more than train.batch_size


def test_the_real_probe_times_every_candidate_and_leaves_the_random_state():
    shape = probe_shape(load_config(overrides=TINY_MODEL))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    timing = timed_probe(CPU, ("bf16", "none"), (True, False), shape)
    assert torch.equal(torch.rand(3), expected)
    assert {(m.amp, m.channels_last) for m in timing.measured} == set(FAST_BF16)
    assert all(m.screen > 0 and m.problem is None for m in timing.measured)
    assert any(m.timed for m in timing.measured) and timing.chosen in set(FAST_BF16)
    assert all(m.spread >= 1 for m in timing.measured) and not timing.cached  # measured here, its rounds compared
    assert timing.default == ("none", True)
