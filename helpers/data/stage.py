"""Staging a data root onto a node's fast local disk before training: one copy, reused while it is complete.

On PSC the data sits on shared storage and each job's node has a fast local
disk at ``$LOCAL``, emptied when the job ends (the next job may get another
node). ``data.stage_to: $LOCAL`` (or ``stage-data SRC DEST``) copies the data
root to ``DEST/<the root's name>`` and training reads the copy; checkpoints go
where ``run.out_dir`` says, as always. The configuration keeps ``data.root``
and ``$LOCAL`` as written, so a resume on another node stages there again.

A copy is complete when its manifest (``.hw2p2-stage.json``, written last)
lists exactly the source's files with their sizes and modification times, and
the copy's files have those sizes. Anything else is finished or redone:

* the copy is built in ``DEST/.<name>.partial`` and renamed into place after
  its manifest is written, so a job killed mid-copy leaves nothing that looks
  complete; the next run finishes that partial copy (the files already copied
  whole are kept) when it is of the same source, and starts it again otherwise;
* a copy whose source changed since (packed again, files added) is made again;
* processes staging the same copy at once (the ranks of a torchrun job) take
  turns through a lock file: one copies, the others then find it complete.

The answers beside a demo or prepared root (the answer key, Fall 2026's solution) travel along, beside the copy.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers.core.errors import UserError
from helpers.core.io import atomic_link, atomic_write_text, size_words
from helpers.core.progress import progress as progress_bar
from helpers.data.layout import answer_files, find_data_root

try:
    import fcntl
except ImportError:  # Windows: no flock; one process stages at a time there anyway
    fcntl = None

MANIFEST = ".hw2p2-stage.json"
FORMAT = "hw2p2-stage"
_MIB = 2 ** 20
_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})")  # what os.path.expandvars leaves: an unset variable


@dataclass(frozen=True)
class StagedRoot:
    """Where a data root was staged, what the copy holds, and what this call copied (0 bytes: reused)."""

    source: Path
    copy: Path
    files: int
    size: int
    copied: int
    seconds: float

    def line(self) -> str:
        holds = f"{self.files} files, {size_words(self.size)}"
        if not self.copied:
            return f"using the complete copy of {self.source} at {self.copy} ({holds})"
        return (f"staged {self.source} to {self.copy} ({holds}; copied {size_words(self.copied)} "
                f"in {self.seconds:.0f} s)")


def stage_data(source: str | Path, dest: str | Path, key: str = "DEST", announce: bool = True,
               progress: bool = True) -> StagedRoot:
    """Copy the data root ``source`` to ``dest/<its name>`` unless a complete copy is there already.

    ``dest`` may hold ``~`` and environment variables (``$LOCAL``); ``key``
    names it in messages (``data.stage_to`` when it comes from the config).
    ``announce`` prints what is copied and why a process waits.
    """
    started = time.perf_counter()
    source = find_data_root(source).resolve()
    folder = expand_folder(str(dest), key).resolve()
    copy = folder / source.name
    if copy == source or copy.is_relative_to(source) or source.is_relative_to(copy):
        raise UserError(f"{key} {folder} would put the copy of {source} on or inside the source itself; "
                        "choose a folder outside it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {key} {folder}: {error.strerror or error}") from None
    loops = link_loops(source)
    if loops:
        where, why = loops[0]
        more = f" (and {len(loops) - 1} more such link(s))" if len(loops) > 1 else ""
        raise UserError(f"cannot stage {source}: {where} {why}{more}; a copy follows links and would never end, "
                        "so remove it")
    try:
        with _one_at_a_time(folder / f".{source.name}.lock", copy, announce):
            plan = _plan(source)
            copied = 0 if is_complete(copy, plan) else _build_copy(source, copy, plan, announce, progress)
    except OSError as error:  # a folder that cannot be written or read: no space is WriteFailed, a UserError
        where = f" ({error.filename})" if error.filename else ""
        raise UserError(f"could not stage {source} to {copy}: {error.strerror or error}{where}") from None
    size = sum(size for size, _ in plan["files"].values())
    return StagedRoot(source, copy, len(plan["files"]), size, copied, time.perf_counter() - started)


def training_root(data, announce: bool = True) -> str | None:
    """Where training reads ``data.root`` (a DataConfig): its copy under ``data.stage_to``, staged or finished
    now, or the root itself when nothing is staged."""
    if not data.stage_to or data.root is None:
        return data.root
    staged = stage_data(data.root, data.stage_to, key="data.stage_to", announce=announce, progress=announce)
    if announce:
        print(staged.line(), flush=True)
    return str(staged.copy)


def evaluation_root(data) -> str | None:
    """Where evaluation and submission read ``data.root`` (a DataConfig): its copy under ``data.stage_to``
    when a complete one is there (after training in the same job), else the root itself. Nothing is copied:
    they read a tenth of what training reads, once."""
    if not data.stage_to or data.root is None:
        return data.root
    try:
        source = find_data_root(data.root).resolve()
        copy = expand_folder(data.stage_to, "data.stage_to").resolve() / source.name
    except UserError:
        return data.root  # the root itself then says what is wrong with it
    return str(copy) if is_complete(copy, _plan(source)) else data.root


def expand_folder(value: str, key: str) -> Path:
    """``value`` with ``~`` and environment variables expanded; an unset variable or an empty value is named."""
    expanded = os.path.expandvars(os.path.expanduser(value))
    unset = _VARIABLE.search(expanded)
    if unset:
        name = unset.group(1).strip("{}")
        where = " (PSC sets it inside a job only)" if name == "LOCAL" else ""
        raise UserError(f"{key} is '{value}' but the environment variable {name} is not set{where}")
    if not expanded.strip():
        raise UserError(f"{key} is empty; name the folder to stage the data to (on PSC: $LOCAL)")
    return Path(expanded)


def is_complete(copy: Path, plan: dict) -> bool:
    """Whether ``copy`` holds a finished copy of what ``plan`` lists: its manifest says so, and every file
    (the answer key beside it included) has the size the plan gives."""
    manifest = _read_manifest(copy)
    if manifest is None or not manifest.get("complete") or _plan_of(manifest) != plan:
        return False
    beside = answer_files(copy)
    return _sizes_match(copy, plan) and all(_size(beside[suffix]) == size for suffix, (size, _) in
                                            plan["answers"].items())


# ----------------------------------------------------------------------------- the copy


def link_loops(root: Path) -> list[tuple[str, str]]:
    """The links under ``root`` that a walk following links (the copy's) would follow forever, each as (its
    path under the root, why): a link to a folder that holds it, or a cycle of links. Links are followed as the
    copy follows them, and a folder is never entered twice on one path."""
    root, real_root = Path(root), os.path.realpath(root)
    found = []
    stack = [(root, real_root, frozenset({real_root}))]
    while stack:
        folder, real_folder, ancestors = stack.pop()
        try:
            with os.scandir(folder) as scan:
                entries = list(scan)
        except OSError:
            continue  # an unreadable folder is the copy's to name
        for entry in entries:
            path, shown = Path(entry.path), Path(entry.path).relative_to(root).as_posix()
            if not entry.is_symlink():
                if entry.is_dir(follow_symlinks=False):
                    real = os.path.join(real_folder, entry.name)
                    stack.append((path, real, ancestors | {real}))
                continue
            try:
                real = os.path.realpath(path, strict=True)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    found.append((shown, "is a link in a cycle of links that never reaches a file"))
                continue
            if real in ancestors:
                target = os.path.relpath(real, real_root) if Path(real).is_relative_to(real_root) else real
                found.append((shown, f"is a link to {target}, a folder that holds it"))
            elif os.path.isdir(real):
                stack.append((path, real, ancestors | {real}))
    return sorted(found)


def _plan(source: Path) -> dict:
    """What a copy of ``source`` must hold: each file's size and modification time, and the answer key's."""
    files = {}
    for folder, _, names in os.walk(source, followlinks=True):  # links are followed, as the copy follows them
        for name in names:
            path = Path(folder, name)
            if path.parent == source and name == MANIFEST:
                continue  # the source is itself a staged copy: its manifest is not data
            info = path.stat()
            files[path.relative_to(source).as_posix()] = [info.st_size, info.st_mtime_ns]
    answers = {suffix: [path.stat().st_size, path.stat().st_mtime_ns]
               for suffix, path in answer_files(source).items() if path.is_file()}
    return {"format": FORMAT, "source": str(source), "files": files, "answers": answers}


def _build_copy(source: Path, copy: Path, plan: dict, announce: bool, progress: bool) -> int:
    """Make ``copy`` complete: finish the partial copy of the same plan, or start one; the bytes copied."""
    partial = copy.with_name(f".{copy.name}.partial")
    _remove(copy)  # stale (its source changed) or broken: made again
    begun = _read_manifest(partial)
    if begun is None or _plan_of(begun) != plan:
        _remove(partial)
        partial.mkdir()
        _write_manifest(partial, plan, complete=False)
    needed = sum(size for name, (size, mtime) in plan["files"].items() if not _same(partial / name, size, mtime))
    free = shutil.disk_usage(copy.parent).free
    if needed > free:
        raise UserError(f"cannot stage {source} to {copy.parent}: the copy needs {size_words(needed)} more "
                        f"and {size_words(free)} is free there")
    if announce:
        print(f"staging {source} to {copy}: {size_words(needed)} to copy", flush=True)
    copier = _Copier(source, copy.parent, needed, progress)
    try:
        shutil.copytree(source, partial, copy_function=copier, ignore=shutil.ignore_patterns(MANIFEST),
                        dirs_exist_ok=True)
    except shutil.Error as error:
        failures = error.args[0]
        src, dst, why = failures[0]
        more = f" (and {len(failures) - 1} more files)" if len(failures) > 1 else ""
        raise UserError(f"could not copy {src} to {dst}: {why}{more}") from None
    finally:
        copier.bar.close()
    _make_writable(partial)  # copytree gives each folder its source's mode: a read-only source's would stick
    if not _sizes_match(partial, plan):
        raise UserError(f"{source} changed while it was copied to {copy}; run again to copy it anew")
    _stage_answers(source, copy, plan)
    _write_manifest(partial, plan, complete=True)
    os.replace(partial, copy)
    return copier.done


class _Copier:
    """copytree's copy function: skips the files already copied whole, counts the bytes it copies on a
    progress bar, and stops at a full disk with one sentence (the partial copy is kept for the next run)."""

    def __init__(self, source: Path, folder: Path, needed: int, progress: bool):
        self.source, self.folder, self.needed = source, folder, needed
        self.done = 0
        self.bar = progress_bar(total=max(1, -(-needed // _MIB)), desc="staging", unit="MiB", enabled=progress)

    def __call__(self, src: str, dst: str) -> str:
        want = os.stat(src)
        if _same(Path(dst), want.st_size, want.st_mtime_ns):
            return dst
        if os.path.lexists(dst):
            os.unlink(dst)  # a half-written file, or a read-only one from an earlier copy
        try:
            shutil.copy2(src, dst)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            free = size_words(shutil.disk_usage(self.folder).free)
            raise UserError(f"ran out of space staging {self.source} to {self.folder} with "
                            f"{size_words(self.needed - self.done)} left to copy and {free} free there; free some "
                            "and run again to finish it") from None
        self.done += want.st_size
        self.bar.update(self.done // _MIB - self.bar.n)
        return dst


def _stage_answers(source: Path, copy: Path, plan: dict) -> None:
    """The answer files beside ``copy`` as beside ``source`` (the answer key, Fall 2026's solution); none where
    the source has none."""
    originals = answer_files(source)
    for suffix, target in answer_files(copy).items():
        if suffix in plan["answers"]:
            atomic_link(originals[suffix], target)
        else:
            target.unlink(missing_ok=True)


@contextmanager
def _one_at_a_time(lock: Path, copy: Path, announce: bool):
    """Hold an flock on ``lock`` for the block, so that processes staging one copy take turns."""
    if fcntl is None:
        yield
        return
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if announce:
                print(f"waiting for another process staging {copy}", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


# ----------------------------------------------------------------------------- small parts


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _plan_of(manifest: dict) -> dict:
    return {key: manifest.get(key) for key in ("format", "source", "files", "answers")}


def _write_manifest(folder: Path, plan: dict, complete: bool) -> None:
    atomic_write_text(folder / MANIFEST, json.dumps({**plan, "complete": complete}))


def _sizes_match(folder: Path, plan: dict) -> bool:
    return all(_size(folder / name) == size for name, (size, _) in plan["files"].items())


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _same(path: Path, size: int, mtime_ns: int) -> bool:
    """Whether ``path`` is already a whole copy of a file of that size and time (copy2 keeps the time)."""
    try:
        info = path.stat()
    except OSError:
        return False
    return info.st_size == size and info.st_mtime_ns == mtime_ns


def _make_writable(folder: Path) -> None:
    for current, _, _ in os.walk(folder):
        mode = os.stat(current).st_mode
        if mode & stat.S_IRWXU != stat.S_IRWXU:
            os.chmod(current, mode | stat.S_IRWXU)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _make_writable(path)
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
