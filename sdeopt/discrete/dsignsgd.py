"""Distributed SignSGD: the average of the workers' gradient signs."""

from __future__ import annotations

import functools
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
    (per-worker CDF evaluations measured slower than the draws).

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
        """All N workers share one sign law with no atom at 0: the minority sign (that of -∇f)
        has probability tail = F(-|∇f|/σ) <= 1/2, computed directly (``standard_tail``), and
        the number of minority signs is Binomial(N, tail), drawn from one uniform per coordinate.

        (B, d) -> (B, d).
        """
        return _fuse.fused(_binomial_signs)(
            grad, rng.uniform(grad.shape[-1]), self.noise, self.n_workers
        )


def _binomial_signs(
    grad: torch.Tensor, u: torch.Tensor, noise: SymmetricCDFNoise, n: int
) -> torch.Tensor:
    r"""The average of n signs whose minority count X is Binomial(n, F(-|∇f|/σ)), from uniforms
    u: :math:`s (n - 2X)/n`, s the sign of ∇f (+ at +0, - at -0, where the law is symmetric).
    (B, d) -> (B, d); ~23 elementwise passes for n = 8 after the tail (Gaussian: 4 more)."""
    tail = noise.standard_tail(grad, cast(float, noise.scale))  # F(-|∇f|/σ) <= 1/2
    count = minority_count(tail, n, u, overwrite=True)  # X, in u's buffer; tail's is free
    one = _constants(grad.dtype, grad.device, n)[0]
    sign = torch.copysign(one, grad, out=tail)
    return torch.addcmul(sign, sign, count, value=-2.0 / n, out=sign)


def binomial_inverse_cdf(p: torch.Tensor, n: int, u: torch.Tensor) -> torch.Tensor:
    r"""Binomial(n, p) draws by inversion, :math:`X = \#\{j < n : P(\mathrm{Bin} \le j) < u\}`,
    elementwise (``minority_count``; float32 or float64).

    Args:
        p: success probabilities, any shape. n: trials (>= 1). u: uniforms on [0, 1), shape of p.
    Returns:
        Counts as floats, shape and dtype of p.
    """
    reflect = torch.gt(p, 0.5, out=torch.empty_like(p))
    return binomial_count(torch.minimum(p, 1.0 - p), reflect, n, u)


def binomial_count(q: torch.Tensor, reflect: torch.Tensor, n: int, u: torch.Tensor) -> torch.Tensor:
    r"""Binomial(n, q) draws by inversion (``minority_count``), reflected (:math:`X \to n - X`)
    where ``reflect`` is 1: a draw of :math:`\mathrm{Binomial}(n, 1 - q)` is n minus one of
    :math:`\mathrm{Binomial}(n, q)`.

    Args:
        q: success probabilities in :math:`[0, 1/2]`, any shape. reflect: 0/1 floats, shape of q.
        n: trials (>= 1). u: uniforms on [0, 1), shape of q.
    Returns:
        Counts as floats, shape and dtype of q.
    """
    count = minority_count(q, n, u)
    return torch.addcmul(count, reflect, n - 2.0 * count)


