"""Score normalisation (AS-norm against the margin head's class centres): the maths, and the commands that use it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import call_cli

from helpers.core.errors import UserError
from helpers.data.layout import open_data
from helpers.eval import score_norm
from helpers.eval.evaluation import embed_images, pair_images, score_pairs
from helpers.eval.inference import load_trained
from helpers.eval.score_norm import DEFAULT_COHORT_SIZE, ScoreNorm, pair_scores
from helpers.handin.submission import read_submission
from helpers.model.margins import ArcMarginProduct


def _direct_as_norm(embeddings: np.ndarray, rows: np.ndarray, classes: int, first, second, k: int) -> list[float]:
    """AS-norm one pair and one class at a time, straight from its definition."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    centres = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    per_class = len(centres) // classes

    def statistics(e):
        # each class: its nearest sub-centre
        cosines = [max(float(e @ centres[c * per_class + j]) for j in range(per_class)) for c in range(classes)]
        top = sorted(cosines, reverse=True)[:k]
        return np.mean(top), np.std(top)

    scores = []
    for i, j in zip(first, second):
        s = float(unit[i] @ unit[j])
        (mu_a, sigma_a), (mu_b, sigma_b) = statistics(unit[i]), statistics(unit[j])
        scores.append(0.5 * ((s - mu_a) / sigma_a + (s - mu_b) / sigma_b))
    return scores


@pytest.mark.parametrize("subcenters", [1, 3])
def test_as_norm_matches_a_direct_computation(subcenters, monkeypatch):
    monkeypatch.setattr(score_norm, "_CHUNK", 3)  # several chunks, one of them short
    torch.manual_seed(0)
    head = ArcMarginProduct(16, 40, subcenters=subcenters)
    embeddings = torch.nn.functional.normalize(torch.randn(7, 16), dim=1)
    first, second = [0, 0, 1, 2, 3, 4, 5, 6, 6], [1, 2, 0, 3, 4, 5, 6, 0, 6]  # images shared between pairs
    got = pair_scores(embeddings, first, second, ScoreNorm("as-norm", 10), head)
    expected = _direct_as_norm(embeddings.double().numpy(), head.weight.detach().double().numpy(), 40, first,
                               second, 10)
    assert got.dtype == np.float64 and np.allclose(got, expected, rtol=1e-5, atol=1e-5)
    raw = pair_scores(embeddings, first, second)
    assert np.allclose(raw, (embeddings[first] * embeddings[second]).sum(dim=1).numpy(), atol=1e-6)
    assert not np.allclose(got, raw)


def test_a_cohort_size_past_the_classes_uses_every_class():
    torch.manual_seed(1)
    head = ArcMarginProduct(8, 12)
    embeddings = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    norm = ScoreNorm("as-norm", 500)
    assert norm.top_k(head) == 12
    assert norm.describe(head) == {"method": "as-norm", "cohort_size": 12, "cohort_classes": 12}
    assert np.array_equal(pair_scores(embeddings, [0, 2], [1, 3], norm, head),
                          pair_scores(embeddings, [0, 2], [1, 3], ScoreNorm("as-norm", 12), head))


def test_degenerate_cohort_and_unreadable_images():
    head = ArcMarginProduct(8, 5)
    with torch.no_grad():
        head.weight.copy_(torch.ones(5, 8))  # five equal rows: every image's cohort spread is 0
    embeddings = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    assert np.isfinite(pair_scores(embeddings, [0, 2], [1, 3], ScoreNorm("as-norm", 5), head)).all()
    embeddings[3] = float("nan")  # what embed_images gives an unreadable image
    torch.nn.init.xavier_uniform_(head.weight)
    scores = pair_scores(embeddings, [0, 2], [1, 3], ScoreNorm("as-norm", 3), head)
    assert np.isfinite(scores[0]) and np.isnan(scores[1])


@pytest.mark.parametrize("method,size,needle", [
    ("as-norm", 1, "at least 2"),
    ("as-norm", 0, "at least 2"),
    ("as-norm", 2.5, "whole number"),
    ("z-norm", DEFAULT_COHORT_SIZE, "use none or as-norm"),
])
def test_bad_settings_are_refused(method, size, needle):
    with pytest.raises(UserError, match=needle):
        ScoreNorm(method, size)


def test_a_head_of_one_class_has_no_cohort():
    with pytest.raises(UserError, match="at least 2 classes"):
        ScoreNorm("as-norm").top_k(ArcMarginProduct(8, 1))


