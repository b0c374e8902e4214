"""The hand-in zip, exactly as the course term's grader expects it, never with a credential inside.

The members come from the term (``helpers/core/terms.yaml``): Fall 2026's five
(``ACKNOWLEDGEMENT.txt``, ``README.txt``, ``model_metadata.json``,
``wandb_export.pkl``, ``kaggle_metadata.json``) and the notebook; Spring 2026's
``kaggle_data.json``, ``wandb_top_runs.pkl`` and stamped model metadata; Fall
2025's offline bundle (model_arch.txt, the run's config, metrics, submissions
and offline W&B runs, with ``MISSING.txt`` for what needs a login).

A member that needs a login or the network and cannot be had here is named,
with why, in one sentence each, and nothing is written: a zip the grader would
refuse must not look finished. ``draft=True`` writes it anyway, on purpose,
with ``MISSING.txt``, under a name that says DRAFT.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from helpers.core.errors import UserError
from helpers.core.io import atomic_write
from helpers.core.records import KEYS
from helpers.core.terms import Term, get_term
from helpers.handin.key_scan import describe, files_inside, folder_texts, refuse_links_out, scan_file
from helpers.handin.members import HandinSources
from helpers.model.checkpoint import Checkpoint

ACKNOWLEDGED = re.compile(r"^\s*ACKNOWLEDGED\s*=\s*True\s*$", re.MULTILINE)


@dataclass
class BundleResult:
    path: Path
    members: list[str]
    missing: list[str]
    term: str = ""
    draft: bool = False


def build_bundle(run_dir: str | Path, notebook: str | Path, out: str | Path | None = None,
                 acknowledgement: str | Path = "acknowledgement.txt", readme: str | Path = "README.txt",
                 submissions: list[str | Path] | None = None, checkpoint_json: str | Path | None = None,
                 kaggle_score: float | None = None, term: str | None = None, kaggle_username: str | None = None,
                 slack: bool = False, wandb_project: str | None = None, draft: bool = False) -> BundleResult:
    """Assemble ``term``'s hand-in zip at ``out`` (the term's zip name by default), atomically; refuse on a
    missing acknowledgement, a member that cannot be built (unless ``draft``), or any credential inside."""
    chosen = get_term(term)
    kaggle_username = kaggle_username or os.environ.get("KAGGLE_USERNAME") or None
    sources = _sources(Path(run_dir), Path(notebook), Path(acknowledgement), Path(readme), chosen,
                       kaggle_username=kaggle_username, slack=slack, wandb_project=wandb_project)
    sources.run_files = lambda s: _run_files(s, submissions, checkpoint_json, kaggle_score)
    # Before any login is used: a key in the notebook or the run folder stops the hand-in whatever the term.
    _refuse_credentials({path.name: path.read_bytes() for path in (sources.notebook, sources.acknowledgement,
                                                                   sources.readme)}, sources.run_dir)
    members, unbuilt = _build_members(sources)
    if unbuilt and not draft:
        raise UserError(f"no hand-in was written: {chosen.title}'s grader needs {len(unbuilt)} member(s) that "
                        "could not be built here:\n" + "\n".join(f"  {name}: {why}" for name, why in unbuilt.items())
                        + "\n(--draft writes the incomplete zip on purpose, with MISSING.txt)")
    notes = list(sources.notes) + [f"{name}: {why}" for name, why in unbuilt.items()]
    if notes:
        heading = "What this bundle could not include" + (" (a DRAFT: the grader will refuse it)" if unbuilt else "")
        members["MISSING.txt"] = (heading + ":\n" + "".join(f"- {line}\n" for line in notes)).encode()
    _refuse_credentials(members)  # what the exports brought in (a key typed into a W&B config, say)
    path = Path(out) if out else Path(chosen.zip)
    if unbuilt and "draft" not in path.name.lower():
        path = path.with_name(f"{path.stem}_DRAFT{path.suffix}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
    return BundleResult(path, list(members), notes, chosen.name, bool(unbuilt))


def closing_line(result: BundleResult) -> str:
    """What to do with a written hand-in: check it, then upload it where its term takes hand-ins."""
    term = get_term(result.term)
    if result.draft:
        return (f"{result.path} is a DRAFT: build it again once the missing members can be made, before uploading "
                f"to {term.handin_to}")
    return (f"next: python -m helpers bundle --check {result.path} --term {term.name}, then upload "
            f"{result.path.name} to {term.handin_to} ({term.title}'s final hand-in)")


def _sources(run_dir: Path, notebook: Path, acknowledgement: Path, readme: Path, term: Term, **options) -> HandinSources:
    """What the hand-in is made from, after the checks that need no login: the run, the files, the flag."""
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    checkpoint = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
    if not checkpoint.is_file():
        raise UserError(f"{run_dir} holds no best.pt or last.pt: train first")
    for required in (acknowledgement, readme, notebook):
        if not required.is_file():
            raise UserError(f"{required} does not exist; the hand-in needs it")
    if not ACKNOWLEDGED.search(acknowledgement.read_text(encoding="utf-8-sig", errors="replace")):
        raise UserError(f"{acknowledgement} does not say 'ACKNOWLEDGED = True': read the academic integrity "
                        "policy and set the flag in the notebook before handing in")
    return HandinSources(run_dir, checkpoint, Checkpoint.load(checkpoint), notebook, acknowledgement, readme, term,
                         datetime.datetime.now(), **options)


def _build_members(sources: HandinSources) -> tuple[dict[str, bytes], dict[str, str]]:
    """Every member's files by name, and the members that could not be built with why."""
    members: dict[str, bytes] = {}
    unbuilt: dict[str, str] = {}
    for member in sources.term.members:
        try:
            members.update(sources.build(member))
        except UserError as error:
            if not member.needs:  # a refusal that no login cures (over the parameter budget): stop
                raise
            unbuilt[member.file_name(sources.stamp, sources.notebook.name)] = str(error)
    return members, unbuilt


