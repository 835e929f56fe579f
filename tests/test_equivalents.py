"""Deterministic equivalents (issue 17): streaming least squares, its gradient law, and the risk
ODE against closed forms, Monte Carlo and the discrete method as the dimension grows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import sdeopt as so
from sdeopt.analysis.equivalents import clipping_factors, risk_ode
from sdeopt.random import RandomSource

Z = 4.5


def _streaming(d, *, exponent=1.0):
    return so.problems.StreamingLeastSquares.power_law(d, exponent)


def _x0(d):
    return torch.full((d,), math.sqrt(2.0 / d))  # R(x0) = mean eigenvalue = 1


# --- the gradient law -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_streaming_gradients_have_the_isserlis_mean_and_covariance(batch):
    """g = (1/b) Σ a (aᵀe - ε), a ~ N(0, K): mean K e and covariance
    (1/b)(K e eᵀ K + (eᵀ K e + σ²) K), checked entry by entry by Monte Carlo (200,000 draws)."""
    prob = so.problems.StreamingLeastSquares([0.5, 1.0, 2.0], x_star=[0.2, -0.1, 0.0])
    noise = so.noise.Streaming(batch, label=so.noise.Gaussian(0.7))
    x = torch.tensor([[1.0, 0.5, -0.5]]).expand(200_000, 3)
    g = noise.oracle(prob, x, 1, RandomSource(1, 200_000, dtype=torch.float64))[:, 0].numpy()
    lam = np.array([0.5, 1.0, 2.0])
    e = np.array([0.8, 0.6, -0.5])
    ke = lam * e
    cov = (np.outer(ke, ke) + (e @ ke + 0.49) * np.diag(lam)) / batch
    se_mean = np.sqrt(np.diag(cov) / len(g))
    assert (np.abs(g.mean(0) - ke) < Z * se_mean).all()
    emp = np.cov(g.T)
    # se of an empirical covariance entry: sqrt((C_ii C_jj + C_ij²)/n) for near-Gaussian data,
    # inflated 3x for the heavier tails of products of normals
    se_cov = 3 * np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / len(g))
    assert (np.abs(emp - cov) < Z * se_cov).all()
    # the SDE models take the same covariance (structured: diagonal plus one rank-one term)
    sc = noise.worker_cov(prob, torch.tensor([[1.0, 0.5, -0.5]]), None, 1)
    dense = torch.diag_embed(sc.diag[0, 0]) + sc.factors[0, 0] @ sc.factors[0, 0].T
    np.testing.assert_allclose(dense.numpy(), cov, rtol=1e-12)


# --- the ODE: closed forms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gamma", "workers", "batch"), [(0.5, 1, 1), (1.5, 1, 1), (3.0, 2, 1), (3.0, 1, 4)]
)
def test_ode_reaches_the_closed_form_limit_risk(gamma, workers, batch):
    """R∞ = (γσ²λ̄/(4m)) / (1 - γλ̄/(2m)), m = N b samples per step, reached by the ODE."""
    d = 200
    prob = _streaming(d, exponent=0.5)
    noise = so.noise.Streaming(batch, label=so.noise.Gaussian(0.5))
    opt = so.discrete.DSGD(lr=gamma / d, n_workers=workers, noise=noise)
    ode = risk_ode(opt, prob, _x0(d), 60 * d, record_every=60 * d)
    m, lbar = workers * batch, float(prob.spectrum.mean())
    limit = gamma * 0.25 * lbar / (4 * m) / (1 - gamma * lbar / (2 * m))
    assert ode.attrs["limit_risk"] == pytest.approx(limit, rel=1e-12)
    assert float(ode.loss[0, -1]) == pytest.approx(limit, rel=1e-3)


def test_ode_diverges_past_the_threshold_with_a_warning():
    """γλ̄ = 2m is the threshold: just below it the risk settles, just above it grows without
    bound (and risk_ode warns, not refuses: divergence is a result)."""
    d = 100
    prob = _streaming(d, exponent=0.0)  # every eigenvalue 1
    noise = so.noise.Streaming(label=so.noise.Gaussian(0.5))
    below = risk_ode(
        so.discrete.DSGD(lr=1.9 / d, noise=noise), prob, _x0(d), 400 * d, record_every=100 * d
    )
    assert np.isfinite(below.attrs["limit_risk"])
    assert float(below.loss[0, -1]) == pytest.approx(below.attrs["limit_risk"], rel=1e-2)
    with pytest.warns(RuntimeWarning, match="diverges"):
        above = risk_ode(
            so.discrete.DSGD(lr=2.1 / d, noise=noise), prob, _x0(d), 40 * d, record_every=10 * d
        )
    loss = above.loss[0].values
    assert math.isinf(above.attrs["limit_risk"]) and (np.diff(loss[1:]) > 0).all() and loss[-1] > 10


def test_ode_solver_error_is_second_order():
    """Halving the solver step divides the change of the path by ~4 (trapezoid rule)."""
    d = 100
    prob = _streaming(d)
    opt = so.discrete.DSGD(
        lr=1.5 / d, clip=2.0, noise=so.noise.Streaming(label=so.noise.StudentT(nu=1.0, scale=0.5))
    )
    paths = [
        risk_ode(opt, prob, _x0(d), 5 * d, record_every=d, substeps=s).loss[0].values
        for s in (1, 2, 4)
    ]
    first, second = np.abs(paths[0] - paths[2]).max(), np.abs(paths[1] - paths[2]).max()
    assert 2.5 < first / second < 6.0


# --- clipping factors against Monte Carlo and quadrature ----------------------------------------


@pytest.mark.parametrize(
    "label",
    [
        so.noise.Gaussian(0.5),
        so.noise.StudentT(nu=1.0, scale=0.5),
        so.noise.StudentT(nu=3.0, scale=0.3),
    ],
    ids=["gauss", "cauchy", "t3"],
)
def test_clipping_factors_against_monte_carlo(label):
    """μ(R) = P(|r| ≤ τ), ν(R) = E min(r², τ²), r = √(2R) Z - ε, from 400,000 draws of scipy's
    laws, at small, moderate and large R."""
    tau = 0.4
    risks = np.array([1e-4, 0.05, 2.0])
    mu, nu = clipping_factors(so.noise.Streaming(label=label), tau, risks)
    rng = np.random.default_rng(2)
    n = 400_000
    law = {"Gaussian": stats.norm, "StudentT": stats.t(getattr(label, "nu", 1.0))}[
        type(label).__name__
    ]
    eps = float(label.scale) * law.rvs(size=n, random_state=rng)
    for i, risk in enumerate(risks):
        r = math.sqrt(2 * risk) * rng.standard_normal(n) - eps
        inside = np.abs(r) <= tau
        clipped = np.minimum(r * r, tau * tau)
        assert abs(mu[i] - inside.mean()) < Z * inside.std() / math.sqrt(n)
        assert abs(nu[i] - clipped.mean()) < Z * clipped.std() / math.sqrt(n)


def test_clipping_factors_reduce_to_plain_sgd_without_clipping():
    """τ far beyond the residuals: μ = 1 and ν = 2R + σ² (scipy quadrature of the normal)."""
    mu, nu = clipping_factors(so.noise.Streaming(label=so.noise.Gaussian(0.5)), 1e3, [0.1, 1.0])
    np.testing.assert_allclose(mu, 1.0, atol=1e-12)
    np.testing.assert_allclose(nu, [0.2 + 0.25, 2.0 + 0.25], rtol=1e-9)
    # and for a finite τ, Gaussian labels: r ~ N(0, 2R + σ²), E min(r², τ²) by quadrature
    mu, nu = clipping_factors(so.noise.Streaming(label=so.noise.Gaussian(0.5)), 0.3, [0.1])
    s = math.sqrt(0.2 + 0.25)
    ref = integrate.quad(lambda r: min(r * r, 0.09) * stats.norm.pdf(r, scale=s), -np.inf, np.inf)[
        0
    ]
    assert nu[0] == pytest.approx(ref, rel=1e-8)
    assert mu[0] == pytest.approx(2 * stats.norm.cdf(0.3 / s) - 1, rel=1e-10)


# --- concentration of the discrete method on the ODE --------------------------------------------


def _path_error(d, opt_of, n_runs=40, horizon=5):
    prob = _streaming(d)
    opt = opt_of(d)
    kw = dict(n_steps=horizon * d, record_every=d // 10)
    traj = so.discrete.simulate(opt, prob, _x0(d), n_runs=n_runs, seed=3, record=["loss"], **kw)
    ode = risk_ode(opt, prob, _x0(d), **kw).loss[0].values
    return float(np.abs(traj.loss.mean(1).numpy() / ode - 1).max())


def test_discrete_risk_concentrates_on_the_ode_as_d_grows():
    """Plain SGD, γ = 1, Gaussian labels: the largest relative gap between the mean risk of 40 runs
    and the ODE over t = 0..5 falls from d = 50 to d = 400 (measured 0.117 and 0.031)."""

    def opt_of(d):
        return so.discrete.DSGD(lr=1.0 / d, noise=so.noise.Streaming(label=so.noise.Gaussian(0.5)))

    small, large = _path_error(50, opt_of), _path_error(400, opt_of)
    assert large < small / 2 and large < 0.05


def test_clipped_sgd_under_cauchy_labels_concentrates_on_its_ode():
    """Per-sample clipping at c = 2 under Cauchy label noise (no variance: plain SGD has no
    equivalent and is refused) at d = 400, γ = 1: within 2 % of the ODE (measured 0.3 %)."""

    def opt_of(d):
        label = so.noise.StudentT(nu=1.0, scale=0.5)
        return so.discrete.DSGD(lr=1.0 / d, clip=2.0, noise=so.noise.Streaming(label=label))

    assert _path_error(400, opt_of) < 0.02


def test_compare_carries_the_ode_as_a_model():
    d = 50
    prob = _streaming(d)
    opt = so.discrete.DSGD(lr=1.0 / d, noise=so.noise.Streaming(label=so.noise.Gaussian(0.5)))
    ds = so.analysis.compare(
        opt,
        prob,
        _x0(d),
        n_steps=100,
        n_runs=6,
        models=["ode", "first_order"],
        record_every=25,
        record_x=True,
    )
    assert list(ds.model.values) == ["discrete", "ode", "first_order"]
    ode = risk_ode(opt, prob, _x0(d), 100, record_every=25)
    for name in ("loss", "grad_norm"):
        values = ds[name].sel(model="ode").values  # (step, run): the curve in every run
        np.testing.assert_allclose(values, np.repeat(ode[name][0].values[:, None], 6, 1))
    assert np.isnan(ds["x"].sel(model="ode").values).all()
    assert not ds["diverged"].sel(model="ode").any()
    err = so.analysis.weak_error(ds)
    assert np.isfinite(err["error"].sel(model="ode").values).all()


# --- bad input -----------------------------------------------------------------------------------


def _opt(**kw):
    noise = kw.pop("noise", so.noise.Streaming(label=so.noise.Gaussian(0.5)))
    return so.discrete.DSGD(lr=0.01, noise=noise, **kw)


BAD = [
    (lambda: risk_ode(_opt(), so.problems.Quadratic(diag=[1.0, 2.0]), [1.0, 1.0], 5), "problem"),
    (lambda: risk_ode(_opt(noise=so.noise.Gaussian(1.0)), _streaming(4), [1.0] * 4, 5), "method"),
    (lambda: risk_ode(_opt(coord_clip=1.0), _streaming(4), [1.0] * 4, 5), "coord_clip"),
    (
        lambda: risk_ode(
            so.discrete.DSGD(lr=0.01, n_workers=2, clip=1.0, noise=so.noise.Streaming()),
            _streaming(4),
            [1.0] * 4,
            5,
        ),
        "clip",
    ),
    (
        lambda: risk_ode(_opt(clip=1.0, noise=so.noise.Streaming(2)), _streaming(4), [1.0] * 4, 5),
        "batch_size",
    ),
    (
        lambda: risk_ode(
            _opt(noise=so.noise.Streaming(label=so.noise.StudentT(nu=1.0))),
            _streaming(4),
            [1.0] * 4,
            5,
        ),
        "noise",
    ),
    (
        lambda: risk_ode(
            _opt(schedule=so.schedules.PolyDecay(power=0.5)), _streaming(4), [1.0] * 4, 5
        ),
        "schedule",
    ),
    (lambda: risk_ode(_opt(), _streaming(4), np.ones((3, 4)), 5), "x0"),
    (lambda: risk_ode(_opt(), _streaming(4), [1.0] * 4, 5, substeps=0), "substeps"),
    (lambda: so.problems.StreamingLeastSquares([1.0, -1.0]), "diag"),
    (lambda: so.problems.StreamingLeastSquares.power_law(10, exponent=-1.0), "exponent"),
    (lambda: so.noise.Streaming(0), "batch_size"),
    (lambda: so.noise.Streaming(label=so.noise.Gaussian([1.0, 2.0])), "label"),
    (lambda: so.noise.Streaming(label=so.noise.AffineVariance(sigma0=1.0, sigma1=0.0)), "label"),
    (
        lambda: so.discrete.simulate(
            _opt(), so.problems.Quadratic(diag=[1.0, 2.0]), [1.0, 1.0], 3, 4
        ),
        "problem",
    ),
    (
        lambda: so.analysis.compare(
            _opt(),
            _streaming(4),
            [1.0] * 4,
            3,
            4,
            models=["ode"],
            record=["loss", "dist"],
            out="x.zarr",
        ),
        "out",
    ),
]


@pytest.mark.parametrize(("call", "name"), BAD)
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_clipping_factors_quadrature_against_nested_scipy_quad():
    """Cauchy labels, τ = 0.4, R = 0.05: μ and ν against nested scipy quadrature of the normal
    given ε and of the Cauchy law of ε (to 1e-6)."""
    tau, risk, scale = 0.4, 0.05, 0.5
    mu, nu = clipping_factors(
        so.noise.Streaming(label=so.noise.StudentT(nu=1.0, scale=scale)), tau, [risk]
    )
    s = math.sqrt(2 * risk)

    def given(eps, which):
        # r ~ N(-eps, s²): P(|r| <= tau) or E min(r², tau²)
        if which == "mu":
            return stats.norm.cdf((tau + eps) / s) - stats.norm.cdf((-tau + eps) / s)
        inner = integrate.quad(lambda r: r * r * stats.norm.pdf(r, loc=-eps, scale=s), -tau, tau)[0]
        return inner + tau * tau * (1 - given(eps, "mu"))

    for which, value in (("mu", mu[0]), ("nu", nu[0])):
        ref = integrate.quad(
            lambda e, w=which: given(e, w) * stats.cauchy.pdf(e, scale=scale),
            -np.inf,
            np.inf,
            limit=200,
        )[0]
        assert value == pytest.approx(ref, abs=1e-6)


# --- signSGD --------------------------------------------------------------------------------------


def test_residual_density_at_zero_against_scipy_convolution():
    """g0(R) = density at 0 of √(2R) Z - ε: closed form for Gaussian labels, Gauss–Hermite for
    Cauchy labels, against scipy's quadrature of the convolution."""
    from sdeopt.analysis.equivalents import residual_density_at_zero

    for label, law in (
        (so.noise.Gaussian(0.5), stats.norm(scale=0.5)),
        (so.noise.StudentT(nu=1.0, scale=0.5), stats.cauchy(scale=0.5)),
        (so.noise.StudentT(nu=3.0, scale=0.3), stats.t(3.0, scale=0.3)),
    ):
        for risk in (1e-3, 0.1, 2.0):
            s = math.sqrt(2 * risk)
            ref = integrate.quad(
                lambda e, s=s, law=law: stats.norm.pdf(e / s) / s * law.pdf(e), -np.inf, np.inf
            )[0]
            value = residual_density_at_zero(so.noise.Streaming(label=label), risk)[0]
            assert value == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("workers", [1, 4])
