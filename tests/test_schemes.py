"""SDE schemes of issue 18 against closed forms: the exact Ornstein–Uhlenbeck step at any step
size, Leimkuhler–Matthews' exact OU invariant law, and the weak order 2 of Platen's scheme
(exact expectations of the scheme by Gauss–Hermite backward recursion, against the SDE's by a
Crank–Nicolson solve of its backward Kolmogorov equation: no Monte Carlo)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import interpolate

import sdeopt as so
from sdeopt.dynamics import SCHEMES, SDE
from tests._reference import HalfSquarePlusQuartic
from tests.test_models import sde_expectation

Z = 4.5
LAM = np.array([1.0, 4.0])


def _dsgd_sde(lr, model):
    opt = so.discrete.DSGD(lr=lr, n_workers=2, noise=so.noise.Gaussian(1.0))
    return so.dynamics.sde_of(opt, so.problems.Quadratic(diag=LAM.tolist()), model)


def _rate(lr, model):
    """The models' drift rates on the diagonal quadratic: λ, λ + lr λ²/2, λ - lr λ²/2."""
    return LAM + {"first_order": 0.0, "second_order": 0.5, "curvature": -0.5}[model] * lr * LAM**2


@pytest.mark.parametrize("model", ["first_order", "second_order", "curvature"])
@pytest.mark.parametrize(("lr", "substeps"), [(0.1, 1), (0.3, 1), (0.3, 3)])
def test_exact_step_has_the_ou_law_at_any_step(model, lr, substeps):
    """From x0 = (2, -1) over 5 optimizer steps: mean e^{-ρt} x0 and variance
    g²(1 - e^{-2ρt})/(2ρ), g² = lr σ²/N, within their Monte Carlo errors (100,000 paths), at
    step sizes where Euler is visibly biased."""
    sde = _dsgd_sde(lr, model)
    k = 5
    x = (
        so.dynamics.solve(
            sde,
            [2.0, -1.0],
            n_steps=k,
            n_runs=100_000,
            scheme="exact",
            substeps=substeps,
            record_x=True,
            record_every=k,
            seed=1,
        )
        .x[-1]
        .numpy()
    )
    t, rho, g2 = k * lr, _rate(lr, model), lr / 2
    mean = np.exp(-rho * t) * np.array([2.0, -1.0])
    var = g2 * (1 - np.exp(-2 * rho * t)) / (2 * rho)
    n = len(x)
    assert (np.abs(x.mean(0) - mean) < Z * np.sqrt(var / n)).all()
    assert (np.abs(x.var(0) - var) < Z * var * math.sqrt(2 / n)).all()


@pytest.mark.parametrize("lr", [0.05, 0.25, 0.375])
def test_leimkuhler_matthews_has_the_exact_ou_invariant_law(lr):
    """For dX = -a X dt + g dW, Leimkuhler–Matthews' stationary variance is g²/(2a) at every
    stable h (an ARMA(1,1) whose variance s²/(2(1 - c)) is exactly that), while Euler's is
    g²/(2a(1 - ah/2)): at ah = 1.5 (λ = 4, lr = 0.375) Euler is 4x too wide."""
    sde = _dsgd_sde(lr, "first_order")
    k = math.ceil(20 / lr)
    kw = dict(n_steps=k, n_runs=40_000, record_x=True, record_every=k, seed=2)
    lm = so.dynamics.solve(sde, [0.0, 0.0], scheme="leimkuhler_matthews", **kw).x[-1].numpy()
    euler = so.dynamics.solve(sde, [0.0, 0.0], scheme="euler", **kw).x[-1].numpy()
    var = (lr / 2) / (2 * LAM)
    se = var * math.sqrt(2 / len(lm))
    assert (np.abs(lm.var(0) - var) < Z * se).all()
    euler_var = var / (1 - LAM * lr / 2)
    assert (np.abs(euler.var(0) - euler_var) < Z * euler_var * math.sqrt(2 / len(lm))).all()


