"""Which speed settings work on a device, and which pay: short trainings of small stand-in networks.

:func:`probe_problem` trains a tiny net three steps under one setting (an autocast dtype, channels-last, fused
optimiser kernels) and says why it fails, if it does: a kernel this torch or GPU lacks costs speed, not the
run. The timed probe (:func:`speed_probe`) then trains a stand-in shaped like the configured model under each
(autocast, memory format) pair that works and measures images/s; its verdict is cached on disk for the machine
(:mod:`helpers.runtime.probe_cache`), and one measured under load is not trusted. :mod:`helpers.runtime.fast_path`
decides from both; ``selftest`` and ``bench train`` report what they found.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, replace

import torch

from helpers.core.config import Config, TrainConfig, optimizer_class
from helpers.core.errors import one_line
from helpers.runtime.device import own_rng, synchronize
from helpers.runtime.probe_cache import probe_key, read_verdict, write_verdict

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_WORDS = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}


def amp_name(dtype: torch.dtype | None) -> str:
    """The ``train.amp`` value of an autocast dtype (none, bf16, fp16)."""
    return next(name for name, value in AMP_DTYPES.items() if value == dtype)


def amp_choices(setting: str, device: torch.device) -> list[str]:
    """What ``train.amp`` may become on ``device``, best first and plain (fp32) last; a set value is taken as
    it is. On CUDA ``auto`` takes bf16 where the GPU has it, then fp16 with loss scaling; on the CPU the timed
    probe decides between bf16 and fp32 (bf16 is fast with AMX or AVX-512 bf16 kernels, emulated and slow
    without: BENCHMARKS.md)."""
    if setting != "auto":
        return [setting]
    if device.type == "cpu":
        return ["bf16", "none"]
    if device.type != "cuda":
        return ["none"]
    return (["bf16"] if torch.cuda.is_bf16_supported() else []) + ["fp16", "none"]


def channels_last_choices(setting, device: torch.device) -> list[bool]:
    """What ``train.channels_last`` may become: ``auto`` tries it on CUDA and the CPU."""
    if setting != "auto":
        return [setting]
    return [True, False] if device.type in ("cuda", "cpu") else [False]


def fused_choices(device: torch.device) -> list[bool]:
    """Fused optimiser kernels are tried on CUDA; elsewhere the stock for-each step runs."""
    return [True, False] if device.type == "cuda" else [False]


def working_options(choices: list, problem) -> list:
    """The ``choices`` for which ``problem(choice)`` is None, in order; the last, the plain path, is not tried."""
    return [choice for choice in choices[:-1] if problem(choice) is None] + choices[-1:]


def speed_options(train_cfg: TrainConfig, device: torch.device) -> tuple[list[str], list[bool]]:
    """The autocast and memory-format values that work here among those ``train_cfg`` allows, each list best
    first and plain last (a set value alone)."""
    return (working_options(amp_choices(train_cfg.amp, device), lambda choice: probe_problem(device, amp=choice)),
            working_options(channels_last_choices(train_cfg.channels_last, device),
                            lambda choice: probe_problem(device, channels_last=choice)))


@functools.lru_cache(maxsize=None)
def probe_problem(device: torch.device, amp: str = "none", channels_last: bool = False, fused: bool = False,
                  optimizer: str = "sgd") -> str | None:
    """Why these settings fail on ``device`` (one line), or None when three training steps of a tiny conv net
    run with them and end on a finite loss. Asked once per process; the global RNG states are left untouched."""
    try:
        return _probe_steps(device, amp, channels_last, fused, optimizer)
    except Exception as error:  # noqa: BLE001 - any failure means: not this path
        return one_line(error)


def _probe_steps(device: torch.device, amp: str, channels_last: bool, fused: bool, optimizer: str) -> str | None:
    with own_rng(device):
        return _train_tiny_net(device, amp, channels_last, fused, optimizer)


def _train_tiny_net(device: torch.device, amp: str, channels_last: bool, fused: bool, optimizer: str) -> str | None:
    torch.manual_seed(0)
    # Only ops with deterministic kernels (a mean, not adaptive pooling), so train.deterministic cannot fail it
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                   torch.nn.ReLU()).to(device)
    head = torch.nn.Linear(8, 4).to(device)
    images = torch.randn(8, 3, 16, 16, device=device)
    labels = torch.arange(8, device=device) % 4
    if channels_last:
        features.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    step = optimizer_class(optimizer)([*features.parameters(), *head.parameters()], lr=1e-3,
                                      **({"fused": True} if fused else {}))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    for _ in range(3):
        with torch.autocast(device.type, dtype=AMP_DTYPES[amp], enabled=amp != "none"):
            loss = torch.nn.functional.cross_entropy(head(features(images).mean(dim=(2, 3))), labels)
        scaler.scale(loss).backward()
        scaler.step(step)
        scaler.update()
        step.zero_grad(set_to_none=True)
    return None if bool(torch.isfinite(loss)) else f"the loss was {loss.item()} after three steps"


# ----------------------------------------------------------------------------- the timed probe
#
# Whether bf16 autocast or channels-last pays on a CPU depends on the CPU (AMX or AVX-512 bf16 kernels, or
# neither) and on the model, so it is measured, not assumed: a short training of a stand-in net shaped like
# the configured model, under each candidate. The default (fp32, and channels-last where it works: what
# `auto` took before it was measured) is left only for a candidate TIMING_MARGIN faster: timing noise on a
# shared machine, and the stand-in's smaller size, must not move a run to a slower path. A verdict whose timed
# rounds of one candidate are more than LOAD_RATIO apart was measured while something else ran (a busy machine
# swung it from "37x faster" to "0.03x"): it is not trusted, the default is taken, and it is not cached.

TIMING_MARGIN = 1.1
LOAD_RATIO = 2.0  # idle, a tiny stand-in's rounds came within 1.44x; beside two busy processes, 3.5x to 33x
PROBE_STEP_FLOPS = 12e9  # the stand-in's batch keeps a training step near this (~50 ms on two Zen 5 cores)
PROBE_SECONDS = 0.5  # timed rounds stop once they have taken this long (at least two run)
PROBE_ROUNDS = 5
PROBE_CLASSES = 1000
# First a screening step per candidate at an eighth of the batch: one this many times slower than the fastest
# is not timed further, so that emulated bf16 (ten times slower) costs no full-size steps.
SCREEN_DROP = 3.0


@dataclass(frozen=True)
class ProbeShape:
    """The stand-in the timed probe trains for a configured model (:func:`probe_shape`)."""

    stem: str
    widths: tuple[int, ...]
    bottleneck: bool
    image_size: int
    batch: int
    optimizer: str


@dataclass(frozen=True)
class Measured:
    """One candidate's training rate in the timed probe, images/s: ``screen`` in the screening step (at
    :func:`screen_batch`; 0 when its loss was not finite), ``timed`` the best timed round at the probe's batch
    (None when it was dropped before), ``spread`` its slowest screening or timed round over its fastest of the
    same kind."""

    amp: str
    channels_last: bool
    screen: float
    timed: float | None
    problem: str | None = None
    spread: float = 1.0


@dataclass(frozen=True)
class ProbeTiming:
    """What the timed probe measured, and the (amp, channels-last) choice it makes from it; ``cached``: read
    back from this machine's cache (:mod:`helpers.runtime.probe_cache`), not measured by this process."""

    measured: tuple[Measured, ...]
    default: tuple[str, bool]
    chosen: tuple[str, bool]
    shape: ProbeShape
    seconds: float
    cached: bool = False

    @property
    def spread(self) -> float:
        """The widest disagreement between the timed rounds of one candidate (slowest over fastest)."""
        return max((m.spread for m in self.measured), default=1.0)

    @property
    def trusted(self) -> bool:
        """Whether the rounds agreed within LOAD_RATIO; a verdict measured under load chooses the default."""
        return self.spread <= LOAD_RATIO

    def speedup(self, a: tuple[str, bool], b: tuple[str, bool]) -> float:
        return speedup(self.measured, a, b)

    def verdicts(self, chosen: tuple[str, bool]) -> dict[str, str]:
        """Each measured autocast dtype against fp32, and channels-last against NCHW, at ``chosen``'s other
        setting, in a phrase: {"bf16": "bf16: 2.20x faster here, taken", ...}."""
        ran = {(m.amp, m.channels_last) for m in self.measured}
        pairs = [(AMP_WORDS[amp], (amp, chosen[1]), ("none", chosen[1])) for amp in AMP_DTYPES if amp != "none"]
        pairs.append(("channels-last", (chosen[0], True), (chosen[0], False)))
        phrases = {}
        for name, value, other in pairs:
            if value in ran and other in ran:
                factor = self.speedup(value, other)
                faster = "faster " if factor >= 1 else ""
                taken = "taken" if value == chosen else "not taken"
                under_margin = value != chosen and 1 <= factor < TIMING_MARGIN
                why = f" (under the {TIMING_MARGIN:g}x margin)" if under_margin else ""
                phrases[name] = f"{name}: {factor:.2f}x {faster}here, {taken}{why}"
        if not self.trusted:
            phrases["trust"] = (f"not trusted: the timed rounds of one setting were {self.spread:.2f}x apart, over "
                                f"the {LOAD_RATIO:g}x bound (a busy machine), so the default is taken and nothing "
                                "is cached")
        if self.cached:
            phrases["cached"] = "this machine's cached verdict (train.reprobe=true times it again)"
        return phrases

    def describe(self, chosen: tuple[str, bool] | None = None, decided: bool = True) -> dict:
        """Plain values for reports: the rates, and the verdicts against ``chosen`` (default: the probe's own);
        ``decided`` says whether the probe made the choice (on CUDA the order makes it)."""
        name = {True: "channels-last", False: "NCHW"}
        rates = {f"{AMP_WORDS[m.amp]} {name[m.channels_last]}": m for m in self.measured}
        return {"decided": decided, "batch": self.shape.batch, "image_size": self.shape.image_size,
                "seconds": round(self.seconds, 2), "margin": TIMING_MARGIN, "cached": self.cached,
                "trusted": self.trusted, "spread": round(self.spread, 2),
                "images_per_s": {key: round(m.timed, 1) for key, m in rates.items() if m.timed},
                "screen_images_per_s": {key: round(m.screen, 1) for key, m in rates.items()},
                "not_finite": {key: m.problem for key, m in rates.items() if m.problem},
                "verdicts": list(self.verdicts(chosen or self.chosen).values())}


