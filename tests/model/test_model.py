"""Backbones, embedding heads, the FaceModel and model-summary."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import call_cli

import helpers
from helpers.core.config import load_config
from helpers.core.course import COURSE_CLASSES
from helpers.model.margins import margin_loss
from helpers.model.resnet import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, build_face_model, resnet
from helpers.model.summary import model_summary
from helpers.training.step import make_optimizer


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet34_has_the_standard_parameter_count():
    assert _params(helpers.resnet34()) == 21_284_672


def test_starter_model_parts_add_up_to_the_issue_numbers():
    model = build_face_model(load_config("starter"), COURSE_CLASSES)
    assert (_params(model.backbone), _params(model.embedding), _params(model.head)) == (21_284_672, 262_656, 4_419_072)


def test_starter_architecture_layout():
    net = helpers.resnet34()
    conv, bn, relu, pool = net.stem
    assert (conv.kernel_size, conv.stride, conv.in_channels, conv.out_channels) == ((7, 7), (2, 2), 3, 64)
    assert isinstance(pool, torch.nn.MaxPool2d) and pool.kernel_size == 3 and pool.stride == 2
    assert [len(s) for s in (net.layer1, net.layer2, net.layer3, net.layer4)] == [3, 4, 6, 3]
    assert all(isinstance(b, BasicBlock) for s in (net.layer1, net.layer4) for b in s)
    assert net.layer1[0].downsample is None
    for stage in (net.layer2, net.layer3, net.layer4):
        first = stage[0]
        assert first.conv1.stride == (2, 2) and first.downsample[0].kernel_size == (1, 1)


@pytest.mark.parametrize("size,stem,grid", [(112, "imagenet", 4), (112, "face", 7), (64, "imagenet", 2), (96, "face", 6)])
def test_feature_map_sizes(size, stem, grid):
    net = resnet(18, width=0.125, stem=stem).eval()
    with torch.no_grad():
        fmap = net.forward_features(torch.zeros(2, 3, size, size))
        pooled = net(torch.zeros(2, 3, size, size))
    assert fmap.shape[2:] == (grid, grid) and pooled.shape == (2, net.out_features)


@pytest.mark.parametrize("depth,preact,block", [(18, False, BasicBlock), (18, True, PreActBasicBlock),
                                                (34, True, PreActBasicBlock), (50, False, Bottleneck),
                                                (50, True, PreActBottleneck)])
def test_depth_and_block_variants(depth, preact, block):
    net = resnet(depth, preact=preact, width=0.125)
    assert isinstance(net.layer1[0], block)
    assert net.out_features == 64 * block.expansion
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, net.out_features)


def test_resnet50_standard_count():
    # torchvision's ResNet-50 without its 1000-way classifier has 23,508,032 parameters.
    assert _params(helpers.resnet50()) == 23_508_032


def test_width_multiplier_shrinks_channels():
    assert resnet(18, width=0.5).out_features == 256 and resnet(34, width=0.25).layer2[0].conv1.out_channels == 32


def test_zero_init_residual_makes_blocks_start_as_identity():
    net = resnet(18, width=0.125, zero_init_residual=True)
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0 for s in (net.layer1, net.layer2) for b in s)
    pre = resnet(18, preact=True, width=0.125, zero_init_residual=True)
    assert float(pre.layer1[0].conv2.weight.detach().abs().sum()) == 0


def test_dropout_goes_before_the_embedding():
    cfg = load_config(overrides=["model.depth=18", "model.width=0.125", "model.dropout=0.3"])
    assert isinstance(build_face_model(cfg, 5).backbone.dropout, torch.nn.Dropout)
    cfg = load_config(overrides=["model.depth=18", "model.width=0.125", "model.dropout=0.3", "model.head=bn"])
    model = build_face_model(cfg, 5)
    kinds = [type(m).__name__ for m in model.embedding]
    assert kinds == ["BatchNorm1d", "Dropout", "Linear", "BatchNorm1d"] and model.embedding[1].p == 0.3
    assert isinstance(model.backbone.dropout, torch.nn.Identity)


@pytest.mark.parametrize("head", ["linear", "bn"])
def test_face_model_embeds_unit_vectors_and_returns_logits(head):
    cfg = load_config(overrides=["model.depth=18", "model.width=0.125", f"model.head={head}",
                                 "model.embedding_dim=32"])
    model = build_face_model(cfg, 10).eval()
    images = torch.randn(3, 3, 48, 48)
    emb = model.embed(images)
    assert emb.shape == (3, 32) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert model(images, torch.tensor([0, 1, 2])).shape == (3, 10)


def test_every_trainable_parameter_is_in_the_optimiser():
    cfg = load_config(overrides=["model.depth=18", "model.width=0.125", "optim.no_decay_bn_bias=true"])
    model = build_face_model(cfg, 10)
    optimizer = make_optimizer(cfg.optim, model)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.head.weight) in in_optimizer and len(in_optimizer) == len(list(model.parameters()))
    no_decay = optimizer.param_groups[1]
    assert no_decay["weight_decay"] == 0 and all(p.ndim == 1 for p in no_decay["params"])


@pytest.mark.parametrize("kind", ["arcface", "cosface", "combined", "subcenter"])
def test_tiny_model_overfits_a_tiny_batch(kind):
    torch.manual_seed(0)
    cfg = load_config(overrides=["model.depth=18", "model.width=0.125", "model.embedding_dim=32",
                                 f"loss.type={kind}", "loss.s=16", "loss.m=0.2", "loss.m2=0.2", "loss.m3=0.05"])
    model = build_face_model(cfg, 4)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = margin_loss(model(images, labels), labels)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first


def test_model_summary_json_for_the_starter_config(capsys):
    code, out, _ = call_cli(capsys, "model-summary", "--config", "starter", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["total_params"] == 25_966_400 and summary["within_budget"] is True
    assert summary["feature_map"] == [512, 4, 4] and 1.8 < summary["forward_gflops"] < 2.0


def test_model_summary_flags_a_model_over_budget(tmp_path, capsys):
    args = ["model-summary", "--set", "model.depth=50", "--set", "model.width=1.25", "--classes", "20000"]
    code, out, _ = call_cli(capsys, *args)
    assert code == 0 and "OVER" in out and "WARNING" in out
    assert call_cli(capsys, *args, "--strict")[0] == 1
    code, _, _ = call_cli(capsys, "model-summary", "--set", "model.width=0.25", "--write", tmp_path / "arch.txt")
    text = (tmp_path / "arch.txt").read_text()
    assert code == 0 and "within the 30,000,000-parameter budget" in text and "BasicBlock" in text


def test_face_stem_costs_more_compute():
    imagenet = model_summary(load_config(overrides=["model.depth=18", "model.width=0.25"]), 10)
    face = model_summary(load_config(overrides=["model.depth=18", "model.width=0.25", "model.stem=face"]), 10)
    assert face["feature_map"][1:] == [7, 7] and face["forward_gflops"] > 3 * imagenet["forward_gflops"]
