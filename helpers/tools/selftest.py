"""``selftest``: every device path of training, run a few steps on synthetic input; what works, what a run costs.

Each path is reported as ok, failed (the error in one line), not applicable
here, or skipped; with whether training as configured takes it and, when it
does not, what training does instead. Those answers come from the engine's own
decisions (:func:`runtime.resolve_runtime`: the fast path and its choice lists,
the loader workers, on-device decoding; :func:`codec.image_decoder`,
:func:`device.distributed_backend`), so the report is what a run will do.
Training cannot run when a path it takes fails; it can when only paths it would
fall back from fail.

The cost part times the configuration's training step at its batch size,
looks for the largest batch that fits, and turns the measured rates into
minutes per epoch with :func:`epoch_estimate`.
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from helpers.core.config import Config, load_config
from helpers.core.course import COURSE_CLASSES, COURSE_EVAL_IMAGES, COURSE_TRAIN_IMAGES
from helpers.core.errors import UserError, one_line
from helpers.data.augment import normalize
from helpers.data.codec import DECODERS, decode_image, decoder_problem, image_decoder, sample_jpeg
from helpers.data.datasets import FaceImages, collate, decode_batch, training_set
from helpers.data.images import ImageReader
from helpers.data.layout import FaceData, open_data
from helpers.eval.evaluation import embed_images, eval_settings, pair_images
from helpers.model.checkpoint import Checkpoint, rng_state, set_rng_state
from helpers.model.resnet import build_face_model
from helpers.runtime.device import distributed_backend, gpu_kernels, own_rng, synchronize
from helpers.runtime.probe import (AMP_WORDS, ProbeTiming, amp_choices, amp_name, channels_last_choices, fused_choices,
                                   probe_problem, probe_summary)
from helpers.runtime.resolve import Runtime, resolve_runtime
from helpers.runtime.session import describe_environment
from helpers.training.step import build_step

OK, FAILED, NOT_HERE, SKIPPED = "ok", "failed", "not applicable here", "skipped"

AMP_LABELS = {"bf16": "autocast bf16", "fp16": "autocast fp16 + GradScaler", "none": "fp32 (no autocast)"}


@dataclass
class PathCheck:
    """One device path: did it run, does training take it, and what training does when it does not."""

    path: str
    status: str
    used: bool
    note: str = ""
    instead: str = ""

    @property
    def blocks_training(self) -> bool:
        return self.status == FAILED and self.used


@dataclass
class SelfTestReport:
    """Every path's check, the speed settings training resolves to, and (full mode) what a run costs."""

    environment: dict
    fast_path: dict
    paths: list[PathCheck]
    cost: dict | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def can_train(self) -> bool:
        """Training can run (perhaps on fallbacks) when no path it takes has failed."""
        return not any(check.blocks_training for check in self.paths)

    def as_dict(self) -> dict:
        return {"can_train": self.can_train, "environment": self.environment, "fast_path": self.fast_path,
                "paths": [asdict(check) for check in self.paths], "cost": self.cost,
                "seconds": round(self.seconds, 1), "notes": self.notes}

    def lines(self) -> list[str]:
        """The report as a table and a few sentences, for a terminal or a notebook."""
        env = self.environment
        out = [f"device {env['device']}" + (f" ({env['gpu']}, {env['gpu_memory_gib']} GiB)" if "gpu" in env else "")
               + f", torch {env['torch']}, {env['cpu_cores']} CPU cores"]
        width = max(len(check.path) for check in self.paths) + 2
        for check in self.paths:
            tail = [check.note] if check.note else []
            if check.instead:
                tail.append(f"training: {check.instead}")
            used = "*" if check.used else " "
            out.append(f" {used} {check.path:<{width}}{check.status:<21}{' | '.join(tail)}")
        out.append("   (* = the path training takes as configured)")
        if self.fast_path.get("probe"):
            out.append(probe_summary(self.fast_path["probe"]))
        if self.cost:
            out += cost_lines(self.cost)
        out += self.notes
        verdict = "training can run" if self.can_train else "training CANNOT run as configured (see failed * rows)"
        out.append(f"{verdict}; self-test took {self.seconds:.0f} s")
        return out


