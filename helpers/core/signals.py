"""The signals that ask a run to stop (SIGTERM, SIGUSR1), and loader workers that leave them to their parent."""

from __future__ import annotations

import signal

# Slurm and preemptible VMs send SIGTERM before a kill; Slurm sends SIGUSR1 ahead of a time limit when asked.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


def ignore_stop_signals(worker: int | None = None) -> None:
    """Ignore the stop signals in this process: a data loader's worker (its ``worker_init_fn``), which Slurm
    signals with the whole job, and whose death would end a training before it saves. The training process
    stops at its next step and ends its workers itself; a worker whose parent is gone ends on its own."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
