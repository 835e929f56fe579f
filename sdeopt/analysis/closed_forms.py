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