def cost_lines(cost: dict) -> list[str]:
    """The cost part of a report in words."""
    line = (f"training step ({'compiled' if cost['compiled'] else 'eager'}) at batch {cost['batch_size']}: "
            f"{cost['images_per_s']:,.1f} images/s, peak "
            f"{cost['peak_memory_gib']:.2f} GiB ({cost['peak_memory_kind']})")
    if cost["largest_batch"] is not None:
        line += f"; largest batch that ran {cost['largest_batch']} ({cost['largest_batch_bound']})"
    lines = [line]
    if "epoch" in cost:
        lines.append(epoch_sentence(cost["epoch"], cost["data"]))
    return lines


def epoch_sentence(epoch: dict, data: str) -> str:
    """One sentence: the minutes an epoch of ``data`` takes, and the epochs that fit the budget when one is set."""
    text = (f"one epoch of {data} ({epoch['images_per_epoch']:,} images): ~{epoch['epoch_minutes']:,.1f} min "
            f"({epoch['train_minutes']:,.1f} training + {epoch['eval_minutes_per_epoch']:,.1f} evaluation)")
    if "epochs_in_budget" in epoch:
        text += f"; ~{epoch['epochs_in_budget']:.1f} epochs fit train.max_minutes={epoch['max_minutes']:g}"
    return text


# ----------------------------------------------------------------------------- the arithmetic


def epoch_estimate(train_images: int, batch_size: int, train_images_per_s: float, decode_images_per_s: float,
                   decode_workers: int, eval_images: int = 0, eval_images_per_s: float = 0.0, eval_every: int = 1,
                   max_minutes: float = 0.0) -> dict:
    """Minutes per epoch, and the epochs that fit ``max_minutes``, from measured rates.

    The engine trains whole batches only. Decoding in ``decode_workers`` loader
    processes overlaps the step, so the slower of the two sets the pace;
    decoding in the training process (``decode_workers`` 0, or on the device)
    adds its time to the step's. A run evaluates once before training and then
    every ``eval_every`` epochs, and stops within ``max_minutes``.
    """

    def rate(compute: float) -> float:
        if decode_workers > 0:
            return min(compute, decode_images_per_s * decode_workers)
        return 1.0 / (1.0 / compute + 1.0 / decode_images_per_s)

    images = train_images // batch_size * batch_size
    train_s = images / rate(train_images_per_s)
    eval_s = eval_images / rate(eval_images_per_s) if eval_images else 0.0
    epoch_s = train_s + eval_s / eval_every
    result = {"train_images": train_images, "images_per_epoch": images, "train_minutes": train_s / 60,
              "eval_minutes": eval_s / 60, "eval_minutes_per_epoch": eval_s / eval_every / 60,
              "epoch_minutes": epoch_s / 60}
    if max_minutes:
        result.update(max_minutes=max_minutes, epochs_in_budget=max(0.0, (max_minutes * 60 - eval_s) / epoch_s))
    return result


def largest_batch(runs, start: int, cap: int, bound=lambda batch: None) -> tuple[int, str]:
    """Double the batch from ``start`` (which ran) while ``runs(batch)`` (False: out of memory), up to ``cap``
    and while ``bound(batch)`` gives no reason to stop; the largest batch that ran, and what ended the search."""
    best, batch = start, start * 2
    while batch <= cap:
        reason = bound(batch)
        if reason:
            return best, reason
        if not runs(batch):
            return best, f"out of memory at {batch}"
        best, batch = batch, batch * 2
    return best, f"stopped at the cap of {cap}"


# ----------------------------------------------------------------------------- running it


def _setup(config, overrides, data_root) -> tuple[Config, Runtime, FaceData | None]:
    """The configuration, the Runtime its training would resolve (the engine's own decisions) and the data root
    to estimate (None: the course data)."""
    cfg = load_config(config, overrides)
    data = (open_data(data_root, cfg.data.layout, cfg.data.max_image_pixels, cfg.data.follow_links)
            if data_root else None)
    return cfg, resolve_runtime(cfg, training=True), data


