"""Submissions in the shape of a competition's sample_submission.csv, Fall 2026's unified board end to end, and
the W&B provenance each Fall 2026 Kaggle submission carries."""

from __future__ import annotations

import csv

import pytest
from conftest import TINY, call_cli

from helpers.core.errors import UserError
from helpers.data.layout import answer_key_path, open_data, solution_path
from helpers.handin.sample import is_pair_index, read_sample


@pytest.fixture(scope="module")
def f26_run(tmp_path_factory):
    """A Fall 2026-shaped demo root (unlabelled test images, unified sample, answers beside it) and a run on it."""
    from helpers.data.demo import make_demo_data
    from helpers.training.engine import train

    root = tmp_path_factory.mktemp("f26") / "demo26"
    make_demo_data(root, identities=12, images_per_identity=10, verification_identities=20, size=32,
                   difficulty=0.5, layout="f26", val_pairs=100, test_pairs=100)
    out = tmp_path_factory.mktemp("runs")
    result = train(None, TINY + [f"data.root={root}", f"run.out_dir={out}", "run.name=f26", "train.epochs=4",
                                 "optim.name=adam", "optim.lr=0.005", "tracking.wandb.mode=offline",
                                 "tracking.wandb.entity=student-team"])
    return root, result.run_dir


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_f26_demo_root_is_unlabelled_with_a_unified_sample_and_answers_beside_it(f26_run):
    root, _ = f26_run
    data = open_data(root)
    assert data.test is not None and data.test.labels is None and len(data.test.paths) == 12
    sample = _rows(root / "sample_submission.csv")
    assert sample[0] == ["ID", "Label"] and len(sample) == 1 + 12 + len(data.test_pairs)
    assert sample[1][0] == data.test.paths[0].name and sample[13][0] == "0"
    solution = _rows(solution_path(root))
    assert solution[0] == ["ID", "Label", "Task"] and {row[2] for row in solution[1:]} == {"image", "pair"}
    assert not (root / "cls_data" / "test" / "labels.txt").exists() and answer_key_path(root).is_file()


def test_submit_fills_the_samples_header_and_ids_in_order_and_score_grades_it(f26_run, tmp_path, capsys):
    root, run = f26_run
    out = tmp_path / "unified.csv"
    code, stdout, err = call_cli(capsys, "submit", "--checkpoint", run / "best.pt", "--out", out)
    assert code == 0, err
    written, sample = _rows(out), _rows(root / "sample_submission.csv")
    assert [row[0] for row in written] == [row[0] for row in sample]  # the header and every ID, in its order
    classes = {row[1] for row in written[1:13]}
    assert classes <= {str(i) for i in range(12)}  # class ids in the data's own ids
    assert all(0.0 <= abs(float(row[1])) <= 1.0 and "." in row[1] for row in written[13:])  # pair scores
    assert "12 test images, 100 test pairs as scores" in stdout and "test score" in stdout
    code, stdout, _ = call_cli(capsys, "score", out, solution_path(root))
    assert code == 0 and stdout.startswith("score ") and "classification accuracy" in stdout and "EER" in stdout


def test_a_sample_of_zeros_and_ones_gets_decisions_and_a_first_term_shaped_sample_gets_todays_file(f26_run, tmp_path,
                                                                                                 capsys):
    root, run = f26_run
    pairs = len(open_data(root).test_pairs)
    binary = tmp_path / "binary_sample.csv"
    binary.write_text("pair_id,same\n" + "".join(f"{i},{i % 2}\n" for i in reversed(range(pairs))))
    out = tmp_path / "b.csv"
    code, _, err = call_cli(capsys, "submit", "--checkpoint", run / "best.pt", "--out", out, "--sample", binary)
    assert code == 0, err
    rows = _rows(out)
    assert rows[0] == ["pair_id", "same"] and rows[1][0] == str(pairs - 1) and {r[1] for r in rows[1:]} <= {"0", "1"}
    first_term = tmp_path / "first_term_sample.csv"
    first_term.write_text("ID,Label\n" + "".join(f"{i},0.5\n" for i in range(pairs)))
    code, stdout, err = call_cli(capsys, "submit", "--checkpoint", run / "best.pt", "--out", tmp_path / "s.csv",
                                 "--sample", first_term)
    assert code == 0 and "test EER" in stdout, err


