"""The files of a hand-in, one builder per kind of content a term's member names (terms.yaml ``content``).

:class:`HandinSources` holds what they are made from (the run folder, its
checkpoint, the notebook, the acknowledgement and README) and opens the Kaggle
and W&B clients once, on first use; :meth:`HandinSources.build` turns one
member into the files it stands for, through the builder below that
helpers/core/registry.py's HANDIN_MEMBERS names for its content. A member
that cannot be built (no login, no network, a refusal from the service)
raises :class:`UserError` with the reason in one sentence.
"""

from __future__ import annotations

import datetime
import json
import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from helpers.core.errors import UserError
from helpers.core.registry import HANDIN_MEMBERS
from helpers.core.terms import Member, Term
from helpers.handin.schema import conform

if TYPE_CHECKING:
    from helpers.model.checkpoint import Checkpoint

# Stand-ins replace these in tests; the defaults sign in with the credentials found on this machine.
OPENERS: dict[str, Callable] = {}


def _open(service: str):
    if service in OPENERS:
        return OPENERS[service]()
    if service == "kaggle":
        from helpers.handin.kaggle import KaggleAccount

        return KaggleAccount.open()
    from helpers.handin.exports import open_wandb

    return open_wandb()


@dataclass
class HandinSources:
    """What a term's hand-in is made from; the clients open lazily and at most once."""

    run_dir: Path
    checkpoint: Path
    saved: Checkpoint  # what the checkpoint file holds
    notebook: Path
    acknowledgement: Path
    readme: Path
    term: Term
    stamp: datetime.datetime = field(default_factory=datetime.datetime.now)
    kaggle_username: str | None = None
    slack: bool = False
    wandb_project: str | None = None  # entity/project of the runs to rank (Spring 2026)
    run_files: Callable[["HandinSources"], tuple[dict[str, bytes], list[str]]] | None = None
    notes: list[str] = field(default_factory=list)  # what the bundle says it left out (MISSING.txt)
    _clients: dict = field(default_factory=dict)

    def client(self, service: str):
        """The signed-in Kaggle account or W&B API; a failure is remembered, so it is reported once per member."""
        if service not in self._clients:
            try:
                self._clients[service] = _open(service)
            except UserError as error:
                self._clients[service] = error
        found = self._clients[service]
        if isinstance(found, UserError):
            raise found
        return found

    def build(self, member: Member) -> dict[str, bytes]:
        """The files ``member`` stands for, by name (one, except the run's own files), made by the builder
        HANDIN_MEMBERS names for its content."""
        value = HANDIN_MEMBERS.get(member.content)(self, member)
        if isinstance(value, Files):
            return dict(value)
        if member.table:
            value = conform(value, member.table)
        name = member.file_name(self.stamp, self.notebook.name)
        if isinstance(value, bytes):
            return {name: value}
        if name.endswith(".pkl"):
            return {name: pickle.dumps(value)}
        return {name: json.dumps(value, indent=2).encode()}

    @cached_property
    def model(self):
        """The checkpoint's model, the weights it holds loaded (what the backends describe)."""
        return self.saved.restore_model(source=self.checkpoint)

    @cached_property
    def summary(self) -> dict:
        from helpers.model.summary import model_summary

        summary = model_summary(self.saved.config, len(self.saved.classes))
        if not summary["within_budget"]:
            raise UserError(f"{self.checkpoint}'s model has {summary['total_params']:,} parameters, over the "
                            f"assignment's {summary['budget']:,}: the course refuses it")
        return summary

    @cached_property
    def kaggle_metadata(self) -> dict:
        from helpers.handin.exports import kaggle_metadata

        return kaggle_metadata(self.client("kaggle"), self.kaggle_username, self.term)

    def run_project(self) -> str:
        """``entity/project`` of the run's own W&B settings (the entity by :func:`wandb_entity`)."""
        from helpers.handin.exports import wandb_entity

        settings = self.saved.config.tracking.wandb
        entity = wandb_entity(settings.entity, lambda: self.client("wandb"))
        if not entity:
            raise UserError("neither the run (tracking.wandb.entity) nor WANDB_ENTITY nor the W&B login names a W&B "
                            "entity: set WANDB_ENTITY or pass --wandb-project ENTITY/PROJECT")
        return f"{entity}/{settings.project}"


# ---------------------------------------------------------------------- the builders, one per content


class Files(dict):
    """Files a builder names itself (the run's own files), packed as they are."""


def acknowledgement(sources: HandinSources, member: Member) -> bytes:
    return sources.acknowledgement.read_bytes()


def readme(sources: HandinSources, member: Member) -> bytes:
    return sources.readme.read_bytes()


def notebook(sources: HandinSources, member: Member) -> bytes:
    return sources.notebook.read_bytes()


def run_files(sources: HandinSources, member: Member) -> Files:
    """The run's own files (Fall 2025's extras); what they lack goes to the bundle's notes."""
    files, notes = sources.run_files(sources)
    sources.notes += notes
    return Files(files)


def model_arch(sources: HandinSources, member: Member) -> bytes:
    from helpers.model.summary import model_arch_text

    return model_arch_text(sources.summary).encode()


def model_metadata(sources: HandinSources, member: Member) -> dict:
    """The model metadata in the layout of the member's table (a term's own, or one it shares with another)."""
    import torch

    summary, model, table = sources.summary, sources.model, member.table
    if table == "f25_model_metadata":
        return {"trainable_params": summary["trainable_params"], "total_params": summary["total_params"],
                "architecture": summary["architecture"], "checkpoint": sources.checkpoint.name,
                "best_val_eer": sources.saved.best_eer, "model": summary["printed_model"]}
    if table == "s26_model_metadata":
        return {"parameter_count": summary["trainable_params"], "model_architecture": str(model)}
    if table == "f26_model_metadata":
        return {"schema_version": "1.0",
                "model": {"class_name": type(model).__name__, "module": type(model).__module__,
                          "repr": repr(model), "trainable_parameters": summary["trainable_params"],
                          "total_parameters": summary["total_params"]},
                "framework": {"backend_name": "torch", "torch_version": torch.__version__,
                              "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda}}
    raise ValueError(f"no model metadata layout for the table {table}")  # a terms.yaml mistake, not a user's


def kaggle_submissions(sources: HandinSources, member: Member) -> dict:
    return sources.kaggle_metadata


def kaggle_best(sources: HandinSources, member: Member) -> dict:
    from helpers.handin.exports import kaggle_best as best

    return best(sources.client("kaggle"), sources.kaggle_username, sources.term, sources.slack)


def wandb_linked_runs(sources: HandinSources, member: Member) -> list:
    from helpers.handin.exports import linked_run_records, linked_runs

    try:
        paths = linked_runs(sources.kaggle_metadata, sources.term)
    except UserError as error:
        raise UserError(f"the runs to export are the ones the Kaggle submissions name, and {error}") from None
    return linked_run_records(sources.client("wandb"), paths)


def wandb_top_runs(sources: HandinSources, member: Member) -> list:
    from helpers.handin.exports import top_run_records

    project = sources.wandb_project or sources.run_project()
    return top_run_records(sources.client("wandb"), project, sources.term)
