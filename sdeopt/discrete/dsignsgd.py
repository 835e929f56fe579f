"""Distributed SignSGD: the average of the workers' gradient signs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from sdeopt import _fuse
from sdeopt.discrete.base import METHODS, DirectionMethod
from sdeopt.noise import SymmetricCDFNoise
from sdeopt.problems import Problem
from sdeopt.random import RandomSource


@METHODS.register
@dataclass(frozen=True, kw_only=True)
class DSignSGD(DirectionMethod):
    r"""Distributed SignSGD with averaged (not majority-vote) signs.

    Update: :math:`x_{k+1} = x_k - (\eta\,\eta_k / N) \sum_i \operatorname{sign}(g_i)`,
    :math:`g_i = \nabla f_i(x_k) + \sigma_i T_i`, coordinate-wise, with
    :math:`\operatorname{sign}(0) = 0`.

    Exact shortcut: given x, :math:`\operatorname{sign}(g_{ij})` is +1 with probability
    :math:`p^+ = F(\nabla_j f_i / \sigma_i)`, F the CDF of the noise's standard law (Gaussian,
    Student-t for every :math:`\nu > 0`). When all workers share one law (a homogeneous problem,
    one scale :math:`\sigma > 0`, :math:`N \le 100`), the number of +1 signs is
    :math:`\mathrm{Binomial}(N, p^+)`, drawn by inversion from one uniform per coordinate: no
    per-worker and no heavy-tailed draw is made. Otherwise every worker's noise is drawn
    (per-worker CDF evaluations measured slower than the draws: 3x for Student-t).

    SDE models (docs/models.md): :math:`m_i(x) = 2 F(\nabla f_i / \sigma_i) - 1`,
    :math:`\bar u = \frac{1}{N} \sum_i m_i`,
    :math:`S = \operatorname{diag}\big(\frac{1}{N^2} \sum_i (1 - m_i^2)\big)`; first order

    .. math::

        dX = -\eta_t \bar u\,dt + \eta_t \sqrt{\eta}\, S^{1/2} dW.

    Well defined for every :math:`\nu > 0` since :math:`|m| \le 1` (Gaussian:
    :math:`m = \operatorname{erf}(\nabla f / (\sqrt{2} \sigma))`; :math:`\nu = 1`:
    :math:`m = (2/\pi) \arctan(\nabla f / \sigma)`).

    Shapes: x (B, d); sign probabilities (B, N or 1, d); uniforms (B, N, d).

    References:
        Compagnoni et al. 2025, arXiv 2502.17009 and arXiv 2411.15958 (SDEs of SignSGD and
        DSignSGD, heavy-tailed noise); docs/models.md.

    Example:
        >>> import sdeopt as so
        >>> opt = so.discrete.DSignSGD(lr=0.01, n_workers=8, noise=so.noise.StudentT(nu=1.5))
        >>> traj = so.discrete.simulate(opt, so.problems.Quadratic(diag=[1.0, 4.0]), [1.0, 1.0],
        ...                             n_steps=100, n_runs=1000)
    """

    @property
    def bounded(self) -> bool:
        """Every coordinate of a mean of signs lies in [-1, 1]."""
        return True

    def direction(self, problem: Problem, x: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        n = self.n_workers
        if (
            self.shortcuts
            and isinstance(self.noise, SymmetricCDFNoise)
            and not problem.heterogeneous
            and not self.noise.per_worker
            # shared: one number (mypy cannot tie the scale's type to per_worker)
            and cast(float, self.noise.scale) > 0
            and n <= 100
        ):
            return self._binomial_direction(problem.grad(x), rng)
        g = self.noise.oracle(problem, x, n, rng)  # (B, N, d)
        return torch.sign(g).mean(dim=1)

    def _binomial_direction(self, grad: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """All N workers share one sign law with no atom at 0: the minority sign (that of -∇f;
        + where ∇f = 0) has probability tail = F(-|∇f|/σ) <= 1/2, computed directly, and
        the number of minority signs is Binomial(N, tail), drawn from one uniform per coordinate.

        (B, d) -> (B, d).
        """
        return _fuse.fused(_binomial_signs)(
            grad, rng.uniform(grad.shape[-1]), self.noise, self.n_workers
        )


def _binomial_signs(
    grad: torch.Tensor, u: torch.Tensor, noise: SymmetricCDFNoise, n: int
) -> torch.Tensor:
    """The average of n signs whose minority count is Binomial(n, F(-|∇f|/σ)), from uniforms u."""
    tail, up = noise.sign_tails(grad, n)  # up = 1 where the majority sign is +
    return binomial_count(tail, up, n, u).mul_(2.0 / n).sub_(1.0)


def binomial_inverse_cdf(p: torch.Tensor, n: int, u: torch.Tensor) -> torch.Tensor:
    r"""Binomial(n, p) draws by inversion, :math:`X = \#\{j < n : P(\mathrm{Bin} \le j) \le u\}`,
    elementwise.

    Args:
        p: success probabilities, any shape. n: trials (>= 1). u: uniforms on [0, 1), shape of p.
    Returns:
        Counts as floats, shape and dtype of p.
    """
    reflect = torch.gt(p, 0.5, out=torch.empty_like(p))
    return binomial_count(torch.minimum(p, 1.0 - p), reflect, n, u)


def binomial_count(q: torch.Tensor, reflect: torch.Tensor, n: int, u: torch.Tensor) -> torch.Tensor:
    r"""Binomial(n, q) draws by inversion, reflected (:math:`X \to n - X`) where ``reflect`` is 1.

    Exact up to the rounding of the running CDF (about n ulps). The pmf recursion runs on
    :math:`q \le 1/2`, so that the ratio :math:`q/(1-q) \le 1` and :math:`(1-q)^n \ge 2^{-n}`
    never underflow (for n up to ~149 in float32); a draw of :math:`\mathrm{Binomial}(n, 1 - q)`
    is n minus one of :math:`\mathrm{Binomial}(n, q)`.
    Comparisons write 0/1 floats directly (``out=``): a bool temporary converted to float
    measured ~7x slower per count on the CPU.

    Args:
        q: success probabilities in :math:`[0, 1/2]`, any shape. reflect: 0/1 floats, shape of q.
        n: trials (>= 1). u: uniforms on [0, 1), shape of q.
    Returns:
        Counts as floats, shape and dtype of q.
    """
    ratio = q / (1.0 - q)
    pmf = _int_power(1.0 - q, n)  # P(X = 0)
    cdf = pmf.clone()
    count = torch.ge(u, cdf, out=torch.empty_like(u))
    hit = torch.empty_like(u)
    for j in range(n - 1):
        pmf.mul_(ratio).mul_((n - j) / (j + 1))  # P(X = j + 1)
        cdf.add_(pmf)
        count.add_(torch.ge(u, cdf, out=hit))
    return count.addcmul_(reflect, n - 2.0 * count)  # n - count where reflected


def _int_power(a: torch.Tensor, n: int) -> torch.Tensor:
    """a**n for an integer n >= 1 by repeated squaring (a float pow measured ~10x slower)."""
    result = None
    square = a
    while True:
        if n & 1:
            result = square.clone() if result is None else result.mul_(square)
        n >>= 1
        if not n:
            assert result is not None  # n >= 1: its top bit set it
            return result
        square = square * square
