"""Evaluation, submission and the hand-in bundle, on a briefly trained tiny model."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import call_cli

from helpers.core import kaggle
from helpers.core.errors import UserError
from helpers.data.layout import Pair, answer_key_path, open_data
from helpers.eval.evaluation import open_checkpoint, pair_images, score_pairs
from helpers.handin.submission import read_submission, score_submission, submission_frame

PNG = b"\x89PNG\r\n\x1a\n"


def test_evaluate_json_and_plots(trained_run, tmp_path, capsys):
    code, out, err = call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt", "--json",
                              "--plots", tmp_path / "plots", "--bootstrap", "50")
    assert code == 0, err
    result = json.loads(out)
    for key in ("eer", "threshold", "auc", "accuracy", "tar_at_far", "eer_ci95", "pairs"):
        assert key in result
    assert 0 <= result["eer"] <= 1 and set(result["tar_at_far"]) == {"0.0001", "0.001", "0.01", "0.1"}
    # Re-evaluating best.pt gives the val EER the run recorded when it saved it.
    assert result["eer"] == pytest.approx(torch.load(trained_run / "best.pt", weights_only=True)["best_eer"], abs=1e-6)
    for name in ("roc.png", "det.png", "scores.png", "hardest_pairs.png", "training_curves.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name


def test_tar_at_a_far_the_pairs_cannot_resolve_is_n_a_in_the_table_and_null_in_json(trained_run, capsys):
    code, out, _ = call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt")
    line = next(text for text in out.splitlines() if text.startswith("TAR at FAR"))
    assert code == 0 and "0.0001: n/a" in line and "(n/a: too few different-person pairs" in line
    result = json.loads(call_cli(capsys, "evaluate", "--checkpoint", trained_run / "best.pt", "--json")[1])
    assert result["negatives"] < 10_000 and result["tar_at_far"]["0.0001"] is None
    assert 0.0 <= result["tar_at_far"]["0.1"] <= 1.0


def test_evaluate_reports_dev_accuracy_and_identification(tmp_path, capsys):
    from conftest import TINY

    from helpers.data.demo import make_demo_data
    from helpers.train.engine import train

    root = make_demo_data(tmp_path / "d", identities=6, images_per_identity=10, verification_identities=4,
                          size=32).root
    run = train(None, TINY + [f"data.root={root}", f"run.out_dir={tmp_path}", "run.name=r", "train.epochs=1"])
    capsys.readouterr()
    code, out, _ = call_cli(capsys, "evaluate", "--checkpoint", run.run_dir / "best.pt", "--json")
    result = json.loads(out)
    assert code == 0 and result["dev_images"] == 6 and 0 <= result["top1"] <= result["top5"] <= 1
    assert 0 <= result["rank1"] <= result["rank5"] <= 1 and result["gallery_identities"] == 6


def test_each_unique_image_is_embedded_once(trained_run, demo_root):
    model, _, data, settings = open_checkpoint(trained_run / "best.pt")
    names = sorted(p.name for p in (demo_root / "ver_data").iterdir())[:3]
    pairs = [Pair(names[0], names[1], 1, 1), Pair(names[0], names[2], 0, 2), Pair(names[1], names[0], 1, 3),
             Pair(names[2], names[2], 1, 4)]
    paths, index = pair_images(data, pairs)
    assert len(paths) == 3
    seen = []
    original = model.embed
    model.embed = lambda images: seen.append(len(images)) or original(images)
    scores, _ = score_pairs(model, data, pairs, settings)
    assert sum(seen) == 3
    assert scores[0] == pytest.approx(scores[2], abs=1e-6) and scores[3] == pytest.approx(1.0, abs=1e-5)


def test_flip_tta_is_symmetric(trained_run, demo_root):
    from helpers.data.images import load_image
    from helpers.eval.evaluation import embed_images

    model, _, _, settings = open_checkpoint(trained_run / "best.pt", tta=True)
    path = sorted((demo_root / "ver_data").iterdir())[0]
    mirrored = path.with_name("mirror.png")
    from PIL import Image

    Image.fromarray(load_image(path).flip(2).permute(1, 2, 0).numpy()).save(mirrored)
    try:
        embeddings, _ = embed_images(model, [path, mirrored], settings)
    finally:
        mirrored.unlink()
    assert torch.allclose(embeddings[0], embeddings[1], atol=2e-2)  # same up to JPEG-decoding noise
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)


def test_submit_scores_writes_one_row_per_pair_and_scores_close_to_val(trained_run, demo_root, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    code, stdout, err = call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out, "--json")
    assert code == 0, err
    frame = pd.read_csv(out)
    data = open_data(demo_root)
    assert list(frame.columns) == ["ID", "Label"] and len(frame) == len(data.test_pairs)
    assert frame["ID"].tolist() == list(range(len(frame)))
    test_eer = score_submission(out, answer_key_path(demo_root))
    assert json.loads(stdout)["test_eer"] == pytest.approx(test_eer)
    val_eer = torch.load(trained_run / "best.pt", weights_only=True)["best_eer"]
    assert abs(test_eer - val_eer) < 0.12, (test_eer, val_eer)
    assert call_cli(capsys, "score", out, answer_key_path(demo_root))[1].startswith("EER ")


def test_submit_binary_uses_the_val_threshold(trained_run, tmp_path, capsys):
    out = tmp_path / "binary.csv"
    code, stdout, _ = call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", out,
                               "--format", "binary")
    frame = pd.read_csv(out)
    assert code == 0 and list(frame.columns) == ["id", "predicted"] and set(frame["predicted"]) <= {0, 1}
    threshold = torch.load(trained_run / "best.pt", weights_only=True)["val"]["val_threshold"]
    assert f"threshold {threshold:.4f}" in stdout


@pytest.mark.parametrize("values,expected,needle", [
    ([0.1, 0.2], 3, "has 2 rows but test_pairs.txt has 3"),
    ([0.1, float("nan")], 2, "NaN or infinite"),
    ([], None, "empty"),
])
def test_submission_refuses_broken_tables(values, expected, needle):
    with pytest.raises(UserError, match=needle):
        submission_frame(values, "scores", expected)


def test_binary_format_refuses_non_binary_values():
    with pytest.raises(UserError, match="only 0 and 1"):
        submission_frame([0, 1, 0.5], "binary")


def test_read_submission_checks_ids(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("ID,Label\n0,0.5\n2,0.1\n")
    with pytest.raises(UserError, match="must run 0..1"):
        read_submission(path)
    path.write_text("a,b\n0,1\n")
    with pytest.raises(UserError, match="expected ID,Label"):
        read_submission(path)


def test_kaggle_explains_why_not_and_never_shows_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "not installed" in kaggle.submit(tmp_path / "s.csv", "comp", "msg")
    tool = tmp_path / "kaggle"
    tool.write_text("#!/bin/sh\necho \"$@\" > " + str(tmp_path / "args.txt") + "\n")
    tool.chmod(0o755)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    assert "no Kaggle credentials" in kaggle.submit(tmp_path / "s.csv", "comp", "msg")
    with pytest.raises(UserError, match="no Kaggle credentials"):
        kaggle.download("comp", tmp_path / "data")
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef0123456789abcdef")
    said = kaggle.submit(tmp_path / "s.csv", "comp", "msg")
    assert said.startswith("submitted") and "0123456789abcdef" not in said
    assert (tmp_path / "args.txt").read_text().split()[:4] == ["competitions", "submit", "-c", "comp"]


def test_verify_and_embed(trained_run, demo_root, tmp_path, capsys):
    a, b = sorted((demo_root / "ver_data").iterdir())[:2]
    code, out, _ = call_cli(capsys, "verify", "--checkpoint", trained_run / "best.pt", a, b, a, a)
    lines = out.splitlines()
    assert code == 0 and lines[1].startswith("+1.0000") and "same person" in lines[1] and "threshold" in lines[2]
    assert call_cli(capsys, "verify", "--checkpoint", trained_run / "best.pt", a)[0] == 1
    code, out, _ = call_cli(capsys, "embed", "--checkpoint", trained_run / "best.pt", demo_root / "ver_data",
                            "--out", tmp_path / "e.npz")
    saved = np.load(tmp_path / "e.npz")
    assert code == 0 and saved["embeddings"].shape[0] == len(list((demo_root / "ver_data").iterdir()))
    assert np.allclose(np.linalg.norm(saved["embeddings"], axis=1), 1, atol=1e-5)


def _bundle_args(run, tmp_path, ack="ACKNOWLEDGED = True\n"):
    (tmp_path / "ack.txt").write_text(ack)
    (tmp_path / "README.txt").write_text("notes\n")
    (tmp_path / "nb.ipynb").write_text('{"cells": []}')
    return ["bundle", "--run", run, "--notebook", tmp_path / "nb.ipynb", "--out", tmp_path / "hand.zip",
            "--acknowledgement", tmp_path / "ack.txt", "--readme", tmp_path / "README.txt"]


def test_bundle_holds_the_listed_members(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "submission.csv").write_text("ID,Label\n0,0.5\n")
    (run / "checkpoint_submission.json").write_text('{"val_eer": 0.08}')
    code, out, err = call_cli(capsys, *_bundle_args(run, tmp_path), "--kaggle-score", "0.05")
    assert code == 0, err
    names = zipfile.ZipFile(tmp_path / "hand.zip").namelist()
    for expected in ("acknowledgement.txt", "README.txt", "model_arch.txt", "nb.ipynb", "submission.csv",
                     "config.yaml", "metrics.jsonl", "checkpoint_submission.json", "kaggle_score.txt", "MISSING.txt"):
        assert expected in names
    metadata = next(n for n in names if n.startswith("model_metadata_") and n.endswith(".json"))
    meta = json.loads(zipfile.ZipFile(tmp_path / "hand.zip").read(metadata))
    assert meta["trainable_params"] > 0 and "FaceModel" in meta["model"]


def test_bundle_refuses_without_acknowledgement_or_with_a_key(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    code, _, err = call_cli(capsys, *_bundle_args(run, tmp_path, ack="ACKNOWLEDGED = False\n"))
    assert code == 1 and "ACKNOWLEDGED = True" in err and not (tmp_path / "hand.zip").exists()
    (run / "kaggle.json").write_text('{"username": "me", "key": "0123456789abcdef0123456789abcdef"}')
    code, _, err = call_cli(capsys, *_bundle_args(run, tmp_path))
    assert code == 1 and "kaggle.json" in err and not (tmp_path / "hand.zip").exists()
    (run / "kaggle.json").unlink()
    (run / "notes.md").write_text("export WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567\n")
    code, _, err = call_cli(capsys, *_bundle_args(run, tmp_path))
    assert code == 1 and "W&B API key" in err


def test_answer_keys_and_acknowledgements_saved_with_a_bom_and_crlf_are_read(trained_run, tmp_path, capsys):
    submission, answers = tmp_path / "submission.csv", tmp_path / "answers.txt"
    submission.write_bytes(b"\xef\xbb\xbfID,Label\r\n0,0.9\r\n1,0.2\r\n2,0.4\r\n3,0.3\r\n")
    answers.write_bytes(b"\xef\xbb\xbf1\r\n0\r\n1\r\n0\r\n")
    assert call_cli(capsys, "score", submission, answers)[1] == "EER 0.000000\n"
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    code, _, err = call_cli(capsys, *_bundle_args(run, tmp_path, ack="\ufeffACKNOWLEDGED = True\r\n"))
    assert code == 0, err


def test_acknowledgement_and_checkpoint_record(tmp_path):
    from conftest import ROOT

    from helpers.handin.bundle import ACKNOWLEDGED, write_acknowledgement, write_checkpoint_submission

    written = write_acknowledgement(True, tmp_path / "ack.txt", template=ROOT / "acknowledgement.txt")
    text = written.read_text()
    assert ACKNOWLEDGED.search(text) and "academic integrity" in text and "= False" not in text
    assert not ACKNOWLEDGED.search(write_acknowledgement(False, tmp_path / "no.txt", ROOT / "acknowledgement.txt")
                                   .read_text())
    record = write_checkpoint_submission(tmp_path / "c.json", 0.08, 25_966_400, 4, 5, "student")
    assert json.loads((tmp_path / "c.json").read_text()) == record
    assert record["meets_cutoff"] and record["quiz_score"] == 4 and record["kaggle_username"] == "student"


def test_quiz_grading():
    from helpers.handin import quiz

    perfect = {i: q.answer for i, q in enumerate(quiz.QUESTIONS, 1)}
    assert quiz.grade(perfect)[0] == len(quiz.QUESTIONS)
    score, lines = quiz.grade({1: "A", 2: ""})
    assert score == 0 and "wrong (you said a)" in lines[0] and "not answered" in lines[1]


def test_report_compares_runs(trained_run, tmp_path, capsys):
    code, out, _ = call_cli(capsys, "report", trained_run, "--out", tmp_path / "report")
    assert code == 0 and "| trained |" in out
    table = pd.read_csv(tmp_path / "report" / "report.csv")
    assert table.loc[0, "best_val_eer"] <= table.loc[0, "final_val_eer"] and table.loc[0, "images_per_s"] > 0
    assert (tmp_path / "report" / "eer_over_time.png").read_bytes().startswith(PNG)
    assert call_cli(capsys, "report", tmp_path, "--out", tmp_path / "r2")[0] == 1
