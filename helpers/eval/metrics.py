"""Verification metrics with the course's EER definition.

The graders compute the EER from ``sklearn.metrics.roc_curve``: the point of
the ROC polyline where FPR = 1 - TPR, found by linear interpolation. The ROC
is non-decreasing and the line FPR + TPR = 1 decreasing, so they cross exactly
once; :func:`compute_eer` finds that segment and interpolates along it, which
gives the value the graders' root finder converges to, and a threshold
interpolated the same way. EER is a fraction in [0, 1] everywhere in this
project (multiply by 100 for the percent some terms print).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from helpers.core.errors import UserError
from helpers.eval.results import EerDifference, Interval, Verification

FAR_TARGETS = (1e-4, 1e-3, 1e-2, 1e-1)


def _validated(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise UserError(f"got {scores.size} scores but {labels.size} labels")
    if not np.all(np.isfinite(scores)):
        raise UserError(f"{int(np.sum(~np.isfinite(scores)))} score(s) are NaN or infinite; the EER is undefined")
    if not np.all((labels == 0) | (labels == 1)):
        raise UserError("labels must be 0 (different people) or 1 (same person)")
    if labels.min(initial=1) == labels.max(initial=0):
        raise UserError("labels hold only one class; the EER needs both same-person and different-person pairs")
    return scores, labels.astype(np.int64)


def compute_eer(scores, labels) -> tuple[float, float]:
    """``(eer, threshold)``: the equal error rate as a fraction, and the score threshold where it occurs.

    Higher scores must mean "more likely the same person" (cosine similarity).
    """
    scores, labels = _validated(scores, labels)
    fpr, tpr, thresholds = roc_curve(labels, scores)
    return _eer_from_roc(fpr, tpr, thresholds)


def _eer_from_roc(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    gap = fpr + tpr - 1.0  # < 0 before the crossing, >= 0 from it on
    i = int(np.argmax(gap >= 0))  # first vertex on or past the line; vertex 0 is (0, 0), so i >= 1
    t = gap[i] / (gap[i] - gap[i - 1]) if gap[i] != gap[i - 1] else 0.0
    eer = fpr[i] - t * (fpr[i] - fpr[i - 1])
    upper = thresholds[i - 1] if np.isfinite(thresholds[i - 1]) else thresholds[i]
    threshold = thresholds[i] + t * (upper - thresholds[i])
    return float(eer), float(threshold)


def verification_metrics(scores, labels, bootstrap: int = 0, seed: int = 0) -> Verification:
    """EER, its threshold, ROC AUC, best accuracy, TAR at FAR 1e-4..1e-1, and optionally a bootstrap 95 % EER interval.

    ``tar_at_far[far]`` is the highest TPR with FPR <= far (0 when no
    threshold reaches it), or None when the pairs cannot measure that FAR: with
    fewer than ``1 / far`` different-person pairs, FPR <= far only means "no
    false accept at all". ``bootstrap`` resamples the pairs that many times.
    """
    scores, labels = _validated(scores, labels)
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    eer, threshold = _eer_from_roc(fpr, tpr, thresholds)
    positives = int(labels.sum())
    negatives = int(labels.size - positives)
    correct = tpr * positives + (1.0 - fpr) * negatives
    best = int(np.argmax(correct))
    return Verification(
        eer=eer, threshold=threshold, auc=float(roc_auc_score(labels, scores)),
        accuracy=float(correct[best] / labels.size),
        accuracy_threshold=float(thresholds[best]) if np.isfinite(thresholds[best]) else float(scores.max()),
        tar_at_far={f"{far:g}": tar_at_far(fpr, tpr, far, negatives) for far in FAR_TARGETS},
        pairs=int(labels.size), positives=positives, negatives=negatives,
        eer_ci95=bootstrap_eer(scores, labels, bootstrap, seed) if bootstrap else None)


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float, negatives: int) -> float | None:
    """The highest TPR at FPR <= ``far``; None when ``negatives`` pairs cannot show one false accept in ``1/far``."""
    if round(far * negatives, 9) < 1:
        return None
    return float(tpr[fpr <= far].max(initial=0.0))


def bootstrap_eer(scores, labels, rounds: int = 1000, seed: int = 0) -> Interval:
    """A 95 % percentile interval of the EER over ``rounds`` resamplings of the pairs (each keeping both classes)."""
    scores, labels = _validated(scores, labels)
    low, high = np.percentile(_resampled_eers([scores], labels, rounds, seed)[0], [2.5, 97.5])
    return Interval(low=float(low), high=float(high))


def paired_bootstrap_eers(reference, others, labels, rounds: int = 1000, seed: int = 0) -> list[EerDifference]:
    """``EER(reference) - EER(other)`` for each of ``others`` on the same pairs, with a 95 % interval over
    resamplings that draw every score set alike.

    The paired test for "is one model better than another on these pairs": an
    interval that excludes 0 says the difference is larger than the pairs'
    sampling noise; overlapping single intervals cannot say that.
    """
    reference, labels = _validated(reference, labels)
    others = [_validated(other, labels)[0] for other in others]
    eers = _resampled_eers([reference, *others], labels, rounds, seed)
    base = compute_eer(reference, labels)[0]
    tests = []
    for row, other in enumerate(others, start=1):
        low, high = np.percentile(eers[0] - eers[row], [2.5, 97.5])
        tests.append(EerDifference(difference=base - compute_eer(other, labels)[0],
                                   ci95=Interval(low=float(low), high=float(high))))
    return tests


def _resampled_eers(score_sets: list[np.ndarray], labels: np.ndarray, rounds: int, seed: int) -> np.ndarray:
    """The EER of each score set (rows) under the same ``rounds`` bootstrap resamplings of the pairs (columns).

    A resampling is a count of draws per pair; each class is drawn separately
    so every round keeps both. Rounds are done in blocks, as matrices.
    """
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    out = np.empty((len(score_sets), rounds))
    block = max(1, 2_000_000 // labels.size)  # a few tens of MB of counts at a time
    for start in range(0, rounds, block):
        size = min(block, rounds - start)
        counts = np.zeros((size, labels.size))
        for members in (pos, neg):
            draws = members[rng.integers(0, members.size, (size, members.size))]
            flat = (draws + labels.size * np.arange(size)[:, None]).ravel()
            counts += np.bincount(flat, minlength=size * labels.size).reshape(size, labels.size)
        for row, scores in enumerate(score_sets):
            out[row, start:start + size] = weighted_eers(scores, labels, counts)
    return out


def weighted_eers(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The EER of the pairs repeated ``counts[r]`` times, for each row ``r`` of counts, without repeating them.

    The same ROC polyline ``roc_curve`` draws (one vertex per distinct score,
    from (0, 0)) and the same crossing as :func:`compute_eer`; vertices of
    scores drawn zero times repeat their neighbour, which leaves the line as it is.
    """
    order = np.argsort(-scores, kind="stable")
    ends = np.append(np.flatnonzero(np.diff(scores[order])), scores.size - 1)  # last pair of each distinct score
    weights = counts[:, order]
    tp = np.cumsum(weights * (labels[order] == 1), axis=1)[:, ends]
    fp = np.cumsum(weights, axis=1)[:, ends] - tp
    start = np.zeros((len(counts), 1))
    tpr = np.hstack([start, tp / tp[:, -1:]])
    fpr = np.hstack([start, fp / fp[:, -1:]])
    gap = fpr + tpr - 1.0
    i = np.argmax(gap >= 0, axis=1)  # first vertex on or past the line; vertex 0 is (0, 0), so i >= 1
    rows = np.arange(len(counts))
    after, before = gap[rows, i], gap[rows, i - 1]
    step = after - before
    t = np.divide(after, step, out=np.zeros_like(after), where=step != 0)
    return fpr[rows, i] - t * (fpr[rows, i] - fpr[rows, i - 1])
