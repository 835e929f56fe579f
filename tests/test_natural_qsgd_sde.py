"""Natural and QSGD compression in the DCSGD SDE (issue 14, item 2): the exact
E_Z Cov_C[C(g + Z)] of Natural compression against scipy quadrature and against Monte Carlo of
the discrete step; QSGD exact without noise and refused (with the way out) with it."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.stats import norm

import sdeopt as so
from sdeopt.special import gaussian_partial_moments, student_t_partial_moments

F64 = torch.float64


@pytest.mark.parametrize("law", ["gaussian", 2.5, 3.0, 7.3])
@pytest.mark.parametrize("lo, hi", [(-1.0, 0.5), (2.0, 3.0), (-30.0, -2.0), (0.5, 40.0)])
def test_partial_moments_match_scipy_quadrature(law, lo, hi):
    if law == "gaussian":
        pdf = stats.norm.pdf
        got = gaussian_partial_moments(torch.tensor(lo, dtype=F64), torch.tensor(hi, dtype=F64))
    else:
        pdf = stats.t(law).pdf
        got = student_t_partial_moments(
            torch.tensor(lo, dtype=F64), torch.tensor(hi, dtype=F64), law
        )
    for k, value in enumerate(got):
        ref = integrate.quad(lambda t, k=k: t**k * pdf(t), lo, hi, epsabs=0, epsrel=1e-13)[0]
        assert float(value) == pytest.approx(ref, rel=1e-9, abs=1e-300), (k, law, lo, hi)


def _natural_var(v: float) -> float:
    """Var C(v) of Natural compression, from its definition (docs/methods.md)."""
    a = abs(v)
    if a == 0.0:
        return 0.0
    low = 2.0 ** math.floor(math.log2(a))
    return (2.0 * low - a) * (a - low)


def _quadrature(g: float, sigma: float, pdf) -> float:
    """E_T Var C(g + σT) by scipy quadrature, split at every kink (the dyadic points)."""
    kinks = sorted(
        {-g / sigma} | {(sg * 2.0**k - g) / sigma for k in range(-40, 60) for sg in (1, -1)}
    )
    integrand = lambda t: _natural_var(g + sigma * t) * pdf(t)
    total = sum(
        integrate.quad(integrand, a, b, epsabs=1e-15, epsrel=1e-12)[0]
        for a, b in itertools.pairwise(kinks)
    )
    total += integrate.quad(integrand, kinks[-1], np.inf, limit=500)[0]
    return total + integrate.quad(integrand, -np.inf, kinks[0], limit=500)[0]


@pytest.mark.parametrize(
    "noise, pdf",
    [
        (so.noise.Gaussian(scale=[0.7, 0.0]), stats.norm.pdf),
        (so.noise.StudentT(nu=3.0, scale=[0.5, 2.0]), stats.t(3.0).pdf),
    ],
    ids=["gaussian", "student-t"],
)
def test_natural_expected_variance_matches_quadrature(noise, pdf):
    """Two workers (one noise-free for the Gaussian: there Cov = cov(g) exactly), gradients from
    0 to far beyond the noise scale."""
    gs = [0.3, -1.7, 0.0, 5.2, 1e-3, 100.0]
    g = torch.tensor([[gs, gs]], dtype=F64)  # (1, 2, 6)
    cov = noise.worker_cov(None, None, g, 2)
    got = so.compressors.Natural().noisy_cov(g, cov, noise.coordinate_law(g, 2))
    assert got.rank == 0
    expected_var = got.diag - cov.diag  # E_Z Var_C, (1, 2, 6)
    for i, sigma in enumerate(noise.worker_scales(2)):
        for j, gj in enumerate(gs):
            ref = _quadrature(gj, sigma, pdf) if sigma > 0 else _natural_var(gj)
            assert float(expected_var[0, i, j]) == pytest.approx(ref, rel=1e-8, abs=1e-15)


def test_natural_noisy_cov_is_the_one_step_covariance_of_the_discrete_method():
    """DCSGD + Natural, heterogeneous Gaussian workers and affine variance: the SDE's diffusion
    (lr · G Gᵀ) against the Monte Carlo covariance of one discrete step, entry by entry."""
    prob = so.problems.Quadratic(diag=[1.0, 3.0, 0.5, 8.0])
    x = torch.tensor([0.7, -0.3, 2.0, 0.05], dtype=F64)
    n_mc, lr = 200_000, 0.1
    cases = [
        so.noise.Gaussian(scale=[0.5, 1.0, 2.0]),
        so.noise.AffineVariance(sigma0=0.2, sigma1=0.5),
    ]
    z = float(norm.isf(1e-4 / (2 * 2 * 10)))  # 2 laws x 10 entries, family-wise ~1e-4
    for noise in cases:
        opt = so.discrete.DCSGD(
            lr=lr, n_workers=3, noise=noise, compressor=so.compressors.Natural()
        )
        diff = so.dynamics.sde_of(opt, prob, "first_order").diffusion_at(x.unsqueeze(0), 1.0)
        g = diff.dense()[0]  # (d, m)
        model = lr * g @ g.T  # Cov of one step: lr² S
        traj = so.discrete.simulate(opt, prob, x, n_steps=1, n_runs=n_mc, seed=11, record_x=True)
        step = traj.x[-1] - traj.x[0]  # (B, d)
        centred = step - step.mean(0)
        rows, cols = torch.triu_indices(4, 4)
        prods = centred[:, rows] * centred[:, cols]  # (B, 10)
        got, se = prods.mean(0), prods.std(0) / math.sqrt(n_mc)
        want = model[rows, cols]
        assert torch.all((got - want).abs() <= z * se + 1e-12), (noise, got, want, se)


def test_qsgd_sde_is_exact_without_noise_and_refused_with_it():
    """Compression the only randomness: QSGD's covariance itself, checked against Monte Carlo of
    one discrete step; with gradient noise a ValueError that names the way out."""
    prob = so.problems.Quadratic(diag=[1.0, 3.0, 0.5])
    x = torch.tensor([0.7, -0.3, 2.0], dtype=F64)
    opt = so.discrete.DCSGD(
        lr=0.1, n_workers=2, noise=so.noise.Gaussian(scale=0.0), compressor=so.compressors.QSGD(s=2)
    )
    diff = so.dynamics.sde_of(opt, prob, "curvature").diffusion_at(x.unsqueeze(0), 1.0)
    g = diff.dense()[0]
    n_mc = 200_000
    traj = so.discrete.simulate(opt, prob, x, n_steps=1, n_runs=n_mc, seed=5, record_x=True)
    step = traj.x[-1] - traj.x[0]
    var, se = step.var(0), (step - step.mean(0)).square().std(0) / math.sqrt(n_mc)
    assert torch.all((var - 0.1 * (g @ g.T).diagonal()).abs() <= 4.5 * se)
    noisy = so.discrete.DCSGD(
        lr=0.1, n_workers=2, noise=so.noise.Gaussian(scale=1.0), compressor=so.compressors.QSGD(s=2)
    )
    with pytest.raises(ValueError, match="moments='estimated'"):
        so.dynamics.sde_of(noisy, prob)
    so.dynamics.sde_of(noisy, prob, moments="estimated", samples=8)  # the way out builds


@pytest.mark.parametrize(
    "noise, match",
    [
        (so.noise.Minibatch(batch_size=4), "moments='estimated'"),
        (so.noise.StudentT(nu=1.5), "infinite variance"),
        (so.noise.StudentT(nu=2.2), "moments='estimated'"),
        (so.noise.SymmetricStable(alpha=1.5), "infinite variance"),
    ],
    ids=["minibatch", "nu-1.5", "nu-2.2", "stable"],
)
def test_natural_refuses_noise_without_a_closed_form(noise, match):
    prob = (
        so.problems.LeastSquares(n_samples=32, dim=3)
        if isinstance(noise, so.noise.Minibatch)
        else so.problems.Quadratic(diag=[1.0, 2.0])
    )
    opt = so.discrete.DCSGD(lr=0.1, n_workers=2, noise=noise, compressor=so.compressors.Natural())
    with pytest.raises(ValueError, match=match):
        so.dynamics.sde_of(opt, prob)


def test_natural_sde_follows_the_discrete_stationary_loss_at_small_lr():
    """Weak agreement in law over many steps: DCSGD + Natural's stationary loss on a quadratic at
    lr = 0.05 against its first-order SDE (Euler, 2 substeps), within Monte Carlo error plus an
    O(lr) allowance of 5 % (the chain's own bias against the model at this lr; a diffusion off by
    a factor would move the loss by that factor)."""
    prob = so.problems.Quadratic(diag=[1.0, 2.0, 4.0])
    opt = so.discrete.DCSGD(
        lr=0.02,
        n_workers=2,
        noise=so.noise.Gaussian(scale=1.0),
        compressor=so.compressors.Natural(),
    )
    x0, n_runs, n_steps = torch.zeros(3), 2000, 240  # t = 12: transients below e^{-24}
    disc = so.discrete.simulate(
        opt, prob, x0, n_steps=n_steps, n_runs=n_runs, seed=1, record_every=n_steps
    )
    sde = so.dynamics.sde_of(opt, prob, "first_order")
    cont = so.dynamics.solve(
        sde, x0, n_steps=n_steps, n_runs=n_runs, substeps=2, record_every=n_steps, seed=2
    )
    a, b = disc.loss[-1], cont.loss[-1]
    se = math.sqrt(a.var().item() / n_runs + b.var().item() / n_runs)
    assert abs(a.mean().item() - b.mean().item()) <= 4 * se + 0.05 * b.mean().item()
