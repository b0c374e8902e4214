"""Where a run computes, and how fast: device choice and the speed settings for it."""

from __future__ import annotations

import functools
import importlib.metadata
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from helpers.core.config import Config, TrainConfig
from helpers.core.errors import UserError, one_line


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """CUDA, then MPS, then the CPU; ``name`` (cpu, cuda, cuda:N, mps) overrides. A GPU the installed torch
    has no kernels for is refused, naming the build that has them (:func:`gpu_kernels`)."""
    device = _named_device(name, local_rank)
    if device.type == "cuda":
        gpu_kernels(device.index or 0)
    return device


def _named_device(name: str, local_rank: int) -> torch.device:
    """The device ``name`` asks for, checked to be there."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device is {name} but no CUDA GPU is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("train.device is mps but MPS is not available")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


# CUDA 13 builds dropped Maxwell, Pascal and Volta (sm_50-sm_72); the CUDA 12.6 builds still carry them.
OLDER_GPU_INDEX = "https://download.pytorch.org/whl/cu126"
NO_KERNEL_IMAGE = "no kernel image is available"  # what CUDA says when a kernel lacks this GPU's architecture


def kernels_for(capability: tuple[int, int], arch_list: list[str]) -> str | None:
    """The entry of ``arch_list`` (``torch.cuda.get_arch_list()``) whose kernels run on a GPU of ``capability``,
    or None. A cubin ``sm_XY`` runs on GPUs of major X from minor Y up; PTX ``compute_XY`` is compiled by the
    driver for XY and every later GPU; an ``a``-suffixed entry (sm_90a) runs on its own GPU only."""
    device = 10 * capability[0] + capability[1]
    cubins, ptx = [], []
    for kind, number, suffix, entry in _architectures(arch_list):
        if suffix == "a":
            runs = number == device
        elif kind == "sm":
            runs = number // 10 == capability[0] and number <= device
        else:
            runs = number <= device
        if runs:
            (cubins if kind == "sm" else ptx).append((number, entry))
    found = max(cubins) if cubins else max(ptx) if ptx else None
    return found[1] if found else None


def _architectures(arch_list: list[str]) -> list[tuple[str, int, str, str]]:
    """Each ``sm_XY``/``compute_XY`` entry as (kind, XY, suffix, entry); others (a ROCm gfx name) are left out."""
    found = []
    for entry in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)([a-z]?)", entry)
        if match:
            found.append((match.group(1), int(match.group(2)), match.group(3), entry))
    return found


def missing_kernels_sentence(name: str, capability: tuple[int, int], arch_list: list[str], torch_version: str,
                             cuda: str, vision_version: str | None) -> str:
    """One sentence: which GPU, which architecture, that this torch (its version and CUDA) lacks it, and the
    pip line of the build that has it: the same release for CUDA 12.6 for older GPUs, a newer torch for newer."""
    installed = f"the installed torch {torch_version} (CUDA {cuda})"
    if kernels_for(capability, arch_list) is None:
        lacks = f", for which {installed} has no kernels (it is built for {', '.join(arch_list)})"
    else:  # torch lists the architecture, yet CUDA found a kernel without it
        lacks = f", and {installed} lacks a kernel for it ({NO_KERNEL_IMAGE} for execution on the device)"
    numbers = [number for _, number, _, _ in _architectures(arch_list)]
    if numbers and 10 * capability[0] + capability[1] > max(numbers):
        fix = "install a newer torch: pip install --upgrade torch torchvision"
    else:
        vision = f" torchvision=={vision_version.split('+')[0]}" if vision_version else ""
        fix = (f"install the same release built for CUDA 12.6, which has them: pip install "
               f"torch=={torch_version.split('+')[0]}{vision} --index-url {OLDER_GPU_INDEX}")
    return f"the {name} GPU is sm_{capability[0]}{capability[1]}{lacks}; {fix}"


def gpu_kernels(index: int = 0) -> str:
    """The entry of the installed torch's architectures that runs on GPU ``index`` ("" where torch does not
    list them: a ROCm build); a GPU none runs on is refused with :func:`missing_kernels_sentence`."""
    arch_list = torch.cuda.get_arch_list()
    if torch.version.cuda is None or not arch_list:
        return ""
    capability = torch.cuda.get_device_capability(index)
    found = kernels_for(capability, arch_list)
    if found is None:
        raise UserError(_kernel_sentence(index, capability, arch_list))
    return found


def _kernel_sentence(index: int, capability: tuple[int, int], arch_list: list[str]) -> str:
    try:
        vision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        vision = None
    return missing_kernels_sentence(torch.cuda.get_device_name(index), capability, arch_list, torch.__version__,
                                    torch.version.cuda, vision)


@contextmanager
def kernel_errors_explained(device: torch.device):
    """Turn CUDA's "no kernel image is available" met in the block into the sentence that names the fix."""
    try:
        yield
    except RuntimeError as error:
        if device.type != "cuda" or NO_KERNEL_IMAGE not in str(error):
            raise
        index = device.index or 0
        capability = torch.cuda.get_device_capability(index)
        raise UserError(_kernel_sentence(index, capability, torch.cuda.get_arch_list())) from None


