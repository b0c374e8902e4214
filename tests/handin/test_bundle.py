"""The Fall 2025 (seed) hand-in zip, the key refusals every term shares, the acknowledgement, the checkpoint
record and the quiz. Each term's own members: test_term_handin.py."""

from __future__ import annotations

import json
import zipfile

from conftest import call_cli

from helpers.core.io import read_metrics


def _bundle_args(run, tmp_path, ack="ACKNOWLEDGED = True\n"):
    (tmp_path / "ack.txt").write_text(ack)
    (tmp_path / "README.txt").write_text("notes\n")
    (tmp_path / "nb.ipynb").write_text('{"cells": []}')
    return ["bundle", "--term", "f25", "--run", run, "--notebook", tmp_path / "nb.ipynb", "--out",
            tmp_path / "hand.zip", "--acknowledgement", tmp_path / "ack.txt", "--readme", tmp_path / "README.txt"]


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
    summary = json.loads(zipfile.ZipFile(tmp_path / "hand.zip").read("run_summary.json"))
    best = min(r["val_eer"] for r in read_metrics(run / "metrics.jsonl") if r.get("val_eer") is not None)
    assert summary["EER"] == summary["best_val_eer"] == best


def test_bundle_carries_the_offline_wandb_runs_as_they_are(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "submission.csv").write_text("ID,Label\n0,0.5\n")
    files = run / "wandb" / "offline-run-20261129_120000-abc123"
    (files / "files").mkdir(parents=True)
    (files / "run-abc123.wandb").write_bytes(b":W&B\x00\x01\x00\x00 whatever W&B wrote")
    (files / "files" / "config.yaml").write_text("lr: 0.1\n")
    code, out, err = call_cli(capsys, *_bundle_args(run, tmp_path))
    assert code == 0, err
    archive = zipfile.ZipFile(tmp_path / "hand.zip")
    assert archive.read("wandb/offline-run-20261129_120000-abc123/run-abc123.wandb") == \
        (files / "run-abc123.wandb").read_bytes()
    assert "wandb/offline-run-20261129_120000-abc123/files/config.yaml" in archive.namelist()
    assert "1 offline run(s) are under wandb/" in archive.read("MISSING.txt").decode()


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
    record = write_checkpoint_submission(tmp_path / "c.json", 0.08, 25_966_400, 4, 5, "student", term="f25")
    assert json.loads((tmp_path / "c.json").read_text()) == record
    assert record["meets_cutoff"] and record["quiz_score"] == 4 and record["kaggle_username"] == "student"
    assert record["metric"] == "EER" and record["cutoff"] == 0.09
    # Fall 2026 grades the combined score, higher is better, against 0.80
    newest = write_checkpoint_submission(tmp_path / "d.json", 0.08, 25_966_400, 4, 5, val_score=0.79)
    assert newest["term"] == "f26" and newest["metric"] == "score" and not newest["meets_cutoff"]
    assert write_checkpoint_submission(tmp_path / "e.json", 0.2, 1, 4, 5, val_score=0.8)["meets_cutoff"]


def test_quiz_grading():
    from helpers.handin import quiz

    perfect = {i: q.answer for i, q in enumerate(quiz.QUESTIONS, 1)}
    assert quiz.grade(perfect)[0] == len(quiz.QUESTIONS)
    score, lines = quiz.grade({1: "A", 2: ""})
    assert score == 0 and "wrong (you said a)" in lines[0] and "not answered" in lines[1]


def test_bundle_never_packs_a_file_linked_from_outside_the_run_folder(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cache = tmp_path / "home" / ".cache" / "wandb" / "logs"
    cache.mkdir(parents=True)
    outside = cache / "core-debug-20261129_120000.log"
    outside.write_text("export WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567\n")  # not the run's
    logs = run / "wandb" / "offline-run-20261129_120000-abc123" / "logs"
    logs.mkdir(parents=True)
    (logs / "debug.log").write_text("INFO run started\n")
    (logs / "debug-core.log").symlink_to(outside)  # as W&B leaves it
    (run / "wandb" / "debug.log").symlink_to(logs / "debug.log")  # a link that stays inside: harmless
    code, _, err = call_cli(capsys, *_bundle_args(run, tmp_path))
    assert code == 0, err
    archive = zipfile.ZipFile(tmp_path / "hand.zip")
    assert "wandb/offline-run-20261129_120000-abc123/logs/debug.log" in archive.namelist()
    assert not [name for name in archive.namelist() if "debug-core" in name]
    assert not [name for name in archive.namelist() if b"WANDB_API_KEY" in archive.read(name)]

    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text((run / "config.yaml").read_text())
    (run / "config.yaml").unlink()
    (run / "config.yaml").symlink_to(elsewhere)
    code, _, err = call_cli(capsys, *_bundle_args(run, tmp_path))
    assert code == 1 and "Traceback" not in err
    assert f"{run / 'config.yaml'} is a link to a file outside the run folder" in err
