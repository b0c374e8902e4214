"""Run configuration: typed, frozen sections whose field defaults are the starter recipe, declared once, here.

A configuration is a :class:`Config` read by attribute (``cfg.optim.lr``). Each
section below is a pydantic model: a field's default is the only place that
default is written, and its description is what ``dump_config`` writes beside
it. YAML files and ``--set KEY=VALUE`` only override; a file or ``--set``
naming an unknown key, a wrong type or an impossible value is refused with one
sentence naming the key (and the file and line it came from).

Why pydantic: it comes with wandb, so it costs no install, and it checks types,
ranges and choices from the annotations themselves; OmegaConf's structured
configs would add a dependency for the dotted overrides, which are a few lines
here. Values are validated as JSON would be (strictly: ``true`` is not 1, ``"3"``
is not 3), since YAML hands over JSON-like values.

Here are the declarations; :mod:`helpers.core.config_text` reads the YAML
within its bounds, and :mod:`helpers.core.config_keys` sets the dotted keys and
words the refusals.

The recipes ship inside the package (``helpers/configs/``) and are chosen by
name (``fast``, ``starter``...) from any folder, so a ``pip install`` of the
project is the whole toolkit; a path to any other YAML file works too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from helpers.core.config_keys import dotted_keys, merge, set_key, validate
from helpers.core.config_text import override_value, read_yaml
from helpers.core.errors import UserError
from helpers.core.registry import LAYOUTS, MARGIN_HEADS
from helpers.core.terms import NEWEST, get_term

PACKAGED = Path(__file__).parents[1] / "configs"  # the shipped recipes, chosen by name


def _numbers_as_text(value: Any) -> Any:
    # YAML reads `name: 2024` as a number; a name or path field means the text
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


Text = Annotated[str, BeforeValidator(_numbers_as_text)]


def _stem_of_before(value: Any) -> Any:
    # model.stem was "seed" before the ImageNet stem took its own name: old checkpoints and YAML still say it
    return "imagenet" if value == "seed" else value
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Section(BaseModel):
    """A configuration section: frozen, typed, and closed to unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)


class DataConfig(Section):
    root: Optional[Text] = None
    """the folder holding cls_data/ and ver_data/ (or one folder above it)"""
    stage_to: Optional[Text] = None
    """copy data.root into this folder before training and train from the copy (node-local disk: $LOCAL on PSC;
    ~ and $VARIABLES expand when it is used); a complete copy is reused; checkpoints stay in run.out_dir"""
    layout: Annotated[str, LAYOUTS.choice("read", also=("auto",))] = "auto"
    """auto (found from the folders) or a layout that reads, from helpers/core/registry.py's LAYOUTS: f24
    (cls_data/<split>/<identity>/), f25 (images/ + labels.txt), packed (pack-data)..."""
    num_workers: Union[Annotated[int, Field(ge=0)], Literal["auto"]] = "auto"
    """loader processes; auto: none on a 2-core CPU, up to 8 beside a GPU"""
    decode: Literal["auto", "workers", "device"] = "auto"
    """JPEG decoding: workers (CPU) | device (batched, nvJPEG on a GPU); auto: workers"""
    strict: bool = False
    """true: an unreadable image stops the run; false: it is skipped, named and counted"""
    image_size: int = Field(112, ge=16)
    """images are resized to this square (the course data is already 112x112)"""
    max_train_images: int = Field(0, ge=0)
    """0 = all; otherwise a seeded random subset, for quick runs"""
    singletons: Literal["keep", "drop", "negatives"] = "keep"
    """identities with one image: keep (as classes) | drop | negatives (no class, pushed from all)"""
    max_image_pixels: int = Field(4096 * 4096, ge=1)
    """an image whose header claims more pixels is refused before decoding (a decompression bomb)"""
    follow_links: bool = False
    """false: an image reached through a link leaving the data root is refused (check-data names it) | true"""

    @model_validator(mode="after")
    def _root_not_empty(self) -> DataConfig:
        if self.root is not None and not self.root.strip():
            raise UserError("config key 'data.root' is empty; give the folder holding cls_data/ ('.' for the "
                            "current folder)")
        return self