def probe_summary(probe: dict) -> str:
    """A report's ``probe`` record (:meth:`ProbeTiming.describe`) in one sentence."""
    rates = ", ".join(f"{key} {rate:,.0f}" for key, rate in probe["images_per_s"].items())
    role = "" if probe["decided"] else "; on CUDA the order decides, this is for comparison"
    return (f"timed probe ({probe['seconds']:.1f} s, a stand-in shaped like the model at batch {probe['batch']}, "
            f"{probe['image_size']} px{role}): {rates} images/s; " + "; ".join(probe["verdicts"]))


def probe_shape(cfg: Config) -> ProbeShape:
    """The stand-in for ``cfg``'s model: its stem, stage widths and block kind with one block per stage, at its
    image size, trained by its kind of optimiser; the batch (at most ``train.batch_size``) keeps a step near
    PROBE_STEP_FLOPS."""
    model = cfg.model
    widths = tuple(max(1, int(round(base * model.width))) for base in (64, 128, 256, 512))
    shape = ProbeShape(model.stem, widths, model.depth >= 50, cfg.data.image_size, 1, cfg.optim.name)
    per_image = 3 * _forward_flops(shape)  # forward and backward
    batch = max(2, min(cfg.train.batch_size, round(PROBE_STEP_FLOPS / per_image)))
    return replace(shape, batch=_even(batch))


