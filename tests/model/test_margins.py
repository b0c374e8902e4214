"""Margin heads: the exact formulas, an independent implementation as oracle, and the numeric guards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.core.config import LossConfig
from helpers.model.margins import ArcMarginProduct, CombinedMarginProduct, CosMarginProduct, build_head, margin_loss

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")

CLASSES, DIM = 7, 16


def _embeddings_spanning_angles(head, labels, dtype=torch.float64):
    """Embeddings whose angle to their own class runs from near 0 to near pi."""
    weight = F.normalize(head.weight.detach().to(dtype), dim=1)
    angles = torch.linspace(0.02, math.pi - 0.02, len(labels), dtype=dtype)
    generator = torch.Generator().manual_seed(0)
    out = []
    for angle, label in zip(angles, labels):
        target = weight[label]
        other = torch.randn(DIM, dtype=dtype, generator=generator)
        other = F.normalize(other - (other @ target) * target, dim=0)  # orthogonal to the class direction
        out.append(math.cos(angle) * target + math.sin(angle) * other)
    return torch.stack(out) * 3.0  # not unit length: the head must normalise


def _reference_arcface_ce(emb, weight, labels, s, m, easy_margin=False):
    """The standard ArcFace formula, written out in float64 NumPy."""
    emb = emb.detach().numpy().astype(np.float64)
    weight = weight.detach().numpy().astype(np.float64)
    cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (weight / np.linalg.norm(weight, axis=1, keepdims=True)).T
    losses = []
    for row, label in zip(cos, labels.numpy()):
        c = row[label]
        theta = np.arccos(np.clip(c, -1, 1))
        if easy_margin:
            target = np.cos(theta + m) if c > 0 else c
        else:
            target = np.cos(theta + m) if c > np.cos(np.pi - m) else c - m * np.sin(np.pi - m)
        logits = s * row.copy()
        logits[label] = s * target
        losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[label])
    return float(np.mean(losses))


@pytest.mark.parametrize("easy_margin", [False, True])
def test_arcface_matches_the_written_out_formula_including_beyond_pi_minus_m(easy_margin):
    torch.manual_seed(1)
    head = ArcMarginProduct(DIM, CLASSES, s=30.0, m=0.35, easy_margin=easy_margin)
    labels = torch.arange(40) % CLASSES
    emb = _embeddings_spanning_angles(head, labels, dtype=torch.float32)
    cos_target = F.cosine_similarity(emb, head.weight[labels].detach(), dim=1)
    assert (cos_target < math.cos(math.pi - 0.35)).sum() >= 3  # some angles lie beyond pi - m
    ours = F.cross_entropy(head(emb, labels), labels).item()
    assert ours == pytest.approx(_reference_arcface_ce(emb, head.weight, labels, 30.0, 0.35, easy_margin), abs=1e-5)


def _compare_with_oracle(ours_head, oracle, labels, dtype):
    oracle.W.data = ours_head.weight.detach().to(dtype).T.clone()
    ours_head = ours_head.to(dtype)
    emb = _embeddings_spanning_angles(ours_head, labels, dtype=dtype)
    emb_ours = emb.clone().requires_grad_(True)
    emb_oracle = emb.clone().requires_grad_(True)
    loss_ours = F.cross_entropy(ours_head(emb_ours, labels), labels)
    loss_oracle = oracle(emb_oracle, labels)
    loss_ours.backward()
    loss_oracle.backward()
    assert loss_ours.item() == pytest.approx(loss_oracle.item(), abs=1e-5)
    assert torch.allclose(emb_ours.grad, emb_oracle.grad, atol=1e-5)
    assert torch.allclose(ours_head.weight.grad, oracle.W.grad.T, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_arcface_agrees_with_pytorch_metric_learning(dtype):
    torch.manual_seed(2)
    head = ArcMarginProduct(DIM, CLASSES, s=30.0, m=0.35)
    # pytorch-metric-learning takes the margin in degrees and stores W transposed.
    oracle = pml_losses.ArcFaceLoss(CLASSES, DIM, margin=math.degrees(0.35), scale=30.0)
    _compare_with_oracle(head, oracle, torch.arange(50) % CLASSES, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cosface_agrees_with_pytorch_metric_learning(dtype):
    torch.manual_seed(3)
    head = CosMarginProduct(DIM, CLASSES, s=30.0, m=0.35)
    oracle = pml_losses.CosFaceLoss(CLASSES, DIM, margin=0.35, scale=30.0)
    _compare_with_oracle(head, oracle, torch.arange(50) % CLASSES, dtype)


@pytest.mark.parametrize("kind", ["arcface", "cosface", "combined", "subcenter"])
def test_gradients_stay_finite_at_cos_plus_and_minus_one(kind):
    torch.manual_seed(4)
    head = build_head(LossConfig(type=kind, s=30.0, m=0.5, m1=1.2, m2=0.3, m3=0.1, subcenters=2), DIM, CLASSES)
    rows = head.weight.detach()[[0, 2]]
    emb = torch.stack([rows[0], -rows[1]]).clone().requires_grad_(True)  # cos = +1 and cos = -1 exactly
    labels = torch.tensor([0, 2 // head.rows_per_class])
    loss = F.cross_entropy(head(emb, labels), labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["arcface", "cosface", "combined", "subcenter"])
def test_logits_are_fp32_and_finite_under_autocast(dtype, kind):
    head = build_head(LossConfig(type=kind, s=64.0, m=0.5), DIM, CLASSES)
    emb = torch.randn(8, DIM) * 1e3
    labels = torch.arange(8) % CLASSES
    with torch.autocast("cpu", dtype=dtype):
        projected = torch.nn.Linear(DIM, DIM)(emb)  # an autocast op upstream, as in the model
        logits = head(projected, labels)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_easy_margin_applies_only_where_cosine_is_positive():
    head = ArcMarginProduct(2, 2, s=1.0, m=0.5, easy_margin=True)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    emb = torch.tensor([[math.cos(0.3), math.sin(0.3)], [math.cos(2.0), math.sin(2.0)]])
    logits = head(emb, torch.tensor([0, 0]))
    assert logits[0, 0].item() == pytest.approx(math.cos(0.3 + 0.5), abs=1e-6)  # margin applied
    assert logits[1, 0].item() == pytest.approx(math.cos(2.0), abs=1e-6)  # cos < 0: untouched
    hard = ArcMarginProduct(2, 2, s=1.0, m=0.5)
    hard.load_state_dict(head.state_dict())
    assert hard(emb, torch.tensor([0, 0]))[1, 0].item() == pytest.approx(math.cos(2.5), abs=1e-6)


def test_no_labels_gives_scaled_cosines_and_other_classes_are_untouched():
    head = ArcMarginProduct(DIM, CLASSES, s=30.0, m=0.35)
    emb = torch.randn(5, DIM)
    plain = head(emb)
    cos = F.normalize(emb) @ F.normalize(head.weight).T
    assert torch.allclose(plain, 30 * cos, atol=1e-5)
    labels = torch.tensor([0, 1, 2, 3, 4])
    with_margin = head(emb, labels)
    mask = F.one_hot(labels, CLASSES).bool()
    assert torch.allclose(with_margin[~mask], plain[~mask])
    assert (with_margin[mask] < plain[mask]).all()


def test_combined_margin_reduces_to_arcface_and_cosface_and_applies_all_three():
    emb = torch.randn(30, DIM)
    labels = torch.arange(30) % CLASSES
    arc = ArcMarginProduct(DIM, CLASSES, s=10.0, m=0.3)
    cos = CosMarginProduct(DIM, CLASSES, s=10.0, m=0.2)
    as_arc = CombinedMarginProduct(DIM, CLASSES, s=10.0, m1=1.0, m2=0.3, m3=0.0)
    as_cos = CombinedMarginProduct(DIM, CLASSES, s=10.0, m1=1.0, m2=0.0, m3=0.2)
    for combined, single in ((as_arc, arc), (as_cos, cos)):
        combined.load_state_dict(single.state_dict())
        c = single.cosine(emb).gather(1, labels[:, None])
        inside = c > math.cos(math.pi - 0.3)  # where both use the exact formula
        assert torch.allclose(combined(emb, labels)[inside.expand(-1, CLASSES)],
                              single(emb, labels)[inside.expand(-1, CLASSES)], atol=1e-4)
    every = CombinedMarginProduct(DIM, CLASSES, s=1.0, m1=1.1, m2=0.2, m3=0.05)
    c = every.cosine(emb).gather(1, labels[:, None]).squeeze(1)
    theta = torch.acos(c)
    inside = 1.1 * theta + 0.2 <= math.pi
    expected = torch.cos(1.1 * theta + 0.2) - 0.05
    got = every(emb, labels).gather(1, labels[:, None]).squeeze(1)
    assert torch.allclose(got[inside], expected[inside], atol=1e-5)


def test_combined_margin_stays_monotonic_past_pi():
    head = CombinedMarginProduct(2, 1, s=1.0, m1=1.3, m2=0.4, m3=0.1)
    cos = torch.linspace(-0.999, 0.999, 400)
    target = head.target_logit(cos)
    assert (target[1:] > target[:-1]).all()


def test_subcenter_head_takes_the_best_subcentre():
    head = ArcMarginProduct(2, 2, s=1.0, m=0.0, subcenters=3)
    assert head.weight.shape == (6, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0], [0, -1.0], [0.6, 0.8], [0.8, 0.6]]))
    emb = torch.tensor([[0.0, 1.0]])
    assert head(emb)[0].tolist() == pytest.approx([1.0, 0.8], abs=1e-6)


def test_margin_loss_handles_negatives_only_rows():
    logits = torch.tensor([[5.0, 0.0], [3.0, 2.0]])
    labels = torch.tensor([0, -1])
    expected_labelled = F.cross_entropy(logits[:1], labels[:1])
    expected_negative = torch.logsumexp(torch.tensor([3.0, 2.0, 0.0]), dim=0)
    assert margin_loss(logits, labels).item() == pytest.approx(((expected_labelled + expected_negative) / 2).item())
    assert margin_loss(logits[:1], labels[:1]).item() == pytest.approx(expected_labelled.item())


def test_margin_warmup_scales_the_margin():
    head = ArcMarginProduct(DIM, CLASSES, m=0.5)
    emb, labels = torch.randn(4, DIM), torch.arange(4)
    head.set_margin_scale(0.0)
    assert torch.allclose(head(emb, labels), head(emb), atol=1e-5)
    head.set_margin_scale(1.0)
    assert not torch.allclose(head(emb, labels), head(emb), atol=1e-3)
    assert "margin_scale" not in head.state_dict()  # checkpoints stay as they were


@pytest.mark.parametrize("kind", ["arcface", "combined"])
def test_a_compiled_step_does_not_recompile_as_the_margin_warms_up(kind):
    from helpers.core.config import load_config
    from helpers.model.resnet import build_face_model

    cfg = load_config("starter", [f"loss.type={kind}", "model.depth=18", "model.width=0.125", "model.embedding_dim=16"])
    model = build_face_model(cfg, CLASSES)
    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    torch._dynamo.reset()
    step = torch.compile(model, backend=counting_backend)  # as the engine compiles it with train.compile
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    compiled_after = []
    for scale in (0.0, 0.25, 0.5, 1.0):  # margin warm-up: a new scale every step
        model.head.set_margin_scale(scale)
        F.cross_entropy(step(images, labels), labels).backward()
        compiled_after.append(len(graphs))
    torch._dynamo.reset()
    assert compiled_after[0] >= 1 and compiled_after == compiled_after[:1] * 4  # compiled once, never again
