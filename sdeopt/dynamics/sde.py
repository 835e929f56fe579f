r"""The SDE object: what the continuous model is (drift, diffusion, noise structure).

.. math::

    dX_t = b(t, X_t)\,dt + G(t, X_t)\,dW_t

(Itô), X of shape (B, d), W of dimension m.

How it is integrated lives in ``solvers.py``; where its randomness comes from is the solver's
Brownian source. Diffusions are structured so that :math:`G\,dW` costs O(d) per run where the
structure allows it:

- ``Diagonal``: :math:`G = \operatorname{diag}(g)`, g of shape (B, d) or (B, 1) (isotropic);
  :math:`m = d`.
- ``DiagonalPlusRankOne``: :math:`G G^\top = \operatorname{diag}(D) + s\, w w^\top`
  (:math:`s = \pm 1`), applied through the symmetric square root
  :math:`D^{1/2}(I + c\, q q^\top)`, :math:`q = D^{-1/2} w`,
  :math:`c = s / (1 + \sqrt{1 + s|q|^2})`, so that
  :math:`(I + c\, q q^\top)^2 = I + s\, q q^\top` (derived here; needs
  :math:`1 + s|q|^2 \ge 0`, i.e. :math:`G G^\top` PSD); :math:`m = d`.
- ``Dense``: :math:`G` of shape (B, d, m), for general covariances.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from sdeopt._validation import check_int, check_positive, keyword_only
from sdeopt.problems import Problem
from sdeopt.schedules import Constant, Schedule


class Diffusion(ABC):
    """:math:`G(t, x)` at one (t, x), in a structured form."""

    #: torchsde's name of the structure ("diagonal" or "general").
    noise_type: str

    @abstractmethod
    def apply(self, dw: torch.Tensor) -> torch.Tensor:
        r""":math:`G\,dW` for dW (B, m). Returns (B, d)."""

    @abstractmethod
    def dense(self) -> torch.Tensor:
        """:math:`G` as a (B, d, m) tensor (torchsde's general noise; tests)."""

    def cov(self) -> torch.Tensor:
        r""":math:`G G^\top`, (B, d, d) (tests and small d only)."""
        g = self.dense()
        return g @ g.transpose(-1, -2)


@dataclass
class Diagonal(Diffusion):
    r""":math:`G = \operatorname{diag}(g)`. Attributes: g (B, d) (an expanded view for isotropic
    noise)."""

    g: torch.Tensor
    noise_type = "diagonal"

    def apply(self, dw: torch.Tensor) -> torch.Tensor:
        return self.g * dw

    def dense(self) -> torch.Tensor:
        return torch.diag_embed(self.g)


@dataclass
class DiagonalPlusRankOne(Diffusion):
    r""":math:`G G^\top = \operatorname{diag}(\mathrm{diag}) + \mathrm{sign} \cdot w w^\top`,
    applied in O(d) per run.

    Attributes:
        diag: (B, d) >= 0. w: (B, d). sign: +1.0 or -1.0.
    """

    diag: torch.Tensor
    w: torch.Tensor
    sign: float
    noise_type = "general"

    def __post_init__(self) -> None:
        root = torch.sqrt(self.diag)  # (B, d)
        positive = self.diag > 0
        # Where D_j = 0 the covariance is PSD only if w_j = 0 as well: q_j = 0 there.
        q = torch.where(
            positive,
            self.w / torch.where(positive, root, torch.ones_like(root)),
            torch.zeros_like(root),
        )  # (B, d)
        qq = (q * q).sum(-1, keepdim=True)  # (B, 1)
        # Rounding can push s|q|² a hair below -1 for a singular (rank-deficient) covariance.
        c = self.sign / (1.0 + torch.sqrt(torch.clamp(1.0 + self.sign * qq, min=0.0)))  # (B, 1)
        self._root, self._q, self._c = root, q, c

    def apply(self, dw: torch.Tensor) -> torch.Tensor:
        proj = (self._q * dw).sum(-1, keepdim=True)  # (B, 1)
        return self._root * (dw + self._c * proj * self._q)

    def dense(self) -> torch.Tensor:
        eye = torch.eye(self.diag.shape[-1], dtype=self.diag.dtype, device=self.diag.device)
        inner = eye + self._c.unsqueeze(-1) * self._q.unsqueeze(-1) * self._q.unsqueeze(-2)
        return self._root.unsqueeze(-1) * inner


@dataclass
class LowRankOperator(Diffusion):
    """G given as an operator on dW (B, m) -> (B, d), with its dense form on demand: minibatch
    noise, whose G is the centred per-sample gradients, applied by one contraction per step.

    Attributes:
        apply_fn: dW (B, m) -> G dW (B, d).
        dense_fn: () -> G (B, d, m) (torchsde's general noise; tests).
    """

    apply_fn: Callable[[torch.Tensor], torch.Tensor]
    dense_fn: Callable[[], torch.Tensor]
    noise_type = "general"

    def apply(self, dw: torch.Tensor) -> torch.Tensor:
        return self.apply_fn(dw)

    def dense(self) -> torch.Tensor:
        return self.dense_fn()


@dataclass
class Dense(Diffusion):
    """A general :math:`G`, (B, d, m)."""

    g: torch.Tensor
    noise_type = "general"

    def apply(self, dw: torch.Tensor) -> torch.Tensor:
        return (self.g @ dw.unsqueeze(-1)).squeeze(-1)

    def dense(self) -> torch.Tensor:
        return self.g


def sqrt_psd(cov: torch.Tensor) -> torch.Tensor:
    """A symmetric square root of PSD matrices (B, d, d) by eigendecomposition (dense fallback)."""
    evals, evecs = torch.linalg.eigh(cov)
    return (evecs * torch.sqrt(torch.clamp(evals, min=0.0)).unsqueeze(-2)) @ evecs.transpose(-1, -2)


@dataclass
class SDE:
    r""":math:`dX = b(t, X)\,dt + G(t, X)\,dW` on the optimizer's time axis (docs/models.md,
    Notation).

    Iteration k of the discrete method sits at :math:`t_k = k \cdot \mathrm{lr}`; a schedule
    enters as the piecewise constant factor
    :math:`\eta_t = \eta_{\lfloor t / \mathrm{lr} \rfloor}`. The native solver calls
    ``drift_at`` and ``diffusion_at`` with that factor directly (no floating-point floor);
    ``drift(t, x)`` and ``diffusion(t, x)`` derive it from t, for torchsde and users.

    Args:
        dim: :math:`d`.
        drift_fn: (x (B, d), eta) -> b (B, d), eta the schedule factor at that time.
        diffusion_fn: (x (B, d), eta) -> a ``Diffusion``.
        noise_type: "diagonal" or "general" (torchsde's vocabulary).
        brownian_dim: :math:`m`, the dimension of :math:`W`.
        lr: the base learning rate (time unit of one optimizer step); 1.0 for plain SDEs.
        schedule: :math:`\eta_k`.
        model: a name ("first_order", "second_order", "curvature", or anything).
        problem: the objective whose observables are recorded, or None.
        config: a JSON-able description.
        diffusion_derivative_fn: for Milstein on diagonal noise, (x, eta) -> the elementwise
            derivative :math:`\partial g_j / \partial x_j` (B, d); None when unknown.
        rebuild: problem -> the same SDE on another copy of the problem (``solve`` uses it to
            run on the problem moved to the simulation's device and dtype once, instead of
            converting its tensors in every drift call); None for SDEs built by hand.
        observed_dim: d, the dimension of the problem's x when the state X is larger (a method
            with memory: X = (x, m)); default ``dim``.
        lift_fn: x0 (B, d) -> X0 (B, dim), the initial state of runs started at x0; needed
            when observed_dim < dim.
        observe_fn: X (B, dim) -> x (B, d), what is recorded and compared with the discrete
            method; needed when observed_dim < dim.
        sampler: for estimated moments (``sde_of(..., moments="estimated")``), (x (B, d), rng)
            -> S fresh draws of the method's direction, (S, B, d): the solver estimates the
            drift and the diffusion from them at every step; None for SDEs in closed form.
        additive: True when G does not depend on x (the Leimkuhler–Matthews and exact schemes
            need it; a weak order 2 scheme then needs no derivative of G).
        linear_fn: eta -> (rate (d,), center (d,)) when the drift is exactly
            :math:`-\mathrm{rate} \odot (x - \mathrm{center})` at schedule factor eta (a
            diagonal quadratic), else None: with ``additive`` and diagonal noise, the exact
            Ornstein–Uhlenbeck scheme applies.

    Example (a state larger than x: underdamped Langevin dynamics, X = (x, v)):
        >>> import torch
        >>> d, gamma = 2, 1.0
        >>> langevin = SDE(dim=2 * d, observed_dim=d, noise_type="general", brownian_dim=d,
        ...     drift_fn=lambda y, eta: torch.cat([y[:, d:], -y[:, :d] - gamma * y[:, d:]], -1),
        ...     diffusion_fn=lambda y, eta: Dense(torch.cat([torch.zeros(d, d), torch.eye(d)]
        ...                                            ).expand(y.shape[0], 2 * d, d)),
        ...     lift_fn=lambda x: torch.cat([x, torch.zeros_like(x)], -1),
        ...     observe_fn=lambda y: y[:, :d])
    """

    dim: int
    drift_fn: Callable[[torch.Tensor, float], torch.Tensor]
    diffusion_fn: Callable[[torch.Tensor, float], Diffusion]
    noise_type: str
    brownian_dim: int
    lr: float = 1.0
    schedule: Schedule = field(default_factory=Constant)
    model: str = "sde"
    problem: Problem | None = None
    config: dict = field(default_factory=dict)
    diffusion_derivative_fn: Callable[[torch.Tensor, float], torch.Tensor] | None = None
    rebuild: Callable[[Problem], SDE] | None = None
    observed_dim: int | None = None
    lift_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    observe_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    sampler: Callable[[torch.Tensor, Any], torch.Tensor] | None = None
    additive: bool = False
    linear_fn: Callable[[float], tuple[torch.Tensor, torch.Tensor]] | None = None
    sde_type = "ito"

    def __post_init__(self) -> None:
        check_int("dim", self.dim, minimum=1)
        if self.observed_dim is None:
            self.observed_dim = self.dim
        check_int("observed_dim", self.observed_dim, minimum=1)
        if self.observed_dim > self.dim:
            raise ValueError(
                f"Invalid observed_dim: {self.observed_dim!r} (the observed x is part of the "
                f"state: at most dim = {self.dim})"
            )
        if self.observed_dim < self.dim and (self.lift_fn is None or self.observe_fn is None):
            raise ValueError(
                f"Invalid observed_dim: {self.observed_dim!r} (a state larger than x, dim = "
                f"{self.dim}, needs lift_fn and observe_fn)"
            )
        if self.problem is not None and self.problem.dim != self.observed_dim:
            raise ValueError(
                f"Invalid problem: its dimension {self.problem.dim} is not the observed "
                f"dimension {self.observed_dim} of this SDE"
            )
        check_int("brownian_dim", self.brownian_dim, minimum=1)
        check_positive("lr", self.lr)
        if self.noise_type not in ("diagonal", "general"):
            raise ValueError(
                f"Invalid noise_type: {self.noise_type!r} (use 'diagonal' or 'general')"
            )
        if self.noise_type == "diagonal" and self.brownian_dim != self.dim:
            raise ValueError(
                f"Invalid brownian_dim: {self.brownian_dim!r} (diagonal noise needs "
                f"brownian_dim = dim = {self.dim})"
            )

    def eta(self, t: float) -> float:
        """The schedule factor at SDE time t (float64 bookkeeping, tolerant to rounding of k*lr)."""
        k = math.floor(t / self.lr + 1e-9)
        return float(self.schedule(max(k, 0)))

    def lift(self, x0: torch.Tensor) -> torch.Tensor:
        """The initial state X0 (B, dim) of runs started at x0 (B, observed_dim)."""
        return x0 if self.lift_fn is None else self.lift_fn(x0)

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        """The problem's x (B, observed_dim) in the state X (B, dim)."""
        return state if self.observe_fn is None else self.observe_fn(state)

    def drift_at(self, x: torch.Tensor, eta: float) -> torch.Tensor:
        return self.drift_fn(x, eta)

    def diffusion_at(self, x: torch.Tensor, eta: float) -> Diffusion:
        return self.diffusion_fn(x, eta)

    def drift(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """:math:`b(t, x)`, (B, d)."""
        return self.drift_fn(x, self.eta(float(t)))

    def diffusion(self, t: float, x: torch.Tensor) -> Diffusion:
        """:math:`G(t, x)` as a structured ``Diffusion``."""
        return self.diffusion_fn(x, self.eta(float(t)))

    @classmethod
    def diagonal(
        cls,
        drift: Callable[[torch.Tensor], torch.Tensor],
        diffusion: Callable[[torch.Tensor], torch.Tensor],
        dim: int,
        *,
        diffusion_derivative: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ) -> SDE:
        r"""A time-homogeneous SDE with diagonal noise from plain functions of x (B, d).

        ``diffusion(x)`` returns g (B, d), :math:`G = \operatorname{diag}(g)`. Example: the
        Ornstein–Uhlenbeck process :math:`dX = -a X\,dt + s\,dW` is
        ``SDE.diagonal(lambda x: -a * x, lambda x: torch.full_like(x, s), dim=1)``.
        """
        deriv = None if diffusion_derivative is None else (lambda x, eta: diffusion_derivative(x))
        return cls(
            dim=dim,
            drift_fn=lambda x, eta: drift(x),
            diffusion_fn=lambda x, eta: Diagonal(diffusion(x)),
            noise_type="diagonal",
            brownian_dim=dim,
            diffusion_derivative_fn=deriv,
            **kwargs,
        )

    def torchsde(self) -> TorchsdeAdapter:
        """This SDE as an object ``torchsde.sdeint`` accepts (f, g, noise_type, sde_type)."""
        return TorchsdeAdapter(self)


class TorchsdeAdapter(torch.nn.Module):
    """torchsde's interface: f(t, y) (B, d); g(t, y) (B, d) diagonal or (B, d, m) general."""

    sde_type = "ito"

    def __init__(self, sde: SDE) -> None:
        super().__init__()
        self.sde = sde
        self.noise_type = sde.noise_type

    def f(self, t, y):
        return self.sde.drift(float(t), y)

    def g(self, t, y):
        diff = self.sde.diffusion(float(t), y)
        if self.noise_type == "diagonal":  # torchsde's diagonal noise: g as (B, d)
            assert isinstance(diff, Diagonal)  # a diagonal-noise SDE's diffusion is Diagonal
            return diff.g
        return diff.dense()


_GENERATED_INIT = SDE.__init__
#: SDE's fields after ``dim``, in order: the deprecated positional form maps onto them.
_FIELDS_AFTER_DIM = tuple(f.name for f in fields(SDE) if f.init)[1:]


def _sde_init(self, dim: int, *args, **kwargs) -> None:
    _GENERATED_INIT(self, dim, **keyword_only("SDE", _FIELDS_AFTER_DIM, args, kwargs))


_sde_init.__doc__ = _GENERATED_INIT.__doc__
# Keyword-only after dim (``SDE(dim=2, drift_fn=..., ...)``); positional calls still work, with a
# DeprecationWarning, for one version.
SDE.__init__ = _sde_init  # type: ignore[method-assign]  # deliberate: replaces the generated one
