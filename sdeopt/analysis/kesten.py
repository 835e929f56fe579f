r"""Tail-index oracles for SGD on least squares: the Kesten equation of the discrete method and the
power-law tail of its first-order SDE (docs/equivalents.md, "Heavy tails from multiplicative
noise").

SGD with batch b on least squares with Gaussian data :math:`a \sim \mathcal N(0, K)` is the
random linear recursion :math:`e_{k+1} = M_k e_k + q_k`,
:math:`M_k = I - \frac{\eta}{b} \sum_{s \le b} a_s a_s^\top`, :math:`q_k` the label-noise term.
Its stationary law has power-law tails even with light-tailed labels (Kesten 1973; Goldie 1991):
:math:`P(|e| > x) \sim c\, x^{-\alpha}` with α the positive root of
:math:`\lim_n \frac1n \log \mathbb E \lVert M_n \cdots M_1 \rVert^\alpha = 0`
(Gürbüzbalaban, Şimşekli & Zhu, ICML 2021). In one dimension (:math:`K = \lambda`) this is
:math:`\mathbb E |1 - (\eta\lambda/b)\chi^2_b|^\alpha = 1`; for isotropic data (:math:`K =
\lambda I`) the law of :math:`\lVert M u \rVert` does not depend on the unit vector u, so the
growth factors of the product are i.i.d. and the equation is
:math:`\mathbb E \lVert M e_1 \rVert^\alpha = 1` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize, stats

from sdeopt._validation import check_int, check_positive


@dataclass(frozen=True)
class KestenIndex:
    r"""The stationary tail index :math:`\alpha` of a random linear recursion.

    Attributes:
        alpha: the root (inf when the multiplier never exceeds 1 in norm: no power-law tail).
        se: its Monte Carlo standard error (0 for the exact one-dimensional quadrature).
        method: "quadrature" (d = 1) or "monte_carlo" (d > 1).
        lyapunov: :math:`\mathbb E \log \lVert M e_1 \rVert` (d = 1, isotropic) — negative for a
            stationary law; the recursion diverges otherwise.
    """

    alpha: float
    se: float
    method: str
    lyapunov: float


def _moment_1d(alpha: float, h: float, b: int) -> float:
    r""":math:`\mathbb E |1 - (h/b)\chi^2_b|^\alpha` by scipy quadrature, split at the zero
    :math:`x = b/h` of the integrand's kink."""
    law = stats.chi2(b)
    kink = b / h

    def f(x: float) -> float:
        return abs(1.0 - x / kink) ** alpha * law.pdf(x)

    left = integrate.quad(f, 0.0, kink, limit=200)[0]
    right = integrate.quad(f, kink, np.inf, limit=200)[0]
    return left + right