def test_sign_ode_reaches_its_closed_form_limit(workers):
    """signSGD, Gaussian labels: v_i = γ/(2dNκ√λ_i) at stationarity with κ = 2/(π√(2R + σ²)),
    so R = c² + c√(c² + σ²), c = γπ mean(√λ)/(8N)."""
    d, gamma = 200, 1.0
    prob = _streaming(d, exponent=0.5)
    opt = so.discrete.DSignSGD(
        lr=gamma / d, n_workers=workers, noise=so.noise.Streaming(label=so.noise.Gaussian(0.5))
    )
    final = float(risk_ode(opt, prob, _x0(d), 80 * d, record_every=80 * d).loss[0, -1])
    c = gamma * math.pi * float(prob.spectrum.sqrt().mean()) / (8 * workers)
    assert final == pytest.approx(c * c + c * math.sqrt(c * c + 0.25), rel=1e-3)


@pytest.mark.parametrize(
    "label", [so.noise.Gaussian(0.5), so.noise.StudentT(nu=1.0, scale=0.5)], ids=["gauss", "cauchy"]
)
def test_sign_sgd_concentrates_on_its_ode(label):
    """DSignSGD (4 workers, γ = 1) at d = 400: the mean risk of 40 runs within 4 % of the ODE
    over t = 0..5 (measured 1.8 % Gaussian, 2.0 % Cauchy with one worker)."""

    def opt_of(d):
        return so.discrete.DSignSGD(lr=1.0 / d, n_workers=4, noise=so.noise.Streaming(label=label))

    assert _path_error(400, opt_of) < 0.04
