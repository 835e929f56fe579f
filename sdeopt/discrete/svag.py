r"""SVAG: the stochastic variance amplified gradient ladder of a direction method (docs/validity.md)."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, field

import torch

from sdeopt._validation import check_int
from sdeopt.discrete.base import DirectionMethod, Method, State
from sdeopt.problems import Problem
from sdeopt.random import RandomSource
from sdeopt.schedules import Constant, Schedule


@dataclass(frozen=True)
class SVAG(Method):
    r"""SVAG(ℓ): a direction method with its step divided by ℓ and its noise amplified to match.

    For a direction method :math:`x_{k+1} = x_k - \eta\,\eta_k u_k` (``DirectionMethod``: DSGD,
    DCSGD, DSignSGD), SVAG(ℓ) draws two independent directions :math:`u_{j,1}, u_{j,2}` at the
    same :math:`x_j` and steps

    .. math::

        x_{j+1} = x_j - \frac{\eta}{\ell}\,\eta_{\lfloor j/\ell \rfloor}\,
        (w_1 u_{j,1} + w_2 u_{j,2}), \qquad w_{1,2} = \frac{1 \pm \sqrt{2\ell - 1}}{2},

    so that :math:`w_1 + w_2 = 1` and :math:`w_1^2 + w_2^2 = \ell`: the combined direction
    :math:`\hat u` has the mean of :math:`u` and ℓ times its covariance. ℓ steps of SVAG(ℓ) span
    the SDE time :math:`\eta` of one step of the method, with (x held fixed) the same mean move
    :math:`\eta\,\bar u` and the same covariance :math:`\eta^2 \operatorname{Cov} u`, while the
    k-th cumulant of that move, :math:`\ell^{1-k}(w_1^k + w_2^k)\,\eta^k \kappa_k(u)`, is
    :math:`O(1/\ell)` for every :math:`k \ge 3`. For a direction with finite moments SVAG(ℓ) is
    therefore a weak order 1 scheme, of step :math:`\eta / \ell`, for the method's first-order
    SDE :math:`dX = -\eta_t \bar u\,dt + \eta_t \sqrt{\eta}\, S^{1/2} dW`,
    :math:`S = \operatorname{Cov} u` (Li, Malladi & Arora 2021, Sec. 4): a statistic that moves
    along ℓ = 1, 2, 4, 8, ... shows that the first-order SDE does not model the method at
    ℓ = 1, without solving an SDE (``sdeopt.analysis.validity_ladder``). SVAG(1) is the method
    itself, draw for draw: it never draws the second direction.

    The schedule stays aligned in SDE time: the method's factor :math:`\eta_k` applies at SVAG
    steps :math:`\ell k, \dots, \ell k + \ell - 1`. Run SVAG(ℓ) for ℓ times the method's steps
    to reach the same time; the trajectory's ``time`` coordinate (step × lr) is then the
    method's.

    Shapes: x (B, d); each direction (B, d).

    Args:
        method: the direction method (its ``lr`` is :math:`\eta`).
        ell: ℓ, an integer >= 1 (keyword). Real ℓ >= 1 would keep the two moments too, but
            the method's schedule and its step count are aligned only for whole ℓ.

    Attributes:
        lr: :math:`\eta / \ell`. schedule: the method's, stretched by ℓ.
        n_workers: the method's (the chunking's memory estimate).

    References:
        Li, Malladi & Arora, "On the validity of modeling SGD with stochastic differential
        equations (SDEs)", NeurIPS 2021, arXiv 2102.12470, Sec. 4 (SVAG and its convergence to the SDE);
        docs/validity.md.

    Example:
        >>> import sdeopt as so
        >>> opt = so.discrete.DSGD(lr=0.1, n_workers=4, noise=so.noise.Gaussian(1.0))
        >>> svag = so.discrete.SVAG(opt, ell=4)
        >>> svag.lr
        0.025
        >>> traj = so.discrete.simulate(svag, so.problems.Quadratic(diag=[1.0, 4.0]), [1.0, 1.0],
        ...                             n_steps=4 * 100, n_runs=1000)
        >>> float(traj.time[-1])  # the SDE time of the method's 100 steps
        10.0
    """

    method: DirectionMethod
    _: KW_ONLY
    ell: int
    lr: float = field(init=False)
    schedule: Schedule = field(init=False)
    n_workers: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.method, DirectionMethod):
            raise ValueError(
                f"Invalid method: {self.method!r} (must be a direction method "
                "x - lr·u, an sdeopt.discrete.DirectionMethod such as DSGD, DCSGD or DSignSGD)"
            )
        ell = check_int("ell", self.ell, minimum=1)
        object.__setattr__(self, "ell", ell)
        object.__setattr__(self, "lr", self.method.lr / ell)
        schedule = self.method.schedule
        if ell > 1 and not isinstance(schedule, Constant):
            schedule = _Stretched(inner=schedule, ell=ell)
        object.__setattr__(self, "schedule", schedule)
        object.__setattr__(self, "n_workers", self.method.n_workers)
        super().__post_init__()

    @property
    def weights(self) -> tuple[float, float]:
        r""":math:`(w_1, w_2) = ((1 + \sqrt{2\ell - 1})/2, (1 - \sqrt{2\ell - 1})/2)`."""
        root = math.sqrt(2 * self.ell - 1)
        return (1.0 + root) / 2.0, (1.0 - root) / 2.0

    @property
    def couplable(self) -> bool:
        """The method's at ℓ = 1; two draws per step otherwise (never couplable)."""
        return self.ell == 1 and self.method.couplable

    @property
    def increment_law(self) -> dict:
        return self.method.increment_law

    def check_problem(self, problem: Problem) -> None:
        self.method.check_problem(problem)

    def direction(self, problem: Problem, x: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        r""":math:`\hat u = w_1 u_1 + w_2 u_2` for all runs, (B, d); the method's own u at ℓ = 1."""
        u1 = self.method.direction(problem, x, rng)  # (B, d)
        if self.ell == 1:
            return u1
        u2 = self.method.direction(problem, x, rng)  # (B, d)
        w1, w2 = self.weights
        return torch.add(u1.mul(w1), u2, alpha=w2)

    def step(self, problem: Problem, state: State, k: int, lr_k: float, rng: RandomSource) -> State:
        if self.ell == 1:  # bitwise the method's step
            return self.method.step(problem, state, k, lr_k, rng)
        u = self.direction(problem, state.x, rng)  # (B, d)
        return State(x=torch.add(state.x, u, alpha=-lr_k))


@dataclass(frozen=True, kw_only=True)
class _Stretched(Schedule):
    r"""The schedule :math:`j \mapsto \eta_{\lfloor j / \ell \rfloor}` of ``inner``: each factor
    held for ℓ steps (SVAG's steps in the method's SDE time)."""

    inner: Schedule
    ell: int
    name = "stretched"

    def _factor(self, k: torch.Tensor) -> torch.Tensor:
        factor = self.inner(torch.div(k, self.ell, rounding_mode="floor"))
        assert isinstance(factor, torch.Tensor)  # a tensor in, a tensor out
        return factor