def _scheme_expectation(sde, scheme, h, n_steps, g, x0, lo, hi, n_x=2001, n_nodes=40):
    """E g(X_K) of the scheme's Markov chain, exactly up to quadrature: backward recursion
    u_k(x) = E u_{k+1}(step(x, √h z)) with Gauss–Hermite nodes z and cubic splines in x."""
    x = np.linspace(lo, hi, n_x)
    z, w = np.polynomial.hermite_e.hermegauss(n_nodes)
    w = w / w.sum()
    xt = torch.tensor(np.repeat(x, n_nodes))[:, None]
    dw = torch.tensor(np.tile(z, n_x) * math.sqrt(h))[:, None]
    after = SCHEMES[scheme].step(sde, xt, 1.0, h, dw)[:, 0].numpy().reshape(n_x, n_nodes)
    after = np.clip(after, lo, hi)
    u = g(x)
    for _ in range(n_steps):
        u = interpolate.CubicSpline(x, u)(after) @ w
    return float(interpolate.CubicSpline(x, u)(x0))


HS = [0.2, 0.1, 0.05, 0.025]


def _slope(hs, errs):
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def test_weak2_has_weak_order_two_for_additive_noise():
    """dX = -(X + X³) dt + dW (DSGD's first-order SDE on x²/2 + x⁴/4 at lr = 1, σ = 1), E X_T²
    at T = 1 from x0 = 1: Platen's scheme (stochastic Heun here) slope 2, Euler slope 1."""
    opt = so.discrete.DSGD(lr=1.0, noise=so.noise.Gaussian(1.0))
    sde = so.dynamics.sde_of(opt, HalfSquarePlusQuartic(), "first_order")
    assert sde.additive

    def square(x):
        return x**2

    exact = sde_expectation(sde, square, 1.0, 1.0, -3.0, 3.0, n_x=4001, n_t=2000)
    errs = {
        s: [
            abs(_scheme_expectation(sde, s, h, round(1 / h), square, 1.0, -3.0, 3.0) - exact)
            for h in HS
        ]
        for s in ("weak2", "euler")
    }
    assert abs(_slope(HS, errs["weak2"]) - 2) < 0.25, errs
    assert abs(_slope(HS, errs["euler"]) - 1) < 0.25, errs
    assert errs["weak2"][-1] < errs["euler"][-1] / 8  # measured 10.7x at h = 0.025


def test_weak2_has_weak_order_two_for_commutative_multiplicative_noise():
    """dX = -X dt + √(0.5 + 0.5 sin²X) dW, a hand-built SDE with g depending on x (diagonal,
    commutative in 1-D): E cos(X_T) at T = 1 from x0 = 0.5, slope 2 (Euler: 1)."""
    sde = SDE.diagonal(lambda x: -x, lambda x: torch.sqrt(0.5 + 0.5 * torch.sin(x) ** 2), dim=1)
    exact = sde_expectation(sde, np.cos, 0.5, 1.0, -5.0, 5.0, n_x=4001, n_t=2000)
    errs = {
        s: [
            abs(_scheme_expectation(sde, s, h, round(1 / h), np.cos, 0.5, -5.0, 5.0) - exact)
            for h in HS
        ]
        for s in ("weak2", "euler")
    }
    assert abs(_slope(HS, errs["weak2"]) - 2) < 0.3, errs
    assert abs(_slope(HS, errs["euler"]) - 1) < 0.25, errs


def test_schemes_declare_their_orders():
    assert SCHEMES["weak2"].weak_order == 2.0
    assert SCHEMES["leimkuhler_matthews"].invariant_order == 2.0
    assert SCHEMES["exact"].weak_order == math.inf


def _traj(opt, prob, x0):
    return so.discrete.simulate(opt, prob, x0, n_steps=3, n_runs=4, keep_increments=True)


