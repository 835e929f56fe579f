"""The closed forms of ``sdeopt.analysis.closed_forms`` against independent references: the
second-moment recursion iterated numerically (not solved), scipy's discrete Lyapunov solver, and
the Ornstein–Uhlenbeck law. Monte Carlo checks of the chain and the SDEs against these same
functions live in tests/test_discrete.py and tests/test_dynamics.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg

import sdeopt as so
from sdeopt.analysis.closed_forms import stationary_loss

LAM = [1.0, 3.0, 6.0]


def _iterate(a: float, h: float, lr: float, lam: float, omega: float, v: float, n: int) -> float:
    """m_{k+1} = (1 - a h)² m_k + h lr (ω λ² m_k + (1+ω) v)/N, iterated to its fixed point."""
    m = 0.0
    for _ in range(200_000):
        new = (1 - a * h) ** 2 * m + h * lr * (omega * lam * lam * m + (1 + omega) * v) / n
        if abs(new - m) <= 1e-15 * abs(new):
            return new
        m = new
    return math.inf


@pytest.mark.parametrize("k", [None, 1, 2])
@pytest.mark.parametrize("model", ["discrete", "first_order", "second_order", "curvature"])
@pytest.mark.parametrize("substeps", [1, 4])
def test_stationary_loss_is_the_fixed_point_of_the_moment_recursion(k, model, substeps):
    """The chain (step lr, rate λ) and Euler on each model (step lr / substeps); the model itself
    is the h -> 0 limit of its Euler values."""
    if model == "discrete" and substeps != 1:
        pytest.skip("the chain has no solver step")
    lr, n, scales = 0.1, 3, [0.5, 1.0, 1.5]
    noise = so.noise.StudentT(nu=5.0, scale=scales)  # Var T = 5/3
    kw = dict(lr=lr, n_workers=n, noise=noise)
    opt = (
        so.discrete.DSGD(**kw)
        if k is None
        else so.discrete.DCSGD(compressor=so.compressors.RandK(k=k), **kw)
    )
    prob = so.problems.Quadratic(diag=LAM)
    omega = 0.0 if k is None else len(LAM) / k - 1
    v = 5.0 / 3.0 * np.mean(np.square(scales))
    sign = {"discrete": 0.0, "first_order": 0.0, "second_order": -1.0, "curvature": 1.0}[model]
    h = lr / substeps
    expected = sum(
        lam / 2 * _iterate(lam * (1 - sign * lr * lam / 2), h, lr, lam, omega, v, n) for lam in LAM
    )
    if model == "discrete":
        assert stationary_loss(opt, prob) == pytest.approx(expected, rel=1e-9)
        return
    assert stationary_loss(opt, prob, model, substeps=substeps) == pytest.approx(expected, rel=1e-9)
    fine = stationary_loss(opt, prob, model, substeps=10**6)
    assert stationary_loss(opt, prob, model) == pytest.approx(fine, rel=1e-5)


def test_the_chain_and_the_curvature_model_share_their_fixed_point():
    opt = so.discrete.DCSGD(
        lr=0.2, n_workers=2, noise=so.noise.Gaussian(1.0), compressor=so.compressors.RandK(k=2)
    )
    prob = so.problems.Quadratic(diag=LAM)
    assert stationary_loss(opt, prob) == pytest.approx(
        stationary_loss(opt, prob, "curvature"), rel=1e-12
    )


def test_euler_on_the_first_order_model_is_scipys_discrete_lyapunov():
    """Additive noise: Euler is x' = (1 - λh) x + sqrt(h) s ξ per coordinate, whose stationary
    variance solves P = M P Mᵀ + h s² (scipy), and h -> 0 gives the OU value s²/(2λ)."""
    lr, n, sigma, substeps = 0.1, 4, 0.7, 3
    opt = so.discrete.DSGD(lr=lr, n_workers=n, noise=so.noise.Gaussian(sigma))
    prob = so.problems.Quadratic(diag=LAM)
    h, s2 = lr / substeps, lr * sigma**2 / n
    lyapunov = sum(
        lam / 2 * linalg.solve_discrete_lyapunov(np.array([[1 - lam * h]]), np.array([[h * s2]]))
        for lam in LAM
    ).item()
    assert stationary_loss(opt, prob, "first_order", substeps=substeps) == pytest.approx(
        lyapunov, rel=1e-12
    )
    ou = sum(lam / 2 * s2 / (2 * lam) for lam in LAM)
    assert stationary_loss(opt, prob, "first_order") == pytest.approx(ou, rel=1e-12)


def test_unstable_and_inapplicable_cases():
    prob = so.problems.Quadratic(diag=[1.0, 30.0])
    assert stationary_loss(so.discrete.DSGD(lr=0.1, noise=so.noise.Gaussian()), prob) == math.inf
    heavy = so.discrete.DSGD(lr=0.01, noise=so.noise.StudentT(nu=1.5))
    assert stationary_loss(heavy, prob) is None  # infinite variance: no stationary second moment
    sign = so.discrete.DSignSGD(lr=0.01, noise=so.noise.Gaussian())
    assert stationary_loss(sign, prob) is None
    for clipping in ({"clip": 1.0}, {"worker_clip": 1.0}, {"coord_clip": 1.0}):
        clipped = so.discrete.DSGD(lr=0.01, noise=so.noise.Gaussian(), **clipping)
        assert stationary_loss(clipped, prob) is None  # the closed form is for unclipped steps
    with pytest.raises(ValueError, match="model"):
        stationary_loss(heavy, prob, "third_order")
    with pytest.raises(ValueError, match="substeps"):
        stationary_loss(heavy, prob, "discrete", substeps=2)