@dataclass(frozen=True)
class FastPath:
    """The speed settings a run uses: autocast dtype, memory format, compilation, fused optimiser kernels, and
    what the timed probe measured where it decided them (:func:`fast_path`)."""

    amp: torch.dtype | None
    channels_last: bool
    compile: bool
    fused: bool
    timing: ProbeTiming | None = None

    def place(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``module`` moved to ``device``, in this path's memory format."""
        module.to(device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def sentence(self) -> str:
        """The settings in words, with the timed probe's verdicts where it decided them, for a run's log."""
        words = [f"autocast {amp_name(self.amp)}" if self.amp else "fp32",
                 "channels-last" if self.channels_last else "NCHW"]
        words += (["torch.compile"] if self.compile else []) + (["fused optimiser"] if self.fused else [])
        verdicts = self.timing.verdicts((amp_name(self.amp), self.channels_last)) if self.timing else {}
        probe = f" (timed probe: {'; '.join(verdicts.values())})" if verdicts else ""
        return "fast path: " + ", ".join(words) + probe

    def describe(self) -> dict:
        """The settings as plain values, for JSON reports and checkpoints."""
        return {"amp": amp_name(self.amp), "channels_last": self.channels_last, "compile": self.compile,
                "fused_optimizer": self.fused,
                "probe": self.timing.describe((amp_name(self.amp), self.channels_last)) if self.timing else None}


AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_WORDS = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}


def amp_name(dtype: torch.dtype | None) -> str:
    """The ``train.amp`` value of an autocast dtype (none, bf16, fp16)."""
    return next(name for name, value in AMP_DTYPES.items() if value == dtype)


# optim.name -> torch optimiser: training builds from it, and the fast-path probe steps the same kind
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


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


def speed_options(train: TrainConfig, device: torch.device) -> tuple[list[str], list[bool]]:
    """The autocast and memory-format values that work here among those ``train`` allows, each list best first
    and plain last (a set value alone)."""
    return (working_options(amp_choices(train.amp, device), lambda choice: probe_problem(device, amp=choice)),
            working_options(channels_last_choices(train.channels_last, device),
                            lambda choice: probe_problem(device, channels_last=choice)))


def fast_path(cfg: Config, device: torch.device, previous: dict | None = None) -> FastPath:
    """Resolve the ``auto`` speed settings of ``cfg`` for ``device``.

    Each ``auto`` setting keeps only the choices that pass :func:`probe_problem`,
    so a kernel this torch or this GPU lacks costs speed, not the run. On the
    CPU the timed probe (:func:`speed_probe`) then picks among them; on CUDA the
    first in order is taken. ``previous`` (a checkpoint's ``fast_path`` record,
    for its resume or its evaluation) keeps the choice its run trained with,
    so that a resume changes neither precision nor layout and re-evaluating
    gives the run's numbers. A set value is never overridden. ``selftest`` and
    ``bench train`` report from the same functions.
    """
    amp_options, layout_options = speed_options(cfg.train, device)
    chosen = _kept_choice(previous, device, amp_options, layout_options)
    timing = speed_probe(cfg, device) if chosen is None and device.type == "cpu" else None
    chosen = chosen or (timing.chosen if timing else (amp_options[0], layout_options[0]))
    fused = working_options(fused_choices(device),
                            lambda choice: probe_problem(device, fused=choice, optimizer=cfg.optim.name))[0]
    return FastPath(AMP_DTYPES[chosen[0]], chosen[1], cfg.train.compile, fused, timing)


def reported_timing(cfg: Config, device: torch.device, speed: FastPath) -> ProbeTiming | None:
    """The timed probe behind ``speed`` (on the CPU), or on CUDA, where the order decides, the same probe run
    for comparison; None where nothing was left to time."""
    if speed.timing is None and device.type == "cuda":
        return speed_probe(cfg, device)
    return speed.timing


def describe_fast_path(cfg: Config, device: torch.device, speed: FastPath) -> dict:
    """``speed`` as plain values with what the timed probe measured (:func:`reported_timing`), for the reports
    of ``selftest`` and ``bench train``."""
    described, timing = speed.describe(), reported_timing(cfg, device, speed)
    if timing is not None and speed.timing is None:
        described["probe"] = timing.describe((described["amp"], speed.channels_last), decided=False)
    return described


def _kept_choice(previous: dict | None, device: torch.device, amp_options: list, layout_options: list):
    """The (amp, channels-last) choice a checkpoint's run trained with, when it ran on the same kind of device and
    the settings still leave that choice open; else None."""
    if not previous or previous.get("device") != device.type:
        return None
    choice = (previous.get("amp"), previous.get("channels_last"))
    return choice if choice[0] in amp_options and choice[1] in layout_options else None


@functools.lru_cache(maxsize=None)
def probe_problem(device: torch.device, amp: str = "none", channels_last: bool = False, fused: bool = False,
                  optimizer: str = "sgd") -> str | None:
    """Why these settings fail on ``device`` (one line), or None when three training steps of a tiny conv net
    run with them and end on a finite loss. Asked once per process; the global RNG states are left untouched."""
    try:
        return _probe_steps(device, amp, channels_last, fused, optimizer)
    except Exception as error:  # noqa: BLE001 - any failure means: not this path
        return one_line(error)


def own_rng(device: torch.device):
    """A context in which code may seed and draw as it pleases: the caller's random states (a notebook's, a
    run's) are put back after, ``device``'s generator included."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


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
    step = OPTIMIZERS[optimizer]([*features.parameters(), *head.parameters()], lr=1e-3,
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
# shared machine, and the stand-in's smaller size, must not move a run to a slower path.

TIMING_MARGIN = 1.1
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
    (None when it was dropped before)."""

    amp: str
    channels_last: bool
    screen: float
    timed: float | None
    problem: str | None = None


@dataclass(frozen=True)
class ProbeTiming:
    """What the timed probe measured, and the (amp, channels-last) choice it makes from it."""

    measured: tuple[Measured, ...]
    default: tuple[str, bool]
    chosen: tuple[str, bool]
    shape: ProbeShape
    seconds: float

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
        return phrases

    def describe(self, chosen: tuple[str, bool] | None = None, decided: bool = True) -> dict:
        """Plain values for reports: the rates, and the verdicts against ``chosen`` (default: the probe's own);
        ``decided`` says whether the probe made the choice (on CUDA the order makes it)."""
        name = {True: "channels-last", False: "NCHW"}
        rates = {f"{AMP_WORDS[m.amp]} {name[m.channels_last]}": m for m in self.measured}
        return {"decided": decided, "batch": self.shape.batch, "image_size": self.shape.image_size,
                "seconds": round(self.seconds, 2), "margin": TIMING_MARGIN,
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
    # strided 1x1 convolution of fewer than 16 channels (training.engine.channels_last_crash): probe even batches
    return max(2, batch - batch % 2)


def screen_batch(shape: ProbeShape) -> int:
    return _even(shape.batch // 8)


def speed_probe(cfg: Config, device: torch.device) -> ProbeTiming | None:
    """The timed probe of the (amp, channels-last) candidates that ``cfg``'s settings leave open on ``device``
    (:func:`speed_options`); None when there is only one. Measured once per process and shape."""
    amp_options, layout_options = speed_options(cfg.train, device)
    if len(amp_options) * len(layout_options) == 1:
        return None
    return timed_probe(device, tuple(amp_options), tuple(layout_options), probe_shape(cfg))


@functools.lru_cache(maxsize=None)
def timed_probe(device: torch.device, amp_options: tuple, layout_options: tuple, shape: ProbeShape) -> ProbeTiming:
    """Time the stand-in net under every (amp, channels-last) pair and choose (:func:`choose_timed`); the caller's
    random states are left untouched."""
    candidates = [(amp, layout) for amp in amp_options for layout in layout_options]
    started = time.perf_counter()
    with own_rng(device):
        measured = _measure(device, shape, candidates)
    default = (amp_options[-1], layout_options[0])  # fp32 (or the set dtype); channels-last where it works
    return ProbeTiming(measured, default, choose_timed(measured, default), shape, time.perf_counter() - started)


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
    """Each candidate's screening step (the second at a small batch: the first makes the kernels), then
    interleaved timed rounds of those not far behind (best of rounds: a busy moment slows one round, not the
    minimum)."""
    steps = {candidate: _stand_in_steps(device, shape, *candidate) for candidate in candidates}
    small = screen_batch(shape)
    # The first call makes the kernels, the second is timed; a non-finite loss (None) ends it at the first.
    screen = {candidate: step(small) and step(small) for candidate, step in steps.items()}
    problems = {c: "the loss was not finite" for c, seconds in screen.items() if seconds is None}
    fastest = min((s for s in screen.values() if s is not None), default=0.0)
    alive = [c for c, seconds in screen.items() if seconds is not None and seconds <= SCREEN_DROP * fastest]
    for candidate in alive:
        steps[candidate](shape.batch)  # warm-up: kernels are made for the probe batch's shapes on first use
    best: dict = {}
    started = time.perf_counter()
    for rounds in range(1, PROBE_ROUNDS + 1):
        for candidate in list(alive):
            seconds = steps[candidate](shape.batch)
            if seconds is None:
                problems[candidate] = "the loss was not finite"
                alive.remove(candidate)
                best.pop(candidate, None)
            else:
                best[candidate] = min(best.get(candidate, math.inf), seconds)
        if rounds >= 2 and time.perf_counter() - started > PROBE_SECONDS:
            break
    return tuple(Measured(amp, layout, small / screen[(amp, layout)] if screen[(amp, layout)] else 0.0,
                          shape.batch / best[(amp, layout)] if (amp, layout) in best else None,
                          problems.get((amp, layout))) for amp, layout in candidates)


def _stand_in(shape: ProbeShape, device: torch.device | str) -> torch.nn.Sequential:
    """The stand-in's convolutions (each with BN and ReLU; the seed stem's max-pool), an embedding after the
    mean over the last map, and a class head. No residual sums: they cost little next to the convolutions."""
    layers: list[torch.nn.Module] = []
    channels = 3

    def conv(out: int, kernel: int, stride: int) -> None:
        nonlocal channels
        layers.extend([torch.nn.Conv2d(channels, out, kernel, stride, kernel // 2, bias=False, device=device),
                       torch.nn.BatchNorm2d(out, device=device), torch.nn.ReLU()])
        channels = out

    first = shape.widths[0]
    if shape.stem == "seed":
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
    optimizer = OPTIMIZERS[shape.optimizer](net.parameters(), lr=1e-3)

    def step(batch: int) -> float | None:
        _sync(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=AMP_DTYPES[amp], enabled=amp != "none"):
            logits = net(images[:batch])
        loss = torch.nn.functional.cross_entropy(logits, labels[:batch])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))  # waits for the loss; _sync for the rest
        _sync(device)
        return time.perf_counter() - started if finite else None

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def distributed_backend() -> str:
    """The torch.distributed backend under torchrun: NCCL between GPUs where torch has it, gloo otherwise."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def default_workers(setting, device: torch.device) -> int:
    """``data.num_workers: auto``: decoding is cheap next to a CPU step, so CPU runs keep their cores for the model."""
    if setting != "auto":
        return setting
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        return 0 if cores <= 2 else 2
    return min(8, cores)