def minority_count(
    q: torch.Tensor, n: int, u: torch.Tensor, *, overwrite: bool = False
) -> torch.Tensor:
    r""":math:`X \sim \mathrm{Binomial}(n, q)` by inversion from u,
    :math:`X = \#\{k < n : P(X \le k) < u\}`, elementwise, for :math:`q \le 1/2` (the minority
    count of n signs), float32 or float64.

    With :math:`p_k = P(X = k)`, :math:`C_k = P(X \le k)` and :math:`\rho = (1 - q)/q`, the
    gap of the running CDF to u in units of its last term, :math:`e_k = (C_k - u)/p_k`, obeys

    .. math::

        e_0 = 1 - \frac{u}{(1 - q)^n}, \qquad
        e_k = \frac{k\,\rho}{n - k + 1}\, e_{k-1} + 1
        \quad \Big(\frac{p_{k-1}}{p_k} = \frac{k\rho}{n-k+1}\Big),

    and :math:`X > k` iff :math:`e_k < 0`: one fused multiply-add per k and no pmf or CDF
    tensor. The count: the recursion runs on :math:`\tilde e_k = -2^m e_k` (an exact
    rescaling), so that one clamp per k both tests and counts,
    :math:`X_k = \min(\max(\tilde e_k, X_{k-1}), k + 1)`: every nonzero :math:`|e_k|` is at
    least ~:math:`2^{-49}` (float32; :math:`2^{-107}` in float64), the rounding of
    :math:`1 + (\ldots)` near 0, and every :math:`e_k < 0` is above
    :math:`-P(X > k)/P(X = k) \ge -2^n`, so with m = 60 (float32, n <= 48) or 120 (float64)
    :math:`\tilde e_k` is 0, below :math:`-n` (or :math:`-\infty`) or above n + 1 and finite,
    and the clamp gives :math:`X_{k-1}` or k + 1 exactly: two passes per k, against five for
    the pmf/CDF recursion. Float32 with n > 48 counts with a comparison and an add instead.

    Exact up to the rounding of the running CDF, a few ulps of :math:`C_k` per step, as any
    inversion: :math:`q \le 1/2` keeps :math:`(1 - q)^n \ge 2^{-n}` from underflowing (n up to
    ~149 in float32); once :math:`e_k > 0` every later :math:`e_j \ge 1`, so rounding never
    makes the count non-monotone (a tie :math:`e_k = 0`, u = :math:`C_k` to the last bit,
    counts as :math:`X \le k`); q = 0 gives :math:`\rho = \infty`, :math:`e_0 = 1 - u > 0` and
    X = 0.

    Args:
        q: probabilities in :math:`[0, 1/2]`, any shape. n: trials (>= 1).
        u: uniforms on [0, 1), shape of q.
        overwrite: q and u may be overwritten (the count is written into u's buffer): one
            new tensor instead of four, which measured faster in a step loop (a fresh
            tensor's first pass costs two to three in-place ones).
    Returns:
        X as floats, shape and dtype of q.
    """
    one, neg_big, big, bounds = _constants(q.dtype, q.device, n)
    omq = torch.sub(one, q)
    rho = torch.div(omq, q, out=q if overwrite else None)  # inf where q = 0
    e = _int_power_(omq, n)  # P(X = 0), in omq's buffer
    if big is None:  # float32, n > 48: -2^m e_k could overflow; count by comparisons
        torch.addcdiv(one, u, e, value=-1.0, out=e)  # e_0
        zero = bounds[0].new_zeros(())
        count = torch.lt(e, zero, out=u if overwrite else torch.empty_like(e))
        hit = torch.empty_like(e)
        for k in range(1, n):
            torch.addcmul(one, e, rho, value=k / (n - k + 1), out=e)
            count.add_(torch.lt(e, zero, out=hit))
        return count
    torch.addcdiv(neg_big, u, e, value=big, out=e)  # -2^m e_0
    count = torch.clamp(e, 0.0, 1.0, out=u if overwrite else None)
    for k in range(1, n):
        torch.addcmul(neg_big, e, rho, value=k / (n - k + 1), out=e)
        torch.clamp(e, min=count, max=bounds[k], out=count)
    return count


@functools.lru_cache(maxsize=64)
def _binomial_constants(dtype: torch.dtype, device: torch.device, n: int) -> tuple:
    """(1, -2^m, 2^m, (1, 2, .., n)) for ``minority_count``, the tensors 0-d on device (an
    input of addcdiv, addcmul or clamp that costs no pass of its own): m = 60 in float32 (n <=
    48; beyond, 2^m is None and the count is by comparisons) and 120 in float64."""
    if dtype == torch.float64:
        big: float | None = 2.0**120
    elif dtype == torch.float32:
        big = 2.0**60 if n <= 48 else None
    else:
        raise ValueError(f"Invalid dtype: {dtype!r} (the Binomial inversion needs float32/64)")

    def const(v: float) -> torch.Tensor:
        return torch.tensor(v, dtype=dtype, device=device)

    neg_big = const(-big) if big is not None else None
    return const(1.0), neg_big, big, tuple(const(k + 1.0) for k in range(n))


def _constants(dtype: torch.dtype, device: torch.device, n: int) -> tuple:
    """``_binomial_constants``, through its cache except under torch.compile (which traces the
    function itself: its tensors become constants of the graph)."""
    if _fuse.compiling():
        return _binomial_constants.__wrapped__(dtype, device, n)
    return _binomial_constants(dtype, device, n)


def _int_power_(a: torch.Tensor, n: int) -> torch.Tensor:
    """a**n for an integer n >= 1 by repeated squaring (a float pow measured ~10x slower), in
    a's buffer (a is overwritten; one more tensor unless n is a power of 2)."""
    result = None
    while True:
        if n & 1:
            if result is None:
                result = a if n == 1 else a.clone()  # a itself when no squaring follows
            else:
                result.mul_(a)
        n >>= 1
        if not n:
            assert result is not None  # n >= 1: its top bit set it
            return result
        a.mul_(a)
