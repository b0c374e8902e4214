"""The Kaggle description that ties a submission to its W&B run, checked against the course backend's own rule.

The Fall 2026 backend (CMU-IDeeL/HWP2-Submission-Backend-Student-New) reads each description with
``parse_wandb_run_path(description, expected_tag)``, where ``expected_tag`` is its configuration's
``wandb_tracking_tag``: ``submission/configs/hw2p2.json`` sets none and ``BackendConfig`` defaults it to "".
The rule is restated here in our own words, so the toolkit's reading and writing are tested against it.
"""

from __future__ import annotations

import pytest

from helpers.core.terms import get_term, parse_run_path

HW2P2_JSON = {"param_limit": 30000000, "main_competition_name": "hw-2-p-2-fall-2026-student-competition",
              "slack_competition_name": "hw-2-p-2-fall-2026-slack-competition",
              "submission_zip": "HW2P2_final_submission.zip"}  # the published file: no wandb_tracking_tag
BACKEND_DEFAULT_TAG = ""  # BackendConfig.wandb_tracking_tag's default


def backend_reads(description, tag):
    """The published rule: strip; must start with exactly "<tag>|WB="; the rest, stripped, is three non-empty
    "/"-separated parts, else no run."""
    if not description:
        return None
    text = str(description).strip()
    if not text.startswith(tag + "|WB="):
        return None
    rest = text[len(tag) + 4:].strip()
    pieces = rest.split("/")
    return rest if len(pieces) == 3 and "" not in pieces else None


HW2P2_TAG = HW2P2_JSON.get("wandb_tracking_tag", BACKEND_DEFAULT_TAG)
F26 = get_term("f26")


def test_the_backend_reads_the_toolkits_fall_2026_description_as_its_run():
    written = F26.description("me/hw2p2/abc123")
    assert written == "|WB=me/hw2p2/abc123"
    assert backend_reads(written, HW2P2_TAG) == "me/hw2p2/abc123"
    assert F26.submission_tag == HW2P2_TAG and F26.provenance


def test_the_toolkit_reads_descriptions_as_the_backend_does():
    assert F26.run_path_in("|WB=e/p/r") == "e/p/r"
    assert F26.run_path_in("HW2P2|WB=e/p/r") is None  # the old form names no run for the grader
    assert F26.run_path_in("HW3P2|WB=e/p/r") is None


@pytest.mark.parametrize("description", [
    "|WB=e/p/r", "  |WB= e/p/r  ", "HW2P2|WB=e/p/r", "|WB=e/p", "|WB=e//r", "|WB=e/p/r/x", "|WB=/p/r", "",
    None, "x|WB=e/p/r", "|wb=e/p/r", "|WB=e/p/r\n", "|WB=e p/q/r", "|WB=", "quick try",
])
@pytest.mark.parametrize("tag", ["", "HW2P2", "HW3P2"])
def test_one_rule_for_every_description_and_tag(description, tag):
    assert parse_run_path(description, tag) == backend_reads(description, tag)


def test_terms_without_provenance_read_no_run_and_say_so_explicitly():
    for name in ("f25", "s26"):
        term = get_term(name)
        assert term.provenance is False and term.run_path_in("|WB=e/p/r") is None


def test_a_tag_without_provenance_is_refused():
    from pydantic import ValidationError

    fields = F26.model_dump(by_alias=True)
    fields.update(provenance=False, submission_tag="HW2P2")
    with pytest.raises(ValidationError, match="provenance"):
        type(F26)(**fields)