def test_cli_refuses_bad_cohort_options_in_one_sentence(trained_run, capsys):
    for extra in (["--score-norm", "as-norm", "--cohort-size", "0"], ["--cohort-size", "50"]):
        code, out, err = call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt", *extra)
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "--score-norm as-norm" in err
    help_text = call_cli(capsys, "verify", "--help")[1]
    assert f"default {DEFAULT_COHORT_SIZE}" in " ".join(help_text.split())


def test_submit_with_as_norm_writes_the_normalised_scores(trained_run, demo_root, tmp_path, capsys):
    out = tmp_path / "asnorm.csv"
    code, stdout, err = call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out,
                                 "--score-norm", "as-norm", "--json")
    assert code == 0, err
    fmt, values = read_submission(out)
    data = open_data(demo_root)
    assert fmt == "scores" and len(values) == len(data.test_pairs) and np.isfinite(values).all()
    reported = json.loads(stdout)
    # the tiny run trained 12 identities: the default 300 covers all of them
    assert reported["score_norm"] == {"method": "as-norm", "cohort_size": 12, "cohort_classes": 12}
    assert 0 <= reported["test_eer"] <= 1
    trained = load_trained(trained_run / "best.pt", score_norm=ScoreNorm("as-norm"))
    model, settings = trained.model, trained.settings
    expected, _ = score_pairs(model, data, data.test_pairs, settings)
    assert np.allclose(values, expected, atol=1e-7)
    raw, _ = score_pairs(model, data, data.test_pairs, load_trained(trained_run / "best.pt").settings)
    assert not np.allclose(values, raw, atol=1e-3)
    code, stdout, _ = call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out,
                               "--score-norm", "as-norm", "--cohort-size", "5")
    assert code == 0 and "AS-norm against the top 5 of 12 class centres" in stdout


def test_as_norm_with_flip_tta_normalises_the_tta_embeddings(trained_run, demo_root, tmp_path, capsys):
    out = tmp_path / "tta.csv"
    code, _, err = call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out,
                            "--score-norm", "as-norm", "--cohort-size", "6", "--tta")
    assert code == 0, err
    trained = load_trained(trained_run / "best.pt", tta=True)
    model, data, settings = trained.model, trained.open_data(), trained.settings
    paths, index = pair_images(data, data.test_pairs)
    embeddings, _ = embed_images(model, paths, settings, reader=data.reader)
    expected = pair_scores(embeddings, [index[p.a] for p in data.test_pairs], [index[p.b] for p in data.test_pairs],
                           ScoreNorm("as-norm", 6), model.head)
    assert np.allclose(pd.read_csv(out)["Label"].to_numpy(), expected, atol=1e-7)


def test_submit_binary_with_as_norm_thresholds_the_normalised_scores(trained_run, tmp_path, capsys):
    out = tmp_path / "binary.csv"
    code, stdout, err = call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out,
                                 "--format", "binary", "--score-norm", "as-norm", "--json")
    assert code == 0, err
    trained = load_trained(trained_run / "best.pt", score_norm=ScoreNorm("as-norm"))
    model, data, settings = trained.model, trained.open_data(), trained.settings
    from helpers.eval.evaluation import verify_pairs

    threshold = verify_pairs(model, data, settings).threshold  # the val EER threshold of AS-norm scores
    assert json.loads(stdout)["threshold"] == pytest.approx(threshold)
    assert set(pd.read_csv(out)["predicted"]) <= {0, 1}


def test_evaluate_and_verify_with_as_norm(trained_run, demo_root, capsys):
    code, out, err = call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt", "--score-norm", "as-norm",
                              "--json")
    assert code == 0, err
    result = json.loads(out)
    assert 0 <= result["eer"] <= 1 and result["score_norm"]["method"] == "as-norm"
    plain = json.loads(call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt", "--json")[1])
    assert plain["score_norm"] == {"method": "none"} and plain["eer"] != result["eer"]
    code, out, _ = call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt", "--score-norm", "as-norm")
    assert code == 0 and "(AS-norm against the top 12 of 12 class centres)" in out
    assert f"EER {result['eer']:.4f}" in out
    a, b = sorted((demo_root / "ver_data").iterdir())[:2]
    code, out, _ = call_cli(capsys, "verify", "--checkpoint", trained_run / "best.pt", a, b, a, a,
                            "--score-norm", "as-norm")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and "same person" not in out and "no decision" in lines[2]
    trained = load_trained(trained_run / "best.pt")
    model, settings = trained.model, trained.settings
    mean, spread = score_norm.cohort_statistics(embed_images(model, [a], settings)[0], model.head, 12)
    # an image against itself: cosine 1, the same statistics on both sides
    assert float(lines[1].split()[0]) == pytest.approx(float((1 - mean[0]) / spread[0]), abs=1e-3)