class AugmentConfig(Section):
    """What training augmentation does; the defaults are the assignment's transforms (the rest are off, 0)."""

    crop_scale: tuple[Annotated[float, Field(gt=0.0, le=1.0)], Annotated[float, Field(gt=0.0, le=1.0)]] = (0.9, 1.0)
    """RandomResizedCrop area range"""
    crop_ratio: tuple[Annotated[float, Field(ge=0.01)], Annotated[float, Field(ge=0.01)]] = (0.98, 1.02)
    """RandomResizedCrop aspect range"""
    flip: Probability = 0.5
    """horizontal flip probability"""
    color_jitter: float = Field(0.0, ge=0.0, lt=1.0)
    """brightness/contrast/saturation factors in [1-x, 1+x]"""
    grayscale: Probability = 0.0
    """probability"""
    rotation: float = Field(0.0, ge=0.0, lt=180.0)
    """degrees, either way"""
    translate: float = Field(0.0, ge=0.0, lt=0.5)
    """fraction of the image, either way"""
    erasing: Probability = 0.0
    """probability of blanking a random rectangle (2-33 % of the image)"""

    @model_validator(mode="after")
    def _ranges_in_order(self) -> AugmentConfig:
        if self.crop_scale[0] > self.crop_scale[1]:
            raise UserError("config key 'augment.crop_scale' must be [low, high] with 0 < low <= high <= 1")
        if self.crop_ratio[0] > self.crop_ratio[1]:
            raise UserError("config key 'augment.crop_ratio' must be [low, high] with low <= high")
        return self


class ModelConfig(Section):
    depth: Literal[18, 34, 50] = 34
    """18 | 34 (BasicBlocks) | 50 (Bottlenecks)"""
    width: float = Field(1.0, ge=0.01)
    """channel multiplier (64/128/256/512 at 1.0)"""
    stem: Annotated[Literal["imagenet", "face"], BeforeValidator(_stem_of_before)] = "imagenet"
    """imagenet: 7x7/2 conv + max-pool | face: 3x3/1 conv, no pool (7x7 final map at 112 px)"""
    block: Literal["basic", "preact"] = "basic"
    """basic (Conv-BN-ReLU) | preact (BN-ReLU-Conv)"""
    embedding_dim: int = Field(512, ge=2)
    """the embedding's size"""
    head: Literal["linear", "bn"] = "linear"
    """linear: Linear(512->512), the starter's | bn: BN -> Dropout -> Linear -> BN"""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """before the embedding (inside the head for head: bn)"""
    zero_init_residual: bool = False
    """start each residual branch at zero"""


class LossConfig(Section):
    type: Annotated[str, MARGIN_HEADS.choice()] = "arcface"
    """the margin head, from helpers/core/registry.py's MARGIN_HEADS: arcface, cosface, combined, subcenter..."""
    s: float = Field(30.0, ge=0.01)
    """logit scale"""
    m: float = Field(0.35, ge=0.0, lt=math.pi)
    """margin (radians for arcface/subcenter, cosine for cosface)"""
    easy_margin: bool = False
    """arcface: margin only where cos(theta) > 0"""
    m1: float = Field(1.0, ge=0.01)
    """combined: cos(m1*theta + m2) - m3"""
    m2: float = Field(0.3, ge=0.0, lt=math.pi)
    """combined: the angular margin"""
    m3: float = Field(0.2, ge=0.0, lt=2.0)
    """combined: the cosine margin"""
    subcenters: int = Field(3, ge=1)
    """subcenter: sub-centres per class"""
    margin_warmup_epochs: float = Field(0.0, ge=0.0)
    """raise the margin from 0 over this many epochs"""

    @model_validator(mode="after")
    def _easy_margin_only_where_the_head_takes_it(self) -> LossConfig:
        heads = MARGIN_HEADS.names("easy_margin")
        if self.easy_margin and self.type not in heads:
            raise UserError(f"config key 'loss.easy_margin' applies only to the heads {', '.join(heads)}, "
                            f"not to '{self.type}'")
        return self


