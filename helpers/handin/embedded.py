"""Text that a file holds in a form a plain byte scan cannot read: W&B's ``.wandb`` log and PNG text chunks.

A ``.wandb`` file is a LevelDB-style log: a 7-byte file header (``:W&B``, a
magic number, a version), then blocks of 32 KiB, each a run of records with a
7-byte header (CRC-32, little-endian length, type). A record longer than what
is left of its block goes on in the next one (types FIRST, MIDDLE, LAST), so a
key may lie with a block header in its middle; :func:`wandb_records` puts each
record back together. A PNG keeps text in ``tEXt``, ``zTXt`` and ``iTXt``
chunks, the last two possibly deflated; :func:`png_compressed_texts` inflates
them, never past a bound.
"""

from __future__ import annotations

import struct
import zlib

WANDB_IDENT = b":W&B"
WANDB_BLOCK = 32768
WANDB_HEADER = 7  # both the file header and each record header
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TEXT_LIMIT = 4_000_000  # bytes of inflated text per file; matplotlib writes a few dozen


def wandb_records(data: bytes) -> tuple[list[bytes], bytes] | None:
    """The records of a ``.wandb`` log, each whole again, and the bytes from where the log stops making sense
    to its end (empty for a sound file); None when ``data`` is not a ``.wandb`` log at all."""
    if not data.startswith(WANDB_IDENT) or len(data) < WANDB_HEADER:
        return None
    records, pending, position = [], None, WANDB_HEADER
    while position + WANDB_HEADER <= len(data):
        room = WANDB_BLOCK - position % WANDB_BLOCK
        if room < WANDB_HEADER:  # a block's tail too short for a header: zero padding
            position += room
            continue
        _, length, kind = struct.unpack_from("<IHB", data, position)
        if kind == 0 and length == 0 and not any(data[position:position + room]):
            position += room  # an unused (zero) block tail
            continue
        end = position + WANDB_HEADER + length
        if kind not in (_FULL, _FIRST, _MIDDLE, _LAST) or length > room - WANDB_HEADER or end > len(data):
            break
        body = data[position + WANDB_HEADER:end]
        if kind in (_FULL, _FIRST):
            if pending is not None:  # a record cut short by the next one: keep what it had
                records.append(bytes(pending))
            pending = bytearray(body)
        elif pending is not None:
            pending += body
        else:
            records.append(body)  # a continuation without its start (a damaged log): still text to read
        if kind in (_FULL, _LAST) and pending is not None:
            records.append(bytes(pending))
            pending = None
        position = end
    if pending is not None:
        records.append(bytes(pending))
    rest = data[position:]
    return records, rest if any(rest) else b""


def png_compressed_texts(data: bytes, limit: int = PNG_TEXT_LIMIT) -> tuple[list[bytes], bool] | None:
    """The inflated text of each compressed text chunk of a PNG (``zTXt``, and ``iTXt`` with its compression
    flag set), with whether ``limit`` bytes of inflated text ran out before the end; None when ``data`` is not
    a PNG. Uncompressed text lies in the file as it is; a chunk that does not inflate holds no readable text."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    texts, position, left = [], len(PNG_SIGNATURE), limit
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        compressed = _compressed_part(kind, body)
        if compressed is None:
            continue
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(compressed, left + 1)
        except zlib.error:
            continue
        if len(text) > left:
            return texts, True
        texts.append(text)
        left -= len(text)
    return texts, False


def _compressed_part(kind: bytes, body: bytes) -> bytes | None:
    """The deflated bytes of a ``zTXt`` or compressed ``iTXt`` chunk's text, or None for any other chunk."""
    keyword_end = body.find(b"\0")
    if keyword_end < 0:
        return None
    if kind == b"zTXt":  # keyword, NUL, method, text
        return body[keyword_end + 2:]
    if kind == b"iTXt" and body[keyword_end + 1:keyword_end + 2] == b"\1":  # keyword, NUL, flag, method,
        language_end = body.find(b"\0", keyword_end + 3)  # language, NUL, translated keyword, NUL, text
        translated_end = body.find(b"\0", language_end + 1) if language_end >= 0 else -1
        return body[translated_end + 1:] if translated_end >= 0 else None
    return None
