"""Where and how a process computes: the device (and a torchrun job's process group), the fast path on it and the
timed probe that decides it, the Runtime resolved from a configuration, and a notebook session's first step.

Imports helpers.core, helpers.data and helpers.model.
"""
