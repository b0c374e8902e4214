"""Margin heads: ArcFace and its family, each turning identity classification into a metric.

Every head holds one trainable weight row per class (per sub-centre), compares
L2-normalised embeddings with L2-normalised rows by cosine, and moves only the
target class's logit by a margin before scaling by ``s``. The numeric guards:

* logits are computed in fp32 with autocast off: fp16 cannot hold
  ``s * cos`` differences finely enough and overflows in the exponent of CE;
* ``sin θ`` comes from ``1 - cos² θ`` clamped away from zero, and ``θ`` from a
  clamped ``acos``, so gradients stay finite at ``cos θ = ±1``;
* past ``θ = π - m`` the ArcFace target stops being monotonic in ``θ``; there it
  falls back to ``cos θ - m·sin(π - m)`` (the standard form), so a sample
  pointing away from its class is still pulled towards it;
* ``easy_margin`` applies the margin only where ``cos θ > 0``.

A label of -1 marks a sample with no class (used only as a negative): its row
gets no margin.

The heads are found by ``loss.type`` in helpers/core/registry.py's MARGIN_HEADS,
each through a function below. A head also receives each embedding's norm before
normalisation, for a norm-aware margin (AdaFace, MagFace), and says its own loss
(:meth:`MarginHead.loss`), which receives the norms too.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers.core.config import LossConfig
from helpers.core.registry import MARGIN_HEADS

_EPS = 1e-7


class MarginHead(nn.Module):
    """Shared machinery: the class weights, fp32 cosines, scaling, and the target-logit swap.

    ``margin_scale`` (0..1) multiplies every margin; the engine raises it from
    0 to 1 over ``loss.margin_warmup_epochs`` with :meth:`set_margin_scale`. It is a
    tensor (a buffer, left out of checkpoints), so a compiled step reads its value
    instead of baking a Python number into the graph and recompiling each step.
    """

    def __init__(self, in_features: int, out_features: int, s: float = 30.0, rows_per_class: int = 1):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.s = s
        self.rows_per_class = rows_per_class
        self.register_buffer("margin_scale", torch.ones(()), persistent=False)
        self.weight = nn.Parameter(torch.empty(out_features * rows_per_class, in_features))
        nn.init.xavier_uniform_(self.weight)

    def set_margin_scale(self, value: float) -> None:
        """Scale every margin by ``value`` (0..1) from the next forward on, in place."""
        self.margin_scale.fill_(value)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine of each embedding with each class (best sub-centre), shape (batch, classes), in fp32 or wider."""
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        cos = F.linear(F.normalize(embeddings.to(dtype), dim=1), F.normalize(self.weight.to(dtype), dim=1))
        if self.rows_per_class > 1:
            cos = cos.view(-1, self.out_features, self.rows_per_class).amax(dim=2)
        return cos

    def target_logit(self, cos: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        """The unscaled target-class logit for target cosines ``cos`` (no margin here); ``norms``: each sample's
        embedding norm before normalisation, shaped like ``cos`` (None when the caller has none)."""
        return cos

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                norms: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled logits, the target's with its margin; ``norms`` (batch, 1) go to :meth:`target_logit`."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings)
            if labels is None:
                return self.s * cos
            labels = labels.view(-1, 1)
            has_class = labels >= 0
            index = labels.clamp_min(0)
            target = cos.gather(1, index)
            target = torch.where(has_class, self.target_logit(target, norms), target)
            return self.s * cos.scatter(1, index, target)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss over this head's logits: :func:`margin_loss`, unless a head needs another; ``norms``
        (batch, 1), the embeddings' norms as :meth:`forward` had them, are for a loss term on them (MagFace)."""
        return margin_loss(logits, labels)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, s={self.s}"


class ArcMarginProduct(MarginHead):
    """ArcFace (Deng et al., 2019): target logit ``s·cos(θ + m)``.

    ``weight`` has shape ``(out_features, in_features)``; ``forward(embeddings,
    labels)`` returns scaled logits, and ``s·cos θ`` without labels.
    """

    def __init__(self, in_features: int, out_features: int, s: float = 30.0, m: float = 0.35,
                 easy_margin: bool = False, subcenters: int = 1):
        super().__init__(in_features, out_features, s, rows_per_class=subcenters)
        self.m = m
        self.easy_margin = easy_margin

    def target_logit(self, cos: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        m = self.m * self.margin_scale  # a 0-d tensor: see MarginHead
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(_EPS))
        shifted = cos * torch.cos(m) - sin * torch.sin(m)  # cos(θ + m)
        if self.easy_margin:
            return torch.where(cos > 0, shifted, cos)
        # past θ = π - m, cos(θ + m) would rise again: continue with the linear penalty CosFace-style
        return torch.where(cos > torch.cos(math.pi - m), shifted, cos - m * torch.sin(math.pi - m))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}, easy_margin={self.easy_margin}, subcenters={self.rows_per_class}"


