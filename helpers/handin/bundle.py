"""The Autolab hand-in zip: what the course asks for, built offline, never with a credential inside.

Members: ``acknowledgement.txt`` (the flag must be set), ``README.txt``,
``model_arch.txt``, ``model_metadata_<timestamp>.json``, the notebook, the
submission CSV(s), the run's ``config.yaml`` and ``metrics.jsonl``,
``checkpoint_submission.json`` when there is one, ``run_summary.json`` (the
course's summary key ``EER`` and the run's headline numbers, from ``metrics.jsonl``)
and the offline W&B run folders as W&B wrote them (``wandb/offline-run-*``, for
``wandb sync``). What needs a login (online W&B exports, the Kaggle score) is
listed in ``MISSING.txt`` instead.
"""

from __future__ import annotations

import datetime
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from helpers.core.config import load_config
from helpers.core.errors import UserError
from helpers.core.io import atomic_write
from helpers.handin.key_scan import describe, files_inside, folder_texts, refuse_links_out, scan_file
from helpers.model.checkpoint import load_checkpoint

ACKNOWLEDGED = re.compile(r"^\s*ACKNOWLEDGED\s*=\s*True\s*$", re.MULTILINE)
CHECKPOINT_CUTOFF = 0.09  # the checkpoint milestone's val EER bar


@dataclass
class BundleResult:
    path: Path
    members: list[str]
    missing: list[str]


def build_bundle(run_dir: str | Path, notebook: str | Path, out: str | Path = "HW2P2_final_submission.zip",
                 acknowledgement: str | Path = "acknowledgement.txt", readme: str | Path = "README.txt",
                 submissions: list[str | Path] | None = None, checkpoint_json: str | Path | None = None,
                 kaggle_score: float | None = None) -> BundleResult:
    """Assemble the hand-in zip at ``out`` (atomically), refusing on a missing flag or any credential."""
    from helpers.model.summary import model_arch_text, model_summary
    from helpers.training.tracking import offline_runs, run_summary

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    checkpoint = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
    if not checkpoint.is_file():
        raise UserError(f"{run_dir} holds no best.pt or last.pt: train first")
    acknowledgement, readme, notebook = Path(acknowledgement), Path(readme), Path(notebook)
    for required in (acknowledgement, readme, notebook):
        if not required.is_file():
            raise UserError(f"{required} does not exist; the hand-in needs it")
    if not ACKNOWLEDGED.search(acknowledgement.read_text(encoding="utf-8-sig", errors="replace")):
        raise UserError(f"{acknowledgement} does not say 'ACKNOWLEDGED = True': read the academic integrity "
                        "policy and set the flag in the notebook before handing in")

    members: dict[str, bytes] = {
        "acknowledgement.txt": acknowledgement.read_bytes(),
        "README.txt": readme.read_bytes(),
        notebook.name: notebook.read_bytes(),
    }
    state = load_checkpoint(checkpoint)
    summary = model_summary(load_config(base=state["config"]), len(state["classes"]))
    members["model_arch.txt"] = model_arch_text(summary).encode()
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    members[f"model_metadata_{stamp}.json"] = json.dumps(
        {"trainable_params": summary["trainable_params"], "total_params": summary["total_params"],
         "architecture": summary["architecture"], "checkpoint": checkpoint.name,
         "best_val_eer": state.get("best_eer"), "model": summary["printed_model"]}, indent=2).encode()
    for name in ("config.yaml", "metrics.jsonl"):
        if (run_dir / name).is_file():
            members[name] = (run_dir / name).read_bytes()
    csvs = [Path(p) for p in submissions] if submissions else sorted(run_dir.glob("submission*.csv"))
    for csv in csvs:
        if not csv.is_file():
            raise UserError(f"submission {csv} does not exist")
        members[csv.name] = csv.read_bytes()
    checkpoint_json = Path(checkpoint_json) if checkpoint_json else run_dir / "checkpoint_submission.json"
    if checkpoint_json.is_file():
        members["checkpoint_submission.json"] = checkpoint_json.read_bytes()

    missing = []
    if not csvs:
        missing.append("no submission CSV: run `python -m helpers submit` first")
    # The course ranks runs by the summary key EER; the numbers come from metrics.jsonl, which holds what
    # W&B was sent, and the offline W&B runs travel as they are, for `wandb sync` once there is a login.
    members["run_summary.json"] = json.dumps({"EER": state.get("best_eer"), **run_summary(run_dir)},
                                             indent=2).encode()
    wandb_runs = offline_runs(run_dir)
    for folder in wandb_runs:
        for path in files_inside(folder, run_dir):  # never a file linked from outside (W&B's debug-core.log)
            members[path.relative_to(run_dir).as_posix()] = path.read_bytes()
    missing.append(f"online W&B run exports: they need a W&B login; the {len(wandb_runs)} offline run(s) are under "
                   "wandb/ (upload with `wandb sync`), their numbers in run_summary.json"
                   if wandb_runs else "W&B run exports: no offline W&B run found in the run folder; the run's "
                   "numbers are in run_summary.json")
    if kaggle_score is not None:
        members["kaggle_score.txt"] = f"{kaggle_score}\n".encode()
    else:
        missing.append("best Kaggle score: pass --kaggle-score (fetching it needs a Kaggle login)")
    members["MISSING.txt"] = ("What this offline bundle could not include:\n"
                              + "".join(f"- {line}\n" for line in missing)).encode()

    _refuse_credentials(members, run_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    atomic_write(out, lambda handle: handle.write(buffer.getvalue()))
    return BundleResult(Path(out), list(members), missing)


def _refuse_credentials(members: dict[str, bytes], run_dir: Path) -> None:
    """Stop on any secret in what is packed, or lying anywhere in the run folder; name where, never the key."""
    refuse_links_out(run_dir)
    files = list(members.items()) + folder_texts(run_dir)
    for name, data in files:
        findings = scan_file(name, data)
        if findings:
            raise UserError(f"refusing to build the hand-in: {describe(name, findings)}; delete it from there "
                            "(keys belong in Colab or Kaggle Secrets or environment variables) and try again")


def write_checkpoint_submission(path: str | Path, val_eer: float | None, parameters: int, quiz_score: int,
                                quiz_total: int, kaggle_username: str = "") -> dict:
    """The checkpoint milestone's ``checkpoint_submission.json`` (written atomically); returns its content."""
    from helpers.core.io import atomic_write_text

    record = {"val_eer": val_eer, "meets_cutoff": val_eer is not None and val_eer <= CHECKPOINT_CUTOFF,
              "cutoff": CHECKPOINT_CUTOFF, "parameters": parameters, "quiz_score": quiz_score,
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