def run_selftest(config=None, overrides=(), data_root=None, check_compile: bool = False, quick: bool = False,
                 seconds: float = 20.0, compile_seconds: float = 300.0) -> SelfTestReport:
    """Check every device path of a configuration; unless ``quick``, also time its training step for about
    ``seconds`` and estimate an epoch of ``data_root`` (the course data when None). ``check_compile`` adds a
    ``torch.compile`` check of up to ``compile_seconds`` in a child process."""
    started = time.perf_counter()
    cfg, runtime, data = _setup(config, overrides, data_root)
    device = runtime.device
    with tempfile.TemporaryDirectory() as scratch, own_rng(device):
        faces = _face_images(Path(scratch) / "faces", data, 8 if quick else 64, cfg.data.image_size)
        compile_row = compile_check(cfg, device, check_compile, compile_seconds)
        checks = [gpu_kernels_check(device),
                  *speed_checks(cfg, runtime, runtime.probe_timing(cfg)),
                  compile_row,
                  *decoder_checks(),
                  workers_check(faces, runtime.workers),
                  device_decode_check(faces, cfg.data.image_size, device, runtime.decode_on_device),
                  ddp_check(device),
                  checkpoint_check(cfg, runtime, Path(scratch)),
                  eval_check(cfg, runtime, faces)]
        cost = None
        if quick:
            checks.append(_step_check(cfg, runtime, min(8, cfg.train.batch_size), 100, steps=2)[0])
        else:
            compiled = runtime.fast_path.compile and compile_row.status == OK
            check, cost = measure_cost(cfg, runtime, data, faces, seconds, compiled=compiled)
            checks.append(check)
    return SelfTestReport(describe_environment(device), runtime.describe_fast_path(cfg), checks, cost,
                          time.perf_counter() - started)


def quick_selftest(config=None, overrides=(), show: bool = True) -> SelfTestReport:
    """The notebooks' environment-cell check (seconds): every path a few steps, no timing; prints the table."""
    report = run_selftest(config, overrides, quick=True)
    if show:
        print("\n".join(report.lines()))
    return report


def print_epoch_estimate(config=None, overrides=(), data_root=None, seconds: float = 5.0) -> dict:
    """Time the training step for ``seconds`` and print the minutes an epoch of ``data_root`` (the course
    data when None) will take, with the epochs that fit train.max_minutes; returns the measured cost."""
    cfg, runtime, data = _setup(config, overrides, data_root)
    with tempfile.TemporaryDirectory() as scratch, own_rng(runtime.device):
        faces = _face_images(Path(scratch) / "faces", data, 32, cfg.data.image_size)
        check, cost = measure_cost(cfg, runtime, data, faces, seconds, compiled=False, search=False)
    if check.status != OK:
        raise UserError(f"the training step failed on {runtime.device}: {check.note}")
    print(cost_lines(cost)[-1])
    return cost


# ----------------------------------------------------------------------------- the checks


def gpu_kernels_check(device: torch.device) -> PathCheck:
    """Which of the installed torch's architectures runs on this GPU. A GPU none runs on never gets here:
    device choice refuses it with the pip line of the build that has its kernels (device.gpu_kernels)."""
    label = "kernels for this GPU in torch"
    if device.type != "cuda":
        return PathCheck(label, NOT_HERE, False, f"no CUDA GPU ({device.type})")
    entry = gpu_kernels(device.index or 0)
    major, minor = torch.cuda.get_device_capability(device)
    arch = f"sm_{major}{minor}"
    if not entry:
        note = "this torch lists no CUDA architectures"
    elif entry.startswith("compute_"):
        note = f"{arch}: no {arch} kernels; the driver compiles torch's {entry} PTX at first use (a slow start)"
    else:
        note = f"{arch}: torch's {entry} kernels"
    return PathCheck(label, OK, True, note)