class OptimConfig(Section):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    """sgd | adam | adamw"""
    lr: float = Field(0.001, gt=0.0)
    """the peak learning rate"""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """sgd"""
    weight_decay: float = Field(1e-4, ge=0.0)
    """L2 penalty (decoupled for adamw)"""
    nesterov: bool = True
    """sgd"""
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.999)
    """adam, adamw"""
    no_decay_bn_bias: bool = False
    """true: no weight decay on BatchNorm weights and biases"""


def optimizer_class(name: str):
    """The torch optimiser an ``optim.name`` stands for: training builds it, and the fast-path probes step the
    same kind. torch loads here, on first use, so that reading a configuration stays instant."""
    import torch

    return {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]


class SchedConfig(Section):
    name: Literal["none", "cosine", "step", "multistep", "plateau"] = "none"
    """none | cosine (per step) | step | multistep | plateau (on val EER)"""
    warmup_epochs: float = Field(0.0, ge=0.0)
    """linear warmup from 0, per step"""
    min_lr: float = Field(0.0, ge=0.0)
    """cosine floor (and plateau floor)"""
    step_size: float = Field(30.0, gt=0.0)
    """step: epochs between decays (of a train.epochs-long run, 100 when null; a budget scales them)"""
    milestones: tuple[Annotated[float, Field(ge=0.0)], ...] = (60.0, 80.0)
    """multistep: epochs of the decays (counted as step_size's are)"""
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    """step, multistep, plateau: decay factor"""
    patience: int = Field(5, ge=0)
    """plateau: evaluations without progress before a decay"""

    @model_validator(mode="after")
    def _milestones_in_order(self) -> SchedConfig:
        if list(self.milestones) != sorted(self.milestones):
            raise UserError("config key 'sched.milestones' must be in increasing order")
        return self


