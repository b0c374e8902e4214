"""The field tables of terms.yaml: checking a hand-in file against one, and shaping a built value to it.

A table maps each field to a type name (``str``, ``int``, ``float``, ``bool``,
``list``, ``dict``, ``any``; ``?`` appended: may be null), a nested table, the
name of another table, or a one-item list holding what every element must be.
"""

from __future__ import annotations

from helpers.core.terms import schema

TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list, tuple),
         "dict": (dict,), "any": (object,)}


def _resolve(spec):
    """A spec with table names replaced by the table they name."""
    if isinstance(spec, str) and spec.rstrip("?") not in TYPES:
        return schema(spec)
    return spec


def problems(value, spec, where: str) -> list[str]:
    """Everything about ``value`` that does not match ``spec``, one sentence each, naming the field."""
    spec = _resolve(spec)
    if isinstance(spec, list):
        if not isinstance(value, (list, tuple)):
            return [f"{where} must be a list, not {type(value).__name__}"]
        return [text for i, item in enumerate(value) for text in problems(item, spec[0], f"{where}[{i}]")]
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{where} must be a mapping with the fields {', '.join(spec)}, not {type(value).__name__}"]
        found = []
        for field, inner in spec.items():
            if field not in value:
                found.append(f"{where} lacks the field '{field}'")
            else:
                found += problems(value[field], inner, f"{where}.{field}")
        return found
    name, nullable = spec.rstrip("?"), spec.endswith("?")
    if value is None:
        return [] if nullable or name == "any" else [f"{where} is null but must be {name}"]
    wrong_bool = isinstance(value, bool) and name in ("int", "float")  # JSON true is no number
    if wrong_bool or not isinstance(value, TYPES[name]):
        return [f"{where} must be {name}, not {type(value).__name__}"]
    return []


def conform(value, spec):
    """``value`` with exactly the fields ``spec`` declares, in its order (what a backend writes, no more)."""
    spec = _resolve(spec)
    if isinstance(spec, list):
        return [conform(item, spec[0]) for item in value]
    if isinstance(spec, dict):
        return {field: conform(value[field], inner) for field, inner in spec.items()}
    return value
