"""The Kaggle submission, checked before it is written.

When the data root (or ``--sample``) has the competition's
``sample_submission.csv``, the submission has exactly its header and its IDs in
its order (see :mod:`helpers.handin.sample`): test-pair scores and test-image
class ids in one file, as Fall 2026's unified board asks. Without one, one row
per test pair in file order, in one of two formats, and the test split's class
predictions in a second file beside it:

``scores`` (the default, what the course's EER leaderboard reads): header
``ID,Label``, ``Label`` the raw cosine similarity (or its AS-norm, when asked:
the leaderboard ranks scores, so any scale is valid). ``binary`` (the format the
assignment summary describes): header ``id,predicted``, 1 = same person,
thresholded at the val EER threshold stored with the checkpoint.

``submit --kaggle`` sends the file to the term's competition with the
description the term asks for: Fall 2026's ``|WB=<entity>/<project>/<run_id>``
names the W&B run that trained the checkpoint, which the hand-in then exports.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from helpers.core.errors import UserError, printable
from helpers.core.io import atomic_write, output_file
from helpers.core.terms import Term, combined_score, get_term
from helpers.data.layout import is_int
from helpers.eval.metrics import compute_eer
from helpers.eval.results import LeaderboardScore
from helpers.eval.score_norm import ScoreNorm, norm_words
from helpers.handin import kaggle as kaggle_tool
from helpers.handin.exports import wandb_entity
from helpers.handin.sample import find_sample, read_rows, read_sample

if TYPE_CHECKING:  # torch loads only when a checkpoint is scored
    from helpers.data.layout import FaceData
    from helpers.eval.inference import TrainedModel
    from helpers.model.checkpoint import Checkpoint

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
    sample: Path | None = None  # the sample_submission.csv the file follows
    pair_rows: int = 0  # rows of a sample-shaped file that are test pairs, and test images
    image_rows: int = 0
    test_score: float | None = None  # the combined score, when the answers to both tasks are at hand
    description: str | None = None  # what the Kaggle submission was described as


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


def write_frame(frame: pd.DataFrame, path: str | Path, check=None) -> Path:
    """Write a table as CSV atomically; ``check(temporary path)`` may refuse the finished file before it replaces
    anything (see :func:`atomic_write`)."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.8f")
    atomic_write(path, lambda handle: handle.write(buffer.getvalue().encode("utf-8")), check)
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


def _read_pair_labels(answers: str | Path) -> np.ndarray:
    try:
        return np.loadtxt(answers, dtype=np.int64, ndmin=1, encoding="utf-8-sig")
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the answer key {answers}: {printable(str(error))}") from None


def score_submission(path: str | Path, answers: str | Path) -> float:
    """The EER a leaderboard would give a submission (rows by test-pair index, in any order, any header), from an
    answer key of one 0/1 per line."""
    labels = _read_pair_labels(answers)
    _, rows = read_table(path)
    if len(rows) != labels.size:
        raise UserError(f"{path} has {len(rows)} rows but {answers} has {labels.size} labels")
    try:
        values = np.array([float(rows[str(i)][0]) for i in range(labels.size)])
    except KeyError as missing:
        raise UserError(f"{path} has no row for the test pair {missing} (IDs are test_pairs.txt line indices from 0)") from None
    except ValueError:
        raise UserError(f"{path}: a value is not a number") from None
    return compute_eer(values, labels)[0]


def read_table(path: str | Path, columns: int = 2) -> tuple[list[str], dict[str, list[str]]]:
    """A CSV's header and its rows by the first column (as text), refusing ragged rows and repeated IDs."""
    lines = read_rows(Path(path))
    if not lines or len(lines[0]) < columns:
        raise UserError(f"{path}:1 must name at least {columns} columns")
    rows, seen = {}, {}
    for line, fields in enumerate(lines[1:], start=2):
        if not fields:
            continue
        if len(fields) != len(lines[0]):
            raise UserError(f"{path}:{line} has {len(fields)} columns; the header names {len(lines[0])}")
        key = fields[0].strip()
        if key in seen:
            raise UserError(f"{path}:{line} repeats the ID '{printable(key)}' of line {seen[key]}")
        seen[key] = line
        rows[key] = [field.strip() for field in fields[1:]]
    return [name.strip() for name in lines[0]], rows


