"""Safe writing: every file the project writes goes through :func:`atomic_write`, :func:`append_text` or
:func:`staged_folder`.

A target that cannot be written without loss (a name ending with a separator,
a folder, a read-only file) is refused before anything is written
(:func:`output_file`). A write that fails (a full disk, a quota, no permission) leaves what was there
before and no temporary file, and stops with one sentence naming the file and
the free space left. Also the reader of a run's ``metrics.jsonl``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from helpers.core.errors import UserError

# The errors a write meets when space runs out; their message says how much is left.
_OUT_OF_SPACE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
                 errno.EFBIG: "the file is too large for its file system"}


class WriteFailed(UserError):
    """A file could not be written; the previous version of it (if any) is untouched."""


def write_failure(path: str | Path, error: OSError, kept: str) -> WriteFailed:
    """The one sentence for a failed write: the file, why, the space left, and what survived (``kept``)."""
    path = Path(path)
    if error.errno in _OUT_OF_SPACE:
        reason = f"{_OUT_OF_SPACE[error.errno]} ({_free_space(path)})"
    else:
        reason = error.strerror or str(error) or type(error).__name__
    return WriteFailed(f"could not write {path}: {reason}; {kept}")


def _kept(path: Path, existed: bool) -> str:
    return f"the previous {path.name} is intact" if existed else "nothing was left behind"


def _free_space(path: Path) -> str:
    """How much space is free on the file system holding ``path``, in words (``"1.5 MiB free on /tmp"``)."""
    place = Path(os.path.abspath(path))
    while not place.exists() and place != place.parent:
        place = place.parent
    mount = place
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        free = shutil.disk_usage(place).free
    except OSError:
        return "free space unknown"
    return f"{size_words(free)} free on {mount}"


def size_words(size: float) -> str:
    """A number of bytes in words: ``"512 bytes"``, ``"1.5 MiB"``, ``"12.3 GiB"``."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{size:.0f} bytes" if unit == "bytes" else f"{size:.1f} {unit}"


class _Recording:
    """A file handle that keeps the OSError of a failed write: ``torch.save`` turns it into a RuntimeError."""

    def __init__(self, handle):
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def output_file(path: str | Path) -> Path:
    """``path`` as a file about to be written, or one sentence when writing it would lose something or fail
    half-way: a name that ends with a separator (``out.csv/`` would replace ``out.csv``), a folder, a
    read-only file (replaced, it would come back writable) or a parent that is a file."""
    text = os.fspath(path)
    if text.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
        raise UserError(f"{text} ends with a path separator: give the name of the file to write")
    path = Path(text)
    if path.is_dir():
        raise UserError(f"{path} is a folder: give the name of the file to write in it")
    if path.exists() and not (os.access(path, os.W_OK) and path.stat().st_mode & 0o222):
        raise UserError(f"{path} is read-only; refusing to replace it (make it writable, or write elsewhere)")
    parent = next((folder for folder in path.parents if folder.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is a file, not a folder")
    return path


def atomic_write(path: str | Path, write, check=None) -> None:
    """Write a file through ``write(handle)`` so that a crash leaves either the old file or the new one.

    The bytes go to a temporary file beside the target, are flushed to disk,
    and the temporary file is renamed over the target; the folder is synced so
    the rename itself survives a power cut. A failed write (a full disk)
    raises :class:`WriteFailed` and leaves no temporary file. ``check(temporary
    path)``, when given, reads the finished file before the rename: whatever it
    raises leaves the target as it was and no temporary file.
    """
    path = output_file(path)
    existed = path.exists()
    tmp = _temporary(path, "tmp")
    handle = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as raw:
            handle = _Recording(raw)
            write(handle)
            raw.flush()
            os.fsync(raw.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)  # first, so that the message counts the space it held as free
        failed = error if isinstance(error, OSError) else handle and handle.error
        if failed is None:
            raise
        raise write_failure(path, failed, _kept(path, existed)) from None
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return  # some file systems do not let a folder be opened; the rename is done anyway
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def _temporary(path: Path, kind: str) -> Path:
    """The temporary file beside ``path`` that this process writes (``kind``: tmp, link) before renaming it."""
    return path.with_name(f".{path.name}.{kind}{os.getpid()}")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files in ``folder`` that :func:`atomic_write` and :func:`atomic_link` of a process
    that is gone left behind (a kill during a save); returns them. Those of a live process are kept."""
    removed = []
    for path in Path(folder).glob(".*.*[0-9]"):
        match = re.fullmatch(r"\..+\.(?:tmp|link)(\d+)", path.name)
        if match and path.is_file() and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (this one's own counts as gone: it writes nothing yet)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (a number too large for one is none either)
        return False
    except PermissionError:  # another user's
        return True
    return True


def atomic_link(source: str | Path, path: str | Path) -> None:
    """Make ``path`` the same file as ``source``, atomically: a hard link where the disk has them (no bytes are
    written again), else a copy through :func:`atomic_write` (a mounted Google Drive, for one)."""
    source, path = Path(source), output_file(path)
    tmp = _temporary(path, "link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        with open(source, "rb") as original:
            atomic_write(path, lambda handle: shutil.copyfileobj(original, handle))
        return
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` for text (CSV, JSON, YAML outputs)."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to a log file and sync it; a failed append is cut off again, so no record is left half written."""
    path = Path(path)
    existed = path.exists()
    try:
        with open(path, "ab", buffering=0) as handle:
            size = handle.seek(0, os.SEEK_END)
            try:
                data = memoryview(text.encode("utf-8"))
                while data:
                    data = data[handle.write(data):]
                os.fsync(handle.fileno())
            except OSError:
                handle.truncate(size)
                raise
    except OSError as error:
        raise write_failure(path, error, _kept(path, existed)) from None


@contextmanager
def staged_folder(out: str | Path):
    """Build a folder beside ``out`` and rename it into place when the block ends.

    A failure inside the block removes the partial copy and leaves ``out`` as
    it was; running out of space says so in one sentence (:class:`WriteFailed`).
    """
    out = Path(out)
    existed = out.exists()
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if error.filename is not None and not Path(os.path.abspath(os.fsdecode(error.filename))).is_relative_to(
                Path(os.path.abspath(staging))):
            raise  # reading a source failed, not writing the copy
        raise write_failure(out, error, _kept(out, existed)) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (a half-written last line, from a kill, is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
