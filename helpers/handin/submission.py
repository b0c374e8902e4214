"""The Kaggle submission: one row per test pair in file order, checked before it is written.

``scores`` (the default, what the course's EER leaderboard reads): header
``ID,Label``, ``Label`` the raw cosine similarity (or its AS-norm, when asked:
the leaderboard ranks scores, so any scale is valid). ``binary`` (the format the
assignment summary describes): header ``id,predicted``, 1 = same person,
thresholded at the val EER threshold stored with the checkpoint.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core import kaggle
from helpers.core.errors import UserError, printable
from helpers.core.io import atomic_write_text, output_file
from helpers.eval.metrics import compute_eer
from helpers.eval.score_norm import ScoreNorm, norm_words

FORMATS = {"scores": ("ID", "Label"), "binary": ("id", "predicted")}


@dataclass
class SubmissionResult:
    """What ``submit`` wrote, and what it knows about the file's quality."""

    path: Path
    rows: int
    format: str
    threshold: float | None = None
    classification_path: Path | None = None
    test_eer: float | None = None
    score_norm: dict = field(default_factory=lambda: {"method": "none"})
    messages: list[str] = field(default_factory=list)


def submission_frame(values, fmt: str = "scores", expected_rows: int | None = None) -> pd.DataFrame:
    """The submission table, refusing anything a leaderboard would reject or misread.

    Checks: the row count equals the number of test pairs, IDs run 0..N-1 in
    order, and every value is finite (and 0/1 in the binary format).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown submission format '{fmt}'; use scores or binary")
    values = np.asarray(values, dtype=np.float64).ravel()
    if expected_rows is not None and values.size != expected_rows:
        raise UserError(f"the submission has {values.size} rows but test_pairs.txt has {expected_rows} pairs")
    if values.size == 0:
        raise UserError("the submission would be empty")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise UserError(f"{bad.size} value(s) are NaN or infinite (first at ID {bad[0]}); refusing to write them")
    id_name, value_name = FORMATS[fmt]
    if fmt == "binary" and not np.isin(values, (0, 1)).all():
        raise UserError("the binary format takes only 0 and 1")
    column = values.astype(np.int64) if fmt == "binary" else values
    return pd.DataFrame({id_name: np.arange(values.size), value_name: column})


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV atomically."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.8f")
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def read_submission(path: str | Path) -> tuple[str, np.ndarray]:
    """A submission CSV's format and values, with its IDs checked."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise UserError(f"cannot read submission {path}: {error}") from None
    for fmt, columns in FORMATS.items():
        if list(frame.columns) == list(columns):
            ids = frame[columns[0]].to_numpy()
            if not np.array_equal(ids, np.arange(len(frame))):
                raise UserError(f"{path}: the {columns[0]} column must run 0..{len(frame) - 1} in order")
            return fmt, frame[columns[1]].to_numpy(dtype=np.float64)
    raise UserError(f"{path} has columns {list(frame.columns)}; expected ID,Label or id,predicted")


def score_submission(path: str | Path, answers: str | Path) -> float:
    """The EER a leaderboard would give a submission, from an answer key of one 0/1 per line."""
    _, values = read_submission(path)
    try:
        labels = np.loadtxt(answers, dtype=np.int64, ndmin=1, encoding="utf-8-sig")
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the answer key {answers}: {printable(str(error))}") from None
    if labels.size != values.size:
        raise UserError(f"{path} has {values.size} rows but {answers} has {labels.size} labels")
    return compute_eer(values, labels)[0]


def make_submission(checkpoint: str | Path, out: str | Path = "submission.csv", data_root: str | Path | None = None,
                    fmt: str = "scores", tta: bool = False, device: str = "auto", kaggle_competition: str | None = None,
                    message: str = "hw2p2 helpers submission", progress: bool = False,
                    weights: str | None = None, score_norm: ScoreNorm = ScoreNorm()) -> SubmissionResult:
    """Score ``test_pairs.txt`` with a checkpoint and write the submission (and class predictions when there is a test split).

    ``weights`` (raw or ema) overrides which of the checkpoint's weights are used.
    """
    from helpers.data.layout import answer_key_path
    from helpers.eval.evaluation import open_checkpoint, score_pairs, stored_threshold, verify_pairs

    out = output_file(out)  # refused before the scoring, not after it
    model, state, data, settings = open_checkpoint(checkpoint, data_root, device, tta, progress=progress,
                                                   weights=weights, score_norm=score_norm)
    if not data.test_pairs:
        raise UserError(f"{data.root} has no test_pairs.txt to submit on")
    scores, skipped = score_pairs(model, data, data.test_pairs, settings, desc="test pairs")
    if skipped:
        raise UserError(f"cannot score every test pair: {skipped[0].path}: {skipped[0].reason} "
                        f"({len(skipped)} unreadable image(s)); fix the data and submit again")
    result = SubmissionResult(Path(out), len(scores), fmt, score_norm=score_norm.describe(model.head))
    values = scores
    if fmt == "binary":
        stored = stored_threshold(state, settings)
        if stored is None:  # the threshold must match how the scores are made: find it again on the val pairs
            stored = verify_pairs(model, data, settings)["threshold"]
        result.threshold = float(stored)
        values = (scores >= result.threshold).astype(np.int64)
    write_frame(submission_frame(values, fmt, expected_rows=len(data.test_pairs)), out)
    answers = answer_key_path(data.root)
    if fmt == "scores" and answers.is_file():
        result.test_eer = score_submission(out, answers)
        result.messages.append(f"test EER {result.test_eer:.4f} (scored with the answer key {answers})")
    if data.test is not None and data.test.paths:
        result.classification_path = _classification_file(out)
        _write_class_predictions(model, state, data, settings, result.classification_path)
    if kaggle_competition:
        result.messages.append(kaggle.submit(out, kaggle_competition, message))
    return result


def _classification_file(out: Path) -> Path:
    """Where the class predictions of a test split go, beside the submission ``out``."""
    return out.with_name(out.stem + "_classification.csv")


def _write_class_predictions(model, state, data, settings, path: Path) -> None:
    """``ID,Label`` per test image: its file name and the predicted class id, in the data's own ids."""
    import torch

    from helpers.eval.evaluation import embed_images

    embeddings, skipped = embed_images(model, data.test.paths, settings, desc="test images", reader=data.reader)
    if skipped:
        raise UserError(f"cannot classify every test image: {skipped[0].path}: {skipped[0].reason}")
    with torch.no_grad():
        predicted = model.head.cosine(embeddings.to(settings.device)).argmax(dim=1).cpu().tolist()
    frame = pd.DataFrame({"ID": [p.name for p in data.test.paths], "Label": [state["classes"][i] for i in predicted]})
    write_frame(frame, path)


def describe(result: SubmissionResult) -> list[str]:
    norm = norm_words(result.score_norm)
    lines = [f"wrote {result.path}: {result.rows} rows ({result.format} format" + (f", {norm}" if norm else "")
             + (f", threshold {result.threshold:.4f})" if result.threshold is not None else ")")]
    if result.classification_path:
        lines.append(f"wrote {result.classification_path} (class predictions for the test split)")
    return lines + result.messages


def as_json(result: SubmissionResult) -> str:
    return json.dumps({"path": str(result.path), "rows": result.rows, "format": result.format,
                       "threshold": result.threshold, "test_eer": result.test_eer, "score_norm": result.score_norm,
                       "classification_path": str(result.classification_path) if result.classification_path else None,
                       "messages": result.messages}, indent=2)
