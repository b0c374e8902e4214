"""The extension points by name: data layouts, margin heads and hand-in members, each a registry of entries.

A name a user writes (``data.layout``, ``loss.type``, ``--layout``, a terms.yaml member's ``content``) is looked
up here, and every list of accepted names (the config's, the command line's, the messages') is read from here,
so adding a layout, a head or a member is one line below plus its own code.

An entry names its code as ``"package.module:attribute"``, imported on first use by whoever asks for the entry
(data reads layouts, model builds heads, handin builds members: each a layer at or above the code it asks for),
so that core lists and checks names (reading a config, ``--help``) without importing torch or a layer above it.
:meth:`Registry.register` adds an entry at run time, a reference or the object itself (a plug-in, a test).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic_core import PydanticCustomError, core_schema

from helpers.core.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One registered name: its code (a ``module:attribute`` reference or the object), and what it can do."""

    target: Any
    tags: frozenset[str] = frozenset()


class Registry(Generic[T]):
    """Entries of one kind by name, in the order they were registered; ``key`` is what names them in messages."""

    def __init__(self, key: str):
        self.key = key
        self.entries: dict[str, Entry] = {}

    def register(self, name: str, target: str | T, *tags: str) -> None:
        """Add (or replace) the entry ``name``; ``tags`` say what it can do, for :meth:`names`."""
        self.entries[name] = Entry(target, frozenset(tags))

    def names(self, tag: str | None = None) -> tuple[str, ...]:
        """The registered names (those tagged ``tag`` when given), in order."""
        return tuple(name for name, entry in self.entries.items() if tag is None or tag in entry.tags)

    def get(self, name: str, tag: str | None = None, key: str | None = None) -> T:
        """The code of ``name`` (imported on first use); otherwise one sentence naming the key (``key`` or the
        registry's) and the names (those tagged ``tag``)."""
        if name not in self.names(tag):
            raise UserError(f"{key or self.key} must be one of {', '.join(self.names(tag))}, not '{name}'")
        target = self.entries[name].target
        if isinstance(target, str):
            module, _, attribute = target.partition(":")
            target = getattr(importlib.import_module(module), attribute)
        return target

    def choice(self, tag: str | None = None, also: tuple[str, ...] = ()) -> Choice:
        """A pydantic annotation for a field holding one of these names (or of ``also``), checked when read."""
        return Choice(self, tag, also)


@dataclass(frozen=True)
class Choice:
    """A string field that must name an entry of a registry, read at validation time (``Annotated[str, ...]``)."""

    registry: Registry
    tag: str | None = None
    also: tuple[str, ...] = ()

    def names(self) -> tuple[str, ...]:
        return self.also + self.registry.names(self.tag)

    def _check(self, value: str) -> str:
        if value not in self.names():
            raise PydanticCustomError("registry_choice", "must be one of {names}", {"names": ", ".join(self.names())})
        return value

    def __get_pydantic_core_schema__(self, source, handler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))


# How a data root keeps its classification images: "read" (data.layout, check-data) and "write" (demo-data,
# prepare-folder). With data.layout auto, the readable ones are tried in this order: the most specific first.
LAYOUTS: Registry = Registry("data.layout")
LAYOUTS.register("packed", "helpers.data.layout:PACKED", "read")
LAYOUTS.register("f25", "helpers.data.layout:F25", "read", "write")
LAYOUTS.register("f24", "helpers.data.layout:F24", "read", "write")
LAYOUTS.register("f26", "helpers.data.layout:F26", "write")

# The margin heads of loss.type: each a function (loss settings, embedding size, classes) -> MarginHead, tagged
# "easy_margin" where it takes loss.easy_margin.
MARGIN_HEADS: Registry = Registry("loss.type")
MARGIN_HEADS.register("arcface", "helpers.model.margins:arcface", "easy_margin")
MARGIN_HEADS.register("cosface", "helpers.model.margins:cosface")
MARGIN_HEADS.register("combined", "helpers.model.margins:combined")
MARGIN_HEADS.register("subcenter", "helpers.model.margins:subcenter", "easy_margin")

# The hand-in members a term's terms.yaml names by content: each a function (HandinSources, Member) -> its value.
HANDIN_MEMBERS: Registry = Registry("a hand-in member's content")
HANDIN_MEMBERS.register("acknowledgement", "helpers.handin.members:acknowledgement")
HANDIN_MEMBERS.register("readme", "helpers.handin.members:readme")
HANDIN_MEMBERS.register("notebook", "helpers.handin.members:notebook")
HANDIN_MEMBERS.register("model_arch", "helpers.handin.members:model_arch")
HANDIN_MEMBERS.register("model_metadata", "helpers.handin.members:model_metadata")
HANDIN_MEMBERS.register("run_files", "helpers.handin.members:run_files")
HANDIN_MEMBERS.register("kaggle_best", "helpers.handin.members:kaggle_best")
HANDIN_MEMBERS.register("kaggle_submissions", "helpers.handin.members:kaggle_submissions")
HANDIN_MEMBERS.register("wandb_top_runs", "helpers.handin.members:wandb_top_runs")
HANDIN_MEMBERS.register("wandb_linked_runs", "helpers.handin.members:wandb_linked_runs")