def speed_checks(cfg: Config, runtime: Runtime, timing: ProbeTiming | None = None) -> list[PathCheck]:
    """Autocast dtypes, channels-last and the fused optimiser: the choices :func:`fast_path.fast_path` resolves,
    each with what the timed probe (``timing``) measured of it."""
    device, fast, settings, optimizer = runtime.device, runtime.fast_path, cfg.train, cfg.optim.name

    def amp_not_here(value: str) -> str:
        if device.type == "cuda":
            return f"{torch.cuda.get_device_name(device)} has no native bf16"
        if value == "fp16":
            return "fp16 with loss scaling is for CUDA GPUs"
        return f"{device.type} trains in fp32"

    verdicts = timing.verdicts((amp_name(fast.amp), fast.channels_last)) if timing else {}
    checks = _choice_checks(AMP_LABELS, "train.amp", settings.amp, amp_choices(settings.amp, device),
                            amp_name(fast.amp), lambda value: probe_problem(device, amp=value), amp_not_here,
                            notes={amp: verdicts.get(AMP_WORDS[amp], "") for amp in AMP_LABELS})
    checks += _choice_checks({True: "channels-last", False: "NCHW (channels-last off)"}, "train.channels_last",
                             settings.channels_last, channels_last_choices(settings.channels_last, device),
                             fast.channels_last, lambda value: probe_problem(device, channels_last=value),
                             lambda value: f"not used on {device.type}", shown=(True,),
                             notes={True: verdicts.get("channels-last", "")})
    checks += _choice_checks({True: f"fused optimizer ({optimizer})", False: f"the stock for-each {optimizer} step"},
                             None, "auto", fused_choices(device), fast.fused,
                             lambda value: probe_problem(device, fused=value, optimizer=optimizer),
                             lambda value: "fused kernels are used on CUDA only", shown=(True,))
    return checks


def _choice_checks(labels: dict, key: str | None, setting, choices: list, chosen, problem, not_here,
                   shown=None, notes: dict | None = None) -> list[PathCheck]:
    """One check per value in ``shown`` (default: every label) of a setting that :func:`fast_path.fast_path`
    resolves from ``choices``; ``not_here(value)`` says why a value is not among them, ``notes`` what the timed
    probe measured of a value that works."""
    checks = []
    for value in labels if shown is None else shown:
        label = labels[value]
        if value not in choices:
            skipped = setting != "auto" and key is not None
            checks.append(PathCheck(label, SKIPPED if skipped else NOT_HERE, False,
                                    f"{key} is {setting}" if skipped else not_here(value), labels[chosen]))
            continue
        error = problem(value)
        used = value == chosen
        if used and error:
            instead = f"cannot run with it: set {key}=auto" if key else "cannot run with it"
        else:
            instead = "" if used else labels[chosen]
        checks.append(PathCheck(label, FAILED if error else OK, used, error or (notes or {}).get(value, ""), instead))
    return checks


