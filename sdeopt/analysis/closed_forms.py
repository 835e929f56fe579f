r"""Closed forms the package checks itself against, one function each (docs/models.md).

Every figure that quotes a closed form (the runner's summaries, the presets, the tests, the
notebooks) calls these functions; none restates a formula.

``stationary_loss``: the stationary :math:`\mathbb E f` of DSGD and DCSGD (identity or RandK
compression) on a diagonal quadratic :math:`f(x) = \sum_j \lambda_j (x_j - c_j)^2 / 2` under
additive noise with finite per-coordinate variance :math:`v_i` (worker :math:`i`), for the
discrete chain, for each SDE model, and for the Euler–Maruyama scheme that integrates an SDE
model with step :math:`h` (the solver's own bias, beside the model's).

Derivation. With :math:`\bar v = \frac1N\sum_i v_i` and :math:`\omega = d/k - 1` for RandK
(:math:`0` without compression), one step's covariance has diagonal
:math:`S_{jj}(x) = \omega\,\lambda_j^2 (x_j - c_j)^2/N + (1 + \omega)\,\bar v / N`
(docs/models.md). Each coordinate's second moment :math:`m_j = \mathbb E (x_j - c_j)^2` then
obeys a linear recursion whose fixed point is

.. math::

    m_j = \frac{\eta\,(1 + \omega)\,\bar v / N}{2 a_j - a_j^2 h - \eta\,\omega\,\lambda_j^2 / N},
    \qquad \mathbb E f = \sum_j \lambda_j m_j / 2,

where :math:`a_j` is the drift's rate and :math:`h` the step: the discrete chain is
:math:`a_j = \lambda_j`, :math:`h = \eta`; an SDE model is :math:`h \to 0` with
:math:`a_j = \lambda_j (1 - s\,\eta\lambda_j/2)`, :math:`s` the sign of its
:math:`(\eta/2)(\nabla\bar u)\bar u` drift term (``MODELS``: :math:`0` first order, :math:`-1`
second order, :math:`+1` curvature); Euler–Maruyama on a model takes that :math:`a_j` with
:math:`h = \eta / \text{substeps}`. The curvature model's fixed point equals the chain's:
:math:`2\lambda(1 - \eta\lambda/2) = 2\lambda - \eta\lambda^2`. A non-positive denominator
means the second moment grows without bound (mean-square instability): the value is ``inf``.
"""

from __future__ import annotations

import math

import torch

from sdeopt.compressors import Identity, RandK
from sdeopt.discrete import DCSGD
from sdeopt.dynamics import MODELS
from sdeopt.noise import ScaledSymmetricNoise
from sdeopt.problems import Quadratic
from sdeopt.schedules import Constant


def stationary_loss(
    method, problem, model: str = "discrete", *, substeps: int | None = None
) -> float | None:
    r"""Stationary :math:`\mathbb E f` of DSGD / DCSGD (+RandK) on a diagonal quadratic (module
    doc).

    Args:
        method: a ``DCSGD`` (or ``DSGD``) with a constant schedule, no clipping or
            normalisation, an identity or RandK compressor and a finite-variance
            ``ScaledSymmetricNoise``.
        problem: a ``Quadratic`` with a diagonal Hessian.
        model: "discrete" (the chain itself) or an SDE model name ("first_order",
            "second_order", "curvature").
        substeps: for an SDE model, the stationary value of Euler–Maruyama with step
            :math:`h = \mathrm{lr} / \mathrm{substeps}` instead of the model's own (the solver's
            bias is the difference).

    Returns:
        The value, ``inf`` when the chain or scheme is mean-square unstable, or None when the
        closed form does not apply to (method, problem).
    """
    if model != "discrete" and model not in MODELS:
        raise ValueError(f"Invalid model: {model!r} (choose from discrete, {', '.join(MODELS)})")
    if model == "discrete" and substeps is not None:
        raise ValueError(f"Invalid substeps: {substeps!r} (the discrete chain has no solver step)")
    noise = getattr(method, "noise", None)
    if not (
        isinstance(method, DCSGD)
        and isinstance(noise, ScaledSymmetricNoise)
        and noise.finite_variance
        and isinstance(problem, Quadratic)
        and problem.diag is not None
        and isinstance(method.schedule, Constant)
        and method.normalize is None
        and method.clip is None
        and not method.worker_clipped
        and isinstance(method.compressor, (Identity, RandK))
    ):
        return None
    d, n, lr = problem.dim, method.n_workers, method.lr
    omega = method.compressor.omega(d)
    grads = problem.worker_grads(torch.zeros(1, d, dtype=torch.float64))  # (1, 1, d)
    mean_var = float(noise.worker_variance(grads, n).expand(1, n).mean())  # v̄ = mean_i σ_i² Var T
    if model == "discrete":
        sign, h = 0.0, lr  # the chain is Euler's recursion with step eta on the bare rate λ
    else:
        sign, h = MODELS[model], (0.0 if substeps is None else lr / substeps)
    total = 0.0
    for lam in problem.diag.double().tolist():
        a = lam * (1.0 - sign * lr * lam / 2.0)
        denom = 2.0 * a - a * a * h - lr * omega * lam * lam / n
        if denom <= 0.0:
            return math.inf
        total += lam * lr * (1.0 + omega) * mean_var / n / denom / 2.0
    return total


