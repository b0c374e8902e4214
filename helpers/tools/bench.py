"""``bench``: measured speed of the training step, the data path and evaluation, side by side in one process.

``bench train`` runs the same model and batch through (a) the plain path the
assignment describes (fp32, NCHW, eager, a ``.item()`` loss read every step,
the stock optimiser) and (b) the engine's own step (:class:`TrainStep` with the
device's fast-path settings), and relates both to a measured ceiling: the fastest
rate that a large matmul or any of the model's own convolutions (forward or
backward, alone, at the same batch, precision and memory layout) reaches on the
device. The step runs those same operations and more, so its utilisation stays
at or below 1. ``bench data`` compares the starter notebook's loader (PIL, per-image
transforms, float tensors out of the workers) with the project's (decode to
uint8, augment in batches on the device), against JPEG decoding alone.
``bench eval`` times embedding extraction and pair scoring.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from helpers.core.config import AugmentConfig, load_config
from helpers.core.course import COURSE_CLASSES
from helpers.data.augment import BatchAugment, normalize, starter_train_transform
from helpers.data.codec import DECODERS, decode_image, decoder_problem, image_decoder
from helpers.data.datasets import FaceImages, collate, decode_batch
from helpers.data.images import decode_rgb
from helpers.data.layout import open_data
from helpers.eval.evaluation import embed_images, eval_settings, pair_images, score_pairs
from helpers.model.resnet import build_face_model
from helpers.runtime.device import pick_device, synchronize
from helpers.runtime.probe import probe_summary
from helpers.runtime.resolve import resolve_runtime
from helpers.training.step import build_step, make_optimizer


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, size: int | None = None,
                 seconds: float = 1.0) -> float:
    """Measured dense matmul throughput of ``device`` in FLOP/s: one half of the ceiling (see :func:`conv_flops`)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or count < 3:
        a @ b
        count += 1
        if count % 4 == 0:
            synchronize(device)
    synchronize(device)
    return 2 * size ** 3 * count / (time.perf_counter() - started)


def training_flops_per_image(model, image_size: int, classes: int) -> float:
    """Training FLOPs per image, head included: the forward and backward pass, counted as they run.

    The backward pass costs about twice the forward one, less the input
    gradient of the first convolution, which nothing needs.
    """
    was = model.training
    model.eval()  # one image: BatchNorm in training mode would refuse it; the FLOPs are the same
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size), torch.zeros(1, dtype=torch.long)).sum().backward()
    model.zero_grad(set_to_none=True)
    model.train(was)
    return float(counter.get_total_flops())