def _run_files(sources: HandinSources, submissions, checkpoint_json, kaggle_score) -> tuple[dict[str, bytes], list[str]]:
    """Fall 2025's extras: the run's config, metrics, submissions and offline W&B runs; and what they lack."""
    from helpers.training.tracking import offline_runs, run_summary

    run_dir, files, missing = sources.run_dir, {}, []
    for name in ("config.yaml", "metrics.jsonl"):
        if (run_dir / name).is_file():
            files[name] = (run_dir / name).read_bytes()
    csvs = [Path(p) for p in submissions] if submissions else sorted(run_dir.glob("submission*.csv"))
    for csv in csvs:
        if not csv.is_file():
            raise UserError(f"submission {csv} does not exist")
        files[csv.name] = csv.read_bytes()
    checkpoint_json = Path(checkpoint_json) if checkpoint_json else run_dir / "checkpoint_submission.json"
    if checkpoint_json.is_file():
        files["checkpoint_submission.json"] = checkpoint_json.read_bytes()
    if not csvs:
        missing.append("no submission CSV: run `python -m helpers submit` first")
    # The course ranks runs by the summary key EER; the numbers come from metrics.jsonl, which holds what
    # W&B was sent, and the offline W&B runs travel as they are, for `wandb sync` once there is a login.
    files["run_summary.json"] = json.dumps({"EER": sources.saved.best_eer, **run_summary(run_dir)},
                                           indent=2).encode()
    wandb_runs = offline_runs(run_dir)
    for folder in wandb_runs:
        for path in files_inside(folder, run_dir):  # never a file linked from outside (W&B's debug-core.log)
            files[path.relative_to(run_dir).as_posix()] = path.read_bytes()
    missing.append(f"online W&B run exports: they need a W&B login; the {len(wandb_runs)} offline run(s) are under "
                   "wandb/ (upload with `wandb sync`), their numbers in run_summary.json"
                   if wandb_runs else "W&B run exports: no offline W&B run found in the run folder; the run's "
                   "numbers are in run_summary.json")
    if kaggle_score is not None:
        files["kaggle_score.txt"] = f"{kaggle_score}\n".encode()
    else:
        missing.append("best Kaggle score: pass --kaggle-score (fetching it needs a Kaggle login)")
    return files, missing


def _refuse_credentials(members: dict[str, bytes], run_dir: Path | None = None) -> None:
    """Stop on any secret in what is packed, or lying anywhere in the run folder; name where, never the key."""
    files = list(members.items())
    if run_dir is not None:
        refuse_links_out(run_dir)
        files += folder_texts(run_dir)
    for name, data in files:
        findings = scan_file(name, data)
        if findings:
            raise UserError(f"refusing to build the hand-in: {describe(name, findings)}; delete it from there "
                            "(keys belong in Colab or Kaggle Secrets or environment variables) and try again")


def write_checkpoint_submission(path: str | Path, val_eer: float | None, parameters: int, quiz_score: int,
                                quiz_total: int, kaggle_username: str = "", term: str | None = None,
                                val_score: float | None = None) -> dict:
    """The checkpoint milestone's ``checkpoint_submission.json`` (written atomically); returns its content.

    The cutoff is ``term``'s: a val EER at or below it (Fall 2025, Spring 2026), or a combined score at or
    above it (Fall 2026)."""
    from helpers.core.io import atomic_write_text

    chosen = get_term(term)
    board = chosen.leaderboard
    value = board.value(val_eer, None) if board.metric == "eer" else val_score
    record = {"term": chosen.name, "metric": board.label, "value": value, KEYS.val_eer: val_eer,
              KEYS.val_score: val_score,
              "meets_cutoff": value is not None and board.passes(value, chosen.checkpoint_cutoff),
              "cutoff": chosen.checkpoint_cutoff, "parameters": parameters, "quiz_score": quiz_score,
              "quiz_total": quiz_total, "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
              "kaggle_username": kaggle_username or None}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def write_acknowledgement(acknowledged: bool, path: str | Path, template: str | Path = "acknowledgement.txt") -> Path:
    """The acknowledgement for a hand-in: the template's text with its flag line set to ``acknowledged``."""
    from helpers.core.io import atomic_write_text

    template = Path(template)
    text = template.read_text(encoding="utf-8-sig") if template.is_file() else "ACKNOWLEDGED = False\n"
    flag = f"ACKNOWLEDGED = {bool(acknowledged)}"
    text, count = re.subn(r"^\s*ACKNOWLEDGED\s*=.*$", flag, text, flags=re.MULTILINE)
    atomic_write_text(path, text if count else text.rstrip("\n") + f"\n\n{flag}\n")
    return Path(path)
