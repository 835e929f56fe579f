"""``FunctionProblem``: any objective written in torch, differentiated by ``torch.func``."""

from __future__ import annotations

import torch

from sdeopt._jsonable import REPRODUCIBLE, callable_config
from sdeopt._validation import check_int, keyword_only
from sdeopt.problems.base import (
    Problem,
    _as_float_finite,
    _as_vector,
)

# ---------------------------------------------------------------------------------------------
# User functions
# ---------------------------------------------------------------------------------------------


class FunctionProblem(Problem):
    r"""Any objective written in torch: ``f = fn(x)`` for a single x of shape (d,).

    ``loss = vmap(fn)``, ``grad = vmap(grad(fn))`` and ``hvp(x, v) = vmap(jvp(grad(fn), x, v))``
    (forward-over-reverse, :math:`\nabla^2 f(x)\, v` without forming the Hessian), all by
    ``torch.func``. ``fn`` must therefore be vmappable: pure torch operations, no ``.item()``,
    no data-dependent Python control flow, no in-place changes of its input. Tensors captured
    in ``fn``'s closure are not moved by ``to(device, dtype)``. Homogeneous.

    Args:
        fn: callable mapping a (d,) tensor to a 0-dim tensor.
        dim: :math:`d \ge 1`.
        minimizer: (d,) a known minimiser, or None.
        min_value: f(minimizer), or None (computed from ``fn`` when a minimiser is given).

    Example:
        >>> prob = FunctionProblem(lambda x: (x ** 2).sum() + x[0] * x[1], dim=2)
        >>> prob.hvp(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
        tensor([[2., 1.]])

    References:
        PyTorch ``torch.func`` documentation (vmap, grad, jvp; "Jacobians, Hessians, hvp").
    """

    def __init__(self, fn, *args, **kwargs) -> None:
        kwargs = keyword_only("FunctionProblem", ("dim", "minimizer", "min_value"), args, kwargs)
        unknown = sorted(set(kwargs) - {"dim", "minimizer", "min_value"})
        if unknown:
            raise ValueError(f"Invalid {unknown[0]}: {kwargs[unknown[0]]!r} (not a parameter)")
        if "dim" not in kwargs:
            raise ValueError("Invalid dim: missing (FunctionProblem(fn, dim=d))")
        self._init(fn, **kwargs)

    def _init(self, fn, *, dim: int, minimizer=None, min_value: float | None = None) -> None:
        if not callable(fn):
            raise ValueError(f"Invalid fn: {fn!r} (must be callable)")
        self.dim = check_int("dim", dim, minimum=1)
        self.fn = fn
        try:
            out = fn(torch.zeros(self.dim, dtype=torch.float64))
        except Exception as exc:  # the user's function failed: say so at construction
            raise ValueError(
                f"Invalid fn: {fn!r} (calling it on zeros({self.dim}) raised "
                f"{type(exc).__name__}: {exc})"
            ) from exc
        if not isinstance(out, torch.Tensor) or out.ndim != 0:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"Invalid fn: {fn!r} (must return a 0-dim tensor, got {shape})")
        if minimizer is not None:
            self.minimizer = _as_vector("minimizer", minimizer, self.dim)  # (d,)
        if min_value is not None:
            self.min_value = _as_float_finite("min_value", min_value)
        elif self.minimizer is not None:
            self.min_value = float(fn(self.minimizer))
        self._loss = torch.func.vmap(fn)
        self._grad = torch.func.vmap(torch.func.grad(fn))
        self._hvp = torch.func.vmap(lambda x, v: torch.func.jvp(torch.func.grad(fn), (x,), (v,))[1])
        try:  # runs are batched with vmap: a function that leaves torch (.item(), numpy) cannot be
            self._grad(torch.zeros(2, self.dim, dtype=torch.float64))
        except Exception as exc:
            raise ValueError(
                f"Invalid fn: {fn!r} (its gradient must batch with torch.func.vmap; "
                f"use torch operations only, no .item() or numpy: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''})"
            ) from exc

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self._loss(x)  # (B,)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self._grad(x)  # (B, d)

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._hvp(x, v)  # (B, d)

    def config(self) -> dict:
        """The type, dim and f by its qualified name, marked ``"reproducible": False``: f is code,
        which a config cannot hold (a lambda cannot even be found again by its name)."""
        cfg = super().config()
        cfg["fn"] = callable_config(self.fn)
        cfg["min_value"] = self.min_value
        cfg[REPRODUCIBLE] = False
        return cfg