class TrainConfig(Section):
    epochs: Optional[int] = Field(None, ge=1)
    """the most epochs to train; null: as many as train.max_minutes allows, or the starter's 100 without a budget.
    Set it under a budget only to stop sooner on purpose"""
    batch_size: int = Field(64, ge=1)
    """per process"""
    amp: Literal["auto", "none", "fp16", "bf16"] = "auto"
    """auto (CUDA: bf16, else fp16; CPU: bf16 if the timed probe finds it faster, cached per machine) | none |
    fp16 | bf16"""
    channels_last: Union[bool, Literal["auto"]] = "auto"
    """auto (on CUDA; on the CPU unless the timed probe finds NCHW faster, cached per machine) | true | false"""
    compile: bool = False
    """torch.compile the model"""
    grad_clip: float = Field(0.0, ge=0.0)
    """max global gradient norm, head included; 0 = off"""
    accumulate: int = Field(1, ge=1)
    """batches per optimiser step"""
    seed: int = Field(0, ge=0)
    """seeds the weights, the data order and every augmentation"""
    deterministic: bool = False
    """deterministic kernels (exact resume is bitwise on the CPU), and no timed probe: amp and channels_last left
    at auto take fp32 and channels-last (where it works)"""
    reprobe: bool = False
    """true: time the fast-path probe again instead of taking this machine's cached verdict (kept per machine,
    torch version and model shape in $XDG_CACHE_HOME/hw2p2/probe, ~/.cache/hw2p2/probe by default)"""
    device: Text = "auto"
    """auto (cuda, mps, cpu) | cpu | cuda | cuda:N | mps"""
    max_minutes: float = Field(0.0, ge=0.0)
    """wall-clock budget for the whole run (the lr schedule ends with it); 0 = none"""
    checkpoint_every_steps: int = Field(0, ge=0)
    """also write last.pt every N optimiser steps; 0 = at epoch ends only"""
    max_nonfinite_steps: int = Field(20, ge=1)
    """stop after this many non-finite steps in a row"""
    eval_every: int = Field(1, ge=1)
    """evaluate (val EER, dev top-1) every N epochs"""
    eval_tta: bool = False
    """flip test-time augmentation during validation"""
    eval_bootstrap: int = Field(1000, ge=0)
    """resamplings of the val pairs for each evaluation's 95 % EER interval and the end-of-run paired comparison
    of best.pt with the other weights (selection.json); 0 = off"""
    ema: float = Field(0.0, ge=0.0, lt=1.0)
    """decay of an exponential moving average of the weights (e.g. 0.999); 0 = off (warmed up: min(ema,
    (1+n)/(10+n)) after n steps). With it, each evaluation measures the trained and the averaged weights, and
    the run keeps best_raw.pt and best_ema.pt beside best.pt"""
    select: Literal["auto", "best", "ema_best", "last", "ema_last", "leaderboard", "ema_leaderboard"] = "auto"
    """what best.pt holds: best (trained weights, lowest val EER) | ema_best | last | ema_last (the latest
    evaluation) | leaderboard | ema_leaderboard (best by course.term's leaderboard metric: val EER, or the
    combined score of dev top-1 and val EER); auto: ema_leaderboard with train.ema, leaderboard without (by val
    EER where the data has no dev images to measure the combined score)"""
    progress: Union[bool, Literal["auto"]] = "auto"
    """auto | true: bars in a terminal or live notebook, a few lines in logs | false"""

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        device = self.device
        if device not in ("auto", "cpu", "cuda", "mps") and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise UserError(f"config key 'train.device' must be auto, cpu, cuda, cuda:N or mps, not '{device}'")
        if self.amp == "fp16" and device == "cpu":
            raise UserError("config key 'train.amp' cannot be fp16 on the CPU; use bf16 or none")
        if self.select.startswith("ema_") and not self.ema:
            raise UserError(f"config key 'train.select' is {self.select} but train.ema is 0 (no averaged weights); "
                            "set train.ema (e.g. 0.999) or select best or last")
        return self


MAX_RUN_NAME = 128


class RunConfig(Section):
    out_dir: Text = "runs"
    """the folder that holds the run folders"""
    name: Optional[Text] = None
    """run folder under out_dir; the CLI defaults it to the config file's name"""
    init_from: Optional[Text] = None
    """start from these weights (fine-tune phases)"""

    @model_validator(mode="after")
    def _plain_name(self) -> RunConfig:
        name = self.name
        if name is not None and (not name or "/" in name or "\\" in name or name in (".", "..")):
            raise UserError(f"config key 'run.name' must be a plain folder name, not '{name}'")
        if name is not None and len(name) > MAX_RUN_NAME:  # file systems take 255 bytes; W&B and a shell less
            raise UserError(f"config key 'run.name' must be at most {MAX_RUN_NAME} characters, not {len(name)} "
                            f"('{name[:20]}...')")
        return self


class WandbConfig(Section):
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline | online | disabled (never needs a login; failures fall back)"""
    project: Text = "hw2p2-ablations"
    """the W&B project"""
    entity: Optional[Text] = None
    """the W&B team or user; null: the login's default"""
    group: Optional[Text] = None
    """the W&B group this run belongs to (search sets it to the search's name); null: none"""


class TrackingConfig(Section):
    wandb: WandbConfig = WandbConfig()