BAD = [
    (  # a nonlinear drift: no exact step
        lambda: so.dynamics.solve(
            so.dynamics.sde_of(
                so.discrete.DSGD(lr=0.1, noise=so.noise.Gaussian(1.0)), so.problems.Quartic(2)
            ),
            [1.0, 1.0],
            3,
            4,
            scheme="exact",
        ),
        "scheme",
    ),
    (  # multiplicative noise: no exact step, no Leimkuhler–Matthews
        lambda: so.dynamics.solve(
            so.dynamics.sde_of(
                so.discrete.DSignSGD(lr=0.1, noise=so.noise.Gaussian(1.0)),
                so.problems.Quadratic(diag=[1.0, 2.0]),
            ),
            [1.0, 1.0],
            3,
            4,
            scheme="leimkuhler_matthews",
        ),
        "scheme",
    ),
    (  # non-commutative noise: no weak order 2 without cross terms
        lambda: so.dynamics.solve(
            so.dynamics.sde_of(
                so.discrete.DSGD(lr=0.1, noise=so.noise.AffineVariance(sigma0=1.0, sigma1=0.5)),
                so.problems.Quadratic(diag=[1.0, 2.0]),
            ),
            [1.0, 1.0],
            3,
            4,
            scheme="weak2",
        ),
        "scheme",
    ),
    (  # Leimkuhler–Matthews uses two draws per step: no coupling
        lambda: so.dynamics.solve(
            _dsgd_sde(0.1, "first_order"),
            [1.0, 1.0],
            3,
            4,
            scheme="leimkuhler_matthews",
            coupled=_traj(
                so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian(1.0)),
                so.problems.Quadratic(diag=LAM.tolist()),
                [1.0, 1.0],
            ),
        ),
        "coupled",
    ),
]


@pytest.mark.parametrize(("call", "name"), BAD)
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        call()


def test_coupled_exact_step_follows_the_discrete_paths():
    """The exact step driven by the discrete run's draws (z = -ξ_k) stays within O(lr) of the
    discrete paths: the median path error at T = 2 halves when lr does."""
    prob = so.problems.Quadratic(diag=LAM.tolist())
    medians = []
    for lr in (0.1, 0.05, 0.025):
        opt = so.discrete.DSGD(lr=lr, n_workers=2, noise=so.noise.Gaussian(1.0))
        k = round(2 / lr)
        kw = dict(n_steps=k, n_runs=2000, record_x=True, record_every=k, seed=3)
        disc = so.discrete.simulate(opt, prob, [1.0, -1.0], keep_increments=True, **kw)
        sde = so.dynamics.sde_of(opt, prob, "first_order")
        path = so.dynamics.solve(sde, [1.0, -1.0], scheme="exact", coupled=disc, **kw)
        medians.append(float((path.x[-1] - disc.x[-1]).norm(dim=-1).median()))
    ratios = np.array(medians[:-1]) / np.array(medians[1:])
    assert ((1.6 < ratios) & (ratios < 2.4)).all(), ratios


# --- the torchsde backend's srk -------------------------------------------------------------------


def test_grid_brownian_space_time_area_has_the_brownian_law():
    """U = ∫_0^h (W_s - W_0) ds given on the grid: Var U = h³/3, Cov(W_h, U) = h²/2, mean 0
    (Itô isometry), from 400,000 draws."""
    from sdeopt.dynamics.solvers import GridBrownian

    h, n = 0.3, 400_000
    gen = torch.Generator().manual_seed(5)
    dw = torch.randn(1, n, 1, generator=gen, dtype=torch.float64) * math.sqrt(h)
    area = torch.randn(1, n, 1, generator=gen, dtype=torch.float64) * math.sqrt(h / 12)
    bm = GridBrownian(0.0, h, dw, area)
    assert bm.levy_area_approximation == "space-time"
    w, u = (t[:, 0].numpy() for t in bm(0.0, h, return_U=True))
    assert abs(u.mean()) < Z * math.sqrt(h**3 / 3 / n)
    assert u.var() == pytest.approx(h**3 / 3, rel=Z * math.sqrt(2 / n))
    assert np.cov(w, u)[0, 1] == pytest.approx(h**2 / 2, rel=0.02)


def test_torchsde_srk_runs_on_the_backend_and_has_the_ou_law():
    """backend='torchsde' with torchsde's SRK (space-time Lévy areas drawn beside the
    increments): the first-order SDE of DSGD on a diagonal quadratic at a small step reaches the
    OU stationary variance g²/(2λ) within Monte Carlo error plus 2 % (its O(h²) bias)."""
    lr = 0.05
    sde = _dsgd_sde(lr, "first_order")
    k = round(10 / lr)
    x = (
        so.dynamics.solve(
            sde,
            [0.0, 0.0],
            n_steps=k,
            n_runs=10_000,
            backend="torchsde",
            torchsde_method="srk",
            record_x=True,
            record_every=k,
            seed=6,
        )
        .x[-1]
        .numpy()
    )
    var = (lr / 2) / (2 * LAM)
    assert (np.abs(x.var(0) / var - 1) < Z * math.sqrt(2 / len(x)) + 0.02).all()