def score_unified(path: str | Path, solution: str | Path) -> LeaderboardScore:
    """Fall 2026's score of a unified submission against its answers (``ID,Label,Task``, Task pair or image):
    the classification accuracy of the image rows, the EER of the pair rows, and 0.5 x accuracy + 0.5 x (1 - EER)."""
    _, submitted = read_table(path)
    header, answers = read_table(solution, columns=3)
    if header[:3] != ["ID", "Label", "Task"]:
        raise UserError(f"{solution}:1 must read ID,Label,Task (the unified answer key), not {','.join(header)}")
    missing = [key for key in answers if key not in submitted]
    extra = [key for key in submitted if key not in answers]
    if missing or extra:
        which, key = ("lacks", missing[0]) if missing else ("has an ID the answers do not know:", extra[0])
        raise UserError(f"{path} {which} '{printable(key)}' ({len(missing)} missing, {len(extra)} unknown IDs)")
    pairs = [(key, int(row[0])) for key, row in answers.items() if row[1] == "pair"]
    images = [(key, row[0]) for key, row in answers.items() if row[1] == "image"]
    try:
        scores = np.array([float(submitted[key][0]) for key, _ in pairs])
    except ValueError:
        raise UserError(f"{path}: a test pair's value is not a number") from None
    eer = compute_eer(scores, np.array([label for _, label in pairs]))[0] if pairs else None
    accuracy = (float(np.mean([_same_class(submitted[key][0], truth) for key, truth in images]))
                if images else None)
    return LeaderboardScore(eer=eer, accuracy=accuracy, score=combined_score(accuracy, eer), pairs=len(pairs),
                            images=len(images))


def _same_class(predicted: str, truth: str) -> bool:
    """Class ids compared as integers when both are (``07`` is ``7``), else as text."""
    if is_int(predicted) and is_int(truth):
        return int(predicted) == int(truth)
    return predicted == truth


