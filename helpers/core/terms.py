"""The course's terms: what each one grades and what its hand-in holds, read from ``terms.yaml`` beside this file.

A :class:`Term` is data, not code: its leaderboard metric and direction, the
checkpoint cutoff, the Kaggle competitions, the tag every Kaggle submission's
description carries, and the hand-in's members with the field table each must
match. ``course.term`` (``--term`` on the command line, ``term`` in the
notebooks) picks one; ``newest``, the default, is the entry with the highest
``order``. Everything that grades, selects, submits or hands in asks the term.
"""

from __future__ import annotations

import datetime
import functools
import re
from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from helpers.core.errors import UserError
from helpers.core.registry import HANDIN_MEMBERS

TERMS_FILE = Path(__file__).with_name("terms.yaml")
NEWEST = "newest"  # the course.term value that means the newest known term
WB_MARK = "|WB="  # what separates the tag from the W&B run path in a Kaggle submission's description


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Leaderboard(_Frozen):
    """How a term's leaderboard scores a submission."""

    metric: Literal["eer", "combined"]
    """eer: test-pair EER | combined: 0.5 x classification accuracy + 0.5 x (1 - EER)"""
    better: Literal["lower", "higher"]
    wandb_key: str
    """the W&B summary key the metric is logged under"""

    @property
    def label(self) -> str:
        return "EER" if self.metric == "eer" else "score"

    @property
    def record_key(self) -> str:
        """The field of a run's records that holds this metric on val/dev: val_eer, or val_score."""
        return "val_eer" if self.metric == "eer" else "val_score"

    @property
    def score_mode(self) -> Literal["min", "max"]:
        """``min`` or ``max``, as the course's backends rank Kaggle scores."""
        return "min" if self.better == "lower" else "max"

    def value(self, eer: float | None, top1: float | None) -> float | None:
        """This metric from a val EER and a dev top-1 accuracy; None when an input it needs is missing."""
        return eer if self.metric == "eer" else combined_score(top1, eer)

    def lead(self, eer: float | None, score: float | None) -> str:
        """This metric first and the val EER beside it, as every report of a "best" reads: ``score 0.8775 (val
        EER 0.1204)`` for the combined score, ``val EER 0.1204 (score 0.8775)`` for an EER board."""
        def shown(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        eer_text = "val EER " + shown(eer)
        if score is None and self.metric == "eer":
            return eer_text
        score_text = "score " + shown(score)
        return f"{eer_text} ({score_text})" if self.metric == "eer" else f"{score_text} ({eer_text})"

    def better_than(self, a: float, b: float) -> bool:
        return a < b if self.better == "lower" else a > b

    def passes(self, value: float, cutoff: float) -> bool:
        """Whether ``value`` meets ``cutoff``: at or below it for a lower-is-better metric, at or above otherwise."""
        return value <= cutoff if self.better == "lower" else value >= cutoff


class Member(_Frozen):
    """One file of the hand-in zip."""

    name: str
    """the file name; {stamp:FORMAT} is the build time, {notebook} the notebook's, {run_files} the run's files"""
    content: Annotated[str, HANDIN_MEMBERS.choice()]
    """what goes into it: a name of helpers/core/registry.py's HANDIN_MEMBERS, the builder of such a file"""
    table: Optional[str] = Field(None, alias="schema")
    """the field table under schemas: in terms.yaml that the file must match"""
    needs: Optional[Literal["Kaggle", "W&B"]] = None
    """the login this member cannot be built without"""

    def file_name(self, stamp: datetime.datetime, notebook: str = "") -> str:
        """The name this member gets in a zip built at ``stamp`` around ``notebook``."""
        text = self.name.replace("{notebook}", notebook)
        return re.sub(r"\{stamp:([^}]*)\}", lambda match: stamp.strftime(match.group(1)), text)

    def pattern(self) -> re.Pattern:
        """What a zip member's name must look like to be this member (for ``bundle --check``)."""
        if self.content == "notebook":
            return re.compile(r"[^/]+\.ipynb")
        parts = re.split(r"(\{stamp:[^}]*\})", self.name)
        return re.compile("".join(r"[0-9_:-]+" if part.startswith("{stamp:") else re.escape(part) for part in parts))

    @property
    def shown(self) -> str:
        """The name as a user reads it in a message."""
        return "the notebook (.ipynb)" if self.content == "notebook" else re.sub(r"\{stamp:[^}]*\}", "<stamp>", self.name)


class Term(_Frozen):
    """One term of the course: its leaderboard, cutoff, competitions and hand-in."""

    name: str
    title: str
    order: int
    leaderboard: Leaderboard
    checkpoint_cutoff: float
    """the checkpoint milestone's bar, in the leaderboard's metric"""
    competition: Optional[str] = None
    slack_competition: Optional[str] = None
    deadline: Optional[str] = None
    """Eastern Time, as the term's backend records it"""
    provenance: bool
    """whether each Kaggle submission's description must name the W&B run it came from (as ``submission_tag``
    followed by ``|WB=<entity>/<project>/<run_id>``); false: the description is free text"""
    submission_tag: str = ""
    """the backend's ``wandb_tracking_tag``: what comes before ``|WB=`` (possibly nothing)"""
    wandb_runs: int = Field(10, ge=1)
    """the most W&B runs the hand-in exports"""
    handin_to: str
    """where the final hand-in zip is uploaded (Autolab, Gradescope)"""
    zip: str
    members: tuple[Member, ...]

    @model_validator(mode="after")
    def _tag_needs_provenance(self) -> "Term":
        if self.submission_tag and not self.provenance:
            raise ValueError("submission_tag is set while provenance is false; set provenance: true")
        if WB_MARK in self.submission_tag:
            raise ValueError(f"submission_tag must not hold '{WB_MARK}'")
        return self

    def description(self, run_path: str) -> str:
        """The Kaggle submission description that ties a submission to the W&B run ``entity/project/run_id``."""
        return provenance_description(self.submission_tag, run_path)

    def run_path_in(self, description: str | None) -> str | None:
        """The W&B run path a submission description names in this term's form, or None (always None for a
        term without provenance)."""
        return parse_run_path(description, self.submission_tag) if self.provenance else None

    @property
    def description_form(self) -> str:
        """The description's form as a user types it, for messages."""
        return self.description("ENTITY/PROJECT/RUN_ID")

    @property
    def graded_members(self) -> tuple[Member, ...]:
        """The members a grader looks for (the run's own files are extras)."""
        return tuple(member for member in self.members if member.content != "run_files")

    @property
    def online(self) -> bool:
        """Whether the hand-in needs a Kaggle or W&B login."""
        return any(member.needs for member in self.members)


@functools.lru_cache(maxsize=1)
def _declarations() -> tuple[dict[str, Term], dict]:
    raw = yaml.safe_load(TERMS_FILE.read_text(encoding="utf-8"))
    terms = {name: Term(name=name, **entry) for name, entry in raw["terms"].items()}
    return terms, raw["schemas"]


def all_terms() -> dict[str, Term]:
    """Every declared term by name, oldest first."""
    return dict(sorted(_declarations()[0].items(), key=lambda item: item[1].order))


def schema(name: str):
    """The field table called ``name`` in terms.yaml."""
    return _declarations()[1][name]


def newest() -> Term:
    return list(all_terms().values())[-1]


def get_term(name: str | None = None) -> Term:
    """The term called ``name`` (``newest`` or None: the newest known); one sentence for an unknown name."""
    if name in (None, "", NEWEST):
        return newest()
    terms = all_terms()
    if name not in terms:
        raise UserError(f"unknown course term '{name}'; the known terms are {', '.join(terms)} (or {NEWEST})")
    return terms[name]


def combined_score(top1: float | None, eer: float | None) -> float | None:
    """Fall 2026's leaderboard score: 0.5 x classification accuracy + 0.5 x (1 - EER); None without both."""
    if top1 is None or eer is None:
        return None
    return 0.5 * top1 + 0.5 * (1.0 - eer)


def provenance_description(tag: str, run_path: str) -> str:
    """The description that ties a Kaggle submission to ``run_path``: ``<tag>|WB=<entity>/<project>/<run_id>``."""
    return f"{tag}{WB_MARK}{run_path}"


def parse_run_path(description: str | None, tag: str) -> str | None:
    """The W&B run path a description names, as the course's backend reads it: the description (stripped) must
    start with exactly ``<tag>|WB=``, and what follows (stripped) must be three non-empty ``/``-separated parts;
    anything else names no run (None)."""
    if not description:
        return None
    text = str(description).strip()
    prefix = f"{tag}{WB_MARK}"
    if not text.startswith(prefix):
        return None
    path = text[len(prefix):].strip()
    parts = path.split("/")
    return path if len(parts) == 3 and all(parts) else None
