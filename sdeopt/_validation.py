"""Shared argument checks: every failure is a ``ValueError`` naming the parameter and value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch


def check_positive(name: str, value: float) -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise ``ValueError``."""
    v = _as_float(name, value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > 0)")
    return v


def check_nonnegative(name: str, value: float) -> float:
    """Return ``float(value)`` if it is a finite number >= 0, else raise ``ValueError``."""
    v = _as_float(name, value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number >= 0)")
    return v


def check_in_range(
    name: str, value: float, low: float, high: float, *, closed: str = "both"
) -> float:
    """Check ``low <= value <= high``; ``closed`` is "both", "left", "right" or "neither"."""
    v = _as_float(name, value)
    lo_ok = v >= low if closed in ("both", "left") else v > low
    hi_ok = v <= high if closed in ("both", "right") else v < high
    if not (math.isfinite(v) and lo_ok and hi_ok):
        lb = "[" if closed in ("both", "left") else "("
        rb = "]" if closed in ("both", "right") else ")"
        raise ValueError(f"Invalid {name}: {value!r} (must lie in {lb}{low}, {high}{rb})")
    return v


def check_int(name: str, value: int, *, minimum: int = 0) -> int:
    """Return ``value`` if it is an integer >= ``minimum`` (bools are refused)."""
    if isinstance(value, bool) or (
        not isinstance(value, (int,))
        and not (hasattr(value, "__index__") and not isinstance(value, float))
    ):
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer >= {minimum})")
    v = int(value)
    if v < minimum:
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer >= {minimum})")
    return v


def check_scales(name: str, value: float | Sequence[float]) -> float | tuple[float, ...]:
    """A noise scale: one number >= 0, or a non-empty sequence of them (one per worker)."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 1:
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            raise ValueError(
                f"Invalid {name}: {value!r} (a per-worker scale list must not be empty)"
            )
        return tuple(check_nonnegative(f"{name}[{i}]", v) for i, v in enumerate(value))
    # Anything else is one number or refused by check_nonnegative: mypy cannot narrow an open
    # Sequence by isinstance(list, tuple).
    return check_nonnegative(name, cast(float, value))


def check_device(device: str | torch.device) -> torch.device:
    """Parse a device and check that it exists on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"Invalid device: {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Invalid device: {device!r} (CUDA is not available on this machine)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Invalid device: {device!r} (use 'cpu' or 'cuda')")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Invalid device: {device!r} (MPS is not available on this machine)")
    return dev


#: The dtype of every run unless the user asks for another: from Python and from TOML alike,
#: whatever torch's own default is. float64 because the package's figures are compared with
#: closed forms and Monte Carlo errors down to ~1e-4 relative, which float32 round-off over
#: thousands of steps can reach; float32 (``dtype=torch.float32``) is a speed choice for GPUs.
DEFAULT_DTYPE = torch.float64


def check_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """A run's dtype: ``DEFAULT_DTYPE`` for None, else torch.float32 or torch.float64."""
    if dtype is None:
        return DEFAULT_DTYPE
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"Invalid dtype: {dtype!r} (use torch.float32 or torch.float64)")
    return dtype


def _as_float(name: str, value) -> float:
    """A Python float from a number, a numpy scalar or a 0-d tensor; never from a bool or a string."""
    if isinstance(value, (bool, str, bytes)) or (
        isinstance(value, torch.Tensor) and value.ndim != 0
    ):
        raise ValueError(f"Invalid {name}: {value!r} (must be a number)")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {name}: {value!r} (must be a number)") from None


def keyword_only(owner: str, names: Sequence[str], args: tuple, kwargs: dict) -> dict:
    """Deprecated positional arguments after a constructor's first, mapped to their names.

    Constructors take keyword arguments after their first obvious one (``FunctionProblem(fn,
    dim=3)``); positional calls written before that rule keep working for one version, with a
    ``DeprecationWarning``. Returns ``kwargs`` completed by ``args`` (in the order ``names``).
    """
    if not args:
        return kwargs
    import warnings

    if len(args) > len(names):
        raise ValueError(
            f"Invalid arguments: {owner} takes at most {len(names) + 1} positional arguments "
            f"({len(args) + 1} given); pass {', '.join(names)} by keyword"
        )
    given = dict(zip(names, args))
    twice = sorted(set(given) & set(kwargs))
    if twice:
        raise ValueError(f"Invalid {twice[0]}: given both by position and by keyword")
    warnings.warn(
        f"{owner}: pass {', '.join(given)} by keyword ({owner}(..., {next(iter(given))}=...)); "
        "positional arguments after the first go in the next version",
        DeprecationWarning,
        stacklevel=3,
    )
    return {**given, **kwargs}
