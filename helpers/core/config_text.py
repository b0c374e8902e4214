"""Config YAML as read from a file or a ``--set`` value, bounded before anything is built from it.

A config holds a few dozen plain values in sections three levels deep, yet it is passed around between
classmates, so what a hostile or mistaken file can cost is bounded: its size is checked before it is read
(MAX_CONFIG_BYTES), and its YAML events are walked before a node is composed, refusing an alias, nesting
deeper than MAX_DEPTH (PyYAML's composer recurses once per level) and more than MAX_VALUES values. The walk
stops at the first refusal, so a file of 200,000 keys costs the first MAX_VALUES of them.

A file's mapping comes with the line of each dotted key, for the sentences that name a key's origin.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel

from helpers.core.config_keys import section_of
from helpers.core.errors import UserError

MAX_CONFIG_BYTES = 1 << 20  # the packaged recipes are under 4 KB; a megabyte of YAML parses in about a second
MAX_DEPTH = 32  # collections inside collections; a config needs four (tracking.wandb.mode, a list value)
MAX_VALUES = 10_000  # scalars and collections; the whole configuration has about a hundred keys


class ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, but ``1e-3`` and ``5e-4`` are numbers: YAML 1.1 reads an exponent without a
    dot (what YAML 1.2 and every student write) as text."""


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                   re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))


def read_config_text(path: Path, packaged: list[str]) -> str:
    """The text of the config file at ``path``, refused unread when it is over MAX_CONFIG_BYTES (``packaged``:
    the names offered when it cannot be read)."""
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            data = b"" if size > MAX_CONFIG_BYTES else handle.read(MAX_CONFIG_BYTES + 1)  # a pipe has no size
    except OSError as error:
        raise UserError(f"cannot read config file {path}: {error.strerror or error} (the packaged configs, "
                        f"chosen by name: {', '.join(packaged)})") from None
    size = max(size, len(data))
    if size > MAX_CONFIG_BYTES:
        raise UserError(f"config file {path} is {size:,} bytes, over the {MAX_CONFIG_BYTES:,}-byte bound for a "
                        "config (a few dozen keys); is it the right file?")
    try:
        return data.decode("utf-8-sig")  # a BOM from Windows editors
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); "
                        "save it as UTF-8") from None


def check_events(text: str, where: str) -> None:
    """Refuse, from the event stream and before anything is built, a YAML alias (``*name``: nine levels of ten
    aliases in 511 bytes expand to billions of values), nesting deeper than MAX_DEPTH and more than MAX_VALUES
    values; ``where`` (a file, ``--set KEY``) starts the sentence, with the line."""
    depth = values = 0
    for event in yaml.parse(text, Loader=ConfigLoader):
        line = f"{where}:{event.start_mark.line + 1}"
        if isinstance(event, yaml.AliasEvent):
            raise UserError(f"{line} uses the YAML alias *{event.anchor}; a config holds plain values only: "
                            "write the value out")
        if isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            values += 1
            depth += isinstance(event, yaml.CollectionStartEvent)
            if depth > MAX_DEPTH:
                raise UserError(f"{line} nests lists or mappings more than {MAX_DEPTH} deep; a config holds "
                                "sections of plain values")
            if values > MAX_VALUES:
                raise UserError(f"{line} passes {MAX_VALUES:,} values; a config holds about a hundred keys")


def read_yaml(path: Path, model: type[BaseModel], packaged: list[str]) -> tuple[dict, dict[str, int]]:
    """A config file's mapping, and the line of each dotted key in it, read within the bounds above (``model``:
    the configuration whose sections the file fills); a key or section given twice is refused with both lines
    (YAML would keep the last silently)."""
    text = read_config_text(path, packaged)
    try:
        check_events(text, str(path))
        node = yaml.compose(text, Loader=ConfigLoader)
        loaded = yaml.load(text, Loader=ConfigLoader)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f":{where.line + 1}" if where is not None else ""
        raise UserError(f"{path}{line} is not valid YAML ({getattr(error, 'problem', error)})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise UserError(f"{path} must hold a mapping of config sections, not a {type(loaded).__name__}")
    lines: dict[str, int] = {}

    def walk(mapping, prefix):
        for key, value in mapping.value:
            dotted, line = f"{prefix}{key.value}", key.start_mark.line + 1
            if dotted in lines:
                section = isinstance(value, yaml.MappingNode) or section_of(model, dotted)
                what = "section" if section else "key"
                raise UserError(f"{path}:{line} gives the {what} '{dotted}' again (first on line {lines[dotted]}); "
                                f"YAML would keep only the last: {'merge them' if what == 'section' else 'keep one'}")
            lines[dotted] = line
            if isinstance(value, yaml.MappingNode):
                walk(value, dotted + ".")

    if isinstance(node, yaml.MappingNode):
        walk(node, "")
    return loaded or {}, lines


def override_value(text: str, key: str):
    """The value of ``--set KEY=TEXT``: TEXT read as YAML within the bounds above (None when empty), or as the
    text itself when it is not valid YAML."""
    try:
        check_events(text, f"--set {key}")
        return yaml.load(text, Loader=ConfigLoader) if text.strip() else None
    except yaml.YAMLError:
        return text
