"""Image files: read from disk or a pack, decoded to 3xHxW uint8 RGB, and described when they cannot be."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from helpers.core.config import DataConfig
from helpers.core.errors import UserError, printable
from helpers.data.codec import decode_image
from helpers.data.packed import PackedImages

MAX_PIXELS = DataConfig.model_fields["max_image_pixels"].default  # data.max_image_pixels
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff", ".gif"})


class BadImageError(UserError):
    """An image file that cannot be decoded (missing, empty, truncated or not an image)."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{printable(where)}: {reason}")
        self.where = where
        self.reason = reason


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


# ----------------------------------------------------------------------------- images


def refuse_oversized(data: bytes | torch.Tensor, where: str = "image", max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose header claims more than ``max_pixels`` pixels, before any decoder allocates them:
    a 2 KB JPEG may claim 20000x20000 (1.2 GB decoded). Only the header is read (PIL's lazy open); a file PIL
    cannot identify is left to the decoders, whose errors describe it."""
    stream = io.BytesIO(data.numpy().tobytes() if isinstance(data, torch.Tensor) else data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit here is ours
            with Image.open(stream) as img:
                pixels, claimed = img.width * img.height, f"{img.width}x{img.height} pixels"
    except Image.DecompressionBombError as error:  # beyond twice PIL's own limit: its message has the count
        counted = re.search(r"\((\d+) pixels\)", str(error))
        pixels = int(counted.group(1)) if counted else 2 * Image.MAX_IMAGE_PIXELS + 1
        claimed = f"{pixels:,} pixels"
    except (OSError, ValueError, SyntaxError):  # SyntaxError: what some PIL plugins raise for a bad header
        return
    if pixels > max_pixels:
        raise BadImageError(where, f"its header claims {claimed}, more than data.max_image_pixels "
                                   f"({max_pixels:,}); refused before decoding (a decompression bomb?)")


def decode_rgb(data: bytes | torch.Tensor, size: int | None = None, where: str = "image",
               max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Decode image bytes of any mode (L, LA, P, RGBA, CMYK, 16-bit) into a 3xHxW uint8 RGB tensor.

    TorchCodec or torchvision (codec.py) decodes JPEG, PNG, WEBP and GIF; anything else goes through PIL.
    Every path is guarded by :func:`refuse_oversized` (``max_pixels``). When ``size`` is given the image is
    resized to ``size`` x ``size``, as the assignment's ``Resize((112, 112))`` does.
    """
    if len(data) == 0:
        raise BadImageError(where, "empty (zero-byte) file")
    refuse_oversized(data, where, max_pixels)
    raw = data if isinstance(data, torch.Tensor) else torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        image = decode_image(raw)
        if image.dtype != torch.uint8:
            image = TF.to_dtype(image, torch.uint8, scale=True)
    except (RuntimeError, ValueError):  # ValueError: TorchCodec's answer to a format it does not know
        image = _decode_with_pil(raw.numpy().tobytes(), where)
    if size is not None and tuple(image.shape[-2:]) != (size, size):
        image = TF.resize(image, [size, size], antialias=True)
    return image


def _decode_with_pil(data: bytes, where: str) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # PIL's own conversion clips 16-bit values at 255; rescale instead.
                array = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if img.mode.startswith("I;16") else max(float(array.max()), 1.0)
                img = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
            elif img.mode == "P":
                img = img.convert("RGBA")
            rgb = np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError as error:
        raise BadImageError(where, f"too many pixels to decode safely ({error})") from None
    except (OSError, ValueError):
        raise BadImageError(where, f"not a readable image: {describe_bytes(data)}") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


# Leading bytes of the kinds of file met under an image's name, and what to call them.
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"%PDF", "PDF document"), (b"PK\x03\x04", "zip archive"),
               (b"\x1f\x8b", "gzip archive"))
# Bytes a complete file of the kind ends with: without them the file was cut short.
_ENDINGS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
_IMAGE_KINDS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WebP")
_PHOTO_BRANDS = ("heic", "heix", "heif", "mif1", "msf1", "avif", "avis")