@pytest.mark.parametrize("text, expected", [
    ("ID,Label\n0,0.5\n7777,0.5\n", "sample.csv:3: the ID '7777' is neither a test pair's index"),
    ("ID,Label\n0,0.5\n1,0.5\n0,0.5\n", "sample.csv:4 repeats the ID '0' of line 2"),
    ("ID,Label,Usage\n0,0.5,Public\n", "sample.csv:1 must name two columns, an ID and a value, not ID, Label, Usage"),
    ("ID,Label\n0,0.5,extra\n", "sample.csv:2 has 3 columns"),
    ("ID,Label\n00,0.5\n", "the ID '00' is neither"),
    ("ID,ID\n0,0.5\n", "sample.csv:1 names the column 'ID' twice"),
    (" ID , ID\n0,0.5\n", "sample.csv:1 names the column 'ID' twice"),
    ("ID,\n0,0.5\n", "sample.csv:1 leaves a column unnamed"),
    ("ID,Label\n0," + "9" * 200_000 + "\n", "sample.csv:2 holds a field of over 1,024 characters"),  # past csv's limit
    ("ID,Label\n0,0.5\n" + "x" * 2000 + ",0.5\n", "sample.csv:3 holds a field of over 1,024 characters"),
])
def test_a_sample_the_toolkit_cannot_fill_is_refused_naming_its_line(tmp_path, text, expected):
    path = tmp_path / "sample.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=expected):
        read_sample(path, pairs=10, images=["0000001.jpg"])


def test_an_id_that_is_both_a_pair_and_an_image_is_refused_and_image_ids_work_without_extensions(tmp_path):
    path = tmp_path / "sample.csv"
    path.write_text("ID,Label\n3,0\n")
    with pytest.raises(UserError, match="both a test pair's index and a test image's name"):
        read_sample(path, pairs=10, images=["3.jpg"])
    path.write_text("ID,Label\n0000001,0\n0000002.jpg,0\n4,0.0\n")
    shape = read_sample(path, pairs=10, images=["0000001.jpg", "0000002.jpg"])
    assert [(r.kind, r.index) for r in shape.rows] == [("image", 0), ("image", 1), ("pair", 4)]
    assert not shape.binary  # "0.0" is a score, not a decision
    assert is_pair_index("10", 11) and not is_pair_index("010", 11) and not is_pair_index("-1", 11)
    assert not is_pair_index("١", 11)  # a digit of another script is no index


def test_a_sample_id_the_data_cannot_answer_is_refused_and_nothing_is_written(f26_run, tmp_path, capsys):
    root, run = f26_run
    sample = tmp_path / "other.csv"
    sample.write_text("ID,Label\nnot_a_file.jpg,0\n")
    code, _, err = call_cli(capsys, "submit", "--checkpoint", run / "best.pt", "--out", tmp_path / "x.csv",
                            "--sample", sample)
    assert code == 1 and "other.csv:2" in err and not (tmp_path / "x.csv").exists()