def _even(batch: int) -> int:
    # torch's CPU backward crashes (heap corruption, not an exception) in channels-last on an odd batch through a
    # strided 1x1 convolution of fewer than 16 channels (fast_path.channels_last_crash): probe even batches
    return max(2, batch - batch % 2)


def screen_batch(shape: ProbeShape) -> int:
    return _even(shape.batch // 8)


def speed_probe(cfg: Config, device: torch.device) -> ProbeTiming | None:
    """The timed probe of the (amp, channels-last) candidates that ``cfg``'s settings leave open on ``device``
    (:func:`speed_options`); None when there is only one. This machine's cached verdict unless
    ``train.reprobe``; measured once per process and shape."""
    amp_options, layout_options = speed_options(cfg.train, device)
    if len(amp_options) * len(layout_options) == 1:
        return None
    return timed_probe(device, tuple(amp_options), tuple(layout_options), probe_shape(cfg), cfg.train.reprobe)


def untimed_choice(amp_options: list, layout_options: list) -> tuple[str, bool]:
    """The timed probe's default: fp32 (or the set dtype), and channels-last where it works."""
    return amp_options[-1], layout_options[0]


@functools.lru_cache(maxsize=None)
def timed_probe(device: torch.device, amp_options: tuple, layout_options: tuple, shape: ProbeShape,
                again: bool = False) -> ProbeTiming:
    """This machine's cached verdict for the question (unless ``again``), else the stand-in net timed under every
    (amp, channels-last) pair and a choice made (:func:`choose_timed`; the default when the rounds disagree
    beyond LOAD_RATIO), cached when trusted. The caller's random states are left untouched."""
    key = probe_key(device, {"amp": list(amp_options), "channels_last": list(layout_options), "shape": asdict(shape)})
    candidates = [(amp, layout) for amp in amp_options for layout in layout_options]
    kept = None if again else _from_record(read_verdict(key), shape, candidates)
    if kept is not None:
        return kept
    started = time.perf_counter()
    with own_rng(device):
        measured = _measure(device, shape, candidates)
    default = untimed_choice(list(amp_options), list(layout_options))
    timing = ProbeTiming(measured, default, default, shape, time.perf_counter() - started)
    if not timing.trusted:
        return timing
    timing = replace(timing, chosen=choose_timed(measured, default))
    write_verdict(key, {"measured": [asdict(m) for m in measured], "default": default, "chosen": timing.chosen,
                        "seconds": timing.seconds})
    return timing


def _from_record(record: dict | None, shape: ProbeShape, candidates: list) -> ProbeTiming | None:
    """A cached verdict record as a ProbeTiming, or None when there is none or it is not a well-formed one of
    ``candidates``."""
    if record is None:
        return None
    try:
        measured = tuple(Measured(**fields) for fields in record["measured"])
        timing = ProbeTiming(measured, tuple(record["default"]), tuple(record["chosen"]), shape,
                             float(record["seconds"]), cached=True)
    except (KeyError, TypeError, ValueError):
        return None
    numbers = all(isinstance(value, (int, float)) for m in measured for value in (m.screen, m.timed or 0, m.spread))
    known = [(m.amp, m.channels_last) for m in measured]
    return timing if numbers and known == candidates and {timing.default, timing.chosen} <= set(known) else None


def choose_timed(measured: tuple[Measured, ...], default: tuple[str, bool]) -> tuple[str, bool]:
    """The fastest candidate in the timed rounds whose every departure from ``default`` pays for itself: it is
    TIMING_MARGIN faster than the same candidate with that one setting at its default; else ``default``."""
    def earns(candidate: tuple[str, bool]) -> bool:
        return all(speedup(measured, candidate, candidate[:axis] + (default[axis],) + candidate[axis + 1:])
                   >= TIMING_MARGIN for axis in (0, 1) if candidate[axis] != default[axis])

    timed = [m for m in measured if m.timed and earns((m.amp, m.channels_last))]
    best = max(timed, key=lambda m: m.timed, default=None)
    return default if best is None else (best.amp, best.channels_last)


def speedup(measured: tuple[Measured, ...], a: tuple[str, bool], b: tuple[str, bool]) -> float:
    """How many times faster candidate ``a`` trained than ``b``: in the timed rounds when both ran them, else in
    the screening step."""
    first, second = (next(m for m in measured if (m.amp, m.channels_last) == c) for c in (a, b))
    if first.timed and second.timed:
        return first.timed / second.timed
    return first.screen / second.screen if second.screen else math.inf


def _measure(device: torch.device, shape: ProbeShape, candidates: list) -> tuple[Measured, ...]:
    """Each candidate's screening steps at a small batch (the first makes the kernels, the next two are timed),
    then interleaved timed rounds of those not far behind (best of rounds: a busy moment slows one round, not the
    minimum). Each one's ``spread``, its slowest screening or timed round over its fastest of the same kind,
    says whether the machine was busy."""
    steps = {candidate: _stand_in_steps(device, shape, *candidate) for candidate in candidates}
    small = screen_batch(shape)
    screens = {candidate: _repeat(step, small, 3) for candidate, step in steps.items()}
    screens = {candidate: seconds[1:] for candidate, seconds in screens.items() if seconds}
    problems = {c: "the loss was not finite" for c in candidates if c not in screens}
    fastest = min((min(seconds) for seconds in screens.values()), default=0.0)
    alive = [c for c, seconds in screens.items() if min(seconds) <= SCREEN_DROP * fastest]
    for candidate in alive:
        steps[candidate](shape.batch)  # warm-up: kernels are made for the probe batch's shapes on first use
    timed: dict = {candidate: [] for candidate in alive}
    started = time.perf_counter()
    for rounds in range(1, PROBE_ROUNDS + 1):
        for candidate in list(alive):
            seconds = steps[candidate](shape.batch)
            if seconds is None:
                problems[candidate] = "the loss was not finite"
                alive.remove(candidate)
                del timed[candidate]
            else:
                timed[candidate].append(seconds)
        if rounds >= 2 and time.perf_counter() - started > PROBE_SECONDS:
            break
    return tuple(Measured(amp, layout, small / min(screens[(amp, layout)]) if (amp, layout) in screens else 0.0,
                          shape.batch / min(timed[(amp, layout)]) if (amp, layout) in timed else None,
                          problems.get((amp, layout)),
                          max(_spread(screens.get((amp, layout))), _spread(timed.get((amp, layout)))))
                 for amp, layout in candidates)


def _repeat(step, batch: int, times: int) -> list[float] | None:
    """The seconds of ``times`` calls of ``step(batch)``; None at the first non-finite loss."""
    found = []
    for _ in range(times):
        seconds = step(batch)
        if seconds is None:
            return None
        found.append(seconds)
    return found


def _spread(seconds: list[float] | None) -> float:
    return max(seconds) / min(seconds) if seconds else 1.0


def _stand_in(shape: ProbeShape, device: torch.device | str) -> torch.nn.Sequential:
    """The stand-in's convolutions (each with BN and ReLU; the ImageNet stem's max-pool), an embedding after the
    mean over the last map, and a class head. No residual sums: they cost little next to the convolutions."""
    layers: list[torch.nn.Module] = []
    channels = 3

    def conv(out: int, kernel: int, stride: int) -> None:
        nonlocal channels
        layers.extend([torch.nn.Conv2d(channels, out, kernel, stride, kernel // 2, bias=False, device=device),
                       torch.nn.BatchNorm2d(out, device=device), torch.nn.ReLU()])
        channels = out

    first = shape.widths[0]
    if shape.stem == "imagenet":
        conv(first, 7, 2)
        layers.append(torch.nn.MaxPool2d(3, 2, 1))
    else:
        conv(first, 3, 1)
    for index, width in enumerate(shape.widths):
        stride = 2 if index > 0 or shape.stem == "face" else 1
        if shape.bottleneck:
            conv(width, 1, 1)
            conv(width, 3, stride)
            conv(4 * width, 1, 1)
        else:
            conv(width, 3, stride)
            conv(width, 3, 1)
    return torch.nn.Sequential(*layers, _MeanOverMap(), torch.nn.Linear(channels, 512, device=device),
                               _Fp32Head(512, PROBE_CLASSES, device=device))


class _MeanOverMap(torch.nn.Module):
    """Global average pooling as a mean: deterministic kernels, so ``train.deterministic`` cannot fail it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _Fp32Head(torch.nn.Linear):
    """The class head in fp32 with autocast off, as the margin heads compute their logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def _forward_flops(shape: ProbeShape) -> float:
    """FLOPs of one image through the stand-in's convolutions, a multiply-add counted as two (the net is built on
    the meta device: no memory, no time)."""
    size, flops = shape.image_size, 0.0
    for layer in _stand_in(shape, "meta"):
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            stride = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
            size = math.ceil(size / stride)
        if isinstance(layer, torch.nn.Conv2d):
            flops += 2 * layer.weight[0].numel() * layer.out_channels * size * size
    return flops


def _stand_in_steps(device: torch.device, shape: ProbeShape, amp: str, channels_last: bool):
    """``step(batch)``: one training step of the stand-in under ``amp`` and layout, on the first ``batch`` of
    fixed random images; returns its seconds, or None when the loss was not finite."""
    torch.manual_seed(0)
    net = _stand_in(shape, device)
    images = torch.randn(shape.batch, 3, shape.image_size, shape.image_size, device=device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(shape.batch, device=device) % PROBE_CLASSES
    optimizer = optimizer_class(shape.optimizer)(net.parameters(), lr=1e-3)

    def step(batch: int) -> float | None:
        synchronize(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=AMP_DTYPES[amp], enabled=amp != "none"):
            logits = net(images[:batch])
        loss = torch.nn.functional.cross_entropy(logits, labels[:batch])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))  # waits for the loss; synchronize for the rest
        synchronize(device)
        return time.perf_counter() - started if finite else None

    return step
