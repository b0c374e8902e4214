"""The hand-in's ``README.txt``, drafted from a run when the notebook has none beside it.

The course asks the README for the model, the training strategy, the
augmentations and how to run the notebook. A run can say the first and the
numbers (its architecture and parameter counts, its configuration, its best
evaluation); what only the student can say (why these choices, what was tried,
the Kaggle score) is left as ``[WRITE HERE: ...]`` places. An existing README is
never replaced.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from helpers.core.io import atomic_write_text
from helpers.core.terms import get_term
from helpers.model.checkpoint import Checkpoint
from helpers.model.checkpoint_summary import best_words
from helpers.model.summary import model_summary, summary_lines
from helpers.training.tracking import run_summary

MARK = "[WRITE HERE"  # every place the student must fill in starts with this
TRAINING_SECTIONS = ("optim", "sched", "loss", "train")


def handin_readme(run_dir: str | Path, term: str | None = None, here: str | Path = ".") -> tuple[Path, bool]:
    """The README.txt a hand-in takes: ``here/README.txt`` when there is one, else the run folder's, drafted
    from the run when it does not exist yet. Returns its path and whether it was drafted just now."""
    beside = Path(here) / "README.txt"
    if beside.is_file():
        return beside, False
    path = Path(run_dir) / "README.txt"
    if path.exists():
        return path, False
    atomic_write_text(path, readme_template(run_dir, term))
    return path, True


def readme_template(run_dir: str | Path, term: str | None = None) -> str:
    """A README.txt from the run in ``run_dir`` (best.pt, else last.pt; metrics.jsonl) under ``term`` (the run's
    own by default): the model, the configuration, the results, and marked places for the rest."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
    saved = Checkpoint.load(checkpoint)
    cfg = saved.config
    chosen = get_term(term or cfg.course.term)
    settings = cfg.as_dict()
    numbers = {key: value for key, value in run_summary(run_dir).items() if value is not None}
    sections = [
        ("1. Model", summary_lines(model_summary(cfg, len(saved.classes))) + [
            "", f"{MARK}: why this architecture, and what else you tried]"]),
        ("2. Training strategy", _yaml({name: settings[name] for name in TRAINING_SECTIONS}) + [
            "", f"{MARK}: the optimiser, schedule and loss in your words, the runs that led here and what each "
                "changed]"]),
        ("3. Augmentations", _yaml({"augment": settings["augment"]}) + [
            "", f"{MARK}: which augmentations helped, and any test-time augmentation]"]),
        (f"4. Results ({chosen.title}: {chosen.leaderboard.label}, {chosen.leaderboard.better} is better)", [
            f"best.pt: {best_words(run_dir, chosen.name)}",
            *(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}"
              for key, value in numbers.items()),
            f"{MARK}: your best Kaggle score (public and private) and the submission it came from]"]),
        ("5. How to run", [
            "python -m helpers train --config <your config> (or the starter notebook, top to bottom), then "
            "python -m helpers submit --checkpoint <run>/best.pt",
            f"{MARK}: the data you used, the commands or notebook parameters, and how long it trained on what]"]),
    ]
    head = (f"HW2P2 README, drafted by the toolkit from the run {run_dir.name}: complete every {MARK}: ...] "
            "place before handing in.")
    body = [head, ""]
    for title, lines in sections:
        body += [title, "-" * len(title), *lines, ""]
    return "\n".join(body)


def _yaml(values: dict) -> list[str]:
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=False).rstrip("\n").splitlines()