def kesten_tail_index(
    lr: float,
    batch_size: int = 1,
    *,
    eigenvalue: float = 1.0,
    dim: int = 1,
    n_samples: int = 1_000_000,
    seed: int = 0,
    alpha_max: float = 200.0,
) -> KestenIndex:
    r"""The tail index of the stationary iterates of SGD (lr :math:`\eta`, batch b) on least
    squares with isotropic Gaussian data :math:`\mathcal N(0, \lambda I_d)`.

    d = 1: the positive root of :math:`\mathbb E |1 - (h/b)\chi^2_b|^\alpha = 1`,
    :math:`h = \eta\lambda`, by scipy quadrature and Brent's method (exact to ~1e-10).
    d > 1: the root of :math:`\mathbb E \lVert M e_1 \rVert^\alpha = 1` (exact for isotropic data,
    see the module docstring), the expectation by Monte Carlo over ``n_samples`` draws of
    :math:`M e_1 = e_1 - (h/b) \sum_s z_s z_{s1}` with common random numbers across α, and the
    standard error of the root by the delta method.

    Args:
        lr: :math:`\eta > 0`.
        batch_size: b >= 1.
        eigenvalue: :math:`\lambda > 0`.
        dim: d >= 1.
        n_samples: Monte Carlo draws for d > 1 (>= 1000).
        seed: of the Monte Carlo draws.
        alpha_max: the largest index searched; a larger root is reported as inf with a note in
            ``method``.

    Returns:
        ``KestenIndex``. Raises ``ValueError`` when :math:`\mathbb E \log \lVert M e_1 \rVert
        \ge 0` (the recursion has no stationary law: it diverges).
    """
    lr = check_positive("lr", lr)
    b = check_int("batch_size", batch_size, minimum=1)
    lam = check_positive("eigenvalue", eigenvalue)
    d = check_int("dim", dim, minimum=1)
    h = lr * lam
    if d == 1:
        law = stats.chi2(b)
        kink = b / h
        lyapunov = (
            integrate.quad(
                lambda x: math.log(abs(1.0 - x / kink)) * law.pdf(x), 0, kink, limit=200
            )[0]
            + integrate.quad(
                lambda x: math.log(abs(1.0 - x / kink)) * law.pdf(x), kink, np.inf, limit=200
            )[0]
        )
        _check_stationary(lyapunov, lr, b)

        alpha = _root(lambda a: math.log(_moment_1d(a, h, b)), alpha_max)
        return KestenIndex(alpha, 0.0, "quadrature", lyapunov)
    n = check_int("n_samples", n_samples, minimum=1000)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, b, d))  # (n, b, d)
    me1 = -(h / b) * (z * z[:, :, :1]).sum(axis=1)  # (n, d): M e1 - e1
    me1[:, 0] += 1.0
    log_norm = np.log(np.linalg.norm(me1, axis=1))  # (n,)
    lyapunov = float(log_norm.mean())
    _check_stationary(lyapunov, lr, b)

    alpha = _root(lambda a: float(np.log(np.mean(np.exp(a * log_norm)))), alpha_max)
    if not math.isfinite(alpha):
        return KestenIndex(alpha, math.nan, "monte_carlo", lyapunov)
    # delta method: the root of the sample mean of w = exp(alpha log|Me1|) - 1; its se is
    # sd(w)/sqrt(n) over the derivative E[log|Me1| exp(alpha log|Me1|)]
    w = np.exp(alpha * log_norm)
    slope = float(np.mean(log_norm * w))
    se = float(w.std(ddof=1) / math.sqrt(n) / abs(slope))
    return KestenIndex(alpha, se, "monte_carlo", lyapunov)


def _check_stationary(lyapunov: float, lr: float, b: int) -> None:
    if not lyapunov < 0:
        raise ValueError(
            f"Invalid lr: {lr!r} (with batch_size = {b} the multiplier's log-norm has mean "
            f"{lyapunov:.3g} >= 0: the iterates diverge, no stationary law has a tail index)"
        )


def _root(phi, alpha_max: float) -> float:
    """The positive root of the convex phi (phi(0) = 0, phi'(0) < 0), or inf beyond alpha_max."""
    hi = 1.0
    while phi(hi) < 0:
        hi *= 2.0
        if hi > alpha_max:
            return math.inf
    return float(optimize.brentq(phi, hi / 2 if hi > 1 else 1e-9, hi, xtol=1e-12, rtol=1e-12))


def sde_tail_index(lr: float, batch_size: int = 1, *, eigenvalue: float = 1.0) -> float:
    r"""The tail index of the stationary law of the first-order SDE of the same SGD in one
    dimension: :math:`\alpha_{\mathrm{SDE}} = 1 + b/(\eta\lambda)`.

    The gradient :math:`a(a x - \varepsilon)` has variance :math:`(2\lambda^2 x^2 + \lambda
    \sigma^2)/b` (Isserlis), so the SDE is :math:`dX = -\lambda X\,dt + \sqrt{(\eta/b)(2\lambda^2
    X^2 + \lambda\sigma^2)}\,dW`. Its stationary density solves the zero-flux Fokker–Planck
    equation: :math:`p \propto (c x^2 + e)^{-1 - \lambda/c}` with :math:`c = 2\eta\lambda^2/b`,
    :math:`e = \eta\lambda\sigma^2/b`, so :math:`P(|X| > x) \sim x^{-(1 + 2\lambda/c)}`, any
    :math:`\sigma > 0`.
    """
    lr = check_positive("lr", lr)
    b = check_int("batch_size", batch_size, minimum=1)
    lam = check_positive("eigenvalue", eigenvalue)
    return 1.0 + b / (lr * lam)
