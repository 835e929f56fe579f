"""Distributed SignSGD: the average of the workers' gradient signs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdeopt._rng import RandomSource
from sdeopt.discrete.base import DirectionMethod
from sdeopt.noise import SymmetricCDFNoise
from sdeopt.problems import Problem


@dataclass(frozen=True, kw_only=True)
class DSignSGD(DirectionMethod):
    r"""Distributed SignSGD with averaged (not majority-vote) signs.

    Update (MATH.md §5): x_{k+1} = x_k - (eta eta_k / N) Σ_i sign(g_i), g_i = ∇f_i(x_k) + σ_i T_i,
    coordinate-wise, with sign(0) = 0.

    Exact shortcut: given x, sign(g_ij) is +1 with probability p⁺ = F(∇_j f_i / σ_i) and -1
    with probability p⁻ = F(-∇_j f_i / σ_i), F the CDF of the noise's standard law. One uniform
    U per worker and coordinate gives the sign as [U < p⁺] - [U >= 1 - p⁻], so no heavy-tailed
    draw is ever made (laws with a CDF: Gaussian, Student-t for every nu > 0).

    SDE models (MATH.md §6): m_i(x) = 2 F(∇f_i/σ_i) - 1, ū = (1/N) Σ_i m_i,
    S = diag((1/N²) Σ_i (1 - m_i²)); first order dX = -eta_t ū dt + eta_t sqrt(eta) S^{1/2} dW.
    Well defined for every nu > 0 since |m| <= 1 (Gaussian: m = erf(∇f/(√2σ)); nu = 1:
    m = (2/π) arctan(∇f/σ)).

    Shapes: x (B, d); sign probabilities (B, N or 1, d); uniforms (B, N, d).

    References:
        Compagnoni et al. 2025, arXiv 2502.17009 and arXiv 2411.15958 (SDEs of SignSGD and
        DSignSGD, heavy-tailed noise); MATH.md §5, §6.

    Example:
        >>> import sdeopt as so
        >>> opt = so.discrete.DSignSGD(lr=0.01, n_workers=8, noise=so.noise.StudentT(nu=1.5))
        >>> traj = so.discrete.simulate(opt, so.problems.Quadratic(diag=[1.0, 4.0]), [1.0, 1.0],
        ...                             n_steps=100, n_runs=1000)
    """

    def direction(self, problem: Problem, x: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        n = self.n_workers
        if self.shortcuts and isinstance(self.noise, SymmetricCDFNoise):
            grads = problem.worker_grads(x)  # (B, N or 1, d)
            p_plus, p_minus = self.noise.sign_probabilities(grads, n)
            # The inversion's (1-q)^N >= 2^-N underflows past ~149 workers in float32.
            if (p_plus.shape[1] == 1 and not isinstance(self.noise.scale, tuple) and self.noise.scale > 0
                    and n <= 100):
                # Every worker has the same sign law and no atom at 0: the number of +1 signs
                # is Binomial(N, p⁺), drawn from one uniform per coordinate.
                plus = binomial_inverse_cdf(p_plus[:, 0], n, rng.uniform(x.shape[-1]))  # (B, d)
                return (2.0 * plus - n) / n
            u = rng.uniform(n, x.shape[-1])  # (B, N, d)
            plus = (u < p_plus).sum(dim=1)  # (B, d) int
            minus = (u >= 1.0 - p_minus).sum(dim=1)  # (B, d) int
            return (plus - minus).to(x.dtype) / n
        g = self.noise.oracle(problem, x, n, rng)  # (B, N, d)
        return torch.sign(g).mean(dim=1)


def binomial_inverse_cdf(p: torch.Tensor, n: int, u: torch.Tensor) -> torch.Tensor:
    """Binomial(n, p) draws by inversion, X = #{j < n : P(Bin <= j) <= u}, elementwise.

    Exact up to the rounding of the running CDF (about n ulps). The pmf recursion runs on
    q = min(p, 1 - p) <= 1/2, so that the ratio q/(1-q) <= 1 and (1-q)^n >= 2^-n never
    underflow; draws for p > 1/2 are reflected, X = n - Bin(n, 1 - p).

    Args:
        p: success probabilities, any shape. n: trials (>= 1). u: uniforms on [0, 1), shape of p.
    Returns:
        Counts as floats, shape and dtype of p.
    """
    flip = (p > 0.5).to(p.dtype)
    q = torch.minimum(p, 1.0 - p)
    ratio = q / (1.0 - q)
    pmf = (1.0 - q).pow_(n)  # P(X = 0)
    cdf = pmf.clone()
    count = (u >= cdf).to(p.dtype)
    for j in range(n - 1):
        pmf.mul_(ratio).mul_((n - j) / (j + 1))  # P(X = j + 1)
        cdf.add_(pmf)
        count.add_(u >= cdf)
    return count.add_(flip * (n - 2.0 * count))  # n - count where reflected