class CourseConfig(Section):
    term: Text = NEWEST
    """the course term whose rules apply (leaderboard metric, cutoff, hand-in): f25 | s26 | f26 | newest (the
    newest known, helpers/core/terms.yaml)"""

    @model_validator(mode="after")
    def _known_term(self) -> CourseConfig:
        try:
            get_term(self.term)
        except UserError as error:
            raise UserError(f"config key 'course.term': {error}") from None
        return self


class Config(Section):
    """A whole run configuration; ``Config()`` is the starter recipe."""

    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    sched: SchedConfig = SchedConfig()
    train: TrainConfig = TrainConfig()
    run: RunConfig = RunConfig()
    tracking: TrackingConfig = TrackingConfig()
    course: CourseConfig = CourseConfig()

    def as_dict(self) -> dict:
        """Plain values (lists, not tuples), as YAML, JSON, W&B and checkpoints hold them."""
        return self.model_dump(mode="json")


def defaults() -> Config:
    """The starter configuration."""
    return Config()


def all_keys() -> list[str]:
    """Every dotted key, e.g. ``optim.lr``."""
    return dotted_keys(Config)


def packaged_configs() -> list[str]:
    """The names of the configs shipped with the package (``demo``, ``fast``, ``starter``...)."""
    return sorted(path.stem for path in PACKAGED.glob("*.yaml"))


# Where the packaged configs lived in a checkout before they moved into the package: commands written
# then (``--config configs/fast.yaml``, ``--config config.yaml``) keep meaning the same recipes.
_CHECKOUT_PATHS = {"config.yaml": "starter"}
_RENAMED = {"seed": "starter"}  # recipes under their old names: ``--config seed`` keeps meaning the starter recipe


def config_file(name_or_path: str | Path) -> Path:
    """The YAML file a ``--config`` value means: an existing file, else the packaged config of that name
    (``fast``, ``fast.yaml``, or the checkout paths of before, ``configs/fast.yaml`` and ``config.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bare = path.name == str(name_or_path) or path.parent == Path("configs")
    name = _CHECKOUT_PATHS.get(str(name_or_path), path.stem)
    name = _RENAMED.get(name, name)
    packaged = PACKAGED / f"{name}.yaml"
    if bare and path.suffix in ("", ".yaml") and packaged.is_file():
        return packaged
    return path  # load_config names it in its "cannot read" sentence, with the packaged names


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> Config:
    """The defaults, updated by ``base`` (a checkpoint's configuration), the YAML file at ``path`` (or the
    packaged config of that name), then ``KEY=VALUE`` overrides; validated. Keys newer than ``base`` keep
    their defaults."""
    values: dict = {}
    origins: dict[str, str] = {}  # dotted key -> where its value came from, for messages
    if base is not None:
        merge(Config, values, base, "", "the checkpoint's configuration", origins, {})
    if path is not None:
        path = config_file(path)
        loaded, lines = read_yaml(path, Config, packaged_configs())
        merge(Config, values, loaded, "", str(path), origins, lines)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got '{item}'")
        set_key(Config, values, key, override_value(text, key), "--set", origins)
    return validate(Config, values, origins)


def changed(cfg: Config, values: dict[str, Any]) -> Config:
    """``cfg`` with some dotted keys set (``{"run.name": "fast"}``), validated like an override."""
    plain, origins = cfg.as_dict(), {}
    for dotted, value in values.items():
        set_key(Config, plain, dotted, value, "the program", origins)
    return validate(Config, plain, origins)


def dump_config(cfg: Config) -> str:
    """The configuration as YAML, keys in declaration order, each with its description as a comment."""
    lines = []

    def write(model: BaseModel, indent: str):
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                lines.append(f"{indent}{name}:")
                write(value, indent + "  ")
                continue
            text = yaml.safe_dump([json.loads(json.dumps(value))], default_flow_style=True).strip()[1:-1]
            note = " ".join((field.description or "").split())
            lines.append(f"{indent}{name}: {text}" + (f"  # {note}" if note else ""))

    write(cfg, "")
    return "\n".join(lines) + "\n"
