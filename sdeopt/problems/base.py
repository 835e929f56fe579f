"""The ``Problem`` interface (objectives batched over runs) and the helpers its families share."""

from __future__ import annotations

import copy
import hashlib
import math
import reprlib
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

from sdeopt._validation import check_device, check_dtype, check_int
from sdeopt.registry import Registry

#: Problems by class name: the ``problem = {type = ...}`` of configs (sdeopt.registry).
PROBLEMS: Registry = Registry("problem")


class Problem(ABC):
    """Base class of all objectives.

    Attributes:
        dim: :math:`d`, the dimension of x.
        n_workers: the number of workers the data is split over, or None when every worker
            sees the same :math:`f` (then any number of workers is allowed).
        minimizer: (d,) tensor, a known minimiser, or None.
        min_value: the known minimum f(minimizer), or None.
    """

    dim: int
    n_workers: int | None = None
    minimizer: torch.Tensor | None = None
    min_value: float | None = None

    @abstractmethod
    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`f(x)`. Args: x (B, d). Returns: (B,)."""

    @abstractmethod
    def grad(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla f(x)`. Args: x (B, d). Returns: (B, d)."""

    @abstractmethod
    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla^2 f(x)\, v`. Args: x (B, d), v (B, d). Returns: (B, d)."""

    @property
    def heterogeneous(self) -> bool:
        """True when the workers' objectives :math:`f_i` differ."""
        return self.n_workers is not None

    @property
    def separable(self) -> bool:
        r"""True when :math:`\partial f / \partial x_j` depends on :math:`x_j` alone (a diagonal
        Hessian), so that ``hvp(x, 1)`` is the Hessian's diagonal; always true in one dimension.
        A diffusion built from :math:`\nabla f` coordinate-wise is then commutative (Milstein
        needs no Lévy areas)."""
        return self.dim == 1

    def worker_grads(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla f_i(x)` for every worker. Args: x (B, d). Returns: (B, N, d), or
        (B, 1, d) if homogeneous."""
        return self.grad(x).unsqueeze(1)

    def check_workers(self, n_workers: int) -> None:
        """Raise ``ValueError`` unless the problem can be split over ``n_workers`` workers."""
        n_workers = check_int("n_workers", n_workers, minimum=1)
        if self.n_workers is not None and n_workers != self.n_workers:
            raise ValueError(
                f"Invalid n_workers: {n_workers!r} (this {type(self).__name__} is "
                f"split over {self.n_workers} workers)"
            )

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Problem:
        """A copy whose tensors live on ``device`` in ``dtype`` (self if nothing changes)."""
        dtype = check_dtype(dtype)
        # canonical device ("cuda" -> "cuda:0"), so an unchanged device is recognised as such
        device = torch.empty(0, device=check_device(device)).device
        tensors = {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        if all(
            t.device == device and (t.dtype == dtype or not t.is_floating_point())
            for t in tensors.values()
        ):
            return self
        new = copy.copy(self)
        for k, t in tensors.items():
            setattr(new, k, t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype))
        return new

    #: Keys of ``config()`` that describe the built problem rather than construct it: a config
    #: may carry them, and ``Registry.build`` checks them against what it built.
    derived_keys: ClassVar[tuple[str, ...]] = ("dim", "n_workers")

    def config(self) -> dict:
        """A JSON-able description of the problem (for dataset attrs)."""
        return {"type": type(self).__name__, "dim": self.dim, "n_workers": self.n_workers}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _cast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` on the device and in the dtype of ``x`` (no copy when they already agree).

    Problems keep their tensors in float64 until ``to(device, dtype)`` is called; this keeps a
    forgotten ``to`` from silently promoting float32 runs to float64.
    """
    if t.dtype == x.dtype and t.device == x.device:
        return t
    return t.to(device=x.device, dtype=x.dtype)


def _short(value) -> str:
    """A bounded repr for error messages (user arrays may be large)."""
    return reprlib.repr(value)


def _as_vector(name: str, value, dim: int | None = None) -> torch.Tensor:
    """A finite, non-empty float64 vector (d,), or ``ValueError`` naming ``name``."""
    if (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value)) or (
        isinstance(value, (torch.Tensor, np.ndarray)) and value.dtype in (torch.bool, np.bool_)
    ):
        raise ValueError(
            f"Invalid {name}: {_short(value)} (must be a sequence of numbers, not booleans)"
        )
    try:
        t = torch.as_tensor(
            value.detach() if isinstance(value, torch.Tensor) else value, dtype=torch.float64
        ).clone()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"Invalid {name}: {_short(value)} (must be a sequence of numbers)"
        ) from None
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(
            f"Invalid {name}: {_short(value)} (must be a non-empty 1-D sequence, got "
            f"shape {tuple(t.shape)})"
        )
    if dim is not None and t.numel() != dim:
        raise ValueError(
            f"Invalid {name}: {_short(value)} (must have length dim={dim}, got {t.numel()})"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"Invalid {name}: {_short(value)} (entries must be finite)")
    return t.cpu()


def _tensor_config(t: torch.Tensor, max_numel: int = 1024):
    """A JSON-able form of a parameter tensor: the values if small, a summary otherwise."""
    if t.numel() <= max_numel:
        return t.detach().cpu().double().tolist()
    a = t.detach().cpu().double().contiguous().numpy()
    return {
        "shape": list(a.shape),
        "min": float(a.min()),
        "max": float(a.max()),
        "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
    }


def _as_float_finite(name: str, value) -> float:
    if isinstance(value, bool):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number)")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number)") from None
    if not math.isfinite(v):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number)")
    return v
