"""A search space: one entry per config key, read from YAML and checked against the config before any trial.

Each entry is a range or a list of choices::

    optim.lr: {low: 0.0005, high: 0.01, log: true}
    train.epochs: {low: 2, high: 6, type: int}
    model.depth: {choices: [18, 34]}

A mistake (an unknown key, an empty range, a value the config refuses) is one
sentence naming the file and line, raised before any trial runs. The packaged
spaces (``helpers/spaces/``) are chosen by name, as configs are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from helpers.core.config import all_keys, load_config
from helpers.core.errors import UserError

PACKAGED_SPACES = Path(__file__).parents[1] / "spaces"
# Keys the search sets itself, per trial: a space may not vary them.
OWN_KEYS = ("run.", "tracking.", "data.root")
_RANGE_FIELDS = {"low", "high", "log", "type"}


@dataclass(frozen=True)
class Dimension:
    """One config key the search varies: a range (``low``..``high``, ``log``, ``integer``) or ``choices``."""

    key: str
    line: int
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        """The value an Optuna trial draws for this key (a list choice travels as its JSON text)."""
        if self.choices is not None:
            return config_value(trial.suggest_categorical(self.key, [_as_choice(c) for c in self.choices]))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def base_value(self, values: dict) -> Any:
        """This key's value in a config (``Config.as_dict()``) as a trial of the study holds it, or None where the
        space cannot hold it (a choice it does not list, a value outside the range). An unset count, train.epochs
        left to the time budget, is the range's most: the budget, not the cap, then ends the trial."""
        value = values
        for part in self.key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if self.choices is not None:
            return _as_choice(value) if value in self.choices else None
        if value is None and self.integer:
            return int(self.high)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return None
        return int(value) if self.integer else float(value)

    def probes(self) -> list:
        """The values a check tries: both ends and the middle of a range, or every choice."""
        if self.choices is not None:
            return list(self.choices)
        middle = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        if self.integer:
            return [int(self.low), int(round(middle)), int(self.high)]
        return [self.low, middle, self.high]


def _as_choice(value: Any) -> Any:
    """Optuna takes None, bools, numbers and text as choices: a list (``augment.crop_scale``) becomes JSON."""
    return json.dumps(value) if isinstance(value, list) else value


def config_value(drawn: Any) -> Any:
    """A value as the study stores it, as the config takes it: a list choice back from its JSON text."""
    return json.loads(drawn) if isinstance(drawn, str) and drawn.startswith("[") else drawn


def override(key: str, value: Any) -> str:
    """``KEY=VALUE`` as ``--set`` takes it (the value as JSON, which the config's YAML reader reads back)."""
    return f"{key}={json.dumps(value)}"


def space_file(name_or_path: str | Path) -> Path:
    """An existing file, else the packaged space of that name (``cpu``, ``gpu``)."""
    path = Path(name_or_path)
    packaged = PACKAGED_SPACES / f"{path.stem}.yaml"
    if not path.is_file() and path.name == str(name_or_path) and packaged.is_file():
        return packaged
    return path


def packaged_spaces() -> list[str]:
    return sorted(path.stem for path in PACKAGED_SPACES.glob("*.yaml"))


def read_space(name_or_path: str | Path, config: str | None, overrides: list[str] = ()) -> list[Dimension]:
    """The dimensions of a space file, each checked alone and all together against ``config`` + ``overrides``."""
    path = space_file(name_or_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except OSError as error:
        raise UserError(f"cannot read the search space {path}: {error.strerror or error} (the packaged spaces: "
                        f"{', '.join(packaged_spaces())})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line} is not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(node, yaml.MappingNode) or not node.value:
        raise UserError(f"{path} must map config keys to ranges or choices, e.g. 'optim.lr: {{low: 0.0005, "
                        "high: 0.01, log: true}'")
    dimensions, seen = [], {}
    for key_node, value_node in node.value:
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key in seen:
            raise UserError(f"{path}:{line} gives '{key}' again (first on line {seen[key]}); keep one")
        seen[key] = line
        dimensions.append(_dimension(path, key, line, yaml.safe_load(yaml.serialize(value_node))))
    check_against_config(path, dimensions, config, overrides)
    return dimensions


def _dimension(path: Path, key: str, line: int, entry: Any) -> Dimension:
    """One entry, its shape checked; ``path:line`` begins every refusal."""
    where = f"{path}:{line}"
    if key not in all_keys():
        from difflib import get_close_matches

        close = get_close_matches(key, all_keys(), n=1)
        raise UserError(f"{where}: unknown config key '{key}'" + (f"; did you mean '{close[0]}'?" if close else ""))
    if key.startswith(OWN_KEYS):
        raise UserError(f"{where}: '{key}' is set by the search for each trial; give it with --set instead")
    if not isinstance(entry, dict):
        raise UserError(f"{where}: '{key}' needs {{low: A, high: B}} (with log: true or type: int) or "
                        f"{{choices: [...]}}, not {entry!r}")
    if "choices" in entry:
        choices = entry["choices"]
        if set(entry) != {"choices"} or not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: '{key}' choices must be a non-empty list, alone in its entry")
        if len({json.dumps(c) for c in choices}) < len(choices):
            raise UserError(f"{where}: '{key}' lists a choice twice")
        return Dimension(key, line, choices=tuple(choices))
    unknown = sorted(set(entry) - _RANGE_FIELDS)
    if unknown or not {"low", "high"} <= set(entry):
        raise UserError(f"{where}: '{key}' takes low, high, log and type (int or float), or choices; "
                        + (f"not {unknown[0]}" if unknown else "low and high are both needed"))
    low, high, log, kind = entry["low"], entry["high"], entry.get("log", False), entry.get("type", "float")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not numbers or kind not in ("int", "float") or not isinstance(log, bool):
        raise UserError(f"{where}: '{key}' needs numbers for low and high, true or false for log, int or float for "
                        "type")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise UserError(f"{where}: '{key}' is type int but its range {low}..{high} is not whole numbers")
    if not low < high:
        raise UserError(f"{where}: '{key}' has an empty range: low {low} must be below high {high}")
    if log and low <= 0:
        raise UserError(f"{where}: '{key}' is log-scaled, so low must be above 0, not {low}")
    return Dimension(key, line, float(low), float(high), log, kind == "int")


def check_against_config(path: Path, dimensions: list[Dimension], config: str | None,
                         overrides: list[str]) -> None:
    """Refuse a space the config cannot take: each value alone, then every low (first choice) and every high
    (last choice) together, before any trial spends time on it."""
    base = list(overrides)
    load_config(config, base)  # a mistake in the config itself is named as the config's
    for dimension in dimensions:
        for value in dimension.probes():
            try:
                load_config(config, base + [override(dimension.key, value)])
            except UserError as error:
                raise UserError(f"{path}:{dimension.line}: the config refuses {dimension.key} = {value!r}: "
                                f"{error}") from None
    for end, pick in (("lowest", 0), ("highest", -1)):
        together = [override(d.key, d.probes()[pick]) for d in dimensions]
        try:
            load_config(config, base + together)
        except UserError as error:
            raise UserError(f"{path}: the config refuses the {end} values of all keys together ({error}); no "
                            "trial could run every combination") from None
