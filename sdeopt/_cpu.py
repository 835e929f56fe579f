"""Process-level CPU settings measured to matter for small batched loops."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

from sdeopt import _fuse

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling on 64-bit systems


def default_threads() -> int:
    """One torch thread on small machines: two threads on a 2-core machine whose other core was
    busy made a small batched loop 40x slower."""
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(cores // 2, 8)


def configure_torch(threads: int | None = None, *, fuse: bool | None = None) -> dict:
    """Set torch's CPU thread count, keep step-sized temporaries off mmap, optionally fuse.

    glibc serves every allocation above its mmap threshold (128 KiB at start) with a fresh
    mmap, so a step loop whose temporaries are a few hundred KiB pays page faults on every
    operation; raising the threshold to 32 MiB halved the cost of the Student-t CDF on
    (10,000 x 10) tensors here. Both settings are process-wide; the CLI and the benchmarks call
    this, and scripts may too.

    Args:
        threads: torch intra-op threads (default: ``default_threads()``).
        fuse: compile the elementwise hot spots with ``torch.compile`` (True), go back to eager
            (False), or leave as is (None). Off by default; see ``sdeopt._fuse`` for what it
            costs and buys.
    Returns:
        What was set: {"threads": int, "mmap_threshold": int or None, "fuse": bool}.
    """
    if fuse is not None and not isinstance(fuse, bool):
        raise ValueError(f"Invalid fuse: {fuse!r} (True, False or None)")
    n = default_threads() if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"Invalid threads: {threads!r} (must be >= 1)")
    torch.set_num_threads(n)
    threshold = None
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            if libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1:
                libc.mallopt(_M_TRIM_THRESHOLD, 4 * _MMAP_THRESHOLD_MAX)
                threshold = _MMAP_THRESHOLD_MAX
        except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
            threshold = None
    if fuse is not None:
        _fuse.set_enabled(fuse)
    return {"threads": n, "mmap_threshold": threshold, "fuse": _fuse.enabled()}
