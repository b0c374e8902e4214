"""The trained embedder outside the toolkit: an ONNX export checked on onnxruntime, and embeddings made with it.

:func:`export_checkpoint` writes the backbone and the embedding head (the
margin head stays behind) with torch's own exporter: uint8 RGB images of the
trained size in, normalised inside the graph, unit-norm embeddings out, any
batch size; the checkpoint's class mapping, val threshold and a summary of its
training configuration go into the model's metadata. Before the file replaces
anything, it runs on onnxruntime (CPU) over the val pairs' images beside the
PyTorch model: the two embeddings of every image must agree (cosine >= 0.9999)
and so must the val EER, to 4 decimals.

:class:`OnnxEmbedder` runs such a file on onnxruntime alone, with no torch
model built, through evaluation's own image loading; ``verify --onnx`` and
``embed --onnx`` use it.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from helpers.core.errors import UserError, one_line
from helpers.core.io import atomic_write
from helpers.core.records import KEYS  # the file keeps the val threshold and EER under their metrics.jsonl keys
from helpers.data.augment import normalize
from helpers.data.images import ImageReader
from helpers.data.layout import FaceData
from helpers.eval.evaluation import (EvalSettings, consecutive_pairs, embed_images, embed_with, existing_images,
                                     folder_images, pair_images, pair_scores, save_embeddings, stored_threshold)
from helpers.eval.inference import load_trained
from helpers.eval.metrics import compute_eer
from helpers.eval.score_norm import ScoreNorm
from helpers.model.checkpoint import Checkpoint
from helpers.model.resnet import FaceModel
from helpers.runtime.device import default_workers

FORMAT = "hw2p2-face-embedder"  # the metadata marker of a file this module wrote
MIN_COSINE = 0.9999
MAX_NORM_ERROR = 1e-4
INPUT, OUTPUT = "images", "embeddings"
EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # onnxscript: the dynamo exporter builds the graph with it


def require(packages: Sequence[str], purpose: str) -> list:
    """The modules ``packages``, imported; when any is missing, one sentence saying what to install."""
    modules, missing = [], []
    for name in packages:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        which = (", which is" if len(packages) == 1
                 else f", and {_listed(missing)} {'is' if len(missing) == 1 else 'are'}")
        raise UserError(f"{purpose} needs {_listed(packages)}{which} not installed: "
                        f"pip install 'hw2p2-helpers[export]' (or pip install {' '.join(missing)})")
    return modules


def _listed(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


class ExportedEmbedder(torch.nn.Module):
    """What the export holds: uint8 images, normalised as evaluation does, through the backbone and the embedding
    head to unit vectors (as :meth:`FaceModel.embed`); a copy, so the model it came from is left as it was."""

    def __init__(self, model: FaceModel):
        super().__init__()
        self.backbone = copy.deepcopy(model.backbone)
        self.embedding = copy.deepcopy(model.embedding)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embedding(self.backbone(normalize(images))).float(), dim=1)


def export_graph(module: torch.nn.Module, image_size: int):
    """The ONNX model of ``module`` for uint8 batches of any size, and which exporter made it: torch's dynamo
    exporter, or its TorchScript exporter where torch.export cannot capture the model."""
    import onnx

    # A batch of two: torch.export would fix a dimension of size 1 in the graph.
    example = (torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8),)
    names = {"input_names": [INPUT], "output_names": [OUTPUT]}
    try:
        program = torch.onnx.export(module, example, dynamo=True, verbose=False, **names,
                                    dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}})
        return program.model_proto, "torch.onnx.export (dynamo)"
    except Exception as error:  # torch.export refuses what it cannot capture with many exception types
        reason = one_line(error)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the fallback is deprecated; the report says it was used
        try:
            torch.onnx.export(module, example, buffer, dynamo=False, **names,
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
        except Exception as error:  # as above: the TorchScript exporter's refusals come in many types too
            raise UserError(f"neither of torch's ONNX exporters can export this model (dynamo: {reason}; "
                            f"TorchScript: {one_line(error)})") from None
    return onnx.load_model_from_string(buffer.getvalue()), f"torch.onnx.export (TorchScript; dynamo failed: {reason})"


@dataclass
class ExportReport:
    """What was written and how it was checked."""

    out: str
    size_bytes: int
    exporter: str
    opset: int
    producer: str
    image_size: int
    embedding_dim: int
    images_compared: int
    lowest_cosine: float
    torch_eer: float
    onnx_eer: float
    threshold: float | None
    runtime: str
    unreadable: list[str] = field(default_factory=list)  # val images left out of the check: "path: reason"

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        threshold = ("no val threshold in the metadata" if self.threshold is None
                     else f"val threshold {self.threshold:.4f} in the metadata")
        return [f"wrote {self.out} ({self.size_bytes / 2**20:.1f} MiB): uint8 3x{self.image_size}x{self.image_size} "
                f"images in, {self.embedding_dim}-D unit embeddings out, any batch size; no margin head",
                f"exported with {self.exporter}, opset {self.opset}, producer {self.producer}",
                f"checked on {self.runtime} (CPU) against PyTorch over {self.images_compared} val-pair images: "
                f"lowest cosine {self.lowest_cosine:.6f}, val EER {self.onnx_eer:.4f} (PyTorch {self.torch_eer:.4f}); "
                + threshold] + self._left_out()

    def _left_out(self) -> list[str]:
        """A line naming the val images the check could not read, when there are any."""
        if not self.unreadable:
            return []
        more = f" and {len(self.unreadable) - 1} more" if len(self.unreadable) > 1 else ""
        return [f"left out of the check: {len(self.unreadable)} unreadable val image(s), so the pairs naming them "
                f"are not scored ({self.unreadable[0]}{more}); run `python -m helpers check-data`"]


def export_checkpoint(checkpoint: str | Path, out: str | Path, data_root: str | Path | None = None,
                      weights: str | None = None, progress: bool = False) -> ExportReport:
    """Export a checkpoint's embedder to ``out`` (ONNX), checked on its val pairs (``data_root`` or the run's).

    ``weights`` (raw, ema) chooses the weights; by default the ones the checkpoint holds.
    """
    require(EXPORT_PACKAGES, "the ONNX export")
    trained = load_trained(checkpoint, "cpu", weights, progress=progress)
    model, opened, data, settings = trained.model, trained.checkpoint, trained.open_data(data_root), trained.settings
    cfg = opened.config
    # The scoring the stored threshold was found with, in fp32: the exported graph computes in fp32, so that is
    # what it must match, whatever autocast the run trained and evaluated under (bf16 on CPUs with bf16 kernels).
    settings = replace(settings, tta=cfg.train.eval_tta, amp=None)
    threshold = stored_threshold(opened, settings)
    about = {"checkpoint": trained.path.name, "weights": opened.weights,
             "classes": json.dumps(opened.classes), "threshold_tta": json.dumps(settings.tta),
             "training": json.dumps(training_summary(opened))}
    if threshold is not None:
        about[KEYS.val_threshold] = repr(threshold)
        about[KEYS.val_eer] = repr(opened.val.val_eer)
    return export_model(model, data, settings, out, about)


def training_summary(checkpoint: Checkpoint) -> dict:
    """The training configuration a user of the exported model may want to know, and how far the run got."""
    cfg = checkpoint.config
    return {"model": cfg.model.model_dump(mode="json"), "loss": cfg.loss.model_dump(mode="json"),
            "data": {"image_size": cfg.data.image_size, "root": cfg.data.root},
            "optim": {"name": cfg.optim.name, "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay},
            "sched": cfg.sched.name, "train": {"epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
                                               "ema": cfg.train.ema, "seed": cfg.train.seed},
            "run": cfg.run.name, "epochs_trained": checkpoint.epoch,
            "best_epoch": checkpoint.best_epoch, "classes": len(checkpoint.classes), "saved_at": checkpoint.saved_at}


def export_model(model: FaceModel, data: FaceData, settings: EvalSettings, out: str | Path,
                 about: dict[str, str]) -> ExportReport:
    """Export ``model``'s embedder to ``out`` with ``about`` added to its metadata, checked on ``data``'s val pairs
    against ``model`` run with ``settings``; on any mismatch one sentence, and nothing written to ``out``."""
    import onnx
    import onnxruntime

    if not data.val_pairs:
        raise UserError(f"{data.root} has no val_pairs.txt, whose images the export is checked on; pass --data-root")
    out = Path(out)
    module = ExportedEmbedder(model).to(memory_format=torch.contiguous_format).float().eval()
    with torch.no_grad():
        embedding_dim = module(torch.zeros(1, 3, settings.image_size, settings.image_size, dtype=torch.uint8)).shape[1]
    proto, exporter = export_graph(module, settings.image_size)
    opset = next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))
    metadata = {"format": FORMAT, "image_size": str(settings.image_size), "embedding_dim": str(embedding_dim),
                "input": f"{INPUT}: uint8 RGB pixels 0-255, batch x 3 x {settings.image_size} x "
                         f"{settings.image_size} (NCHW), each image resized to that size as in training",
                "normalisation": "inside the graph: pixel / 127.5 - 1 (mean 0.5 and std 0.5 of pixels in [0, 1])",
                "output": f"{OUTPUT}: batch x {embedding_dim}, L2-normalised; a pair's score is their dot product",
                "exporter": exporter, "opset": str(opset), **about}
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = "HW2P2 face embedder: backbone and embedding head of a trained checkpoint"
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise UserError(f"the exported graph is not valid ONNX ({one_line(error)}); nothing was written to {out}")
    found = {}

    def check(written: Path) -> None:
        try:
            found.update(check_parity(OnnxEmbedder(written, shown_as=out), model, data, settings))
        except UserError as error:
            raise UserError(f"{error}; nothing was written to {out}") from None

    serialized = proto.SerializeToString()
    atomic_write(out, lambda handle: handle.write(serialized), check=check)
    return ExportReport(str(out), out.stat().st_size, exporter, opset,
                        f"{proto.producer_name} {proto.producer_version}", settings.image_size, embedding_dim,
                        runtime=f"onnxruntime {onnxruntime.__version__}", threshold=float(about[KEYS.val_threshold]) if KEYS.val_threshold in about else None,
                        **found)


def check_parity(embedder: OnnxEmbedder, model: FaceModel, data: FaceData, settings: EvalSettings) -> dict:
    """Run the val pairs' images through ``embedder`` and ``model``; every image's two embeddings must agree
    (unit norm, cosine >= MIN_COSINE) and so must the val EER, to 4 decimals. Returns what was measured."""
    paths, index = pair_images(data, data.val_pairs)
    reference, skipped = embed_images(model, paths, settings, desc="val images, PyTorch", reader=data.reader)
    exported, _ = embedder.embed(paths, settings.tta, reader=data.reader, batch_size=settings.batch_size,
                                 progress=settings.progress, desc="val images, onnxruntime")
    if exported.shape != reference.shape:
        raise UserError(f"the exported model gives {exported.shape[1]}-D embeddings where PyTorch gives "
                        f"{reference.shape[1]}-D")
    readable = torch.isfinite(reference).all(dim=1)  # an unreadable image is NaN in both: nothing to compare
    cosines = F.cosine_similarity(exported.double(), reference.double(), dim=1)
    cosines = torch.where(readable, cosines.nan_to_num(nan=-np.inf), np.inf)
    worst = int(cosines.argmin())
    if not cosines[worst] >= MIN_COSINE:
        raise UserError(f"the exported model disagrees with PyTorch: the largest difference is at {paths[worst]}, "
                        f"whose two embeddings have cosine {float(cosines[worst]):.6f}, below {MIN_COSINE}")
    norm_errors = torch.where(readable, (exported.double().norm(dim=1) - 1).abs(), 0.0)
    if float(norm_errors.max()) > MAX_NORM_ERROR:
        far = int(norm_errors.argmax())
        raise UserError(f"the exported model's embeddings are not unit vectors: the one of {paths[far]} has norm "
                        f"{float(exported[far].norm()):.6f}")
    labels = np.array([pair.label for pair in data.val_pairs])
    eers = []
    for embeddings in (reference, exported):
        scores = pair_scores(embeddings, index, data.val_pairs)
        eers.append(compute_eer(scores[np.isfinite(scores)], labels[np.isfinite(scores)])[0])
    if round(eers[0], 4) != round(eers[1], 4):
        raise UserError(f"the exported model's val EER is {eers[1]:.6f} on onnxruntime against {eers[0]:.6f} in "
                        "PyTorch, not equal to 4 decimals")
    return {"images_compared": int(readable.sum()), "lowest_cosine": float(cosines[worst]), "torch_eer": eers[0],
            "onnx_eer": eers[1], "unreadable": [f"{item.path}: {item.reason}" for item in skipped]}


def _runtime_errors(ort) -> tuple[type, ...]:
    """Every exception type onnxruntime's native module raises (a bad file, a graph it cannot run)."""
    state = ort.capi.onnxruntime_pybind11_state
    return tuple(kind for kind in vars(state).values() if isinstance(kind, type) and issubclass(kind, Exception))


