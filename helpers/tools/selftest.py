"""``selftest``: every device path of training, run a few steps on synthetic input; what works, what a run costs.

Each path is reported as ok, failed (the error in one line), not applicable
here, or skipped; with whether training as configured takes it and, when it
does not, what training does instead. Those answers come from the engine's own
decisions (:func:`runtime.resolve_runtime`: the fast path and its choice lists,
the loader workers, on-device decoding; :func:`codec.image_decoder`,
:func:`device.distributed_backend`), so the report is what a run will do.
Training cannot run when a path it takes fails; it can when only paths it would
fall back from fail.

The cost part (:mod:`helpers.tools.cost_estimate`) times the configuration's
training step at its batch size, looks for the largest batch that fits, and
turns the measured rates into minutes per epoch.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist

from helpers.core.config import Config, load_config
from helpers.core.errors import one_line
from helpers.data.augment import normalize
from helpers.data.codec import DECODERS, decode_image, decoder_problem, image_decoder, sample_jpeg
from helpers.data.datasets import FaceImages, collate, decode_batch
from helpers.data.layout import FaceData
from helpers.eval.evaluation import embed_images, eval_settings
from helpers.model.checkpoint import Checkpoint, rng_state, set_rng_state
from helpers.model.resnet import build_face_model
from helpers.runtime.device import distributed_backend, gpu_kernels, own_rng
from helpers.runtime.probe import (AMP_WORDS, ProbeTiming, amp_choices, amp_name, channels_last_choices, fused_choices,
                                   probe_problem, probe_summary)
from helpers.runtime.resolve import Runtime, resolve_runtime
from helpers.runtime.session import describe_environment
from helpers.tools.cost_estimate import (configured, cost_lines, epoch_cost, face_images, reset_for_timing, stepper,
                                         time_step, timed, workload)

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


# ----------------------------------------------------------------------------- running it


def run_selftest(config=None, overrides=(), data_root=None, check_compile: bool = False, quick: bool = False,
                 seconds: float = 20.0, compile_seconds: float = 300.0) -> SelfTestReport:
    """Check every device path of a configuration; unless ``quick``, also time its training step for about
    ``seconds`` and estimate an epoch of ``data_root`` (the course data when None). ``check_compile`` adds a
    ``torch.compile`` check of up to ``compile_seconds`` in a child process."""
    started = time.perf_counter()
    cfg, runtime, data = configured(config, overrides, data_root)
    device = runtime.device
    with tempfile.TemporaryDirectory() as scratch, own_rng(device):
        faces = face_images(Path(scratch) / "faces", data, 8 if quick else 64, cfg.data.image_size)
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
            checks.append(step_check(cfg, runtime, min(8, cfg.train.batch_size), 100, steps=2)[0])
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
        _, train_steps = stepper(cfg, runtime, 100, compiled)
        started = time.perf_counter()
        train_steps(batch, 1)  # the first compiled step compiles
        first = time.perf_counter() - started
        rates[compiled] = timed(train_steps, batch, runtime.device, steps=3)
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
        original, train_original = stepper(cfg, runtime, classes)
        train_original(2, 1)
        path = folder / "selftest.pt"
        Checkpoint(model=original.model.state_dict(), optimizer=original.optimizer.state_dict(),
                   scaler=original.scaler.state_dict(), rng=rng_state(), classes=[str(i) for i in range(classes)],
                   config_values=cfg.as_dict()).save(path)
        saved = Checkpoint.load(path)
        resumed, train_resumed = stepper(cfg, runtime, classes)
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


# ----------------------------------------------------------------------------- the training step


def step_check(cfg: Config, runtime: Runtime, batch: int, classes: int, steps: int = 0, seconds: float = 0.0,
               compiled: bool = False, search: bool = False) -> tuple[PathCheck, dict | None]:
    """The configuration's model trained a few steps (or timed for ``seconds``, :func:`cost_estimate.time_step`)
    at ``batch`` on the device."""
    device = runtime.device
    label = f"training step (ResNet-{cfg.model.depth} x{cfg.model.width:g}, batch {batch})"
    reset_for_timing(cfg, device)
    try:
        if steps:
            _, train_steps = stepper(cfg, runtime, classes, compiled)
            train_steps(batch, steps)
            return PathCheck(label, OK, True, f"{steps} steps"), None
        timing = time_step(cfg, runtime, batch, classes, seconds, compiled, search)
    except torch.OutOfMemoryError as error:
        return PathCheck(label, FAILED, True, one_line(error), "cannot run at this batch: lower train.batch_size"), None
    except Exception as error:  # noqa: BLE001
        return PathCheck(label, FAILED, True, one_line(error), "cannot train on this device"), None
    return PathCheck(label, OK, True, f"{timing['images_per_s']:,.1f} images/s"), timing


def measure_cost(cfg: Config, runtime: Runtime, data: FaceData | None, faces: FaceImages, seconds: float,
                 compiled: bool) -> tuple[PathCheck, dict | None]:
    """Time the training step at the configuration's batch size (``compiled``: through ``torch.compile``),
    search the largest batch that fits, and estimate an epoch of ``data`` (the course data when None)."""
    work = workload(cfg, data)
    check, timing = step_check(cfg, runtime, cfg.train.batch_size, work.classes, seconds=seconds, compiled=compiled,
                               search=True)
    return check, None if timing is None else epoch_cost(cfg, runtime, work, faces, timing)
