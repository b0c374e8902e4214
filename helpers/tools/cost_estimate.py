"""What a training run costs: the configuration's step timed on the device, the largest batch that fits, and
the measured rates turned into minutes per epoch with :func:`epoch_estimate`.

``selftest`` reports this beside its device paths (:mod:`helpers.tools.selftest`);
:func:`print_epoch_estimate` is the notebooks' short form, the step timed for a
few seconds and one sentence printed. Both start from :func:`configured` (the
configuration and the Runtime its training resolves) and :func:`face_images`
(the JPEGs the decoding checks and rates read).
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from helpers.core.config import Config, load_config
from helpers.core.course import COURSE_CLASSES, COURSE_EVAL_IMAGES, COURSE_TRAIN_IMAGES
from helpers.core.errors import UserError, one_line
from helpers.data.augment import normalize
from helpers.data.datasets import FaceImages, collate, decode_batch, training_set
from helpers.data.images import ImageReader
from helpers.data.layout import FaceData, open_data
from helpers.eval.evaluation import pair_images
from helpers.model.resnet import build_face_model
from helpers.runtime.device import own_rng, synchronize
from helpers.runtime.resolve import Runtime, resolve_runtime
from helpers.training.step import build_step


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


# ----------------------------------------------------------------------------- what is measured


def configured(config, overrides, data_root) -> tuple[Config, Runtime, FaceData | None]:
    """The configuration, the Runtime its training would resolve (the engine's own decisions) and the data root
    to estimate (None: the course data)."""
    cfg = load_config(config, overrides)
    data = (open_data(data_root, cfg.data.layout, cfg.data.max_image_pixels, cfg.data.follow_links)
            if data_root else None)
    return cfg, resolve_runtime(cfg, training=True), data


def print_epoch_estimate(config=None, overrides=(), data_root=None, seconds: float = 5.0) -> dict:
    """Time the training step for ``seconds`` and print the minutes an epoch of ``data_root`` (the course
    data when None) will take, with the epochs that fit train.max_minutes; returns the measured cost."""
    cfg, runtime, data = configured(config, overrides, data_root)
    with tempfile.TemporaryDirectory() as scratch, own_rng(runtime.device):
        faces = face_images(Path(scratch) / "faces", data, 32, cfg.data.image_size)
        work = workload(cfg, data)
        reset_for_timing(cfg, runtime.device)
        try:
            timing = time_step(cfg, runtime, cfg.train.batch_size, work.classes, seconds)
        except Exception as error:  # noqa: BLE001 - out of memory or a failing kernel: the step cannot run here
            raise UserError(f"the training step failed on {runtime.device}: {one_line(error)}") from None
        cost = epoch_cost(cfg, runtime, work, faces, timing)
    print(cost_lines(cost)[-1])
    return cost


@dataclass(frozen=True)
class Workload:
    """What an epoch holds: the classes and images trained on, the images one evaluation embeds, the data named."""

    classes: int
    images: int
    eval_images: int
    data: str


def workload(cfg: Config, data: FaceData | None) -> Workload:
    """The epoch of ``data`` as the configuration trains it (the course data when None)."""
    if data is None:
        return Workload(COURSE_CLASSES, COURSE_TRAIN_IMAGES, COURSE_EVAL_IMAGES, "the course data")
    chosen = training_set(data, cfg.data.singletons, cfg.data.max_train_images, cfg.train.seed)
    return Workload(len(chosen.classes), len(chosen.paths), _eval_images(data, set(chosen.classes)),
                    f"{data.root} ({len(chosen.classes):,} identities)")


def epoch_cost(cfg: Config, runtime: Runtime, work: Workload, faces: FaceImages, timing: dict) -> dict:
    """The step's ``timing`` (:func:`time_step`) with the decoding and evaluation rates measured on ``faces``, and
    the epoch of ``work`` they give."""
    settings = cfg.train
    decode_rate, decode_workers = _decode_rate(faces, runtime.device, runtime.decode_on_device, runtime.workers)
    eval_rate = _eval_rate(cfg, runtime)
    epoch = epoch_estimate(work.images, settings.batch_size, timing["images_per_s"], decode_rate, decode_workers,
                           work.eval_images, eval_rate, settings.eval_every, settings.max_minutes)
    return {**timing, "classes": work.classes, "data": work.data, "decode_images_per_s": decode_rate,
            "decode_workers": decode_workers, "eval_images": work.eval_images, "eval_images_per_s": eval_rate,
            "epoch": epoch}


def reset_for_timing(cfg: Config, device: torch.device) -> None:
    """On a GPU: cuDNN's autotuning as the engine sets it, and the peak-memory count from zero."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic  # as the engine sets it
        torch.cuda.reset_peak_memory_stats(device)


def time_step(cfg: Config, runtime: Runtime, batch: int, classes: int, seconds: float, compiled: bool = False,
              search: bool = False) -> dict:
    """Images/s of the configuration's training step at ``batch`` (``compiled``: through ``torch.compile``),
    timed for ``seconds``, its peak memory and, with ``search``, the largest batch that runs; raises what the
    step raises (out of memory, a kernel the device lacks)."""
    device = runtime.device
    _, train_steps = stepper(cfg, runtime, classes, compiled)
    rate = timed(train_steps, batch, device, seconds=seconds)
    peak = _peak_memory(device)
    found, bound = _search_batch(train_steps, batch, device, rate, seconds) if search else (None, "not searched")
    return {"batch_size": batch, "compiled": compiled, "images_per_s": rate, "peak_memory_gib": peak / 2 ** 30,
            "peak_memory_kind": "device memory allocated" if device.type == "cuda" else "process RSS, host",
            "largest_batch": found, "largest_batch_bound": bound}


def stepper(cfg: Config, runtime: Runtime, classes: int, compiled: bool = False):
    """A TrainStep for the configuration's model, and ``train_steps(batch, steps, seed=0)`` on random uint8
    images."""
    size = cfg.data.image_size
    step = build_step(cfg, runtime, classes, compiled)
    inputs = {}

    def train_steps(batch: int, steps: int, seed: int = 0) -> None:
        if batch not in inputs:
            inputs.clear()  # one batch size's inputs at a time: the search must not hoard memory
            generator = torch.Generator().manual_seed(batch)
            inputs[batch] = (torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator),
                             torch.randint(0, classes, (batch,), generator=generator))
        images, labels = inputs[batch]
        for index in range(steps):
            torch.manual_seed(seed + index)  # dropout
            step.forward_backward(images, labels, torch.Generator().manual_seed(seed + index))
            step.optimizer_step(cfg.optim.lr)

    return step, train_steps


def timed(train_steps, batch: int, device: torch.device, steps: int = 0, seconds: float = 0.0) -> float:
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

    return timed(embed, batch, device)


def _eval_images(data, classes: set) -> int:
    """Images one evaluation embeds: the val pairs' images, and the dev images of training identities."""
    count = len(pair_images(data, data.val_pairs)[0]) if data.val_pairs else 0
    if data.dev is not None and data.dev.labels:
        count += sum(1 for label in data.dev.labels if label in classes)
    return count


def face_images(folder: Path, data, count: int, size: int) -> FaceImages:
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