def compile_check(cfg: Config, device: torch.device, requested: bool, seconds: float) -> PathCheck:
    """``torch.compile`` of the training step, in a child process stopped after ``seconds`` (opt-in)."""
    label = "torch.compile of the training step"
    used = cfg.train.compile
    instead = "" if used else "eager (train.compile is false)"
    if not requested:
        return PathCheck(label, SKIPPED, used, "opt-in: pass --compile (it takes minutes)", instead)
    payload = json.dumps({"config": cfg.as_dict(), "batch": min(cfg.train.batch_size, 32)})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                     os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", "from helpers.tools.selftest import _compile_child; _compile_child()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, start_new_session=True)  # its own group: a timeout ends its compile workers too
    try:
        out, err = child.communicate(payload, timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return PathCheck(label, FAILED, used, f"not compiled within the {seconds:g} s time box",
                         "cannot run with it: set train.compile=false" if used else instead)
    if child.returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        return PathCheck(label, FAILED, used, lines[-1] if lines else f"exit status {child.returncode}",
                         "cannot run with it: set train.compile=false" if used else instead)
    result = json.loads(out.strip().splitlines()[-1])
    return PathCheck(label, OK, used, f"compiled in {result['compile_seconds']:.0f} s; "
                                      f"{result['speedup']:.2f}x the eager step at batch {result['batch']}", instead)


def _compile_child() -> None:
    """In the child process: compile the configuration's training step and time it against eager."""
    request = json.loads(sys.stdin.read())
    cfg = load_config(None, base=request["config"])
    batch = request["batch"]
    runtime = resolve_runtime(cfg, training=True, batch_size=batch, announce=False)
    rates = {}
    for compiled in (False, True):
        _, train_steps = _stepper(cfg, runtime, 100, compiled)
        started = time.perf_counter()
        train_steps(batch, 1)  # the first compiled step compiles
        first = time.perf_counter() - started
        rates[compiled] = _timed(train_steps, batch, runtime.device, steps=3)
    print(json.dumps({"compile_seconds": first, "batch": batch, "speedup": rates[True] / rates[False]}))


def decoder_checks() -> list[PathCheck]:
    """Each image decoder on a test JPEG; the first that works is the one every loader uses."""
    chosen = image_decoder()
    checks = []
    for name in DECODERS:
        problem = decoder_problem(name)
        note = problem or _decoder_warning(name)
        instead = "" if name == chosen else (chosen or "PIL, image by image (slow)")
        checks.append(PathCheck(f"JPEG decoder: {name}", FAILED if problem else OK, name == chosen, note, instead))
    return checks


def _decoder_warning(name: str) -> str:
    """The first sentence of any warning the decoder gives (torchvision 0.29's deprecation, say)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decode_image(sample_jpeg(), name)
    if not caught:
        return ""
    first = caught[0]
    return f"{first.category.__name__}: {str(first.message).split('. ')[0]}"


def workers_check(faces: FaceImages, workers: int) -> PathCheck:
    """A loader with worker processes decodes the images exactly as the training process does."""
    tried = max(1, min(workers, 2))
    label = f"JPEG decoding in loader workers ({tried} tried)"
    used = workers > 0
    try:
        loader = torch.utils.data.DataLoader(faces, batch_size=8, num_workers=tried, collate_fn=collate)
        got = torch.cat([batch.images for batch in loader])
        expected = torch.stack([faces[i][0] for i in range(len(faces))])
        if not torch.equal(got, expected):
            raise RuntimeError("the workers decoded other pixels than the training process")
    except Exception as error:  # noqa: BLE001 - shared-memory limits, fork problems: all mean no workers
        return PathCheck(label, FAILED, used, one_line(error),
                         "cannot run with them: set data.num_workers=0" if used else "")
    note = f"data.num_workers resolves to {workers}" + ("" if used else ": decoding runs in the training process")
    return PathCheck(label, OK, used, note)


def device_decode_check(faces: FaceImages, size: int, device: torch.device, used: bool) -> PathCheck:
    """Batched JPEG decoding on the training device (``data.decode: device``; nvJPEG on a GPU)."""
    label = "JPEG decoding on the device" + (" (nvJPEG)" if device.type == "cuda" else "")
    instead = "" if used else "decodes in the loader (data.decode is auto or workers)"
    encoded = FaceImages(faces.paths, faces.labels, size, reader=faces.reader, encoded=True)
    try:
        batch = decode_batch(collate([encoded[i] for i in range(len(encoded))]), device, size, faces.paths)
        if batch.skipped:
            raise RuntimeError(f"{len(batch.skipped)} of {len(faces)} test JPEGs were not decoded")
        expected = torch.stack([faces[i][0] for i in range(len(faces))]).float()
        # nvJPEG's IDCT may round differently from libjpeg-turbo's; a real fault is far off
        difference = (batch.images.cpu().float() - expected).abs().mean().item()
        if difference > 2.0:
            raise RuntimeError(f"decoded pixels differ from the CPU decoder's by {difference:.1f} levels on average")
    except Exception as error:  # noqa: BLE001
        return PathCheck(label, FAILED, used, one_line(error),
                         "cannot run with it: set data.decode=workers" if used else instead)
    return PathCheck(label, OK, used, f"{image_decoder() or 'PIL'}, {len(faces)} images in one call", instead)


def ddp_check(device: torch.device) -> PathCheck:
    """A one-process group with the backend torchrun runs would use (a file store: no network), DDP through it."""
    backend = distributed_backend()
    label = f"torchrun / DDP ({backend}, one process)"
    if dist.is_initialized():
        return PathCheck(label, SKIPPED, True, "a process group is already up (running under torchrun)")
    instead = "single-process training does not use it"
    try:
        with tempfile.TemporaryDirectory() as folder:
            store = dist.FileStore(str(Path(folder) / "store"), 1)
            dist.init_process_group(backend, store=store, rank=0, world_size=1,
                                    timeout=datetime.timedelta(seconds=60))
            try:
                net = torch.nn.Linear(8, 4).to(device)
                wrapped = torch.nn.parallel.DistributedDataParallel(
                    net, device_ids=[device.index] if device.type == "cuda" else None)
                wrapped(torch.randn(4, 8, device=device)).square().mean().backward()
                total = torch.ones(1, device=device)
                dist.all_reduce(total)
                if total.item() != 1.0 or net.weight.grad is None:
                    raise RuntimeError("all_reduce or DDP's gradient hook gave a wrong result")
            finally:
                dist.destroy_process_group()
    except Exception as error:  # noqa: BLE001
        return PathCheck(label, FAILED, False, one_line(error), f"{instead}; torchrun runs would fail")
    return PathCheck(label, OK, False, "used under torchrun", instead)


def checkpoint_check(cfg: Config, runtime: Runtime, folder: Path) -> PathCheck:
    """Save a training state of device tensors, load it into a fresh model and optimiser, and check that the
    next step of the resumed copy matches the next step of the original."""
    label = "checkpoint save -> load -> resume"
    classes = 10
    try:
        original, train_original = _stepper(cfg, runtime, classes)
        train_original(2, 1)
        path = folder / "selftest.pt"
        Checkpoint(model=original.model.state_dict(), optimizer=original.optimizer.state_dict(),
                   scaler=original.scaler.state_dict(), rng=rng_state(), classes=[str(i) for i in range(classes)],
                   config_values=cfg.as_dict()).save(path)
        saved = Checkpoint.load(path)
        resumed, train_resumed = _stepper(cfg, runtime, classes)
        resumed.model.load_state_dict(saved.model_weights("raw"))
        resumed.optimizer.load_state_dict(saved.optimizer)
        resumed.scaler.load_state_dict(saved.scaler)
        set_rng_state(saved.rng)
        train_original(2, 1, seed=7)
        train_resumed(2, 1, seed=7)
        worst = max((a - b).abs().max().item() / (a.abs().max().item() + 1e-12) for a, b in
                    zip(original.model.parameters(), resumed.model.parameters()))
        if worst > 1e-3:
            raise RuntimeError(f"the resumed step differs from the uninterrupted one (relative {worst:.1e})")
    except Exception as error:  # noqa: BLE001
        return PathCheck(label, FAILED, True, one_line(error), "cannot save or resume runs")
    return PathCheck(label, OK, True, f"{path.stat().st_size / 2 ** 20:.1f} MiB written and reloaded")


def eval_check(cfg: Config, runtime: Runtime, faces: FaceImages) -> PathCheck:
    """Embeddings as evaluation computes them (loader workers, decoding on the device, autocast, memory format)
    against the plain path of the same function (in-process decoding, fp32, NCHW)."""
    label = "evaluation embedding"
    try:
        torch.manual_seed(0)
        model = build_face_model(cfg, 10).to(runtime.device)
        _calibrate_batchnorm(model, torch.stack([faces[i][0] for i in range(len(faces))]).to(runtime.device))
        runtime.place(model)
        settings = eval_settings(cfg, runtime)
        embeddings, skipped = embed_images(model, faces.paths, settings, reader=faces.reader)
        plain = replace(settings, workers=0, amp=None, channels_last=False, decode_on_device=False)
        reference, _ = embed_images(model, faces.paths, plain, reader=faces.reader)
        agreement = (embeddings * reference).sum(dim=1).min().item()
        # bf16 keeps 8 bits of mantissa: an untrained ResNet-34 came within cosine 0.989 of fp32 (CPU, 112 px);
        # a wrong kernel or memory layout lands far lower
        if skipped or not torch.isfinite(embeddings).all() or agreement < 0.95:
            raise RuntimeError(f"embeddings differ from the plain path's (lowest cosine {agreement:.3f})")
    except Exception as error:  # noqa: BLE001
        return PathCheck(label, FAILED, True, one_line(error), "cannot evaluate (val EER) or submit")
    return PathCheck(label, OK, True, f"{len(faces)} images; lowest cosine to the plain path {agreement:.4f}")


def _calibrate_batchnorm(model, images: torch.Tensor) -> None:
    """Set BatchNorm's running statistics from ``images``, as training would: with an untrained model's unit
    defaults, activations grow layer by layer and low precision would be judged on numbers no run sees."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: one pass gives these images' statistics
    model.train()
    with torch.no_grad():
        model.embed(normalize(images))


# ----------------------------------------------------------------------------- what a run costs


def measure_cost(cfg: Config, runtime: Runtime, data: FaceData | None, faces: FaceImages, seconds: float,
                 compiled: bool, search: bool = True) -> tuple[PathCheck, dict | None]:
    """Time the training step at the configuration's batch size (``compiled``: through ``torch.compile``),
    search the largest batch that fits, and estimate an epoch of ``data`` (the course data when None)."""
    settings = cfg.train
    batch = settings.batch_size
    if data is not None:
        chosen = training_set(data, cfg.data.singletons, cfg.data.max_train_images, settings.seed)
        classes, images = len(chosen.classes), len(chosen.paths)
        eval_images = _eval_images(data, set(chosen.classes))
        described = f"{data.root} ({len(chosen.classes):,} identities)"
    else:
        classes, images, eval_images = COURSE_CLASSES, COURSE_TRAIN_IMAGES, COURSE_EVAL_IMAGES
        described = "the course data"
    check, timing = _step_check(cfg, runtime, batch, classes, seconds=seconds, compiled=compiled, search=search)
    if timing is None:
        return check, None
    decode_rate, decode_workers = _decode_rate(faces, runtime.device, runtime.decode_on_device, runtime.workers)
    eval_rate = _eval_rate(cfg, runtime)
    epoch = epoch_estimate(images, batch, timing["images_per_s"], decode_rate, decode_workers, eval_images,
                           eval_rate, settings.eval_every, settings.max_minutes)
    cost = {**timing, "classes": classes, "data": described, "decode_images_per_s": decode_rate,
            "decode_workers": decode_workers, "eval_images": eval_images, "eval_images_per_s": eval_rate,
            "epoch": epoch}
    return check, cost


def _step_check(cfg: Config, runtime: Runtime, batch: int, classes: int, steps: int = 0, seconds: float = 0.0,
                compiled: bool = False, search: bool = False) -> tuple[PathCheck, dict | None]:
    """The configuration's model trained a few steps (or timed for ``seconds``) at ``batch`` on the device."""
    device = runtime.device
    label = f"training step (ResNet-{cfg.model.depth} x{cfg.model.width:g}, batch {batch})"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic  # as the engine sets it
        torch.cuda.reset_peak_memory_stats(device)
    try:
        _, train_steps = _stepper(cfg, runtime, classes, compiled)
        if steps:
            train_steps(batch, steps)
            return PathCheck(label, OK, True, f"{steps} steps"), None
        rate = _timed(train_steps, batch, device, seconds=seconds)
        peak = _peak_memory(device)
        found, bound = (_search_batch(train_steps, batch, device, rate, seconds) if search
                        else (None, "not searched"))
    except torch.OutOfMemoryError as error:
        return PathCheck(label, FAILED, True, one_line(error), "cannot run at this batch: lower train.batch_size"), None
    except Exception as error:  # noqa: BLE001
        return PathCheck(label, FAILED, True, one_line(error), "cannot train on this device"), None
    timing = {"batch_size": batch, "compiled": compiled, "images_per_s": rate, "peak_memory_gib": peak / 2 ** 30,
              "peak_memory_kind": "device memory allocated" if device.type == "cuda" else "process RSS, host",
              "largest_batch": found, "largest_batch_bound": bound}
    return PathCheck(label, OK, True, f"{rate:,.1f} images/s"), timing


def _stepper(cfg: Config, runtime: Runtime, classes: int, compiled: bool = False):
    """A TrainStep for the configuration's model, and ``train_steps(batch, steps, seed=0)`` on random uint8
    images."""
    size = cfg.data.image_size
    stepper = build_step(cfg, runtime, classes, compiled)
    inputs = {}

    def train_steps(batch: int, steps: int, seed: int = 0) -> None:
        if batch not in inputs:
            inputs.clear()  # one batch size's inputs at a time: the search must not hoard memory
            generator = torch.Generator().manual_seed(batch)
            inputs[batch] = (torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator),
                             torch.randint(0, classes, (batch,), generator=generator))
        images, labels = inputs[batch]
        for step in range(steps):
            torch.manual_seed(seed + step)  # dropout
            stepper.forward_backward(images, labels, torch.Generator().manual_seed(seed + step))
            stepper.optimizer_step(cfg.optim.lr)

    return stepper, train_steps