def describe_bytes(data: bytes) -> str:
    """What a file that would not decode seems to be, from its size and first bytes, in words for a message.

    E.g. ``a truncated JPEG (2,048 bytes, its end marker missing)``, ``an HTML
    page (5,120 bytes; ...)``, ``a Git LFS pointer (...)``, ``12 bytes of text, not an image``. The file's
    content itself is never shown.
    """
    size = f"{len(data):,} byte{'s' if len(data) != 1 else ''}"
    if not data:
        return "an empty (zero-byte) file"
    kind = next((name for signature, name in _SIGNATURES if data.startswith(signature)), None)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "WebP"
    elif data[4:8] == b"ftyp":  # the ISO media container: HEIC and AVIF photos, or MP4 and QuickTime videos
        brand = printable(data[8:12].decode("latin-1").strip())
        if brand in _PHOTO_BRANDS:
            return f"an {brand.upper()} photo ({size}; this format is not decoded here, convert it to JPEG)"
        return f"an MP4/QuickTime file (brand '{brand}', {size})"
    if kind in _ENDINGS and not data.rstrip(b"\x00\r\n ").endswith(_ENDINGS[kind]):
        return f"a truncated {kind} ({size}, its end marker missing)"
    if kind in _IMAGE_KINDS:
        return f"a damaged {kind} ({size})"
    if kind is not None:
        return f"a {kind} ({size})"
    text = _as_text(data[:512])
    if text is None:
        return f"{size} of unrecognised binary data"
    start = text.lstrip().lower()
    if start.startswith("version https://git-lfs"):
        return f"a Git LFS pointer ({size} of text; fetch the real file with git lfs pull)"
    if start.startswith(("<!doctype html", "<html")) or "<html" in start[:200]:
        return f"an HTML page ({size}; a download that returned a web page?)"
    if start.startswith(("<?xml", "<svg")):
        return f"XML or SVG text ({size})"
    return f"{size} of text, not an image"  # never its content: a linked file may hold a secret


def _as_text(head: bytes) -> str | None:
    """The start of a file as text, or None when it is binary (control bytes, or not UTF-8)."""
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # a character cut at the 512-byte mark is still text
            return None
        text = head[:error.start].decode("utf-8-sig")
    return text if all(char.isprintable() or char in "\t\r\n" for char in text) else None


class ImageReader:
    """Reads an image's bytes from its file, or from the pack holding its folder (see packed.py).

    Picklable, so loader workers get their own copy (each opens its own pack descriptor). ``max_pixels``
    (``data.max_image_pixels``) bounds every image it decodes.
    """

    def __init__(self, max_pixels: int = MAX_PIXELS):
        self.packs: list[tuple[Path, PackedImages]] = []
        self.max_pixels = max_pixels

    def add(self, folder: Path, pack: PackedImages) -> None:
        self.packs.append((folder, pack))

    def _locate(self, path: Path):
        for folder, pack in self.packs:
            if path.is_relative_to(folder):
                return pack, path.relative_to(folder).as_posix()
        return None, None

    def exists(self, path: Path) -> bool:
        pack, name = self._locate(path)
        return name in pack if pack is not None else path.is_file()

    def __call__(self, path: Path) -> bytes:
        pack, name = self._locate(path)
        try:
            return pack.read(name) if pack is not None else path.read_bytes()
        except KeyError:
            raise BadImageError(str(path), "missing from its pack") from None
        except OSError as error:
            raise BadImageError(str(path), f"cannot be read ({error.strerror or error})") from None

    def load(self, path: Path, size: int | None = None) -> torch.Tensor:
        return decode_rgb(self(path), size, where=str(path), max_pixels=self.max_pixels)


def load_image(path: Path, size: int | None = None) -> torch.Tensor:
    """Read one image file as a 3xHxW uint8 RGB tensor (see :func:`decode_rgb`)."""
    return ImageReader().load(Path(path), size)
