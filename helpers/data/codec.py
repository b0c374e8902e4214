"""Which library decodes images: torchvision where its decoders work, TorchCodec otherwise, PIL as the last resort.

torchvision 0.29 deprecates its image decoders in favour of TorchCodec's. Both
decode JPEGs with libjpeg-turbo to the same pixels; on the CPU torchvision's
were as fast or a little faster (BENCHMARKS.md), so they stay first while they
exist, and TorchCodec takes over where they fail or are gone. A TorchCodec
wheel is built against one torch release and pip installs it beside any torch,
so "installed" is not "works": each decoder is tried on a small JPEG once per
process, and the first that decodes it is used. When neither works, images.py
decodes with PIL, image by image.
"""

from __future__ import annotations

import functools
import io
import warnings
from typing import Callable, NamedTuple

import torch

from helpers.core.errors import one_line

DECODERS = ("torchvision", "torchcodec")


@functools.lru_cache(maxsize=None)
def sample_jpeg() -> torch.Tensor:
    """A small JPEG (16x12 pixels) as a 1-D uint8 tensor, to try decoders on."""
    import numpy as np
    from PIL import Image

    pixels = np.arange(16 * 12 * 3, dtype=np.uint8).reshape(12, 16, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


@functools.lru_cache(maxsize=None)
def decoder_problem(name: str) -> str | None:
    """Why decoder ``name`` cannot be used here (one line), or None when it decodes :func:`sample_jpeg`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(sample_jpeg(), name)
    except Exception as error:  # noqa: BLE001 - a wheel built for another torch fails in many ways
        return one_line(error)
    if tuple(image.shape) != (3, 12, 16) or image.dtype != torch.uint8:
        return f"decoded the test JPEG to {tuple(image.shape)} {image.dtype}, not (3, 12, 16) uint8"
    return None


@functools.lru_cache(maxsize=None)
def image_decoder() -> str | None:
    """The decoder this process uses: the first of :data:`DECODERS` that works here (None: neither does)."""
    return next((name for name in DECODERS if decoder_problem(name) is None), None)


def decode_image(raw: torch.Tensor, decoder: str | None = None) -> torch.Tensor:
    """Decode encoded image bytes (a 1-D uint8 tensor) to a 3xHxW RGB tensor with ``decoder`` (default: this
    process's); raises RuntimeError or ValueError for bytes it cannot decode. 16-bit images may come back uint16."""
    return _library(decoder or image_decoder()).one(raw)


def decode_jpegs(blobs: list[torch.Tensor], device: torch.device, decoder: str | None = None) -> list[torch.Tensor]:
    """Decode JPEGs in one batched call on ``device`` (nvJPEG on a GPU); RuntimeError if any cannot be decoded."""
    return list(_library(decoder or image_decoder()).batch(blobs, device))


class _Library(NamedTuple):
    one: Callable
    batch: Callable


@functools.lru_cache(maxsize=None)
def _library(decoder: str | None) -> _Library:
    """The decoder's two calls, looked up once (an import statement per image would cost a few per cent)."""
    if decoder == "torchcodec":
        from torchcodec.decoders import decode_image, decode_jpeg

        # decode_image sniffs the format in Python first; JPEGs, nearly every image here, go straight through
        return _Library(lambda raw: decode_jpeg(raw, mode="RGB") if _is_jpeg(raw) else decode_image(raw, mode="RGB"),
                        lambda blobs, device: decode_jpeg(blobs, mode="RGB", device=device))
    if decoder == "torchvision":
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        return _Library(lambda raw: decode_image(raw, mode=ImageReadMode.RGB),
                        lambda blobs, device: decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device))
    raise RuntimeError(f"no image decoder {decoder!r} (known: {', '.join(DECODERS)})")


def _is_jpeg(raw: torch.Tensor) -> bool:
    return len(raw) > 2 and int(raw[0]) == 0xFF and int(raw[1]) == 0xD8