class OnnxEmbedder:
    """A model written by :func:`export_model`, on onnxruntime's CPU provider: no torch model is built.

    ``shown_as`` names the file in messages (the export checks a temporary file that will become it).
    """

    def __init__(self, path: str | Path, shown_as: str | Path | None = None):
        (ort,) = require(("onnxruntime",), "running an ONNX model")
        path, self.name = Path(path), Path(shown_as or path)
        if not path.is_file():
            raise UserError(f"ONNX model {self.name} does not exist")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings would interleave with the results
        options.intra_op_num_threads = torch.get_num_threads()  # the threads PyTorch would use, for a fair race
        self.errors = _runtime_errors(ort)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except self.errors as error:
            raise UserError(f"{self.name} is not a readable ONNX model ({one_line(error)})") from None
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        if self.metadata.get("format") != FORMAT:
            raise UserError(f"{self.name} is not a face embedder exported by this toolkit (no '{FORMAT}' format "
                            "in its metadata); export one with python -m helpers export")
        self.image_size = self._input_size()

    def _input_size(self) -> int:
        """The trained image size the metadata states, checked against what the graph takes."""
        inputs = self.session.get_inputs()
        size = self.metadata.get("image_size", "")
        expected = f"uint8 images of 3x{size}x{size} in batches of any size, as its metadata says"
        shape = inputs[0].shape if len(inputs) == 1 else []
        if (not size.isdigit() or len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or len(shape) != 4
                or isinstance(shape[0], int) or shape[1:] != [3, int(size), int(size)]):
            taken = ", ".join(f"{i.name} {i.type} {'x'.join(map(str, i.shape))}" for i in inputs)
            raise UserError(f"{self.name} takes {taken or 'no input'}, not {expected}")
        return int(size)

    def threshold(self, tta: bool) -> float | None:
        """The checkpoint's val EER threshold, when scores are made as it was found (the same flip TTA); or None."""
        if KEYS.val_threshold not in self.metadata or json.loads(self.metadata.get("threshold_tta", "false")) != tta:
            return None
        return float(self.metadata[KEYS.val_threshold])

    def run(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Unit-norm embeddings of a uint8 batch; flip TTA adds the mirrored images' and renormalises, as the
        checkpoint's evaluation does."""
        embeddings = self._forward(images)
        if tta:
            embeddings = F.normalize(embeddings + self._forward(images.flip(3)), dim=1)
        return embeddings

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        feed = {self.session.get_inputs()[0].name: images.contiguous().numpy()}
        try:
            return torch.from_numpy(self.session.run(None, feed)[0])
        except self.errors as error:
            raise UserError(f"{self.name} fails on a batch of {len(images)} images ({one_line(error)})") from None

    def embed(self, paths: Sequence[Path], tta: bool = False, reader: ImageReader | None = None,
              batch_size: int = 64, progress: bool = False, desc: str = "embedding") -> tuple[torch.Tensor, list]:
        """Embeddings of the images at ``paths`` and the unreadable ones, loaded as evaluation loads them."""
        cpu = torch.device("cpu")
        settings = EvalSettings(device=cpu, batch_size=batch_size, workers=default_workers("auto", cpu),
                                image_size=self.image_size, tta=tta, progress=progress)
        return embed_with(lambda images: self.run(images, tta), paths, settings, desc, reader)


def compare_images_onnx(model: str | Path, images: Sequence[str | Path], tta: bool = False,
                        score_norm: ScoreNorm = ScoreNorm()):
    """:func:`helpers.eval.inference.compare_images` on an exported model: pair scores and the stored threshold."""
    if score_norm.method != "none":
        raise UserError("AS-norm needs the margin head's class centres, which an ONNX export leaves out; "
                        "use --checkpoint for --score-norm as-norm")
    embedder = OnnxEmbedder(model)
    paths = existing_images(images)
    return consecutive_pairs(paths, *embedder.embed(paths, tta)), embedder.threshold(tta)


def embed_folder_onnx(model: str | Path, folder: str | Path, out: str | Path, tta: bool = False) -> int:
    """:func:`helpers.eval.inference.embed_folder` on an exported model; returns the count written."""
    paths = folder_images(folder)
    return save_embeddings(Path(folder), paths, *OnnxEmbedder(model).embed(paths, tta), out)
