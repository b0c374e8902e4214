"""A notebook opened alone drafts the hand-in's README.txt from its run, and says so; an existing one is kept."""

from __future__ import annotations

import shutil

from helpers.handin.readme import MARK, handin_readme
from helpers.model.checkpoint_summary import best_words


def test_a_lone_notebook_drafts_the_readme_from_the_run_once(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    alone = tmp_path / "alone"
    alone.mkdir()
    path, drafted = handin_readme(run, "f26", here=alone)
    assert drafted and path == run / "README.txt"
    text = path.read_text()
    assert "ResNet-18" in text and "within the 30,000,000-parameter budget" in text  # the model
    assert "optim:" in text and "augment:" in text and "lr:" in text  # the configuration
    assert f"best.pt: {best_words(run, 'f26')}" in text and "best_val_eer:" in text  # the results
    assert text.count(MARK) == 1 + 5  # the heading names the mark; five places for what the student must add
    path.write_text("my own notes\n")
    assert handin_readme(run, "f26", here=alone) == (path, False) and path.read_text() == "my own notes\n"


def test_a_readme_beside_the_notebook_is_the_one_handed_in(trained_run, tmp_path):
    (tmp_path / "README.txt").write_text("notes\n")
    assert handin_readme(trained_run, here=tmp_path) == (tmp_path / "README.txt", False)
    assert not (trained_run / "README.txt").exists()