class CosMarginProduct(MarginHead):
    """CosFace (Wang et al., 2018): target logit ``s·(cos θ - m)``."""

    def __init__(self, in_features: int, out_features: int, s: float = 30.0, m: float = 0.35):
        super().__init__(in_features, out_features, s)
        self.m = m

    def target_logit(self, cos: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        return cos - self.m * self.margin_scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}"


class CombinedMarginProduct(MarginHead):
    """The combined margin of InsightFace: target logit ``s·(cos(m1·θ + m2) - m3)``.

    All three margins apply at once (m1 = 1, m3 = 0 is ArcFace; m1 = 1, m2 = 0
    is CosFace). Where ``m1·θ + m2`` passes π the cosine would turn back up, so
    the target continues as ``cos θ`` minus the penalty it had at that point:
    continuous and still decreasing in θ.
    """

    def __init__(self, in_features: int, out_features: int, s: float = 30.0, m1: float = 1.0, m2: float = 0.3,
                 m3: float = 0.2):
        super().__init__(in_features, out_features, s)
        self.m1, self.m2, self.m3 = m1, m2, m3

    def target_logit(self, cos: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.margin_scale
        m1 = 1.0 + (self.m1 - 1.0) * scale
        m2, m3 = self.m2 * scale, self.m3 * scale
        theta = torch.acos(cos.clamp(-1.0 + _EPS, 1.0 - _EPS))
        theta_max = ((math.pi - m2) / m1).clamp(max=math.pi)
        penalty_at_max = torch.cos(theta_max) - (torch.cos(m1 * theta_max + m2) - m3)
        inside = torch.cos(m1 * theta + m2) - m3
        return torch.where(theta <= theta_max, inside, cos - penalty_at_max)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m1={self.m1}, m2={self.m2}, m3={self.m3}"


def arcface(loss: LossConfig, in_features: int, classes: int) -> MarginHead:
    return ArcMarginProduct(in_features, classes, s=loss.s, m=loss.m, easy_margin=loss.easy_margin)


def subcenter(loss: LossConfig, in_features: int, classes: int) -> MarginHead:
    """ArcFace over ``loss.subcenters`` sub-centres per class."""
    return ArcMarginProduct(in_features, classes, s=loss.s, m=loss.m, easy_margin=loss.easy_margin,
                            subcenters=loss.subcenters)


def cosface(loss: LossConfig, in_features: int, classes: int) -> MarginHead:
    return CosMarginProduct(in_features, classes, s=loss.s, m=loss.m)


def combined(loss: LossConfig, in_features: int, classes: int) -> MarginHead:
    return CombinedMarginProduct(in_features, classes, s=loss.s, m1=loss.m1, m2=loss.m2, m3=loss.m3)


def build_head(loss: LossConfig, in_features: int, classes: int) -> MarginHead:
    """The margin head ``loss.type`` names in MARGIN_HEADS, with ``loss``'s settings."""
    return MARGIN_HEADS.get(loss.type)(loss, in_features, classes)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over margin logits, where a label of -1 means "no class: a negative only".

    A negative's target is a fixed background logit of 0 (a cosine of 0 with
    every class, scaled), so its loss ``log(1 + Σ exp(logits))`` pushes it away
    from every class centre. Computed without branching on the data, so it
    never waits for the device.
    """
    has_class = labels >= 0
    labelled = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
    background = torch.logsumexp(F.pad(logits, (0, 1)), dim=1)  # the padded column is the 0 logit
    return torch.where(has_class, labelled, background).mean()