def kolmogorov_expectation(
    sde, g, x0: float, t_end: float, *, lo: float, hi: float, n_x: int = 2001, n_t: int = 400
) -> float:
    r""":math:`\mathbb E\, g(X_T \mid X_0 = x_0)` of a one-dimensional SDE with diagonal noise, free of
    Monte Carlo and of SDE-solver error: the backward Kolmogorov equation
    :math:`u_t = b\, u_x + \tfrac12 G^2 u_{xx}`, :math:`u(0) = g`, solved by Crank–Nicolson on
    ``n_x`` points of [lo, hi] (central differences, u held at the ends: choose the interval so
    that no mass reaches them and the drift points inwards there) over ``n_t`` time steps, and
    read at x0 by a cubic spline. The reference of the weak-order tests and of
    ``benchmarks/bench_accuracy.py``; its own error is second order in both grids.

    Args:
        sde: a one-dimensional ``SDE`` (schedule factor 1), diagonal noise.
        g: numpy function of x (n,) -> (n,).
        x0, t_end: the start and the horizon T.
        lo, hi: the truncated domain; n_x, n_t: the grids.
    """
    import numpy as np
    from scipy import interpolate, linalg

    if sde.dim != 1 or sde.noise_type != "diagonal":
        raise ValueError(
            f"Invalid sde: dimension {sde.dim}, {sde.noise_type!r} noise (one dimension, "
            "diagonal noise)"
        )
    if not lo < x0 < hi:
        raise ValueError(f"Invalid x0: {x0!r} (must lie in (lo, hi) = ({lo}, {hi}))")
    x = np.linspace(lo, hi, n_x)
    dx, dt = x[1] - x[0], t_end / n_t
    xt = torch.tensor(x).unsqueeze(-1)
    b = sde.drift_at(xt, 1.0)[:, 0].numpy()
    a = sde.diffusion_at(xt, 1.0).g.expand_as(xt)[:, 0].numpy() ** 2
    lower, diag, upper = a / (2 * dx**2) - b / (2 * dx), -a / dx**2, a / (2 * dx**2) + b / (2 * dx)
    banded = np.zeros((3, n_x))
    banded[0, 2:] = -0.5 * dt * upper[1:-1]
    banded[1] = 1 - 0.5 * dt * diag
    banded[2, :-2] = -0.5 * dt * lower[1:-1]
    banded[1, [0, -1]] = 1.0
    u = g(x)
    for _ in range(n_t):
        rhs = u.copy()
        rhs[1:-1] += 0.5 * dt * (lower[1:-1] * u[:-2] + diag[1:-1] * u[1:-1] + upper[1:-1] * u[2:])
        u = linalg.solve_banded((1, 1), banded, rhs)
    return float(interpolate.CubicSpline(x, u)(x0))