def _timed(train_steps, batch: int, device: torch.device, steps: int = 0, seconds: float = 0.0) -> float:
    """Images/s of ``train_steps`` after warm-up (two steps on a GPU, for cuDNN's autotuning; one elsewhere):
    ``steps`` steps, or as many as fit ``seconds`` (at least one)."""
    train_steps(batch, 2 if device.type == "cuda" else 1)
    synchronize(device)
    count, started = 0, time.perf_counter()
    while count < max(steps, 1) or (seconds and time.perf_counter() - started < seconds):
        train_steps(batch, 1, seed=count)
        count += 1
        if device.type == "cuda" and count % 4 == 0:
            synchronize(device)  # keep the queue short, so the clock is checked against work done
    synchronize(device)
    return batch * count / (time.perf_counter() - started)


def _search_batch(train_steps, batch: int, device: torch.device, rate: float, seconds: float) -> tuple[int, str]:
    """The largest batch that runs a step: doubling, within a time box of ``seconds``.

    On a GPU a step that runs out of memory raises, and the search stops there
    (at 16x the configuration's batch at most). On the CPU there is no such
    error, only swapping or the kernel's OOM killer, so the search stops at 4x
    and before a batch whose step would outlast the time box or whose memory,
    scaled from the timed run's peak, would not fit the free host memory.
    """
    deadline = time.perf_counter() + seconds
    cuda = device.type == "cuda"

    def runs(size: int) -> bool:
        try:
            train_steps(size, 1)
            synchronize(device)
            return True
        except torch.OutOfMemoryError:
            if cuda:
                torch.cuda.empty_cache()
            return False

    def bound(size: int) -> str | None:
        if time.perf_counter() + 2 * size / rate > deadline:
            return f"the next step, at {size}, would overrun the {seconds:g} s time box"
        free = _free_host_memory()
        if not cuda and free is not None and _peak_memory(device) * size / batch > free:
            return f"the next step, at {size}, would not fit the free host memory"
        return None

    return largest_batch(runs, batch, (16 if cuda else 4) * batch, bound)