def conv_flops(model, image_size: int, batch: int, device: torch.device, dtype: torch.dtype = torch.float32,
               channels_last: bool = False, repeats: int = 3) -> float:
    """The fastest FLOP/s that any of the model's convolution shapes reaches alone, forward or backward.

    Each distinct convolution (channels, kernel, stride, input size) runs on
    its own at ``batch`` images in ``dtype`` and layout; the best of
    ``repeats`` timings counts. Convolution libraries pick algorithms (Winograd,
    implicit GEMM) that can outrun a plain matmul, so a matmul alone is no
    ceiling for a ResNet.
    """
    shapes = set()

    def note(module, inputs, _):
        shapes.add((module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                    module.dilation, module.groups, module.bias is not None, tuple(inputs[0].shape[-2:])))

    hooks = [m.register_forward_hook(note) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size), torch.zeros(1, dtype=torch.long))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    best = 0.0
    for c_in, c_out, kernel, stride, padding, dilation, groups, bias, size in sorted(shapes):
        x = torch.randn(batch, c_in, *size, device=device, dtype=dtype).to(memory_format=layout).requires_grad_()
        weight = torch.randn(c_out, c_in // groups, *kernel, device=device, dtype=dtype)
        weight = weight.to(memory_format=layout).requires_grad_()
        b = torch.zeros(c_out, device=device, dtype=dtype, requires_grad=True) if bias else None

        def forward():
            return F.conv2d(x, weight, b, stride, padding, dilation, groups)

        out = forward()
        grad = torch.randn_like(out)
        inputs = [t for t in (x, weight, b) if t is not None]

        def backward():
            torch.autograd.grad(out, inputs, grad, retain_graph=True)

        for run in (forward, backward):
            with FlopCounterMode(display=False) as counter:
                run()
            best = max(best, counter.get_total_flops() / _best_seconds(run, device, repeats))
    return best


def _best_seconds(run, device: torch.device, repeats: int) -> float:
    """The shortest of ``repeats`` timed calls of ``run``, after one untimed call."""
    run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return min(times)


def _time_steps(step, device: torch.device, warmup: int, steps: int, batch: int) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return batch * steps / (time.perf_counter() - started)


def bench_train(config=None, overrides=(), device: str = "auto", batch_size: int | None = None,
                classes: int = COURSE_CLASSES, steps: int | None = None, warmup: int | None = None) -> dict:
    """Images/s and FLOPs utilisation of the plain step and of the engine's fast step.

    Utilisation is the step's FLOPs per second over the device's ceiling for
    that path: the faster of a large matmul and the model's fastest
    convolution (:func:`conv_flops`) in the same precision and layout.
    """
    cfg = load_config(config, overrides)
    batch = batch_size or cfg.train.batch_size
    runtime = resolve_runtime(cfg, device, training=True, batch_size=batch)
    device, fast = runtime.device, runtime.fast_path
    size = cfg.data.image_size
    steps = steps or (20 if device.type == "cuda" else 4)
    warmup = warmup if warmup is not None else (5 if device.type == "cuda" else 1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    matmul_fp32 = matmul_flops(device, torch.float32)
    matmul_fast = matmul_fp32 if fast.amp is None else matmul_flops(device, fast.amp)

    torch.manual_seed(0)
    plain_model = build_face_model(cfg, classes)
    flops = training_flops_per_image(plain_model, size, classes)
    conv_plain = conv_flops(plain_model, size, batch, device)
    conv_fast = conv_flops(plain_model, size, batch, device, fast.amp or torch.float32, fast.channels_last)
    peak_fp32, peak_fast = max(matmul_fp32, conv_plain), max(matmul_fast, conv_fast)
    plain_model.to(device)
    plain_optimizer = make_optimizer(cfg.optim, plain_model)
    plain_images, plain_labels = images.to(device), labels.to(device)

    def plain_step():
        logits = plain_model(normalize(plain_images), plain_labels)
        loss = F.cross_entropy(logits, plain_labels)
        loss.item()  # the per-step read a typical loop does for its progress bar
        plain_optimizer.zero_grad()
        loss.backward()
        plain_optimizer.step()

    plain = _time_steps(plain_step, device, warmup, steps, batch)
    del plain_model, plain_optimizer

    stepper = build_step(cfg, runtime, classes)
    lr = cfg.optim.lr

    def fast_step():
        stepper.forward_backward(images, labels, generator)
        stepper.optimizer_step(lr)

    fast = _time_steps(fast_step, device, warmup + (2 if fast.compile else 0), steps, batch)
    return {
        "device": _device_name(device), "batch_size": batch, "image_size": size, "classes": classes,
        "fast_path": runtime.describe_fast_path(cfg),
        "train_gflops_per_image": flops / 1e9,
        "matmul_tflops_fp32": matmul_fp32 / 1e12, "matmul_tflops_fast": matmul_fast / 1e12,
        "conv_tflops_plain": conv_plain / 1e12, "conv_tflops_fast": conv_fast / 1e12,
        "peak_tflops_fp32": peak_fp32 / 1e12, "peak_tflops_fast": peak_fast / 1e12,
        "plain_images_per_s": plain, "fast_images_per_s": fast,
        "plain_mfu": plain * flops / peak_fp32, "fast_mfu": fast * flops / peak_fast,
        "speedup": fast / plain,
    }


class _NaiveImages(torch.utils.data.Dataset):
    """The starter notebook's dataset: PIL open, per-image torchvision transforms, float tensors out."""

    def __init__(self, paths, size: int):
        self.paths = paths
        self.transform = starter_train_transform(size)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), 0


def bench_data(data_root=None, workers: int = 0, batch_size: int = 64, images: int = 2000,
               image_size: int = 112, device: str = "cpu") -> dict:
    """Images/s per loader worker: the naive loader against the project's, with JPEG decoding alone as the ceiling.

    The naive loader's workers decode with PIL, apply the per-image torchvision
    transforms and ship float tensors. The project's workers decode to uint8
    and ship those; crop, flip and normalisation happen in batches on the
    training device, measured apart (``device_augment_images_per_s``), as is
    batched decoding on the device (``device_decode_images_per_s``, nvJPEG on a
    GPU, for ``data.decode: device``). On the
    CPU everything runs with one torch thread, so "per worker" means per core;
    ``one_core_images_per_s`` is the project's loading and augmentation on one
    shared core, what a CPU-only machine pays.
    """
    device = pick_device(device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            if data_root is None:
                from helpers.data.demo import make_demo_data

                data_root = make_demo_data(Path(scratch) / "demo", identities=max(2, images // 9 + 1),
                                           images_per_identity=10, verification_identities=2, size=image_size,
                                           val_pairs=2, test_pairs=2).root
            data = open_data(data_root)
            paths = data.train.paths[:images]
            shared = dict(batch_size=batch_size, num_workers=workers, persistent_workers=False)

            naive_loader = torch.utils.data.DataLoader(_NaiveImages(paths, image_size), **shared)
            naive = _throughput(lambda: [x for x, _ in naive_loader], len(paths))

            project_loader = torch.utils.data.DataLoader(FaceImages(paths, None, image_size, reader=data.reader),
                                                         collate_fn=collate, pin_memory=device.type == "cuda",
                                                         **shared)
            batches = []
            project = _throughput(lambda: batches.extend(batch.images for batch in project_loader), len(paths))

            augment = BatchAugment(AugmentConfig(), image_size)
            on_device = [images_.to(device) for images_ in batches]

            def augment_all():
                for images_ in on_device:
                    augment(images_)
                synchronize(device)

            augment_all()  # warm up
            augmented = _throughput(augment_all, len(paths))

            blobs = [data.reader(p) for p in paths]
            decode = _throughput(lambda: [decode_rgb(blob) for blob in blobs], len(paths))
            decoders = decoder_rates(blobs)

            encoded = FaceImages(paths, None, image_size, reader=data.reader, encoded=True)
            raw_batches = [collate([encoded[i] for i in range(start, min(start + batch_size, len(paths)))])
                           for start in range(0, len(paths), batch_size)]

            def decode_on_device():
                for raw in raw_batches:
                    decode_batch(raw, device, image_size, paths)
                synchronize(device)

            decode_on_device()  # warm up (nvJPEG initialises on first use)
            device_decode = _throughput(decode_on_device, len(paths))
    finally:
        torch.set_num_threads(threads)
    per = max(workers, 1)
    one_core = 1.0 / (per / project + 1.0 / augmented)
    return {"images": len(paths), "workers": workers, "batch_size": batch_size, "augment_device": str(device),
            "naive_images_per_s": naive / per, "project_images_per_s": project / per,
            "decode_only_images_per_s": decode, "decoder": image_decoder(), "decoders_images_per_s": decoders,
            "device_decode_images_per_s": device_decode,
            "device_augment_images_per_s": augmented,
            "one_core_images_per_s": one_core, "one_core_speedup": one_core / (naive / per),
            "speedup": project / naive}


def decoder_rates(blobs: list[bytes], rounds: int = 3) -> dict:
    """JPEG decoding alone, images/s of each decoder that works here (codec.py): the best of ``rounds``
    interleaved rounds, so that a busy machine slows both alike."""
    raws = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
    rates: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's; selftest shows it
        for _ in range(rounds):
            for name in (name for name in DECODERS if decoder_problem(name) is None):
                rate = _throughput(lambda: [decode_image(raw, name) for raw in raws], len(raws))
                rates[name] = max(rates.get(name, 0.0), rate)
    return rates


def _throughput(run, count: int) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def bench_eval(config=None, overrides=(), checkpoint=None, data_root=None, device: str = "auto",
               batch_size: int | None = None, tta: bool = False) -> dict:
    """Embeddings/s at evaluation, and the end-to-end time to score the val and test pairs."""
    with tempfile.TemporaryDirectory() as scratch:
        model, data, settings = _eval_model(config, overrides, checkpoint, data_root, device, batch_size, tta,
                                            Path(scratch))
        paths, _ = pair_images(data, (data.val_pairs or []) + (data.test_pairs or []))
        embed_images(model, paths[: settings.batch_size], settings, reader=data.reader)  # warm up
        started = time.perf_counter()
        embed_images(model, paths, settings, reader=data.reader)
        embed_rate = len(paths) / (time.perf_counter() - started)
        timings = {}
        for kind, pairs in (("val", data.val_pairs), ("test", data.test_pairs)):
            if pairs:
                started = time.perf_counter()
                score_pairs(model, data, pairs, settings)
                timings[kind] = (len(pairs), time.perf_counter() - started)
    return {"device": _device_name(settings.device), "tta": tta, "unique_images": len(paths),
            "embeddings_per_s": embed_rate,
            **{f"{kind}_pairs": n for kind, (n, _) in timings.items()},
            **{f"{kind}_seconds": t for kind, (_, t) in timings.items()}}


def _eval_model(config, overrides, checkpoint, data_root, device: str, batch_size: int | None, tta: bool,
                scratch: Path):
    """The model, data and eval settings a bench of evaluation runs: a checkpoint's, or an untrained model of the
    config on ``data_root`` (default: demo faces generated in ``scratch``)."""
    from helpers.eval.inference import load_trained

    if checkpoint is not None:
        trained = load_trained(checkpoint, device, tta=tta, batch_size=batch_size)
        return trained.model, trained.open_data(data_root), trained.settings
    cfg = load_config(config, overrides)
    runtime = resolve_runtime(cfg, device)
    model = runtime.place(build_face_model(cfg, 100)).eval()
    data = open_data(data_root if data_root is not None else _eval_demo(scratch, cfg.data.image_size))
    settings = eval_settings(cfg, runtime, tta=tta)
    return model, data, replace(settings, batch_size=batch_size) if batch_size else settings


def bench_onnx(config=None, overrides=(), checkpoint=None, data_root=None, batch_size: int | None = None,
               tta: bool = False, repeats: int = 5) -> dict:
    """The exported model's size, and embeddings/s on the CPU of onnxruntime against the PyTorch model (eager, the
    project's eval path): end to end over the val and test pairs' images (loading included, as ``bench eval``), and
    the model alone on one loaded batch (best of ``repeats``). The export is checked as ``export`` checks it."""
    from helpers.eval.evaluation import embed_with, torch_embeddings
    from helpers.eval.onnx_export import EXPORT_PACKAGES, OnnxEmbedder, export_model, require

    require(EXPORT_PACKAGES, "bench onnx")
    with tempfile.TemporaryDirectory() as scratch:
        model, data, settings = _eval_model(config, overrides, checkpoint, data_root, "cpu", batch_size, tta,
                                            Path(scratch))
        report = export_model(model, data, replace(settings, tta=False), Path(scratch) / "model.onnx", {})
        embedder = OnnxEmbedder(report.out)
        paths, _ = pair_images(data, (data.val_pairs or []) + (data.test_pairs or []))
        runtimes = {"torch": lambda images: torch_embeddings(model, images, settings),
                    "onnx": lambda images: embedder.run(images, tta)}
        batch = torch.stack([data.load(path, settings.image_size) for path in paths[: settings.batch_size]])
        result = {"device": _device_name(settings.device), "threads": torch.get_num_threads(),
                  "tta": tta, "unique_images": len(paths), "batch_size": len(batch),
                  "onnx_file_mib": report.size_bytes / 2**20, "exporter": report.exporter, "opset": report.opset}
        with torch.no_grad():
            for name, run in runtimes.items():
                embed_with(run, paths[: settings.batch_size], settings, reader=data.reader)  # warm up
                result[f"{name}_embeddings_per_s"] = _throughput(
                    lambda: embed_with(run, paths, settings, reader=data.reader), len(paths))
                result[f"{name}_model_embeddings_per_s"] = len(batch) / _best_seconds(
                    lambda: run(batch), settings.device, repeats)
    result["speedup"] = result["onnx_embeddings_per_s"] / result["torch_embeddings_per_s"]
    result["model_speedup"] = result["onnx_model_embeddings_per_s"] / result["torch_model_embeddings_per_s"]
    return result


def _eval_demo(scratch: Path, size: int) -> Path:
    from helpers.data.demo import make_demo_data

    return make_demo_data(scratch / "demo", identities=2, images_per_identity=4, verification_identities=100,
                          size=size, val_pairs=600, test_pairs=600).root


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def table(result: dict) -> str:
    """A two-column text table of a bench result, the ratio first."""
    lines = []
    if "speedup" in result:
        lines.append(f"{'speedup':<28}{result['speedup']:.2f}x")
    for key, value in result.items():
        if key == "speedup":
            continue
        probe = value.get("probe") if isinstance(value, dict) else None
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if k != "probe")
        elif isinstance(value, float):
            value = f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
        lines.append(f"{key:<28}{value}")
        if probe:
            lines.append(f"{'probe':<28}{probe_summary(probe)}")
    return "\n".join(lines)
