r"""Itô chains: :math:`x_{k+1} = x_k + \eta (b(x_k) + \delta_k) +
\eta^{(1+\gamma)/2} (\sigma(x_k) + \Delta_k) \varepsilon_k`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sdeopt._validation import check_in_range, check_nonnegative, check_positive
from sdeopt.discrete.base import METHODS, Method, State
from sdeopt.noise import StandardNormal, UnitLaw
from sdeopt.problems import Problem
from sdeopt.random import RandomSource

# The Langevin diffusion coefficient sqrt(2) (a module constant: a dataclass default is evaluated once).
SQRT2 = math.sqrt(2.0)

#: A drift or diffusion: a callable on x (B, d) -> (B, d), or None for "from the problem".
Field = Callable[[torch.Tensor], torch.Tensor]


@METHODS.register
@dataclass(frozen=True, kw_only=True)
class ItoChain(Method):
    r"""An Itô chain (Ustimenko & Beznosikov, ICLR 2024, eq. (1)).

    Update:

    .. math::

        x_{k+1} = x_k + \eta (b(x_k) + \delta_k)
        + \eta^{(1+\gamma)/2} (\sigma(x_k) + \Delta_k) \odot \varepsilon_k,

    with :math:`\varepsilon_k` i.i.d. from an isotropic unit-covariance law
    (:math:`\mathbb{E}\,\varepsilon = 0`, :math:`\mathbb{E}\,\varepsilon\varepsilon^\top = I`:
    Gaussian, Rademacher, centred Exp(1), scaled uniform, standardised Student-t with
    :math:`\nu > 2`), :math:`\sigma` diagonal (a (B, d) field or a constant),
    :math:`\gamma \in [0, 1]`, and inexact terms :math:`\delta_k`, :math:`\Delta_k`.
    SGLD is :math:`\gamma = 0`, :math:`b = -\nabla U`, :math:`\sigma = \sqrt{2}`; SGD with
    Gaussian noise of scale s is :math:`\gamma = 1`, :math:`b = -\nabla f`, :math:`\sigma = s`.

    SDE model (``sdeopt.dynamics``): :math:`dX = b(X)\,dt + \eta^{\gamma/2} \sigma(X)\,dW`
    (weak order 1 for symmetric :math:`\varepsilon` with matching third moments; the paper
    proves a W2 bound; a skewed :math:`\varepsilon` slows the convergence in law to
    :math:`O(\sqrt{\eta})` at a fixed horizon).

    Shapes: x (B, d); ε (B, d).

    Args:
        gamma: :math:`\gamma \in [0, 1]`.
        drift: :math:`b` as a callable on (B, d), or None for :math:`b = -\nabla f` of the problem.
        diffusion: :math:`\sigma` as a callable on (B, d) returning (B, d), or a constant >= 0.
        eps: the law of :math:`\varepsilon` (default standard normal).
        drift_error: :math:`\delta_k` as a callable on (B, d), or :math:`(c, \alpha)` for the
            constant vector of norm :math:`c\,\eta^\alpha` along :math:`(1, \dots, 1)/\sqrt{d}`
            (a worst-case bias of prescribed size), or None.
        diffusion_error: :math:`\Delta_k` likewise (a callable or :math:`(c, \alpha)`: the
            constant :math:`c\,\eta^\alpha` on every coordinate), or None.

    A callable is code, not data: ``config()`` records it by its qualified name,
    ``{"callable": "module.qualname", "reproducible": False}``, and marks the whole config
    ``"reproducible": False`` (the dataset attribute ``reproducible`` is then 0).

    Example:
        >>> import sdeopt as so
        >>> chain = so.discrete.ItoChain.sgld(lr=0.01)
        >>> traj = so.discrete.simulate(chain, so.problems.Quadratic(diag=[1.0]), [0.0],
        ...                             n_steps=100, n_runs=1000)
    """

    gamma: float = 0.0
    drift: Field | None = None
    diffusion: Field | float = SQRT2
    eps: UnitLaw = field(default_factory=StandardNormal)
    drift_error: Field | tuple[float, float] | None = None
    diffusion_error: Field | tuple[float, float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_in_range("gamma", self.gamma, 0.0, 1.0)
        if self.drift is not None and not callable(self.drift):
            raise ValueError(
                f"Invalid drift: {self.drift!r} (a callable on (B, d) tensors, or None for -∇f)"
            )
        if not callable(self.diffusion):
            check_nonnegative("diffusion", self.diffusion)
        if not isinstance(self.eps, UnitLaw):
            raise ValueError(
                f"Invalid eps: {self.eps!r} (must be an isotropic unit law from sdeopt.noise, "
                "e.g. StandardNormal(), Rademacher(), CenteredExponential())"
            )
        for name in ("drift_error", "diffusion_error"):
            value = getattr(self, name)
            if value is None or callable(value):
                continue
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                raise ValueError(
                    f"Invalid {name}: {value!r} (a callable, a pair (c, alpha), or None)"
                )
            check_nonnegative(f"{name}[0]", value[0])
            check_nonnegative(f"{name}[1]", value[1])

    @classmethod
    def sgld(cls, lr: float, *, temperature: float = 1.0, **kwargs) -> ItoChain:
        r"""Stochastic gradient Langevin dynamics targeting :math:`\exp(-U/T)`: :math:`\gamma = 0`,
        :math:`b = -\nabla U`, :math:`\sigma = \sqrt{2T}`."""
        return cls(
            lr=lr,
            gamma=0.0,
            diffusion=math.sqrt(2.0 * check_positive("temperature", temperature)),
            **kwargs,
        )

    @classmethod
    def sgd(cls, lr: float, *, sigma: float, **kwargs) -> ItoChain:
        r"""SGD with additive noise of scale :math:`\sigma`: :math:`\gamma = 1`,
        :math:`b = -\nabla f`."""
        return cls(lr=lr, gamma=1.0, diffusion=sigma, **kwargs)

    def drift_at(self, problem: Problem, x: torch.Tensor) -> torch.Tensor:
        """:math:`b(x)`, (B, d)."""
        return -problem.grad(x) if self.drift is None else self.drift(x)

    def diffusion_at(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\sigma(x)`, (B, d) or a (1, 1) constant."""
        if callable(self.diffusion):
            return self.diffusion(x)
        return torch.full((1, 1), float(self.diffusion), dtype=x.dtype, device=x.device)

    def _error(self, value, x: torch.Tensor, direction: str) -> torch.Tensor | float:
        if value is None:
            return 0.0
        if callable(value):
            return value(x)
        c, alpha = value
        size = c * self.lr**alpha
        return size / math.sqrt(x.shape[-1]) if direction == "drift" else size

    def step(self, problem: Problem, state: State, k: int, lr_k: float, rng: RandomSource) -> State:
        x = state.x
        eps = self.eps.sample(rng, x.shape[-1])  # (B, d)
        # Scalars ride in the ``alpha`` of fused adds: the loop makes no tensor for a constant
        # and no separate multiply (this made the step as cheap as a hand-written SGLD loop).
        if self.drift is None:
            new = torch.add(x, problem.grad(x), alpha=-lr_k)
        else:
            new = torch.add(x, self.drift(x), alpha=lr_k)
        if self.drift_error is not None:
            new = new + lr_k * self._error(self.drift_error, x, "drift")
        noise_scale = lr_k ** ((1.0 + self.gamma) / 2.0)
        if callable(self.diffusion) or self.diffusion_error is not None:
            s = self.diffusion(x) if callable(self.diffusion) else float(self.diffusion)
            if self.diffusion_error is not None:
                s = s + self._error(self.diffusion_error, x, "diffusion")
            return State(x=new.add_(s * eps, alpha=noise_scale))
        return State(x=new.add_(eps, alpha=noise_scale * float(self.diffusion)))
