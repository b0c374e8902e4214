"""Image transforms: the assignment's per-image torchvision pipelines and the batched training path.

The assignment's transforms are kept as torchvision v2 pipelines
(:func:`starter_train_transform`, :func:`eval_transform`): the notebook shows
them and the data benchmark measures them as the plain path.

Training uses :class:`BatchAugment` instead: the same random crop and flip
(and the optional stronger set), drawn per image but applied to a whole uint8
batch at once on the training device with one ``grid_sample``. Workers then only
decode, and the random parameters come from a generator the engine seeds from
(seed, epoch, step), which is what makes resume exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from helpers.core.config import AugmentConfig

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def starter_train_transform(size: int = 112, aug: AugmentConfig = AugmentConfig()) -> v2.Compose:
    """The assignment's training transform for one PIL image or uint8 tensor, with the optional extras."""
    steps = [v2.ToImage(), v2.Resize((size, size), antialias=True),
             v2.RandomResizedCrop(size, scale=aug.crop_scale, ratio=aug.crop_ratio, antialias=True),
             v2.RandomHorizontalFlip(aug.flip)]
    if aug.color_jitter:
        steps.append(v2.ColorJitter(brightness=aug.color_jitter, contrast=aug.color_jitter,
                                    saturation=aug.color_jitter))
    if aug.grayscale:
        steps.append(v2.RandomGrayscale(aug.grayscale))
    if aug.rotation or aug.translate:
        steps.append(v2.RandomAffine(degrees=aug.rotation, translate=(aug.translate, aug.translate)))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    if aug.erasing:
        steps.append(v2.RandomErasing(aug.erasing))
    return v2.Compose(steps)


def eval_transform(size: int = 112) -> v2.Compose:
    """The assignment's evaluation transform: ``Resize((size, size))``, then the normalisation."""
    return v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] to floats normalised with mean 0.5 and std 0.5, i.e. to [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Normalised images back to [0, 1], for display."""
    return (images * 0.5 + 0.5).clamp(0, 1)


class BatchAugment:
    """Training augmentation of a uint8 batch on its own device, with random parameters per image.

    Crop, flip, rotation and translation become one affine sampling grid per
    image (bilinear, image edges extended), so a batch costs one ``grid_sample``
    whatever the options. Inside the crop this is exactly torchvision's
    ``resized_crop``; on its outermost half pixel the grid reads the image's
    real neighbouring pixels where torchvision repeats the crop's edge. Parameters are drawn on the CPU from ``generator``,
    so the same generator state gives the same batch on any device.
    """

    def __init__(self, aug: AugmentConfig = AugmentConfig(), size: int = 112):
        self.aug = aug
        self.size = size

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, _, height, width = images.shape
        theta = self._affine(batch, height, width, generator).to(images.device)
        out = F.grid_sample(images.float().div_(255.0), _grid(theta, self.size), mode="bilinear",
                            padding_mode="border", align_corners=False)
        if self.aug.color_jitter:
            out = self._jitter(out, generator)
        if self.aug.grayscale:
            gray = _luma(out).expand_as(out)
            chosen = _draw(batch, generator) < self.aug.grayscale
            out = torch.where(chosen.to(out.device).view(-1, 1, 1, 1), gray, out)
        out = out.sub_(0.5).div_(0.5)
        if self.aug.erasing:
            out = out * (1.0 - self._erase_mask(batch, generator).to(out.device))
        return out

    def _affine(self, batch: int, height: int, width: int, generator) -> torch.Tensor:
        """Affine matrices mapping output coordinates to input coordinates, in affine_grid's [-1, 1] units."""
        top, left, h, w = crop_boxes(batch, height, width, self.aug.crop_scale, self.aug.crop_ratio, generator)
        flip = torch.where(_draw(batch, generator) < self.aug.flip, -1.0, 1.0)
        angle = (_draw(batch, generator) * 2 - 1) * math.radians(self.aug.rotation)
        shift = (_draw((batch, 2), generator) * 2 - 1) * 2 * self.aug.translate
        cos, sin = angle.cos(), angle.sin()
        scale_x, scale_y = w / width, h / height
        centre_x = (2 * left + w) / width - 1
        centre_y = (2 * top + h) / height - 1
        theta = torch.empty(batch, 2, 3)
        theta[:, 0, 0] = scale_x * flip * cos
        theta[:, 0, 1] = -scale_x * flip * sin
        theta[:, 0, 2] = scale_x * flip * shift[:, 0] + centre_x
        theta[:, 1, 0] = scale_y * sin
        theta[:, 1, 1] = scale_y * cos
        theta[:, 1, 2] = scale_y * shift[:, 1] + centre_y
        return theta

    def _jitter(self, images: torch.Tensor, generator) -> torch.Tensor:
        strength = self.aug.color_jitter
        factors = (1 - strength + 2 * strength * _draw((3, images.shape[0], 1, 1, 1), generator)).to(images.device)
        images = (images * factors[0]).clamp_(0, 1)
        mean = _luma(images).mean(dim=(2, 3), keepdim=True)
        images = (mean + factors[1] * (images - mean)).clamp_(0, 1)
        gray = _luma(images)
        return (gray + factors[2] * (images - gray)).clamp_(0, 1)

    def _erase_mask(self, batch: int, generator) -> torch.Tensor:
        """1 inside one random rectangle per chosen image, as torchvision's RandomErasing draws them."""
        size = self.size
        area = size * size * (0.02 + 0.31 * _draw(batch, generator))
        aspect = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * _draw(batch, generator))
        h = (area * aspect).sqrt().clamp(1, size)
        w = (area / aspect).sqrt().clamp(1, size)
        top = _draw(batch, generator) * (size - h)
        left = _draw(batch, generator) * (size - w)
        chosen = (_draw(batch, generator) < self.aug.erasing).float()
        rows = torch.arange(size).view(1, -1, 1)
        cols = torch.arange(size).view(1, 1, -1)
        inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + h).view(-1, 1, 1))
                  & (cols >= left.view(-1, 1, 1)) & (cols < (left + w).view(-1, 1, 1)))
        return (inside.float() * chosen.view(-1, 1, 1)).unsqueeze(1)


