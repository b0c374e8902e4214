"""Run configuration: the schema with the seed's defaults, YAML loading, dotted overrides, validation.

A configuration is a plain nested dict (``cfg["optim"]["lr"]``), so it goes
into checkpoints, W&B and YAML as it is. Every key is declared below with its
type and allowed values; a file or ``--set`` naming an unknown key, a wrong type
or an impossible value is refused with one sentence naming the key.

The recipes ship inside the package (``helpers/configs/``) and are chosen by
name (``fast``, ``seed``...) from any folder, so a ``pip install`` of the
project is the whole toolkit; a path to any other YAML file works too.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from helpers.core.errors import UserError


@dataclass(frozen=True)
class Key:
    """One configuration key: its default, its kind and what values it may take."""

    default: Any
    kind: str  # bool, int, float, str, path, floats, ints, or "auto|bool" style choices
    choices: tuple = ()
    low: float | None = None  # inclusive bound
    high: float | None = None  # exclusive bound
    length: int | None = None  # for lists


AUTO_BOOL = "auto|bool"
PACKAGED = Path(__file__).parents[1] / "configs"  # the shipped recipes; seed.yaml documents every key

SCHEMA: dict[str, dict[str, Any]] = {
    "data": {
        "root": Key(None, "path"),
        "layout": Key("auto", "str", ("auto", "f24", "f25", "packed")),
        "num_workers": Key("auto", "int|auto", low=0),
        "decode": Key("auto", "str", ("auto", "workers", "device")),
        "strict": Key(False, "bool"),
        "image_size": Key(112, "int", low=16),
        "max_train_images": Key(0, "int", low=0),
        "singletons": Key("keep", "str", ("keep", "drop", "negatives")),
    },
    "augment": {
        "crop_scale": Key([0.9, 1.0], "floats", low=0.0, high=1.000001, length=2),
        "crop_ratio": Key([0.98, 1.02], "floats", low=0.01, length=2),
        "flip": Key(0.5, "float", low=0.0, high=1.000001),
        "color_jitter": Key(0.0, "float", low=0.0, high=1.0),
        "grayscale": Key(0.0, "float", low=0.0, high=1.000001),
        "rotation": Key(0.0, "float", low=0.0, high=180.0),
        "translate": Key(0.0, "float", low=0.0, high=0.5),
        "erasing": Key(0.0, "float", low=0.0, high=1.000001),
    },
    "model": {
        "depth": Key(34, "int", (18, 34, 50)),
        "width": Key(1.0, "float", low=0.01),
        "stem": Key("seed", "str", ("seed", "face")),
        "block": Key("basic", "str", ("basic", "preact")),
        "embedding_dim": Key(512, "int", low=2),
        "head": Key("linear", "str", ("linear", "bn")),
        "dropout": Key(0.0, "float", low=0.0, high=1.0),
        "zero_init_residual": Key(False, "bool"),
    },
    "loss": {
        "type": Key("arcface", "str", ("arcface", "cosface", "combined", "subcenter")),
        "s": Key(30.0, "float", low=0.01),
        "m": Key(0.35, "float", low=0.0, high=math.pi),
        "easy_margin": Key(False, "bool"),
        "m1": Key(1.0, "float", low=0.01),
        "m2": Key(0.3, "float", low=0.0, high=math.pi),
        "m3": Key(0.2, "float", low=0.0, high=2.0),
        "subcenters": Key(3, "int", low=1),
        "margin_warmup_epochs": Key(0.0, "float", low=0.0),
    },
    "optim": {
        "name": Key("sgd", "str", ("sgd", "adam", "adamw")),
        "lr": Key(0.001, "float", low=1e-12),
        "momentum": Key(0.9, "float", low=0.0, high=1.0),
        "weight_decay": Key(1e-4, "float", low=0.0),
        "nesterov": Key(True, "bool"),
        "betas": Key([0.9, 0.999], "floats", low=0.0, high=1.0, length=2),
        "no_decay_bn_bias": Key(False, "bool"),
    },
    "sched": {
        "name": Key("none", "str", ("none", "cosine", "step", "multistep", "plateau")),
        "warmup_epochs": Key(0.0, "float", low=0.0),
        "min_lr": Key(0.0, "float", low=0.0),
        "step_size": Key(30.0, "float", low=1e-9),
        "milestones": Key([60, 80], "floats", low=0.0),
        "gamma": Key(0.1, "float", low=1e-9, high=1.000001),
        "patience": Key(5, "int", low=0),
    },
    "train": {
        "epochs": Key(None, "int", low=1),
        "batch_size": Key(64, "int", low=1),
        "amp": Key("auto", "str", ("auto", "none", "fp16", "bf16")),
        "channels_last": Key("auto", AUTO_BOOL),
        "compile": Key(False, "bool"),
        "grad_clip": Key(0.0, "float", low=0.0),
        "accumulate": Key(1, "int", low=1),
        "seed": Key(0, "int", low=0),
        "deterministic": Key(False, "bool"),
        "device": Key("auto", "str"),
        "max_minutes": Key(0.0, "float", low=0.0),
        "checkpoint_every_steps": Key(0, "int", low=0),
        "max_nonfinite_steps": Key(20, "int", low=1),
        "eval_every": Key(1, "int", low=1),
        "eval_tta": Key(False, "bool"),
        "eval_bootstrap": Key(1000, "int", low=0),
        "ema": Key(0.0, "float", low=0.0, high=1.0),
        "select": Key("auto", "str", ("auto", "best", "ema_best", "last", "ema_last")),
        "progress": Key("auto", AUTO_BOOL),
    },
    "run": {
        "out_dir": Key("runs", "path"),
        "name": Key(None, "str"),
        "init_from": Key(None, "path"),
    },
    "tracking": {
        "wandb": {
            "mode": Key("offline", "str", ("offline", "online", "disabled")),
            "project": Key("hw2p2-ablations", "str"),
            "entity": Key(None, "str"),
        },
    },
}


def defaults() -> dict:
    """The seed configuration, as a fresh nested dict."""
    return _map_schema(SCHEMA, lambda key: copy.deepcopy(key.default))


def _map_schema(schema: dict, fn) -> dict:
    return {name: (_map_schema(value, fn) if isinstance(value, dict) else fn(value)) for name, value in schema.items()}


def all_keys(schema: dict = SCHEMA, prefix: str = "") -> list[str]:
    """Every dotted key the schema knows, e.g. ``optim.lr``."""
    keys = []
    for name, value in schema.items():
        dotted = f"{prefix}{name}"
        keys += all_keys(value, dotted + ".") if isinstance(value, dict) else [dotted]
    return keys


def packaged_configs() -> list[str]:
    """The names of the configs shipped with the package (``demo``, ``fast``, ``seed``...)."""
    return sorted(path.stem for path in PACKAGED.glob("*.yaml"))


# Where the packaged configs lived in a checkout before they moved into the package: commands written
# then (``--config configs/fast.yaml``, ``--config config.yaml``) keep meaning the same recipes.
_CHECKOUT_PATHS = {"config.yaml": "seed"}


def config_file(name_or_path: str | Path) -> Path:
    """The YAML file a ``--config`` value means: an existing file, else the packaged config of that name
    (``fast``, ``fast.yaml``, or the checkout paths of before, ``configs/fast.yaml`` and ``config.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bare = path.name == str(name_or_path) or path.parent == Path("configs")
    name = _CHECKOUT_PATHS.get(str(name_or_path), path.stem)
    packaged = PACKAGED / f"{name}.yaml"
    if bare and path.suffix in ("", ".yaml") and packaged.is_file():
        return packaged
    return path  # load_config names it in its "cannot read" sentence, with the packaged names


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> dict:
    """The defaults, updated by ``base`` (a checkpoint's configuration), the YAML file at ``path`` (or the
    packaged config of that name), then ``KEY=VALUE`` overrides; validated. Keys newer than ``base`` keep
    their defaults."""
    cfg = defaults()
    if base is not None:
        _merge(cfg, base, SCHEMA, prefix="", source="the checkpoint's configuration")
    if path is not None:
        path = config_file(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8-sig"))  # a BOM from Windows editors
        except OSError as error:
            raise UserError(f"cannot read config file {path}: {error.strerror or error} (the packaged configs, "
                            f"chosen by name: {', '.join(packaged_configs())})") from None
        except UnicodeDecodeError as error:
            raise UserError(f"{path} is not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); "
                            "save it as UTF-8") from None
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            line = f":{where.line + 1}" if where is not None else ""
            raise UserError(f"{path}{line} is not valid YAML ({getattr(error, 'problem', error)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"{path} must hold a mapping of config sections, not a {type(loaded).__name__}")
        _merge(cfg, loaded or {}, SCHEMA, prefix="", source=str(path))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        set_key(cfg, key.strip(), value, source="--set")
    validate(cfg)
    return cfg


def set_key(cfg: dict, dotted: str, value: Any, source: str = "--set") -> None:
    """Set one dotted key (``optim.lr``), checking that the key exists and the value fits."""
    parts = dotted.split(".")
    schema: Any = SCHEMA
    target = cfg
    for depth, part in enumerate(parts):
        if not isinstance(schema, dict) or part not in schema:
            raise UserError(f"unknown config key '{dotted}' (from {source}){_suggest(dotted)}")
        if depth < len(parts) - 1:
            schema, target = schema[part], target[part]
    if isinstance(schema[parts[-1]], dict):
        raise UserError(f"config key '{dotted}' is a section; set one of its keys, e.g. '{dotted}.{next(iter(schema[parts[-1]]))}'")
    target[parts[-1]] = _coerce(dotted, schema[parts[-1]], value)


def _merge(cfg: dict, loaded: dict, schema: dict, prefix: str, source: str) -> None:
    for name, value in loaded.items():
        dotted = f"{prefix}{name}"
        if name not in schema:
            raise UserError(f"unknown config key '{dotted}' in {source}{_suggest(dotted)}")
        if isinstance(schema[name], dict):
            if not isinstance(value, dict):
                raise UserError(f"config key '{dotted}' in {source} must be a section (a mapping), not {value!r}")
            _merge(cfg[name], value, schema[name], dotted + ".", source)
        else:
            cfg[name] = _coerce(dotted, schema[name], value)


def _suggest(dotted: str) -> str:
    close = difflib.get_close_matches(dotted, all_keys(), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _coerce(dotted: str, key: Key, value: Any) -> Any:
    """``value`` checked (and int widened to float) against ``key``; a UserError names the key otherwise."""
    if value is None and (key.default is None or key.kind == "path"):
        return None
    kind = key.kind
    if kind == AUTO_BOOL:
        if value == "auto" or isinstance(value, bool):
            return value
        raise UserError(f"config key '{dotted}' must be true, false or auto, not {value!r}")
    if kind == "int|auto":
        if value == "auto":
            return value
        kind = "int"
    if kind == "bool":
        if not isinstance(value, bool):
            raise UserError(f"config key '{dotted}' must be true or false, not {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key '{dotted}' must be an integer, not {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"config key '{dotted}' must be a number, not {value!r}")
        value = float(value)
    elif kind in ("str", "path"):
        if isinstance(value, (bool, list, dict)) or value is None:
            raise UserError(f"config key '{dotted}' must be a string, not {value!r}")
        value = str(value)
    elif kind == "floats":
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise UserError(f"config key '{dotted}' must be a list of numbers, not {value!r}")
        if key.length is not None and len(value) != key.length:
            raise UserError(f"config key '{dotted}' must be a list of {key.length} numbers, not {value!r}")
        value = [float(v) for v in value]
    if key.choices and value not in key.choices:
        raise UserError(f"config key '{dotted}' must be one of {', '.join(map(str, key.choices))}, not {value!r}")
    for number in (value if isinstance(value, list) else [value]):
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            if key.low is not None and number < key.low:
                raise UserError(f"config key '{dotted}' must be at least {key.low:g}, not {number!r}")
            if key.high is not None and number >= key.high:
                raise UserError(f"config key '{dotted}' must be below {key.high:g}, not {number!r}")
    return value


def validate(cfg: dict) -> None:
    """Checks that span keys (the single-key ones happen as values are set)."""
    low, high = cfg["augment"]["crop_scale"]
    if not 0 < low <= high:
        raise UserError("config key 'augment.crop_scale' must be [low, high] with 0 < low <= high <= 1")
    low, high = cfg["augment"]["crop_ratio"]
    if not low <= high:
        raise UserError("config key 'augment.crop_ratio' must be [low, high] with low <= high")
    milestones = cfg["sched"]["milestones"]
    if milestones != sorted(milestones):
        raise UserError("config key 'sched.milestones' must be in increasing order")
    device = cfg["train"]["device"]
    if device not in ("auto", "cpu", "cuda", "mps") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise UserError(f"config key 'train.device' must be auto, cpu, cuda, cuda:N or mps, not '{device}'")
    if cfg["train"]["amp"] == "fp16" and device == "cpu":
        raise UserError("config key 'train.amp' cannot be fp16 on the CPU; use bf16 or none")
    if cfg["train"]["select"].startswith("ema_") and not cfg["train"]["ema"]:
        raise UserError(f"config key 'train.select' is {cfg['train']['select']} but train.ema is 0 (no averaged "
                        "weights); set train.ema (e.g. 0.999) or select best or last")
    if cfg["loss"]["easy_margin"] and cfg["loss"]["type"] not in ("arcface", "subcenter"):
        raise UserError("config key 'loss.easy_margin' applies to arcface and subcenter only")
    name = cfg["run"]["name"]
    if name is not None and (not name or "/" in name or "\\" in name or name in (".", "..")):
        raise UserError(f"config key 'run.name' must be a plain folder name, not '{name}'")


def dump_config(cfg: dict) -> str:
    """The configuration as YAML, keys in schema order."""
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
