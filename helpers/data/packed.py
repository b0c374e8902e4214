"""Packed splits: all of a split's JPEG bytes in one file plus an index, for slow file systems.

On Colab's Drive or a cluster's shared storage, opening 431,550 small files
costs far more than reading them; one large file read at offsets does not.
``pack-data ROOT OUT`` writes a root whose splits are packed:

    OUT/cls_data/<split>.pack   the images' bytes, back to back
    OUT/cls_data/<split>.json   {"format": ..., "entries": [[name, offset, length, label], ...]}
    OUT/ver_data.pack, OUT/ver_data.json, OUT/val_pairs.txt, OUT/test_pairs.txt

The data layer reads such a root like any other (see ``ImageReader`` in images.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers.core.errors import UserError

FORMAT = "hw2p2-pack"


class PackedImages:
    """Random access to the images of one pack file; safe to hand to loader worker processes."""

    def __init__(self, pack: Path, entries: dict[str, tuple[int, int]], labels: dict[str, str | None]):
        self.pack = pack
        self.entries = entries
        self.labels = labels
        self._fd: int | None = None
        self._pid: int | None = None

    @classmethod
    def open(cls, index: Path) -> "PackedImages":
        try:
            content = json.loads(index.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"{index} is not a readable pack index ({error})") from None
        if content.get("format") != FORMAT:
            raise UserError(f"{index} is not a pack index written by pack-data")
        entries = {name: (offset, length) for name, offset, length, _ in content["entries"]}
        labels = {name: label for name, _, _, label in content["entries"]}
        return cls(index.with_suffix(".pack"), entries, labels)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def read(self, name: str) -> bytes:
        offset, length = self.entries[name]
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own descriptor
            self._fd, self._pid = os.open(self.pack, os.O_RDONLY), os.getpid()
        return os.pread(self._fd, length, offset)

    def __getstate__(self):
        pickled = dict(self.__dict__)
        pickled["_fd"] = pickled["_pid"] = None  # a descriptor does not cross processes
        return pickled


def write_pack(target: Path, items: list[tuple[str, bytes, str | None]]) -> None:
    """One pack and its index, inside a staged folder (see :func:`staged_folder`), which makes them atomic."""
    entries = []
    offset = 0
    with open(target.with_suffix(".pack"), "wb") as handle:
        for name, data, label in items:
            handle.write(data)
            entries.append([name, offset, len(data), label])
            offset += len(data)
        handle.flush()
        os.fsync(handle.fileno())
    target.with_suffix(".json").write_text(json.dumps({"format": FORMAT, "entries": entries}))
