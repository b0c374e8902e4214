"""A configuration's dotted keys (``optim.lr``) over its pydantic sections: merged and set with where each value
came from, validated, and a refusal put as the one sentence a user reads (the key, what it must be, its origin).

Every function takes the configuration's root model (:class:`helpers.core.config.Config`), whose sections and
fields it reads; ``origins`` maps a dotted key to the file and line, or ``--set``, that gave its value.
"""

from __future__ import annotations

import difflib
import json
import typing
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ValidationError

from helpers.core.errors import UserError
from helpers.core.registry import Choice

Model = TypeVar("Model", bound=BaseModel)


def leaf_fields(model: type[BaseModel], prefix: str = ""):
    """``(dotted key, field)`` for every leaf key of ``model``, in declaration order."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from leaf_fields(field.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def dotted_keys(model: type[BaseModel]) -> list[str]:
    """Every dotted key of ``model``, e.g. ``optim.lr``."""
    return [key for key, _ in leaf_fields(model)]


def section_of(model: type[BaseModel], dotted: str) -> type[BaseModel] | None:
    """The section class a dotted key names, or None when it names a value or nothing."""
    for part in dotted.split("."):
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def merge(model: type[BaseModel], values: dict, loaded: dict, prefix: str, source: str, origins: dict,
          lines: dict) -> None:
    """Merge ``loaded`` (a file's or a checkpoint's mapping) into ``values``, noting each key's ``source`` and
    line (``lines``: dotted key -> line) in ``origins``."""
    for name, value in loaded.items():
        dotted = f"{prefix}{name}"
        where = f"{source}:{lines[dotted]}" if dotted in lines else source
        # a section given alone (`data:`) holds no keys
        if section_of(model, dotted) is not None and (value is None or isinstance(value, dict)):
            merge(model, values.setdefault(str(name), {}), value or {}, dotted + ".", source, origins, lines)
        else:
            values[str(name)] = value
            origins[dotted] = where


def set_key(model: type[BaseModel], values: dict, dotted: str, value: Any, source: str, origins: dict) -> None:
    """Set one dotted key (``optim.lr``), refusing keys that do not exist and sections."""
    section = section_of(model, dotted)
    if section is not None:
        example = next(iter(section.model_fields))
        raise UserError(f"config key '{dotted}' is a section; set one of its keys, e.g. '{dotted}.{example}'")
    if dotted not in dotted_keys(model):
        raise UserError(f"unknown config key '{dotted}' (from {source}){_suggest(model, dotted)}")
    *sections, leaf = dotted.split(".")
    for part in sections:
        values = values.setdefault(part, {})
    values[leaf] = value
    origins[dotted] = source


def validate(model: type[Model], values: dict, origins: dict[str, str]) -> Model:
    """``values`` as a ``model``, or the first problem as a UserError sentence."""
    try:  # strictly, as JSON: YAML hands over JSON-like values, and bool is not an int there
        return model.model_validate_json(json.dumps(values, default=str), strict=True)
    except ValidationError as error:
        raise UserError(_sentence(model, error.errors()[0], origins)) from None


def _sentence(model: type[BaseModel], error: dict, origins: dict[str, str]) -> str:
    """One pydantic error as the sentence a user reads: the key, what it must be, and where it came from."""
    parts = [str(p) for p in error["loc"]]
    # the longest key or section the error's location starts with (unions add their branch's name after it)
    named = [k for k in dotted_keys(model) + _section_keys(model) if k.split(".") == parts[:len(k.split("."))]]
    kind, context = error["type"], error.get("ctx", {})
    dotted = max(named, key=len) if named and kind != "extra_forbidden" else ".".join(parts)
    source = origins.get(dotted) or next((w for k, w in origins.items() if k.startswith(dotted + ".")), "")
    value = error.get("input")
    if kind == "extra_forbidden":
        return f"unknown config key '{dotted}' in {source or 'the configuration'}{_suggest(model, dotted)}"
    where = f" (from {source})" if source else ""
    if section_of(model, dotted) is not None:
        return f"config key '{dotted}' must be a section (a mapping), not {value!r}{where}"
    field = dict(leaf_fields(model))[dotted]
    annotation, choice = field.annotation, next((m for m in field.metadata if isinstance(m, Choice)), None)
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("above", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("below", "lt")}
    if kind in bounds:
        words, key = bounds[kind]
        what = f"{words} {context[key]:g}"
    elif choice is not None:  # a name from a registry
        what = "one of " + ", ".join(choice.names())
    elif _length(annotation):
        what = f"a list of {_length(annotation)} numbers"
    else:
        what = _expected(annotation)
    return f"config key '{dotted}' must be {what}, not {value!r}{where}"


def _section_keys(model: type[BaseModel]) -> list[str]:
    return sorted({key.rpartition(".")[0] for key in dotted_keys(model) if "." in key})


def _length(annotation) -> int | None:
    """The fixed length of a tuple-typed key, None for anything else."""
    args = typing.get_args(annotation)
    return len(args) if typing.get_origin(annotation) is tuple and args and args[-1] is not Ellipsis else None


def _expected(annotation) -> str:
    """What a key of this type must be, in words."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _expected(args[0])
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is Union:
        choices = [_expected(a) for a in args if a is not type(None)]
        text = " or ".join(choices).replace("true or false or one of auto", "true, false or auto")
        return text.replace(" or one of auto", " or auto")
    if origin is tuple:
        return "a list of numbers"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(annotation, "valid")


def _suggest(model: type[BaseModel], dotted: str) -> str:
    close = difflib.get_close_matches(dotted, dotted_keys(model), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
