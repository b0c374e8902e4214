"""ResNet backbones written from scratch, embedding heads, and the FaceModel that ties them to a margin head.

The assignment forbids ``torchvision.models`` and pretrained weights: every
layer here is built from ``torch.nn``. ``resnet34()`` with its defaults is the
starter architecture: a 7x7 stride-2 stem with max-pool, [3, 4, 6, 3] BasicBlocks
of widths 64/128/256/512, global average pooling, a 512-D feature.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers.core.config import Config
from helpers.model.margins import MarginHead, build_head


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The 1x1 conv + BN skip of a block that changes resolution or width; None for the identity skip."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """``Conv3x3 -> BN -> ReLU -> Conv3x3 -> BN``, plus the skip, then ReLU (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = _projection(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip, inplace=True)

    def residual_end(self) -> nn.BatchNorm2d:
        """The residual branch's last layer, whose weight zero_init_residual zeroes: its last BN."""
        return self.bn2


class PreActBasicBlock(nn.Module):
    """``BN -> ReLU -> Conv3x3 -> BN -> ReLU -> Conv3x3``, plus the skip (He et al., 2016).

    The residual branch ends in a conv, so there is no BN to zero-initialise;
    its second conv starts at zero instead when asked.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.downsample = (None if stride == 1 and in_channels == channels
                           else conv1x1(in_channels, channels, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        skip = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        return out + skip

    def residual_end(self) -> nn.Conv2d:
        """The residual branch's last layer, whose weight zero_init_residual zeroes: its conv (no BN follows)."""
        return self.conv2


class Bottleneck(nn.Module):
    """``1x1 -> BN -> ReLU -> 3x3 (stride) -> BN -> ReLU -> 1x1 -> BN``, plus the skip, then ReLU (ResNet-50)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = conv1x1(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = conv1x1(channels, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip, inplace=True)

    def residual_end(self) -> nn.BatchNorm2d:
        """The residual branch's last layer, whose weight zero_init_residual zeroes: its last BN."""
        return self.bn3


class PreActBottleneck(nn.Module):
    """The pre-activation bottleneck: each conv preceded by BN and ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv1x1(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels)
        self.conv3 = conv1x1(channels, out_channels)
        self.downsample = (None if stride == 1 and in_channels == out_channels
                           else conv1x1(in_channels, out_channels, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        skip = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        out = self.conv3(F.relu(self.bn3(out), inplace=True))
        return out + skip

    def residual_end(self) -> nn.Conv2d:
        """The residual branch's last layer, whose weight zero_init_residual zeroes: its conv (no BN follows)."""
        return self.conv3


BLOCKS = {("basic", False): BasicBlock, ("basic", True): PreActBasicBlock,
          ("bottleneck", False): Bottleneck, ("bottleneck", True): PreActBottleneck}
DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3])}


class ResNet(nn.Module):
    """A ResNet trunk that maps images to a pooled feature vector of ``out_features`` values.

    ``stem="imagenet"``: 7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool (the
    ImageNet stem: a 112x112 face ends as a 4x4 map). ``stem="face"``: 3x3
    stride-1 conv, BN, ReLU and no pool, with the first stage downsampling
    instead, as InsightFace's IResNet does for 112x112 input: a 7x7 final map
    for about 4x the compute. ``width`` scales every stage's channels.
    """

    def __init__(self, block: type[nn.Module], layers: list[int], width: float = 1.0, stem: str = "imagenet",
                 zero_init_residual: bool = False, dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        if stem not in ("imagenet", "face"):
            raise ValueError(f"stem must be 'imagenet' or 'face', not {stem!r}")
        widths = [max(1, int(round(base * width))) for base in (64, 128, 256, 512)]
        self.preact = block in (PreActBasicBlock, PreActBottleneck)
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        else:
            self.stem = nn.Sequential(conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]),
                                      nn.ReLU(inplace=True))
        channels = widths[0]
        stages = []
        for index, (blocks, stage_width) in enumerate(zip(layers, widths)):
            stage = []
            for b in range(blocks):
                stride = 2 if b == 0 and (index > 0 or stem == "face") else 1
                stage.append(block(channels, stage_width, stride))
                channels = stage_width * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # Pre-activation blocks end in a conv: normalise once more before pooling.
        self.final_norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True)) if self.preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_features = channels
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            # Each residual branch starts as zero, so every block starts as the identity.
            for module in self.modules():
                if hasattr(module, "residual_end"):
                    nn.init.zeros_(module.residual_end().weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.flatten(self.pool(self.forward_features(x)), 1))


