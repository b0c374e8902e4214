"""Augmentation: the batched device path reproduces torchvision's per-image transforms."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision import transforms
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from helpers.core.config import AugmentConfig
from helpers.data.augment import (
    BatchAugment,
    crop_boxes,
    denormalize,
    eval_transform,
    normalize,
    starter_train_transform,
)


def _images(batch=4, size=8, seed=0):
    return torch.randint(0, 256, (batch, 3, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_identity_settings_only_normalise():
    images = _images()
    out = BatchAugment(AugmentConfig(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0.0), size=8)(images)
    assert torch.allclose(out, normalize(images), atol=1e-5)
    assert out.min() >= -1 and out.max() <= 1


def test_flip_mirrors():
    images = _images()
    out = BatchAugment(AugmentConfig(crop_scale=(1, 1), crop_ratio=(1, 1), flip=1.0), size=8)(images)
    assert torch.allclose(out, normalize(images.flip(3)), atol=1e-5)


def test_each_crop_equals_a_torchvision_resized_crop():
    # A quarter-area square crop of an 8x8 image can sit at 25 offsets; every augmented image must be
    # torchvision's bilinear resized_crop at one of them. Only the outer ring of output pixels may differ:
    # torchvision repeats the crop's edge there, the sampling grid reads the true neighbouring pixels.
    images = _images(batch=16, size=8, seed=1)
    out = BatchAugment(AugmentConfig(crop_scale=(0.25, 0.25), crop_ratio=(1, 1), flip=0.0), size=8)(
        images, torch.Generator().manual_seed(5))
    for image, augmented in zip(images, out):
        candidates = [normalize(TF.resized_crop(image.float(), top, left, 4, 4, [8, 8], antialias=False))
                      for top in range(5) for left in range(5)]
        errors = [float((augmented - c)[:, 1:-1, 1:-1].abs().max()) for c in candidates]
        assert min(errors) < 1e-4


def test_crop_boxes_follow_random_resized_crop():
    generator = torch.Generator().manual_seed(0)
    top, left, h, w = crop_boxes(4000, 112, 112, (0.9, 1.0), (0.98, 1.02), generator)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 112).all() and (left + w <= 112).all()
    area = h * w / (112 * 112)
    assert area.min() >= 0.88 and area.max() <= 1.0
    # Same distribution as torchvision's sampler (which also rejects crops that do not fit).
    torch.manual_seed(0)
    reference = torch.tensor([transforms.RandomResizedCrop.get_params(torch.zeros(3, 112, 112), [0.9, 1.0],
                                                                      [0.98, 1.02]) for _ in range(2000)],
                             dtype=torch.float)
    ref_area = reference[:, 2] * reference[:, 3] / (112 * 112)
    assert abs(float(area.mean()) - float(ref_area.mean())) < 0.005


def test_same_generator_state_same_batch():
    images = _images(batch=6, size=16)
    augment = BatchAugment(AugmentConfig(color_jitter=0.3, grayscale=0.3, rotation=10, translate=0.1, erasing=0.5),
                           size=16)
    a = augment(images, torch.Generator().manual_seed(7))
    b = augment(images, torch.Generator().manual_seed(7))
    c = augment(images, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_strong_augmentations_stay_in_range_and_do_something():
    images = _images(batch=32, size=16, seed=2)
    plain = BatchAugment(AugmentConfig(), size=16)(images, torch.Generator().manual_seed(1))
    strong = BatchAugment(AugmentConfig(color_jitter=0.4, grayscale=1.0, rotation=20, translate=0.1), size=16)(
        images, torch.Generator().manual_seed(1))
    assert strong.shape == plain.shape and torch.isfinite(strong).all()
    assert strong.min() >= -1 - 1e-5 and strong.max() <= 1 + 1e-5
    gray = denormalize(strong)
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-5)  # grayscale 1.0: all channels equal


def test_erasing_blanks_one_rectangle_per_chosen_image():
    images = torch.full((64, 3, 32, 32), 255, dtype=torch.uint8)
    out = BatchAugment(AugmentConfig(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0, erasing=0.5), size=32)(
        images, torch.Generator().manual_seed(3))
    erased = (out == 0).all(dim=1)  # erased pixels are 0 after normalisation (mid grey)
    fraction = erased.flatten(1).float().mean(dim=1)
    chosen = fraction > 0
    assert 16 < int(chosen.sum()) < 48
    assert fraction[chosen].min() >= 0.015 and fraction[chosen].max() <= 0.34


def test_output_size_follows_the_setting():
    out = BatchAugment(AugmentConfig(), size=24)(_images(batch=2, size=40))
    assert out.shape == (2, 3, 24, 24)


def test_starter_transforms_match_the_assignment():
    train = starter_train_transform(112)
    crop = next(t for t in train.transforms if isinstance(t, v2.RandomResizedCrop))
    assert crop.scale == (0.9, 1.0) and crop.ratio == (0.98, 1.02) and tuple(crop.size) == (112, 112)
    flip = next(t for t in train.transforms if isinstance(t, v2.RandomHorizontalFlip))
    assert flip.p == 0.5
    normal = next(t for t in train.transforms if isinstance(t, v2.Normalize))
    assert normal.mean == [0.5] * 3 and normal.std == [0.5] * 3
    out = train(_images(batch=1, size=100)[0])
    assert out.shape == (3, 112, 112) and out.dtype == torch.float32
    evaluated = eval_transform(112)(_images(batch=1, size=120)[0])
    assert evaluated.shape == (3, 112, 112)
    assert torch.allclose(eval_transform(8)(_images(batch=1)[0]), normalize(_images(batch=1)[0]), atol=1e-5)


def test_strong_options_extend_the_torchvision_pipeline():
    kinds = [type(t).__name__ for t in starter_train_transform(
        112, AugmentConfig(color_jitter=0.2, grayscale=0.1, rotation=5, erasing=0.2)).transforms]
    assert {"ColorJitter", "RandomGrayscale", "RandomAffine", "RandomErasing"} <= set(kinds)


@pytest.mark.parametrize("degrees", [0.0, 15.0])
def test_rotation_is_bounded(degrees):
    augment = BatchAugment(AugmentConfig(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0, rotation=degrees), size=8)
    theta = augment._affine(500, 8, 8, torch.Generator().manual_seed(0))
    angles = torch.atan2(theta[:, 1, 0], theta[:, 1, 1]).abs()
    assert float(angles.max()) <= math.radians(degrees) + 1e-6


def test_broadcast_grid_equals_affine_grid():
    import torch.nn.functional as F

    from helpers.data.augment import _grid

    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(_grid(theta, 9), F.affine_grid(theta, [5, 3, 9, 9], align_corners=False), atol=1e-6)
