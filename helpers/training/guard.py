"""What guards a run folder while a run trains in it: the lock that keeps a second training out, and the signals
that stop a run cleanly.

The lock is an OS advisory lock (``flock``) on ``train.lock`` in the run folder, which also names its holder. The
kernel releases it when the process ends, however it ends, so a lock a killed run left never blocks. It keeps
out a second training on the same machine (a cell run twice, a second terminal); machines that share a network
folder (two Colab VMs on one Drive) do not see each other's locks. Where the file system has no locks, the run
goes on after a note.

Slurm (PSC) and preemptible VMs send SIGTERM some seconds before they kill a job, and Slurm sends SIGUSR1 ahead of
its time limit when asked to (``#SBATCH --signal=USR1@120``). Either becomes a request that the Trainer honours at
its next step boundary: it saves last.pt and stops with exit status 128 + the signal's number (143 for SIGTERM,
138 for SIGUSR1), as a shell reports a process a signal ended, so that a job script still sees that the run did
not finish; ``--resume auto`` continues it.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from helpers.core.errors import Stopped, UserError
from helpers.core.signals import STOP_SIGNALS

try:
    import fcntl
except ImportError:  # Windows: no advisory locks of this kind
    fcntl = None

LOCK_FILE = "train.lock"


@contextmanager
def run_lock(folder: Path):
    """Hold ``folder``'s lock while the block runs; a folder that another live process trains in is refused in
    one sentence naming that process and its host."""
    path = Path(folder) / LOCK_FILE
    try:
        handle = open(path, "a+", encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot open {path}: {error.strerror or error}") from None
    with handle:
        if _locked(handle, folder):
            handle.seek(0)
            handle.truncate()  # the file is opened for appending: the holder's line is the only one
            since = datetime.datetime.now().isoformat(timespec="seconds")
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n")
            handle.flush()
        yield


def _locked(handle, folder: Path) -> bool:
    """Take the lock on ``handle`` without waiting: True when taken, False where the file system has no locks;
    a lock held by another process is refused."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"{folder} is in use by another training ({_holder(Path(handle.name))}); wait for it to "
                        "end or stop it, or train into another run.name") from None
    except OSError as error:
        print(f"note: {folder} cannot be locked ({error.strerror or error}); nothing keeps a second training out "
              "of it", file=sys.stderr)
        return False
    return True


def _holder(path: Path) -> str:
    """Who holds the lock, as its file says: ``process 123 on host node7 since ...``."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        return f"process {int(holder['pid'])} on host {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return "a process that has not written its name yet"


class StopSignals:
    """SIGTERM and SIGUSR1 as a request to stop at the next step boundary: ``received`` is the first one's number
    (None before any)."""

    def __init__(self):
        self.received: int | None = None

    @contextmanager
    def caught(self):
        """Catch the stop signals while the block runs, and put the handlers back after it (a notebook's kernel
        keeps its own). Outside the main thread Python cannot catch signals: nothing changes there."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
        for number in STOP_SIGNALS:
            signal.signal(number, self._receive)
        try:
            yield self
        finally:
            for number, handler in before.items():
                signal.signal(number, signal.SIG_DFL if handler is None else handler)

    def _receive(self, number: int, frame) -> None:
        if self.received is None:
            self.received = number


def stopped(number: int, saved: str) -> Stopped:
    """The stop by signal ``number`` after ``saved`` (what was saved, in words; empty: this process says nothing,
    as ranks other than 0 do under torchrun)."""
    message = f"stopped by {signal.Signals(number).name}: {saved}; continue it with --resume auto" if saved else ""
    return Stopped(message, 128 + number)
