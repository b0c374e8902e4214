"""Learning-rate schedules: warmup, cosine, step, multistep, plateau, and scaling over a time budget."""

from __future__ import annotations

import math

import pytest

from helpers.core.config import SchedConfig
from helpers.training.schedule import LRSchedule


def _schedule(**sched) -> LRSchedule:
    return LRSchedule(SchedConfig(**sched), base_lr=0.1, planned_epochs=10)


def test_constant_by_default():
    schedule = _schedule()
    assert schedule.lr(0.0) == schedule.lr(9.9) == 0.1


def test_linear_warmup_then_cosine_to_the_floor():
    schedule = _schedule(name="cosine", warmup_epochs=2, min_lr=0.001)
    assert schedule.lr(0.5) == pytest.approx(0.025) and schedule.lr(2.0) == pytest.approx(0.1)
    assert schedule.lr(6.0) == pytest.approx(0.001 + 0.099 * 0.5)
    assert schedule.lr(10.0) == pytest.approx(0.001) and schedule.lr(12.0) == pytest.approx(0.001)
    values = [schedule.lr(e / 10) for e in range(20, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_step_and_multistep():
    step = _schedule(name="step", step_size=3, gamma=0.5)
    assert [step.lr(e) for e in (0, 2.9, 3, 6.5)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    multi = _schedule(name="multistep", milestones=[4, 7], gamma=0.1)
    assert [multi.lr(e) for e in (3.9, 4, 7.5)] == pytest.approx([0.1, 0.01, 0.001])


def test_a_longer_budgeted_run_scales_the_schedule():
    multi = _schedule(name="multistep", milestones=[4, 7], gamma=0.1)
    assert multi.lr(5, total_epochs=20) == pytest.approx(0.1)  # milestone 4 of 10 becomes 8 of 20
    cosine = _schedule(name="cosine")
    assert cosine.lr(10, total_epochs=20) == pytest.approx(0.05)


def test_plateau_decays_after_patience_and_round_trips():
    schedule = _schedule(name="plateau", patience=1, gamma=0.5)
    for eer in (0.3, 0.2, 0.25, 0.21):
        schedule.observe(eer)
    assert schedule.lr(5) == pytest.approx(0.05)
    copy = _schedule(name="plateau", patience=1, gamma=0.5)
    copy.load_state_dict(schedule.state_dict())
    assert copy.lr(5) == schedule.lr(5) and copy.best == 0.2
    assert math.isinf(_schedule().state_dict()["best"])
