"""What a run records, declared once: one evaluation of one set of weights (:class:`EvalMetrics`), what a
span of training measured (:class:`EpochStats`), and one line of a run's ``metrics.jsonl`` (:class:`RunRecord`).

A line's keys are these fields' names: an evaluation of the trained weights as they are (``val_eer``), one of
their moving average with the suffix of those weights (``val_eer_ema``). The Trainer writes lines through
:meth:`RunRecord.as_line`; tracking, the report, the plots, the selection of best.pt and the hand-in read them
through :meth:`RunRecord.from_line`, so that a key is spelt in this module only; where a key is itself shown
(a report's column, a W&B summary, selection.json) it is taken from :func:`field_keys`. A line written before a
field existed reads with that field None.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from helpers.core.io import read_metrics

WEIGHTS = ("raw", "ema")  # the trained weights, and their moving average (train.ema)


def weights_suffix(weights: str) -> str:
    """What follows an evaluation's keys for ``weights``: nothing for the trained ones, ``_ema`` for the average."""
    return "" if weights == "raw" else f"_{weights}"


def jsonable(value):
    """``value`` as JSON holds it: a float that is not finite becomes null, in nested dicts too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value


def field_keys(record_type, weights: str = "raw"):
    """A ``record_type`` (:class:`EvalMetrics` or :class:`EpochStats`) whose every field holds its own key in a
    line, for ``weights``: ``field_keys(EvalMetrics, "ema").val_eer == "val_eer_ema"``. A reader or a table that
    shows a key spells it as an attribute, so a mistyped name fails at once instead of reading None."""
    return record_type(**{item.name: item.name + weights_suffix(weights)
                          for item in dataclasses.fields(record_type)})


@dataclass(frozen=True)
class EvalMetrics:
    """One set of weights at one evaluation; None where it was not measured. On the val pairs: the EER with its
    bootstrap 95 % interval, AUC, best accuracy, the EER threshold, TAR at each FAR, the pairs left out because
    an image could not be read; the margin head's dev top-1 and top-5; the combined score of dev top-1 and val
    EER (Fall 2026's leaderboard metric)."""

    val_eer: float | None = None
    val_auc: float | None = None
    val_accuracy: float | None = None
    val_threshold: float | None = None
    val_tar_at_far: dict | None = None
    val_eer_low: float | None = None
    val_eer_high: float | None = None
    val_unscored_pairs: int | None = None
    dev_top1: float | None = None
    dev_top5: float | None = None
    val_score: float | None = None

    def as_dict(self, suffix: str = "") -> dict:
        """The measured fields by key (each followed by ``suffix``), in the order declared above."""
        return {item.name + suffix: getattr(self, item.name) for item in dataclasses.fields(self)
                if getattr(self, item.name) is not None}

    @classmethod
    def from_dict(cls, values: dict, suffix: str = "") -> EvalMetrics:
        """The fields ``values`` holds under their keys followed by ``suffix``; other keys are not ours."""
        return cls(**{item.name: values.get(item.name + suffix) for item in dataclasses.fields(cls)})

    @classmethod
    def from_measures(cls, **sections) -> EvalMetrics:
        """The fields read from typed results by name: ``<section>_<name>`` is ``sections[section].<name>``
        (``val=`` a verification gives ``val_eer`` its ``eer``), None where a section was not measured (None) or
        has no such attribute."""
        values = {}
        for item in dataclasses.fields(cls):
            section, name = item.name.split("_", 1)
            values[item.name] = getattr(sections.get(section), name, None)
        return cls(**values)

    @property
    def measured(self) -> bool:
        return bool(self.as_dict())


KEYS = field_keys(EvalMetrics)  # the keys of the trained weights' numbers, for files that show them by name


@dataclass(frozen=True)
class EpochStats:
    """What a span of training measured: the mean loss and accuracy of its batches, the mean gradient norm of
    its optimiser steps, images per second, the share of its time spent waiting for data, and the lr at its end."""

    train_loss: float | None = None
    train_acc: float | None = None
    grad_norm: float | None = None
    images_per_s: float | None = None
    data_wait: float | None = None
    lr: float | None = None


@dataclass(frozen=True)
class RunRecord:
    """One line of metrics.jsonl: where the run stood (fractional epoch, optimiser steps), what the span of
    training before it measured (None for the evaluation before training), the run's counts of skipped steps and
    unreadable images so far, the metrics of each set of weights evaluated (``by_weights``; ``evaluated``: whether
    this line evaluated), when (seconds into the run, resumes included, and the wall-clock time), and which run
    wrote it (its id, kept across resumes, by which a resume tells its own records from another run's)."""

    epoch: float | None
    step: int | None = None
    trained: EpochStats | None = None
    nonfinite_steps: int | None = None
    skipped_images: int | None = None
    by_weights: dict[str, EvalMetrics] = field(default_factory=dict)
    evaluated: bool = False
    elapsed_s: float | None = None
    time: str | None = None
    run_id: str | None = None

    def metrics(self, weights: str = "raw") -> EvalMetrics:
        """The evaluation of ``weights`` in this line (nothing measured when they were not evaluated)."""
        return self.by_weights.get(weights, EvalMetrics())

    def as_line(self) -> dict:
        """The line as JSON holds it, keys in the order the file has always had; not-finite numbers are null.

        A span of training writes every one of its fields (null where it measured none, as a span without
        batches does); an evaluation writes the fields it measured."""
        line = _present(epoch=self.epoch, step=self.step)
        if self.trained is not None:
            line.update(dataclasses.asdict(self.trained))
        line.update(_present(nonfinite_steps=self.nonfinite_steps, skipped_images=self.skipped_images))
        for weights in WEIGHTS:
            line.update(self.metrics(weights).as_dict(weights_suffix(weights)))
        if self.evaluated:
            line["evaluated"] = True
        line.update(_present(elapsed_s=self.elapsed_s, time=self.time, run_id=self.run_id))
        return jsonable(line)

    def to_json(self) -> str:
        return json.dumps(self.as_line())

    @classmethod
    def from_line(cls, line: dict) -> RunRecord:
        """A line read back; a field it lacks (a line written before the field existed) is None, and so is a
        number written as null (it was not finite), so that a null of one set of weights reads as not measured."""
        stats = [item.name for item in dataclasses.fields(EpochStats)]
        measured = {weights: EvalMetrics.from_dict(line, weights_suffix(weights)) for weights in WEIGHTS}
        return cls(epoch=line.get("epoch"), step=line.get("step"),
                   trained=EpochStats(**{name: line.get(name) for name in stats})
                   if any(name in line for name in stats) else None,
                   nonfinite_steps=line.get("nonfinite_steps"), skipped_images=line.get("skipped_images"),
                   by_weights={weights: metrics for weights, metrics in measured.items() if metrics.measured},
                   evaluated=bool(line.get("evaluated", False)), elapsed_s=line.get("elapsed_s"),
                   time=line.get("time"), run_id=line.get("run_id"))


def _present(**values) -> dict:
    """The given keys whose values are not None, in the order given."""
    return {key: value for key, value in values.items() if value is not None}


def record_lines(path: str | Path) -> list[dict]:
    """The lines of a ``metrics.jsonl`` as JSON objects, as written: a half-written last line (from a kill), or
    any line that is not a JSON object, is ignored."""
    return [line for line in read_metrics(path) if isinstance(line, dict)]


def read_records(path: str | Path) -> list[RunRecord]:
    """The records of a ``metrics.jsonl`` (a half-written last line, from a kill, is ignored)."""
    return [RunRecord.from_line(line) for line in record_lines(path)]