def _peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(kib if sys.platform == "darwin" else kib * 1024)  # macOS reports bytes, Linux KiB


def _free_host_memory() -> float | None:
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _decode_rate(faces: FaceImages, device: torch.device, on_device: bool, workers: int) -> tuple[float, int]:
    """Images/s of one decoding process (read, decode, resize; one torch thread) and the processes decoding
    beside the step (0: decoding shares the training process, as on the device or without workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if on_device:
            encoded = FaceImages(faces.paths, faces.labels, faces.image_size, reader=faces.reader, encoded=True)
            raw = collate([encoded[i] for i in range(len(encoded))])
            decode_batch(raw, device, faces.image_size, faces.paths)  # warm up: nvJPEG initialises on first use
            synchronize(device)
            started = time.perf_counter()
            decode_batch(raw, device, faces.image_size, faces.paths)
            synchronize(device)
        else:
            started = time.perf_counter()
            for i in range(len(faces)):
                faces[i]
        rate = len(faces) / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return rate, 0 if on_device else min(workers, os.cpu_count() or 1)


def _eval_rate(cfg: Config, runtime: Runtime) -> float:
    """Embeddings/s of the configuration's model at the evaluation batch size, on the device alone."""
    device, fast = runtime.device, runtime.fast_path
    batch = 2 * cfg.train.batch_size
    if device.type != "cuda":
        batch = min(batch, 64)  # a CPU's rate per image hardly depends on the batch; a small one keeps this short
    size = cfg.data.image_size
    model = runtime.place(build_face_model(cfg, 10)).eval()
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8).to(device)

    def embed(_batch: int, steps: int, seed: int = 0) -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=fast.amp, enabled=fast.amp is not None):
            for _ in range(steps):
                model.embed(normalize(images))

    return _timed(embed, batch, device)


def _eval_images(data, classes: set) -> int:
    """Images one evaluation embeds: the val pairs' images, and the dev images of training identities."""
    count = len(pair_images(data, data.val_pairs)[0]) if data.val_pairs else 0
    if data.dev is not None and data.dev.labels:
        count += sum(1 for label in data.dev.labels if label in classes)
    return count


def _face_images(folder: Path, data, count: int, size: int) -> FaceImages:
    """``count`` face JPEGs to decode: the data root's first training images, else synthetic demo faces."""
    if data is not None and data.train.paths:
        return FaceImages(data.train.paths[:count], None, size, reader=data.reader)
    from helpers.data.demo import render_face, sample_identity

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.jpg"
        render_face(sample_identity(rng), rng, size).save(path, format="JPEG", quality=95)
        paths.append(path)
    return FaceImages(paths, None, size, reader=ImageReader())
