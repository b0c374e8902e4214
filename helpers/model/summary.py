"""``model-summary``: parameter counts per part, the 30 M budget check, feature-map size and FLOPs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from helpers.core.config import Config
from helpers.core.course import COURSE_CLASSES, PARAMETER_BUDGET
from helpers.core.io import atomic_write_text
from helpers.model.resnet import FaceModel, build_face_model


def count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: FaceModel, image_size: int) -> int:
    """Forward FLOPs (multiply and add counted apart) of one image through backbone and embedding."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.embed(torch.zeros(1, 3, image_size, image_size))
    model.train(was_training)
    return int(counter.get_total_flops())


def model_summary(cfg: Config, num_classes: int = COURSE_CLASSES) -> dict:
    """What a configuration's model weighs: parameters per part, budget verdict, feature map, FLOPs."""
    model = build_face_model(cfg, num_classes)
    size = cfg.data.image_size
    with torch.no_grad():
        model.eval()
        feature_map = tuple(model.backbone.forward_features(torch.zeros(1, 3, size, size)).shape[1:])
    parts = {"backbone": count(model.backbone), "embedding": count(model.embedding), "margin_head": count(model.head)}
    total = sum(parts.values())
    m = cfg.model
    return {
        "architecture": f"ResNet-{m.depth} ({m.block} blocks, {m.stem} stem, width {m.width:g}), "
                        f"{m.head} embedding to {m.embedding_dim}-D, {cfg.loss.type} head "
                        f"over {num_classes} classes",
        "params": parts,
        "total_params": total,
        "trainable_params": count(model, trainable_only=True),
        "budget": PARAMETER_BUDGET,
        "within_budget": total <= PARAMETER_BUDGET,
        "classes": num_classes,
        "image_size": size,
        "feature_map": list(feature_map),
        "forward_gflops": forward_flops(model, size) / 1e9,
        "printed_model": str(model),
    }


def summary_lines(summary: dict) -> list[str]:
    """The human-readable table."""
    lines = [summary["architecture"], ""]
    width = max(len(name) for name in summary["params"]) + 2
    for name, value in summary["params"].items():
        lines.append(f"  {name:<{width}}{value:>14,}")
    lines.append(f"  {'total':<{width}}{summary['total_params']:>14,}")
    verdict = ("within" if summary["within_budget"] else "OVER") + f" the {summary['budget']:,}-parameter budget"
    lines += ["", f"{verdict} ({100 * summary['total_params'] / summary['budget']:.1f} % used)"]
    c, h, w = summary["feature_map"]
    lines.append(f"input {summary['image_size']}x{summary['image_size']} -> final feature map {c}x{h}x{w}; "
                 f"{summary['forward_gflops']:.3f} GFLOPs per image forward")
    if not summary["within_budget"]:
        lines.append("WARNING: the assignment allows at most 30 M parameters, heads included")
    return lines


def model_arch_text(summary: dict) -> str:
    """``model_arch.txt`` for the hand-in: the table, then the printed model."""
    return "\n".join(summary_lines(summary)) + "\n\n" + summary["printed_model"] + "\n"


def write_model_arch(summary: dict, path: str | Path) -> None:
    """Write :func:`model_arch_text` to ``path``, atomically."""
    atomic_write_text(path, model_arch_text(summary))