def score_file(path: str | Path, answers: str | Path) -> LeaderboardScore:
    """Score a submission against either answer key: one 0/1 per test pair (the EER), or a unified solution."""
    with open(answers, encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline()
    if first.strip().startswith("ID,"):
        return score_unified(path, answers)
    return LeaderboardScore(eer=score_submission(path, answers))


def make_submission(checkpoint: str | Path, out: str | Path = "submission.csv", data_root: str | Path | None = None,
                    fmt: str | None = None, tta: bool = False, device: str = "auto",
                    kaggle_competition: str | None = None, message: str | None = None, progress: bool = False,
                    weights: str | None = None, score_norm: ScoreNorm = ScoreNorm(), sample: str | Path | None = None,
                    kaggle: bool = False, slack: bool = False, term: str | None = None) -> SubmissionResult:
    """Score the test data with a checkpoint and write the submission: in the shape of the competition's
    ``sample_submission.csv`` when there is one, else one row per test pair (and the class predictions of a test
    split beside it). ``kaggle`` submits it to the term's competition (``slack``: the slack one), or
    ``kaggle_competition`` names another; ``weights`` (raw or ema) overrides the weights the checkpoint holds.
    """
    from helpers.eval.inference import load_trained

    out = output_file(out)  # refused before the scoring, not after it
    trained = load_trained(checkpoint, device, weights, tta=tta, progress=progress, score_norm=score_norm)
    scorer = _Scorer(trained, trained.open_data(data_root))
    opened = trained.checkpoint
    chosen = get_term(term or opened.config.course.term)
    competition = _competition(chosen, kaggle, slack, kaggle_competition)
    description = kaggle_description(opened, chosen, message) if competition else None
    sample_path = find_sample(scorer.data.root, sample)
    if sample_path is not None:
        result = _from_sample(scorer, sample_path, out, fmt, score_norm)
    else:
        result = _per_pair(scorer, out, fmt or "scores", score_norm)
    if description is not None:
        result.description = description
        result.messages.append(kaggle_tool.submit(out, competition, description))
        if chosen.provenance and opened.config.tracking.wandb.mode == "offline":
            result.messages.append(f"the W&B run {opened.wandb_run_id} logged offline: upload it with `wandb "
                                   f"sync {trained.run_dir}/wandb/offline-run-*` before handing in, since "
                                   f"{chosen.title}'s hand-in exports it from W&B")
    return result


@dataclass(frozen=True)
class _Scorer:
    """A trained model and the data root it submits on: test-pair scores and test-image classes."""

    trained: TrainedModel
    data: FaceData

    def pair_scores(self) -> np.ndarray:
        from helpers.eval.evaluation import score_pairs

        if not self.data.test_pairs:
            raise UserError(f"{self.data.root} has no test_pairs.txt to submit on")
        scores, skipped = score_pairs(self.trained.model, self.data, self.data.test_pairs, self.trained.settings,
                                      desc="test pairs")
        if skipped:
            raise UserError(f"cannot score every test pair: {skipped[0].path}: {skipped[0].reason} "
                            f"({len(skipped)} unreadable image(s)); fix the data and submit again")
        return scores

    def threshold(self) -> float:
        """The decision threshold of binary submissions: the stored val EER one, when it fits how scores are made."""
        from helpers.eval.evaluation import verify_pairs

        stored = self.trained.stored_threshold()
        if stored is None:  # the threshold must match how the scores are made: find it again on the val pairs
            stored = verify_pairs(self.trained.model, self.data, self.trained.settings).threshold
        return float(stored)

    def classes(self) -> list[str]:
        """The predicted class id, in the data's own ids, of each test-split image, in the split's order."""
        import torch

        from helpers.eval.evaluation import embed_images

        model, settings = self.trained.model, self.trained.settings
        embeddings, skipped = embed_images(model, self.data.test.paths, settings, desc="test images",
                                           reader=self.data.reader)
        if skipped:
            raise UserError(f"cannot classify every test image: {skipped[0].path}: {skipped[0].reason}")
        with torch.no_grad():
            predicted = model.head.cosine(embeddings.to(settings.device)).argmax(dim=1).cpu().tolist()
        return [self.trained.checkpoint.classes[i] for i in predicted]


def _per_pair(scorer: _Scorer, out, fmt: str, score_norm: ScoreNorm) -> SubmissionResult:
    """One row per test pair in file order (and the test split's class predictions in a second file)."""
    scores = scorer.pair_scores()
    result = SubmissionResult(Path(out), len(scores), fmt, score_norm=score_norm.describe(scorer.trained.model.head))
    values = scores
    if fmt == "binary":
        result.threshold = scorer.threshold()
        values = (scores >= result.threshold).astype(np.int64)
    write_frame(submission_frame(values, fmt, expected_rows=len(scorer.data.test_pairs)), out,
                _answers_check(result, scorer.data.root))
    data = scorer.data
    if data.test is not None and data.test.paths:
        result.classification_path = Path(out).with_name(Path(out).stem + "_classification.csv")
        frame = pd.DataFrame({"ID": [p.name for p in data.test.paths], "Label": scorer.classes()})
        write_frame(frame, result.classification_path)
    return result


def _from_sample(scorer: _Scorer, sample_path: Path, out, fmt: str | None, score_norm: ScoreNorm) -> SubmissionResult:
    """The sample submission's header and IDs, in its order, each given what it asks for."""
    data = scorer.data
    images = [p.name for p in data.test.paths] if data.test is not None else []
    shape = read_sample(sample_path, len(data.test_pairs or []), images)
    binary = shape.binary if fmt is None else fmt == "binary"
    result = SubmissionResult(Path(out), len(shape.rows), "binary" if binary else "scores",
                              score_norm=score_norm.describe(scorer.trained.model.head), sample=sample_path,
                              pair_rows=len(shape.pairs), image_rows=len(shape.images))
    texts: dict[str, str] = {}
    if shape.pairs:
        scores = scorer.pair_scores()
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise UserError(f"{bad.size} test pair score(s) are NaN or infinite (first: pair {bad[0]}); refusing them")
        if binary:
            result.threshold = scorer.threshold()
        for row in shape.pairs:
            score = scores[row.index]
            texts[row.id] = str(int(score >= result.threshold)) if binary else f"{score:.8f}"
    if shape.images:
        classes = scorer.classes()
        texts.update({row.id: str(classes[row.index]) for row in shape.images})
    frame = pd.DataFrame({shape.header[0]: [row.id for row in shape.rows],
                          shape.header[1]: [texts[row.id] for row in shape.rows]})
    write_frame(frame, out, _answers_check(result, data.root))
    return result


def _competition(term: Term, kaggle: bool, slack: bool, named: str | None) -> str | None:
    """The competition to submit to: the one named, else the term's (or its slack one) when asked."""
    if named:
        return named
    if not kaggle:
        return None
    competition = term.slack_competition if slack else term.competition
    if not competition:
        raise UserError(f"{term.title} names no Kaggle competition here; pass --kaggle-competition NAME")
    return competition


def kaggle_description(checkpoint: Checkpoint, term: Term, message: str | None) -> str:
    """The description a Kaggle submission gets: free text, or the term's tie to the checkpoint's W&B run."""
    if not term.provenance:
        return message or "hw2p2 helpers submission"
    if message:
        if term.run_path_in(message) is None:
            raise UserError(f"{term.title} reads each submission's description as '{term.description_form}' "
                            f"and refuses the best one without it; '{message}' is not of that form "
                            "(leave --message out and the run's own W&B id is used)")
        return message
    run_id = checkpoint.wandb_run_id
    if not run_id:
        raise UserError(f"this checkpoint's run logged no W&B run (tracking.wandb.mode was disabled), and "
                        f"{term.title} ties each Kaggle submission to one: train with tracking.wandb.mode online or "
                        f"offline, or pass --message '{term.description_form}'")
    wandb = checkpoint.config.tracking.wandb
    entity = wandb_entity(wandb.entity, _signed_in_wandb)
    if not entity:
        raise UserError(f"{term.title}'s submission description names the W&B entity (user or team), and neither "
                        "the run (tracking.wandb.entity) nor WANDB_ENTITY nor a W&B login names one: set WANDB_ENTITY "
                        "and submit again")
    return term.description(f"{entity}/{wandb.project}/{run_id}")


def _signed_in_wandb():
    """The W&B API of the login at hand (refused without a key, so that no prompt waits for one)."""
    from helpers.handin.exports import open_wandb

    return open_wandb()


def _answers_check(result: SubmissionResult, root: Path):
    """A check for :func:`write_frame`: the finished file scored with the data root's answers when they lie beside
    it (demo and prepared roots), before it replaces anything, so a file the answers refuse is never written."""
    from helpers.data.layout import answer_key_path, solution_path

    def check(written: Path) -> None:
        try:
            if result.image_rows and solution_path(root).is_file():
                scored = score_unified(written, solution_path(root))
                result.test_eer, result.test_score = scored.eer, scored.score
                result.messages.append(f"test score {scored.score:.4f} (classification accuracy "
                                       f"{scored.accuracy:.4f}, test EER {scored.eer:.4f}; the answers in "
                                       f"{solution_path(root)})")
            elif not result.image_rows and answer_key_path(root).is_file():
                result.test_eer = score_submission(written, answer_key_path(root))
                result.messages.append(f"test EER {result.test_eer:.4f} (scored with the answer key "
                                       f"{answer_key_path(root)})")
        except UserError as error:
            kept = f"the existing {result.path} is kept" if result.path.exists() else "nothing was written"
            raise UserError(f"{str(error).replace(str(written), str(result.path))} ({kept})") from None

    return check


def describe(result: SubmissionResult) -> list[str]:
    norm = norm_words(result.score_norm)
    shape = (f"the shape of {result.sample}: {result.image_rows} test images, {result.pair_rows} test pairs as "
             f"{result.format}" if result.sample else f"{result.format} format")
    lines = [f"wrote {result.path}: {result.rows} rows ({shape}" + (f", {norm}" if norm else "")
             + (f", threshold {result.threshold:.4f})" if result.threshold is not None else ")")]
    if result.classification_path:
        lines.append(f"wrote {result.classification_path} (class predictions for the test split)")
    return lines + result.messages


def as_json(result: SubmissionResult) -> str:
    return json.dumps({"path": str(result.path), "rows": result.rows, "format": result.format,
                       "threshold": result.threshold, "test_eer": result.test_eer, "test_score": result.test_score,
                       "sample": str(result.sample) if result.sample else None, "pair_rows": result.pair_rows,
                       "image_rows": result.image_rows, "description": result.description,
                       "score_norm": result.score_norm,
                       "classification_path": str(result.classification_path) if result.classification_path else None,
                       "messages": result.messages}, indent=2)
