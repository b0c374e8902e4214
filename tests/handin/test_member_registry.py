"""Hand-in members by content: one registry entry adds a kind of member, built through the registry."""

from __future__ import annotations

import json

import pytest

from helpers.core.registry import HANDIN_MEMBERS
from helpers.core.terms import Member, get_term
from helpers.handin.members import HandinSources


@pytest.fixture
def sources(tmp_path) -> HandinSources:
    """Hand-in sources with only the plain files (no checkpoint is read by the members built here)."""
    for name in ("acknowledgement.txt", "README.txt", "notebook.ipynb"):
        (tmp_path / name).write_text(f"the {name}\n")
    return HandinSources(tmp_path, tmp_path / "best.pt", None, tmp_path / "notebook.ipynb",
                         tmp_path / "acknowledgement.txt", tmp_path / "README.txt", get_term("f26"))


def test_a_member_registered_by_one_entry_is_accepted_and_built(sources, monkeypatch):
    monkeypatch.setattr(HANDIN_MEMBERS, "entries", dict(HANDIN_MEMBERS.entries))
    with pytest.raises(ValueError, match="must be one of acknowledgement, readme, notebook"):
        Member(name="extras.json", content="extras")
    HANDIN_MEMBERS.register("extras", lambda sources, member: {"term": sources.term.name, "file": member.name})
    assert sources.build(Member(name="extras.json", content="extras")) == {
        "extras.json": json.dumps({"term": "f26", "file": "extras.json"}, indent=2).encode()}


def test_the_shipped_file_members_are_built_through_the_registry(sources):
    acknowledgement = Member(name="ACK.txt", content="acknowledgement")
    assert sources.build(acknowledgement) == {"ACK.txt": b"the acknowledgement.txt\n"}
    assert sources.build(Member(name="{notebook}", content="notebook")) == {"notebook.ipynb": b"the notebook.ipynb\n"}
