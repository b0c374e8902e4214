"""One trial of a search: a real ``train`` run in its own folder, its evaluations reported to Optuna's pruner.

The objective is a val metric of the weights best.pt holds (the term's
leaderboard metric by default: val EER, or Fall 2026's combined score), with
its bootstrap interval. A pruned trial, or one the search's clock stops, ends
after an evaluation with valid checkpoints and records; a trial whose training
fails or whose metric is not finite is recorded as failed, with its reason.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.core.errors import Stopped, UserError
from helpers.core.records import EvalMetrics, RunRecord
from helpers.tools.search_space import Dimension, override
from helpers.training.selection import RULES, resolve_select

# EvalMetrics fields a search may optimise, and which way is better.
METRICS = {"val_eer": "minimize", "val_score": "maximize", "val_auc": "maximize", "val_accuracy": "maximize",
           "dev_top1": "maximize", "dev_top5": "maximize"}
TRIALS_FOLDER = "trials"


class TrialFailed(Exception):
    """A trial that could not give a value; its reason is in the trial's ``reason`` attribute."""


def value_and_interval(metrics: EvalMetrics, metric: str) -> tuple[float | None, float | None, float | None]:
    """The metric and its 95 % bootstrap interval over the val pairs (None where not measured). The combined
    score's interval is the EER's, carried through 0.5 x (1 - EER) with dev top-1 as measured."""
    value = getattr(metrics, metric)
    low, high = metrics.val_eer_low, metrics.val_eer_high
    if metric == "val_eer":
        return value, low, high
    if metric == "val_score" and None not in (low, high, metrics.dev_top1):
        return value, 0.5 * metrics.dev_top1 + 0.5 * (1 - high), 0.5 * metrics.dev_top1 + 0.5 * (1 - low)
    return value, None, None


@dataclass
class TrialPlan:
    """What every trial of a search shares: the config, the --set overrides (with the trial budget), the space,
    the metric and the folder; the base config's values (``base``); the search's deadline (epoch seconds; stop
    after the evaluation past it)."""

    config: str | None
    overrides: list[str]
    dimensions: list[Dimension]
    metric: str
    folder: Path
    group: str
    base: dict = field(default_factory=dict)
    deadline: float = math.inf


@dataclass
class _Heard:
    """What a trial's evaluations told it."""

    trainer: object = None
    steps: set = field(default_factory=set)
    pruned: bool = False
    out_of_time: bool = False


def trial_overrides(plan: TrialPlan, params: dict, name: str) -> list[str]:
    return [*plan.overrides, *(override(key, value) for key, value in params.items()),
            f"run.out_dir={plan.folder / TRIALS_FOLDER}", f"run.name={name}", f"tracking.wandb.group={plan.group}"]


def run_trial(trial, plan: TrialPlan) -> float:
    """Train one trial and return its value; raises ``optuna.TrialPruned`` or :class:`TrialFailed`."""
    import optuna

    from helpers.training.engine import train

    params = {dimension.key: dimension.suggest(trial) for dimension in plan.dimensions}
    name = f"trial_{trial.number:04d}"
    trial.set_user_attr("run", f"{TRIALS_FOLDER}/{name}")
    heard = _Heard()

    def hear(trainer, record: RunRecord) -> None:
        heard.trainer = trainer
        value = getattr(record.metrics(_chosen_weights(trainer)), plan.metric)
        step = math.ceil(record.epoch - 1e-9)
        if record.epoch == 0 or value is None or step in heard.steps or not math.isfinite(value):
            return
        heard.steps.add(step)
        trial.report(value, step)
        if trial.should_prune():
            heard.pruned = True
            trainer.request_stop()
        elif time.time() > plan.deadline:
            heard.out_of_time = True
            trainer.request_stop()

    started = time.perf_counter()
    try:
        result = train(plan.config, trial_overrides(plan, params, name), on_evaluation=hear)
    except KeyboardInterrupt:  # the user stops the search: this trial's values run again when it resumes
        interrupt(trial.study, trial, "interrupted by the user; its values run again")
        raise
    except Stopped as stop:  # SIGTERM or SIGUSR1 (Slurm's warning, a VM going away) stops the search, not a trial
        name = signal.Signals(stop.status - 128).name
        interrupt(trial.study, trial, f"interrupted by {name}; its values run again")
        raise Stopped(f"search stopped by {name} during trial {trial.number}; the same command resumes the study "
                      "and runs that trial's values again", stop.status) from None
    except (Exception, SystemExit) as error:  # noqa: BLE001 - any failure of one trial leaves the search going
        reason = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
        _fail(trial, reason.splitlines()[0] if reason else type(error).__name__)
    _record(trial, heard, result, time.perf_counter() - started, plan.metric)
    value = trial.user_attrs.get("value")
    if heard.pruned:
        raise optuna.TrialPruned()
    if heard.out_of_time:
        _fail(trial, "the search's --hours ran out during it (stopped after an evaluation; its checkpoints are "
                     "valid)")
    if value is None or not math.isfinite(value):
        _fail(trial, f"its val {plan.metric} is not finite (the training diverged or measured nothing)")
    return value


