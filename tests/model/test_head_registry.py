"""Margin heads by name: one registry entry adds a head, a head sees the embeddings' norms and says its loss,
which sees them too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.core.config import AugmentConfig, load_config
from helpers.core.registry import MARGIN_HEADS
from helpers.data.augment import BatchAugment
from helpers.model.margins import ArcMarginProduct, CombinedMarginProduct, CosMarginProduct, MarginHead, margin_loss
from helpers.model.resnet import build_face_model
from helpers.runtime.fast_path import FastPath
from helpers.training.step import TrainStep, make_optimizer

TINY = ["model.depth=18", "model.width=0.125", "model.embedding_dim=16", "loss.m2=0.2", "loss.m3=0.05"]


class NormAware(MarginHead):
    """A toy AdaFace-like head: a margin that grows with the embedding's norm; it records what it received."""

    def __init__(self, in_features: int, out_features: int, s: float):
        super().__init__(in_features, out_features, s)
        self.received: list[torch.Tensor | None] = []
        self.loss_received: list[torch.Tensor | None] = []

    def target_logit(self, cos: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        self.received.append(norms)
        return cos - 0.01 * norms.detach()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        self.loss_received.append(norms)
        return 2.0 * margin_loss(logits, labels)


@pytest.fixture
def norm_aware(monkeypatch):
    """The toy head registered as ``loss.type: normaware``, by one entry (undone after the test)."""
    monkeypatch.setattr(MARGIN_HEADS, "entries", dict(MARGIN_HEADS.entries))
    MARGIN_HEADS.register("normaware", lambda loss, in_features, classes: NormAware(in_features, classes, loss.s))


def test_a_head_registered_by_one_entry_is_built_and_receives_the_norms(norm_aware):
    torch.manual_seed(0)
    model = build_face_model(load_config(overrides=[*TINY, "loss.type=normaware"]), 4).eval()
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, -1])
    model(images, labels)
    assert isinstance(model.head, NormAware) and len(model.head.received) == 1
    unnormalised = model.embedding(model.backbone(images)).float()
    assert torch.allclose(model.head.received[0], unnormalised.norm(dim=1, keepdim=True))


def test_the_training_step_trains_with_the_heads_own_loss(norm_aware):
    cfg = load_config(overrides=[*TINY, "loss.type=normaware"])
    torch.manual_seed(0)
    model = build_face_model(cfg, 4)
    images, labels = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8), torch.arange(6) % 4
    identity = BatchAugment(AugmentConfig(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0.0), 32)
    plain = FastPath(amp=None, channels_last=False, compile=False, fused=False)
    step = TrainStep(model, model, make_optimizer(cfg.optim, model), plain, identity, torch.device("cpu"))
    loss, _ = step.forward_backward(images, labels)
    # the loss received the norms the forward pass gave the margin, graph and all (for a MagFace-style term)
    assert len(model.head.loss_received) == 1 and model.head.loss_received[0] is model.head.received[0]
    assert model.head.loss_received[0].shape == (6, 1) and model.head.loss_received[0].grad_fn is not None
    with torch.no_grad():
        expected = 2.0 * margin_loss(model(identity(images), labels), labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


BEFORE = {  # what the if-chain built before the registry, for the starter's loss settings
    "arcface": lambda loss, d, c: ArcMarginProduct(d, c, s=loss.s, m=loss.m, easy_margin=loss.easy_margin),
    "subcenter": lambda loss, d, c: ArcMarginProduct(d, c, s=loss.s, m=loss.m, easy_margin=loss.easy_margin,
                                                     subcenters=loss.subcenters),
    "cosface": lambda loss, d, c: CosMarginProduct(d, c, s=loss.s, m=loss.m),
    "combined": lambda loss, d, c: CombinedMarginProduct(d, c, s=loss.s, m1=loss.m1, m2=loss.m2, m3=loss.m3),
}


@pytest.mark.parametrize("kind", ["arcface", "cosface", "combined", "subcenter"])
def test_the_shipped_heads_give_bit_for_bit_the_logits_and_loss_of_before(kind):
    cfg = load_config(overrides=[*TINY, f"loss.type={kind}"])
    torch.manual_seed(0)
    head = MARGIN_HEADS.get(kind)(cfg.loss, 16, 5)
    torch.manual_seed(0)
    assert torch.equal(head.weight, BEFORE[kind](cfg.loss, 16, 5).weight)
    torch.manual_seed(1)
    model = build_face_model(cfg, 5)
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, -1])
    logits = model(images, labels)
    # before: the head saw only the unit-norm embeddings, and the step took margin_loss
    before = model.head(F.normalize(model.embedding(model.backbone(images)).float(), dim=1), labels)
    assert torch.equal(logits, before)
    assert torch.equal(model.head.loss(logits, labels), margin_loss(before, labels))
