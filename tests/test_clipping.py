"""Clipped DSGD/DCSGD (issue 15): the per-worker clipping rules, the closed-form mean and variance
of a coordinate-wise clipped noisy gradient against Monte Carlo and quadrature, and the clipped
SDE under Cauchy noise against the Fokker-Planck stationary law and the discrete method."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.stats import norm

import sdeopt as so
from sdeopt.random import RandomSource
from tests._reference import TwoCenters

F64 = torch.float64
LAWS = {
    "gauss": (lambda s: so.noise.Gaussian(scale=s), stats.norm),
    **{
        f"t{nu}": (lambda s, nu=nu: so.noise.StudentT(nu=nu, scale=s), stats.t(nu))
        for nu in (0.8, 1.0, 1.5, 3.0, 30.0)
    },
}
#: (g, tau) pairs: inside, at the edge, far beyond the threshold, and zero.
G = so.noise.Gaussian(scale=1.0)
PAIRS = [(0.0, 1.0), (0.3, 1.0), (-1.7, 1.0), (1.0, 0.5), (25.0, 1.0), (-4.0, 0.1)]


# --- the discrete rules -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["worker_clip", "coord_clip", "clip"])
def test_clipping_rules_on_noise_free_gradients(kind):
    """One step without noise against the rule written out by hand: per-worker norm clipping
    and coordinate-wise clipping act on each worker's gradient before averaging; ``clip`` on
    the average."""
    prob, tau, lr = TwoCenters(((3.0, -1.0, 0.5), (-0.5, 2.0, 0.0))), 1.5, 0.1
    opt = so.discrete.DCSGD(lr=lr, n_workers=2, noise=so.noise.Gaussian(scale=0.0), **{kind: tau})
    x = torch.zeros(3, dtype=F64)
    step = so.discrete.simulate(opt, prob, x, n_steps=1, n_runs=1, record_x=True).x[-1, 0] - x
    g = -prob.centers  # worker gradients at 0, (2, 3)
    if kind == "worker_clip":
        v = (g * torch.clamp(tau / g.norm(dim=1, keepdim=True), max=1.0)).mean(0)
    elif kind == "coord_clip":
        v = g.clamp(-tau, tau).mean(0)
    else:
        v = g.mean(0) * min(1.0, tau / float(g.mean(0).norm()))
    torch.testing.assert_close(step, -lr * v)


# --- the clipped law in closed form ------------------------------------------------------------


@pytest.mark.parametrize("law", sorted(LAWS))
def test_clipped_mean_and_variance_match_monte_carlo(law):
    """200,000 draws of clip(g + σT) per (g, τ) pair: mean and variance within their Monte
    Carlo error (family-wise level 1e-4 over all laws and pairs)."""
    make, _ = LAWS[law]
    noise, n_mc = make(0.8), 200_000
    z = float(norm.isf(1e-4 / (2 * 2 * len(LAWS) * len(PAIRS))))
    for k, (g, tau) in enumerate(PAIRS):
        grads = torch.tensor([[[g]]], dtype=F64)
        mean, var, _ = noise.clipped_moments(grads, 1, tau)
        draws = (g + noise.sample(RandomSource(k, n_mc), grads.expand(n_mc, 1, 1), 1)).clamp(
            -tau, tau
        )  # (B, 1, 1)
        m_mc, v_mc = draws.mean(), draws.var()
        se_m = draws.std() / math.sqrt(n_mc)
        se_v = (draws - m_mc).square().std() / math.sqrt(n_mc)
        # + 1e-6: an event rarer than ~1e-5 may not occur among the draws (se 0 when every
        # draw is clipped), and moves the mean by at most 2τ times its probability
        assert abs(float(mean) - float(m_mc)) <= z * float(se_m) + 1e-6, (law, g, tau)
        assert abs(float(var) - float(v_mc)) <= z * float(se_v) + 1e-6, (law, g, tau)


@pytest.mark.parametrize("law", sorted(LAWS))
def test_clipped_moments_match_quadrature(law):
    """The same moments to 1e-9 against scipy quadrature of the clipped law (an interval plus
    two atoms), and the slope ∂m/∂g against a central difference."""
    make, dist = LAWS[law]
    sigma = 0.8
    noise = make(sigma)
    for g, tau in PAIRS:
        lo, hi = (-tau - g) / sigma, (tau - g) / sigma
        inside = [
            integrate.quad(lambda t, k=k, g=g: (g + sigma * t) ** k * dist.pdf(t), lo, hi,
                           epsabs=1e-14, epsrel=1e-12)[0]
            for k in range(3)
        ]  # fmt: skip
        up, down = dist.sf(hi), dist.cdf(lo)
        m = inside[1] + tau * (up - down)
        v = inside[2] + tau**2 * (up + down) - m**2
        mean, var, slope = noise.clipped_moments(torch.tensor([[[g]]], dtype=F64), 1, tau)
        assert float(mean) == pytest.approx(m, rel=1e-9, abs=1e-13), (law, g, tau)
        assert float(var) == pytest.approx(v, rel=1e-8, abs=1e-13), (law, g, tau)
        assert float(slope) == pytest.approx(inside[0], rel=1e-9, abs=1e-13)


# --- the SDE -----------------------------------------------------------------------------------


def _cauchy_fokker_planck_loss(lam: float, lr: float, tau: float, sigma: float) -> float:
    """Stationary E f of the 1-D first-order SDE dX = -m(λX) dt + sqrt(lr V(λX)) dW, f = λx²/2,
    from its Fokker-Planck density p ∝ exp(-∫ 2 m / (lr V)) / V, with m and V computed by
    scipy from the Cauchy law (independent of sdeopt)."""
    dist = stats.cauchy(scale=sigma)

    def moments(g):
        inside = [
            integrate.quad(lambda z, k=k: (g + z) ** k * dist.pdf(z), -tau - g, tau - g,
                           epsabs=1e-13)[0]
            for k in range(3)
        ]  # fmt: skip
        up, down = dist.sf(tau - g), dist.cdf(-tau - g)
        m = inside[1] + tau * (up - down)
        return m, inside[2] + tau**2 * (up + down) - m**2

    xs = np.linspace(-2.5, 2.5, 401)
    mv = np.array([moments(lam * x) for x in xs])
    potential = integrate.cumulative_trapezoid(2.0 * mv[:, 0] / (lr * mv[:, 1]), xs, initial=0.0)
    density = np.exp(-(potential - potential.min())) / mv[:, 1]
    return float(
        integrate.trapezoid(0.5 * lam * xs**2 * density, xs) / integrate.trapezoid(density, xs)
    )


def test_clipped_sde_under_cauchy_noise_has_the_fokker_planck_stationary_loss():
    """Coordinate-wise clipped DSGD under Cauchy noise (no Brownian model without clipping): its
    first-order SDE (Euler, h = lr/2) and the discrete method at lr = 0.05 have the stationary
    loss of the Fokker-Planck density (each run's loss averaged over t in [15, 30]), within
    4 standard errors plus an allowance of 5 % (the chain's O(lr) bias; Euler's O(h))."""
    lam, lr, tau, sigma = 1.0, 0.05, 1.0, 1.0
    reference = _cauchy_fokker_planck_loss(lam, lr, tau, sigma)
    opt = so.discrete.DSGD(
        lr=lr, n_workers=1, noise=so.noise.StudentT(nu=1.0, scale=sigma), coord_clip=tau
    )
    prob = so.problems.Quadratic(diag=[lam])
    n_runs, n_steps = 2000, 600
    kw = dict(n_steps=n_steps, n_runs=n_runs, record_every=10, seed=4)
    sde = so.dynamics.sde_of(opt, prob)
    cont = so.dynamics.solve(sde, [0.0], substeps=2, **kw).loss[30:].mean(0)
    disc = so.discrete.simulate(opt, prob, [0.0], **kw).loss[30:].mean(0)
    for values, allowance in ((cont, 0.05), (disc, 0.05)):
        se = values.std().item() / math.sqrt(n_runs)
        gap = abs(values.mean().item() - reference)
        assert gap <= 4 * se + allowance * reference, (values.mean().item(), reference, se)
    # Not a tautology: without clipping the loss is not even integrable, and a wrong variance
    # (the unclipped Gaussian one of the same scale) is resolved away.
    assert abs(reference - lr * sigma**2 / 4) > 10 * cont.std().item() / math.sqrt(n_runs)


def test_normalised_sgd_sde_follows_the_discrete_stationary_law_in_one_dimension():
    """Normalised DSGD, u = v / (0.5 + |v|), on x²/2 under Gaussian noise: its estimated-moments
    first-order SDE (S = 16 draws per step) against the discrete method at lr = 0.05, in the
    stationary mean loss and the median and 90 % quantile of |x| (Monte Carlo error plus an O(lr)
    allowance of 6 %)."""
    opt = so.discrete.DSGD(lr=0.05, n_workers=1, noise=so.noise.Gaussian(scale=1.0),
                           normalize=(0.5, 1.0))  # fmt: skip
    prob = so.problems.Quadratic(diag=[1.0])
    kw = dict(n_steps=600, n_runs=2000, record_every=600, record_x=True, seed=2)
    disc = so.discrete.simulate(opt, prob, [0.0], **kw)
    sde = so.dynamics.sde_of(opt, prob, moments="estimated", samples=16)
    cont = so.dynamics.solve(sde, [0.0], substeps=2, **kw)
    a, b = disc.loss[-1], cont.loss[-1]
    se = math.sqrt(a.var().item() / a.numel() + b.var().item() / b.numel())
    assert abs(a.mean().item() - b.mean().item()) <= 4 * se + 0.06 * a.mean().item()
    for q in (0.5, 0.9):
        qa = disc.x[-1, :, 0].abs().quantile(q).item()
        qb = cont.x[-1, :, 0].abs().quantile(q).item()
        assert abs(qa - qb) <= 0.1 * qa, (q, qa, qb)


def test_clipped_second_order_drift_is_the_chain_rule_of_its_mean(generator):
    """(∇ū)ū of the second-order model against central differences of ū(x) (float64)."""
    prob = so.problems.Quadratic(matrix=[[2.0, 0.5], [0.5, 1.0]])
    opt = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.StudentT(nu=1.5, scale=[0.4, 0.9]),
                           coord_clip=0.7)  # fmt: skip
    first, second = (so.dynamics.sde_of(opt, prob, m) for m in ("first_order", "second_order"))
    x = torch.randn(3, 2, generator=generator, dtype=F64)
    u = -first.drift_at(x, 1.0)  # ū
    h = 1e-6
    jac = torch.stack(
        [
            (first.drift_at(x - h * e, 1.0) - first.drift_at(x + h * e, 1.0)) / (2 * h)
            for e in torch.eye(2, dtype=F64)
        ],
        dim=-1,
    )  # fmt: skip  (B, d, d): ∂ū_i/∂x_j
    expected = -u - (0.1 / 2) * (jac @ u.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(second.drift_at(x, 1.0), expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: so.discrete.DSGD(lr=0.1, noise=G, coord_clip=0.0), "coord_clip"),
        (lambda: so.discrete.DSGD(lr=0.1, noise=G, coord_clip=float("nan")), "coord_clip"),
        (lambda: so.discrete.DSGD(lr=0.1, noise=G, worker_clip=-1.0), "worker_clip"),
        (lambda: so.discrete.DSGD(lr=0.1, noise=G, worker_clip=1.0, coord_clip=1.0), "coord_clip"),
        (
            lambda: so.dynamics.sde_of(
                so.discrete.DSGD(lr=0.1, noise=G, worker_clip=1.0),
                so.problems.Quadratic(diag=[1.0]),
            ),
            "moments='estimated'",
        ),
        (
            lambda: so.dynamics.sde_of(
                so.discrete.DSGD(lr=0.1, noise=G, coord_clip=1.0),
                so.problems.Quadratic(diag=[1.0]),
                "curvature",
            ),
            "curvature",
        ),
        (
            lambda: so.dynamics.sde_of(
                so.discrete.DSGD(lr=0.1, coord_clip=1.0, noise=so.noise.SymmetricStable(alpha=1.5)),
                so.problems.Quadratic(diag=[1.0]),
            ),
            "noise",
        ),
    ],
    ids=["zero", "nan", "negative", "both", "norm-exact", "curvature", "stable"],
)
def test_clipping_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()
