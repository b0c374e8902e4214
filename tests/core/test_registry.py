"""The registries of names (helpers/core/registry.py): one entry makes a name accepted everywhere it is read."""

from __future__ import annotations

import pytest

from helpers.core.config import load_config
from helpers.core.errors import UserError
from helpers.core.registry import HANDIN_MEMBERS, LAYOUTS, MARGIN_HEADS, Registry
from helpers.core.terms import Member


def test_an_entry_is_found_by_name_and_an_unknown_name_is_one_sentence():
    shapes = Registry("shape.kind")
    shapes.register("square", "math:sqrt", "flat")
    shapes.register("cube", len)
    assert shapes.names() == ("square", "cube") and shapes.names("flat") == ("square",)
    assert shapes.get("cube") is len
    assert shapes.get("square")(9.0) == 3.0  # a reference is imported when first asked for
    with pytest.raises(UserError, match=r"^shape.kind must be one of square, cube, not 'sphere'$"):
        shapes.get("sphere")
    with pytest.raises(UserError, match=r"^--shape must be one of square, not 'cube'$"):
        shapes.get("cube", "flat", key="--shape")


@pytest.mark.parametrize("registry", [LAYOUTS, MARGIN_HEADS, HANDIN_MEMBERS], ids=["layouts", "heads", "members"])
def test_every_shipped_entry_names_code_that_exists(registry):
    for name in registry.names():
        assert callable(registry.get(name)) or hasattr(registry.get(name), "holds"), name


def test_a_registered_head_and_layout_are_accepted_by_the_config(monkeypatch):
    for registry in (LAYOUTS, MARGIN_HEADS):
        monkeypatch.setattr(registry, "entries", dict(registry.entries))  # undone after the test
    with pytest.raises(UserError, match="'loss.type' must be one of arcface, cosface, combined, subcenter, not 'toy'"):
        load_config(overrides=["loss.type=toy"])
    with pytest.raises(UserError, match="'data.layout' must be one of auto, packed, f25, f24, not 'toy'"):
        load_config(overrides=["data.layout=toy"])
    MARGIN_HEADS.register("toy", lambda loss, in_features, classes: None)
    LAYOUTS.register("toy", object(), "read")
    cfg = load_config(overrides=["loss.type=toy", "data.layout=toy"])
    assert (cfg.loss.type, cfg.data.layout) == ("toy", "toy")


def test_easy_margin_is_taken_by_the_heads_the_registry_tags_for_it(monkeypatch):
    monkeypatch.setattr(MARGIN_HEADS, "entries", dict(MARGIN_HEADS.entries))  # undone after the test
    with pytest.raises(UserError, match=r"^config key 'loss.easy_margin' applies only to the heads arcface, "
                                        r"subcenter, not to 'cosface'$"):
        load_config(overrides=["loss.type=cosface", "loss.easy_margin=true"])
    MARGIN_HEADS.register("toy", lambda loss, in_features, classes: None, "easy_margin")  # its one line says so
    assert load_config(overrides=["loss.type=toy", "loss.easy_margin=true"]).loss.easy_margin
    with pytest.raises(UserError, match=r"^config key 'loss.easy_margin' applies only to the heads arcface, "
                                        r"subcenter, toy, not to 'combined'$"):
        load_config(overrides=["loss.type=combined", "loss.easy_margin=true"])


def test_a_layout_that_is_only_written_is_refused_as_data_layout():
    with pytest.raises(UserError, match="'data.layout' must be one of auto, packed, f25, f24, not 'f26'"):
        load_config(overrides=["data.layout=f26"])


def test_an_unknown_name_in_a_file_is_one_sentence_with_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\nloss:\n  s: 30\n  type: adaface\n")
    with pytest.raises(UserError, match=r"^config key 'loss.type' must be one of arcface, cosface, combined, "
                                        r"subcenter, not 'adaface' \(from .*bad.yaml:5\)$"):
        load_config(bad)
    bad.write_text("data:\n  layout: 3\n")
    with pytest.raises(UserError, match=r"'data.layout' must be one of auto, packed, f25, f24, not 3 \(from "
                                        r".*bad.yaml:2\)$"):
        load_config(bad)


def test_a_member_content_must_be_a_registered_builder(monkeypatch):
    monkeypatch.setattr(HANDIN_MEMBERS, "entries", dict(HANDIN_MEMBERS.entries))
    with pytest.raises(ValueError, match="must be one of acknowledgement, readme"):
        Member(name="x.txt", content="toy")
    HANDIN_MEMBERS.register("toy", lambda sources, member: b"")
    assert Member(name="x.txt", content="toy").content == "toy"