KILLS_ALLOWED = 1  # values whose trial was killed without a word (kill -9, out of memory, a machine lost) once run
# again; killed a second time, they are failed: a space value that gets the process killed would otherwise be
# run first by every sitting, and kill it every time.
_GIVEN_UP = "given up: trial "  # the study's user attribute naming such a trial, with why


def interrupt(study, trial, reason: str, killed: bool = False) -> bool:
    """The one way a trial is marked interrupted (Ctrl-C or a stop signal, a search killed, a machine gone
    silent): its values, the base recipe's mark with them, are queued to run again, and the queued trial names
    it and why. The mark lives on the queued trial because a lost machine's trial is already failed when Optuna
    reports it, and a finished trial takes no more attributes. Values killed more than KILLS_ALLOWED times are
    not queued again; the study keeps why (False is returned)."""
    kills = trial.user_attrs.get("kills", 0) + killed
    if kills > KILLS_ALLOWED:
        study.set_user_attr(f"{_GIVEN_UP}{trial.number}", f"killed {kills} times while training these values (out "
                            "of memory? the process or its machine was lost each time); not run again")
        return False
    attrs = {"rerun_of": trial.number, "rerun_reason": reason} | ({"kills": kills} if kills else {})
    if trial.user_attrs.get("base"):
        attrs["base"] = True
    study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)
    return True


def interrupted(study) -> dict[int, str]:
    """The study's interrupted trials, by number, with the reason: they count for nothing (their values ran again).
    Studies written before the mark moved to the queued trial carry it on the trial itself."""
    trials = study.get_trials(deepcopy=False)
    marked = {t.number: t.user_attrs.get("reason", "interrupted") for t in trials if t.user_attrs.get("interrupted")}
    return marked | {t.user_attrs["rerun_of"]: t.user_attrs.get("rerun_reason", "interrupted") for t in trials
                     if isinstance(t.user_attrs.get("rerun_of"), int)}


def given_up(study) -> dict[int, str]:
    """Trials failed because their values were killed too often (see interrupt), by number, with the reason."""
    return {int(key.removeprefix(_GIVEN_UP)): reason for key, reason in study.user_attrs.items()
            if key.startswith(_GIVEN_UP) and key.removeprefix(_GIVEN_UP).isdigit()}


def _chosen_weights(trainer) -> str:
    return RULES[resolve_select(trainer.cfg.train)][0]


def _record(trial, heard: _Heard, result, seconds: float, metric: str) -> None:
    """The trial's numbers as user attributes: value and interval of what best.pt holds, epochs, minutes,
    images/s."""
    chosen = heard.trainer.selection.chosen if heard.trainer is not None else None
    if chosen is not None:
        for key, number in zip(("value", "value_low", "value_high"), value_and_interval(chosen.measured, metric)):
            if number is not None and math.isfinite(number):
                trial.set_user_attr(key, float(number))
    trial.set_user_attr("epochs", float(result.epochs))
    trial.set_user_attr("minutes", round(seconds / 60, 3))
    trained = result.last.trained if result.last is not None else None
    speeds = [trained.images_per_s] if trained is not None and trained.images_per_s is not None else []
    if speeds and math.isfinite(speeds[0]):
        trial.set_user_attr("images_per_s", round(float(speeds[0]), 1))


def _fail(trial, reason: str) -> None:
    trial.set_user_attr("reason", reason)
    raise TrialFailed(reason)