def test_fall_2026_kaggle_descriptions_name_the_run(f26_run, tmp_path, monkeypatch, capsys):
    root, run = f26_run
    import torch

    run_id = torch.load(run / "best.pt", weights_only=True)["wandb_run_id"]
    tool = tmp_path / "bin" / "kaggle"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\" > " + str(tmp_path / "args.txt") + "\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}:/usr/bin:/bin")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_" + "0" * 32)
    code, stdout, err = call_cli(capsys, "submit", "--checkpoint", run / "best.pt", "--out", tmp_path / "s.csv",
                                 "--kaggle")
    assert code == 0, err
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert args[args.index("-c") + 1] == "hw-2-p-2-fall-2026-student-competition"
    assert args[args.index("-m") + 1] == f"|WB=student-team/hw2p2-ablations/{run_id}"
    assert "logged offline: upload it with `wandb sync" in stdout
    code, _, err = call_cli(capsys, "submit", "--checkpoint", run / "best.pt", "--out", tmp_path / "s.csv",
                            "--kaggle", "--message", "my best try")
    assert code == 1 and "'|WB=ENTITY/PROJECT/RUN_ID'" in err
    code, _, err = call_cli(capsys, "submit", "--checkpoint", run / "best.pt", "--out", tmp_path / "s.csv",
                            "--kaggle", "--term", "f25", "--kaggle-competition", "c", "--message", "free text")
    assert code == 0 and (tmp_path / "args.txt").read_text().splitlines()[-1] == "free text"


def test_a_run_without_wandb_cannot_be_submitted_to_fall_2026(trained_run, tmp_path, monkeypatch, capsys):
    code, _, err = call_cli(capsys, "submit", "--checkpoint", trained_run / "best.pt", "--out", tmp_path / "s.csv",
                            "--kaggle")
    assert code == 1 and "logged no W&B run" in err and not (tmp_path / "s.csv").exists()


def test_a_class_id_only_python_takes_for_a_digit_is_compared_as_text_not_a_traceback(tmp_path):
    from helpers.handin.submission import score_unified

    solution = tmp_path / "solution.csv"
    solution.write_text("ID,Label,Task\n0,1,pair\n1,0,pair\na.jpg,2,image\nb.jpg,7,image\n")
    submission = tmp_path / "submission.csv"
    submission.write_text("ID,Label\n0,0.9\n1,0.1\na.jpg,\u00b2\nb.jpg,07\n")  # a superscript two, and 07 for 7
    result = score_unified(submission, solution)
    assert result.accuracy == 0.5 and result.eer == 0.0 and result.images == 2


@pytest.mark.parametrize("sample,refusal", [
    ("ID,ID\n{ids}", "sample.csv:1 names the column 'ID' twice"),
    ("ID,Label\n{some}", "{out} lacks '{missing}' (92 missing, 0 unknown IDs) (the existing {out} is kept)"),
], ids=["duplicate column", "ids the answers lack"])
def test_a_file_the_answers_would_refuse_is_refused_before_it_replaces_anything(f26_run, tmp_path, capsys, sample,
                                                                               refusal):
    root, run = f26_run
    ids = [row[0] for row in _rows(root / "sample_submission.csv")[1:]]
    path = tmp_path / "sample.csv"
    path.write_text(sample.format(ids="".join(f"{i},0\n" for i in ids), some="".join(f"{i},0\n" for i in ids[:20])))
    out = tmp_path / "out.csv"
    out.write_text("ID,Label\nmy earlier submission\n")
    code, stdout, err = call_cli(capsys, "submit", "--checkpoint", run / "best.pt", "--out", out, "--sample", path)
    assert code == 1 and "Traceback" not in err and "wrote" not in stdout
    assert out.read_text() == "ID,Label\nmy earlier submission\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.csv")]  # no temporary file left
    assert refusal.format(out=out, missing=ids[20]) in err


def test_a_field_past_csvs_limit_is_one_sentence_when_scoring(tmp_path, capsys):
    submission, solution = tmp_path / "submission.csv", tmp_path / "solution.csv"
    solution.write_text("ID,Label,Task\n0,1,pair\n1,0,pair\n")
    submission.write_text("ID,Label\n0,0.9\n1," + "0" * 200_000 + "\n")
    code, _, err = call_cli(capsys, "score", submission, solution)
    assert code == 1 and "Traceback" not in err
    assert f"{submission}:3 holds a field of over 1,024 characters" in err
