"""EER and the other verification metrics against independent computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from helpers.core.errors import UserError
from helpers.eval.metrics import compute_eer, verification_metrics


def course_eer(scores, labels) -> float:
    """The graders' computation: ROC from sklearn, root of 1 - x - TPR(x) on the interpolated curve."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0, xtol=1e-12)


def brute_eer_interval(scores, labels):
    """Bounds on the EER from every threshold: max(min(FPR, FNR)) <= EER <= min(max(FPR, FNR))."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    lows, highs = [], []
    for t in np.unique(np.concatenate([scores, [np.inf]])):
        fpr, fnr = np.mean(neg >= t), np.mean(pos < t)
        lows.append(min(fpr, fnr))
        highs.append(max(fpr, fnr))
    return max(lows), min(highs)


def _random_sets():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(20, 400))
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = rng.normal(size=n) + labels * rng.uniform(0, 3)
        if trial % 3 == 1:
            scores = np.round(scores, 1)  # many ties
        if trial % 3 == 2:
            scores = rng.integers(0, 4, n).astype(float) + labels * 0.5  # heavy ties
        yield scores, labels


@pytest.mark.parametrize("scores,labels", list(_random_sets()))
def test_eer_matches_the_course_computation(scores, labels):
    eer, threshold = compute_eer(scores, labels)
    assert eer == pytest.approx(course_eer(scores, labels), abs=1e-6)
    low, high = brute_eer_interval(scores, labels)
    assert low - 1e-9 <= eer <= high + 1e-9
    assert 0.0 <= eer <= 1.0 and np.isfinite(threshold)


def test_threshold_sits_where_the_error_rates_cross():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 5000)
    scores = rng.normal(size=10000) + 2 * labels
    eer, threshold = compute_eer(scores, labels)
    fpr = np.mean(scores[labels == 0] >= threshold)
    fnr = np.mean(scores[labels == 1] < threshold)
    assert fpr == pytest.approx(eer, abs=2e-3) and fnr == pytest.approx(eer, abs=2e-3)


def test_extremes():
    assert compute_eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])[0] == 0.0
    assert compute_eer([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0])[0] == 1.0
    assert compute_eer([0.5] * 4, [1, 0, 1, 0])[0] == pytest.approx(0.5)


@pytest.mark.parametrize("scores,labels,needle", [
    ([0.1, 0.2], [1, 1], "only one class"),
    ([0.1, float("nan")], [1, 0], "NaN or infinite"),
    ([0.1, float("inf")], [1, 0], "NaN or infinite"),
    ([0.1, 0.2, 0.3], [1, 0], "3 scores but 2 labels"),
    ([0.1, 0.2], [1, 2], "must be 0"),
])
def test_bad_input_raises_one_clear_error(scores, labels, needle):
    with pytest.raises(UserError, match=needle):
        compute_eer(scores, labels)


def test_verification_metrics_against_brute_force():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 600)
    scores = np.round(rng.normal(size=600) + 1.5 * labels, 2)
    metrics = verification_metrics(scores, labels, bootstrap=200)
    pos, neg = scores[labels == 1], scores[labels == 0]
    thresholds = np.unique(scores)
    accuracy = max(np.mean((scores >= t) == labels) for t in thresholds)
    assert metrics.accuracy == pytest.approx(accuracy)
    for far, tar in metrics.tar_at_far.items():
        if float(far) * neg.size < 1:
            continue  # not measurable with these pairs (see the next test)
        best = max([np.mean(pos >= t) for t in list(thresholds) + [np.inf] if np.mean(neg >= t) <= float(far)])
        assert tar == pytest.approx(best), far
    auc = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert metrics.auc == pytest.approx(auc)
    low, high = metrics.eer_ci95.low, metrics.eer_ci95.high
    assert low <= metrics.eer <= high and high - low < 0.2
    assert metrics.positives + metrics.negatives == 600


def test_weighted_eers_equal_the_eer_of_the_repeated_pairs():
    from helpers.eval.metrics import weighted_eers

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels, 1)  # many ties
    counts = rng.integers(0, 3, (25, 300))
    counts[:, np.flatnonzero(labels == 1)[0]] += 1  # every row keeps both classes
    counts[:, np.flatnonzero(labels == 0)[0]] += 1
    direct = [compute_eer(np.repeat(scores, row), np.repeat(labels, row))[0] for row in counts]
    assert weighted_eers(scores, labels, counts.astype(float)) == pytest.approx(direct, abs=1e-12)


def test_paired_bootstrap_tells_a_real_difference_from_noise():
    from helpers.eval.metrics import paired_bootstrap_eers

    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 1000)
    base = rng.normal(size=1000) + 1.0 * labels
    better = base + 1.5 * labels  # the same pairs, better separated
    jittered = base + rng.normal(scale=0.05, size=1000)  # no real difference
    same, test, noise = paired_bootstrap_eers(base, [base, better, jittered], labels, rounds=300)
    assert same.difference == 0 and same.ci95.as_list() == [0.0, 0.0]
    assert test.difference == pytest.approx(compute_eer(base, labels)[0] - compute_eer(better, labels)[0])
    assert 0 < test.ci95.low <= test.difference <= test.ci95.high
    low, high = noise.ci95.low, noise.ci95.high
    assert low < 0 < high and high - low < 0.03  # pairing removes the noise both share


@pytest.mark.parametrize("negatives,measurable", [
    (500, {"0.0001": False, "0.001": False, "0.01": True, "0.1": True}),
    (1000, {"0.0001": False, "0.001": True, "0.01": True, "0.1": True}),
    (10000, {"0.0001": True, "0.001": True, "0.01": True, "0.1": True}),
])
def test_tar_is_reported_only_at_a_far_the_pairs_can_resolve(negatives, measurable):
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(300, dtype=int), np.zeros(negatives, dtype=int)]
    scores = rng.normal(size=labels.size) + 2.0 * labels
    tar = verification_metrics(scores, labels).tar_at_far
    assert {far: value is not None for far, value in tar.items()} == measurable
    assert all(0.0 <= value <= 1.0 for value in tar.values() if value is not None)
    assert json.loads(json.dumps(tar)) == tar  # None is JSON null