def resnet(depth: int = 34, preact: bool = False, **kwargs) -> ResNet:
    """A ResNet of depth 18, 34 (BasicBlocks) or 50 (Bottlenecks); ``kwargs`` go to :class:`ResNet`."""
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, not {depth}")
    kind, layers = DEPTHS[depth]
    return ResNet(BLOCKS[(kind, preact)], layers, **kwargs)


def resnet18(**kwargs) -> ResNet:
    return resnet(18, **kwargs)


def resnet34(**kwargs) -> ResNet:
    """The starter backbone: 21,284,672 parameters at the default width and stem."""
    return resnet(34, **kwargs)


def resnet50(**kwargs) -> ResNet:
    return resnet(50, **kwargs)


class LinearEmbedding(nn.Sequential):
    """The starter's embedding: ``Linear(features -> dim)``; the FaceModel L2-normalises its output."""

    def __init__(self, in_features: int, dim: int = 512):
        super().__init__(nn.Linear(in_features, dim))


class BNEmbedding(nn.Sequential):
    """``BN -> Dropout -> Linear -> BN``, the head of the strongest public face models."""

    def __init__(self, in_features: int, dim: int = 512, dropout: float = 0.0):
        super().__init__(nn.BatchNorm1d(in_features), nn.Dropout(dropout), nn.Linear(in_features, dim, bias=False),
                         nn.BatchNorm1d(dim))


class FaceModel(nn.Module):
    """Backbone, embedding head and margin head.

    ``embed(images)`` gives unit-norm embeddings (what verification compares);
    ``forward(images, labels)`` gives the margin head's scaled logits for its
    loss (plain scaled cosines when ``labels`` is None), the head receiving the
    unit-norm embeddings and each one's norm before normalisation; with
    ``with_norms`` it returns those norms too, for the head's loss.
    """

    def __init__(self, backbone: ResNet, embedding: nn.Module, head: MarginHead):
        super().__init__()
        self.backbone = backbone
        self.embedding = embedding
        self.head = head

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embedding(self.backbone(images)).float(), dim=1)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                with_norms: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        unnormalised = self.embedding(self.backbone(images)).float()
        norms = unnormalised.norm(dim=1, keepdim=True)
        logits = self.head(F.normalize(unnormalised, dim=1), labels, norms)
        return (logits, norms) if with_norms else logits


def build_face_model(cfg: Config, num_classes: int) -> FaceModel:
    """The FaceModel a configuration describes (``model.*`` and ``loss.*`` keys) for ``num_classes`` identities."""
    m, loss = cfg.model, cfg.loss
    bn_head = m.head == "bn"
    # The BN head carries its own dropout; the starter's head takes it on the pooled feature.
    backbone = resnet(m.depth, preact=m.block == "preact", width=m.width, stem=m.stem,
                      zero_init_residual=m.zero_init_residual, dropout=0.0 if bn_head else m.dropout)
    if bn_head:
        embedding = BNEmbedding(backbone.out_features, m.embedding_dim, m.dropout)
    else:
        embedding = LinearEmbedding(backbone.out_features, m.embedding_dim)
    return FaceModel(backbone, embedding, build_head(loss, m.embedding_dim, num_classes))