def crop_boxes(batch: int, height: int, width: int, scale, ratio, generator=None, attempts: int = 10):
    """Random crop boxes (top, left, h, w), drawn per image as ``RandomResizedCrop`` draws them.

    Each image tries ``attempts`` (area, aspect) draws and keeps the first that
    fits; an image with none falls back to the largest central crop within the
    ratio bounds.
    """
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * _draw((batch, attempts), generator))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * _draw((batch, attempts), generator))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.int(), dim=1)
    rows = torch.arange(batch)
    w, h = w[rows, first], h[rows, first]
    any_fit = fits.any(dim=1)
    fallback_w, fallback_h = _central_fallback(height, width, ratio)
    w = torch.where(any_fit, w, torch.tensor(float(fallback_w)))
    h = torch.where(any_fit, h, torch.tensor(float(fallback_h)))
    top = torch.floor(_draw(batch, generator) * (height - h + 1)).clamp_max(height - h)
    left = torch.floor(_draw(batch, generator) * (width - w + 1)).clamp_max(width - w)
    top = torch.where(any_fit, top, (height - h) // 2)
    left = torch.where(any_fit, left, (width - w) // 2)
    return top, left, h, w


def _grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, [B, C, size, size], align_corners=False)`` by broadcasting.

    The same numbers as affine_grid's batched matmul, several times faster on a CPU.
    """
    base = (torch.arange(size, device=theta.device, dtype=theta.dtype) * 2 + 1) / size - 1  # pixel centres
    xs, ys = base.view(1, 1, size), base.view(1, size, 1)
    t = theta.view(-1, 6, 1, 1)
    grid = torch.empty(theta.shape[0], size, size, 2, device=theta.device, dtype=theta.dtype)
    # Writing each coordinate straight into its strided slot avoids a stack (a full extra copy).
    torch.add(t[:, 0] * xs, t[:, 1] * ys + t[:, 2], out=grid[..., 0])
    torch.add(t[:, 3] * xs, t[:, 4] * ys + t[:, 5], out=grid[..., 1])
    return grid


def _central_fallback(height: int, width: int, ratio) -> tuple[int, int]:
    in_ratio = width / height
    if in_ratio < min(ratio):
        return width, int(round(width / min(ratio)))
    if in_ratio > max(ratio):
        return int(round(height * max(ratio))), height
    return width, height


def _draw(shape, generator) -> torch.Tensor:
    """Uniform [0, 1) floats on the CPU from ``generator`` (the global generator when None)."""
    shape = (shape,) if isinstance(shape, int) else shape
    return torch.rand(shape, generator=generator)


def _luma(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)
