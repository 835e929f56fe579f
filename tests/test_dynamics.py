"""SDE models and solvers (docs/models.md: layer consistency, orders, coupling)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import sdeopt as so
from sdeopt.analysis.closed_forms import stationary_loss
from sdeopt.discrete import DCSGD, DSGD, DSignSGD, simulate
from sdeopt.dynamics import SDE, DiagonalPlusRankOne, sde_of, solve
from sdeopt.dynamics.solvers import EulerMaruyama, Milstein
from sdeopt.random import RandomSource
from tests._reference import HalfSquarePlusQuartic

DIAG = [1.0, 2.0, 4.0]

# Methods with a Brownian SDE, for the generic layer-consistency test.
CASES = {
    "dsgd-gauss": lambda: DSGD(lr=0.1, n_workers=3, noise=so.noise.Gaussian(scale=[0.5, 1.0, 2.0])),
    "dsgd-affine": lambda: DSGD(
        lr=0.1, n_workers=2, noise=so.noise.AffineVariance(sigma0=0.5, sigma1=0.8)
    ),
    "dsgd-t5": lambda: DSGD(lr=0.1, n_workers=2, noise=so.noise.StudentT(nu=5.0, scale=0.7)),
    "dcsgd-randk": lambda: DCSGD(
        lr=0.1,
        n_workers=2,
        noise=so.noise.Gaussian(scale=0.6),
        compressor=so.compressors.RandK(k=1),
    ),
    "dcsgd-randk-t": lambda: DCSGD(
        lr=0.1,
        n_workers=3,
        noise=so.noise.StudentT(nu=6.0, scale=[0.3, 0.6, 0.9]),
        compressor=so.compressors.RandK(k=2),
    ),
    "dsign-gauss": lambda: DSignSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian(scale=[0.5, 2.0])),
    "dsign-t": lambda: DSignSGD(lr=0.1, n_workers=8, noise=so.noise.StudentT(nu=1.5, scale=0.8)),
}


def quadratic():
    return so.problems.Quadratic(diag=DIAG)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_step_moments_match_drift_and_diffusion(case):
    """Mean of (x0 - x1)/lr is ū = -drift/eta; its covariance is G Gᵀ / lr (first-order model)."""
    opt, prob = CASES[case](), quadratic()
    x = torch.tensor([0.8, -0.6, 0.3])
    n = 200_000
    xs = x.expand(n, -1).clone()
    x1 = opt.step(prob, so.discrete.State(x=xs.clone()), 0, opt.lr, RandomSource(9, n)).x
    u = (xs - x1) / opt.lr  # (n, d)
    sde = sde_of(opt, prob, "first_order")
    mean = -sde.drift_at(x[None], 1.0)[0]
    cov = sde.diffusion_at(x[None], 1.0).cov()[0] / opt.lr
    centred = u - u.mean(0)
    z = 5.0  # 3 + 6 entries per case, 7 cases
    se_mean = u.std(0) / math.sqrt(n)
    assert torch.all((u.mean(0) - mean).abs() < z * se_mean), (u.mean(0), mean)
    prods = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # (n, d, d)
    se_cov = prods.std(0) / math.sqrt(n)
    assert torch.all((prods.mean(0) - cov).abs() < z * se_cov + 1e-12), (prods.mean(0), cov)


def test_dsignsgd_drift_closed_forms():
    prob = so.problems.Quadratic(diag=[1.0])
    x = torch.linspace(-3, 3, 13).unsqueeze(-1)
    for noise, m in [
        (so.noise.Gaussian(scale=0.5), lambda y: torch.erf(y / math.sqrt(2))),
        (so.noise.StudentT(nu=1.0, scale=0.5), lambda y: 2 / math.pi * torch.atan(y)),
        (so.noise.StudentT(nu=2.0, scale=0.5), lambda y: y / torch.sqrt(2 + y * y)),
    ]:
        opt = DSignSGD(lr=0.1, n_workers=4, noise=noise)
        sde = sde_of(opt, prob)
        torch.testing.assert_close(sde.drift_at(x, 1.0), -m(x / 0.5), rtol=1e-12, atol=1e-12)
        g = sde.diffusion_at(x, 1.0).g
        torch.testing.assert_close(g * g, 0.1 * (1 - m(x / 0.5) ** 2) / 4, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_diagonal_plus_rank_one_square_root(sign, generator):
    b, d = 5, 6
    diag = torch.rand(b, d, generator=generator) + 0.5
    w = torch.randn(b, d, generator=generator) * (0.1 if sign < 0 else 1.0)  # PSD: |D^{-1/2} w| < 1
    g = DiagonalPlusRankOne(diag, w, sign)
    expected = torch.diag_embed(diag) + sign * w.unsqueeze(-1) * w.unsqueeze(-2)
    torch.testing.assert_close(g.cov(), expected, rtol=1e-12, atol=1e-12)
    dw = torch.randn(b, d, generator=generator)
    torch.testing.assert_close(g.apply(dw), (g.dense() @ dw.unsqueeze(-1)).squeeze(-1))


def test_randk_diffusion_is_exact_on_a_singular_covariance():
    # No noise: S = c (d diag(∇f)² - ∇f∇fᵀ)/N is singular (∇f is in its kernel).
    opt = DCSGD(
        lr=0.1,
        n_workers=1,
        noise=so.noise.Gaussian(scale=0.0),
        compressor=so.compressors.RandK(k=1),
    )
    prob = quadratic()
    x = torch.tensor([[1.0, 2.0, -1.0]])
    g = prob.grad(x)
    c = (3 - 1) / (1 * 2)
    expected = c * (3 * torch.diag_embed(g * g) - g.unsqueeze(-1) * g.unsqueeze(-2)) * opt.lr
    torch.testing.assert_close(
        sde_of(opt, prob).diffusion_at(x, 1.0).cov(), expected, rtol=1e-10, atol=1e-12
    )


# --- stationary laws on quadratics (docs/models.md) ------------------------------------------------


def _stationary_sde_loss(opt, prob, model, n_steps, substeps, n_runs=20_000):
    """Richardson-extrapolated stationary loss (Euler–Maruyama with m and 2m substeps: bias O(h²))."""
    means, ses = [], []
    for m, seed in ((substeps, 3), (2 * substeps, 4)):
        path = solve(
            sde_of(opt, prob, model),
            torch.zeros(prob.dim),
            n_steps=n_steps,
            n_runs=n_runs,
            substeps=m,
            record_every=n_steps,
            seed=seed,
        )
        means.append(path.loss[-1].mean().item())
        ses.append(path.loss[-1].std().item() / math.sqrt(n_runs))
    return 2 * means[1] - means[0], math.sqrt(4 * ses[1] ** 2 + ses[0] ** 2)


@pytest.mark.parametrize("compressed", [False, True])
def test_curvature_model_has_the_exact_stationary_loss(compressed):
    lam = torch.tensor([1.0, 3.0, 5.0])
    lr, n, sigma, substeps = 0.2, 2, 1.0, 8
    kw = dict(lr=lr, n_workers=n, noise=so.noise.Gaussian(scale=sigma))
    opt = DCSGD(compressor=so.compressors.RandK(k=2), **kw) if compressed else DSGD(**kw)
    prob = so.problems.Quadratic(diag=lam.tolist())
    exact = stationary_loss(opt, prob)  # the chain's, which the curvature model shares
    first = stationary_loss(opt, prob, "first_order")
    # What Richardson leaves of the Euler–Maruyama bias: O((a h)²), a <= λ_max.
    em_bias = (lam.max().item() * lr / substeps) ** 2
    mean, se = _stationary_sde_loss(
        opt, prob, "curvature", 40, substeps
    )  # T = 8: e^{-14} transient
    assert abs(mean - exact) < 4 * se + em_bias * exact, (mean, exact, se)
    mean1, se1 = _stationary_sde_loss(opt, prob, "first_order", 40, substeps)
    assert abs(mean1 - first) < 4 * se1 + em_bias * first, (mean1, first, se1)
    assert exact - first > 10 * (se + se1)  # the two models really differ here


# --- solver orders ---------------------------------------------------------------------------------


def _levels_error(scheme, sde, x0, t_end, n_levels, n_fine, n_paths, observable, seed=0):
    """Strong and weak errors of ``scheme`` at h = t_end / 2^j against the finest level, one Brownian path."""
    rng = RandomSource(seed, n_paths)
    h_fine, m = t_end / n_fine, sde.brownian_dim
    dw_fine = rng.normal(n_fine, m) * math.sqrt(h_fine)  # (B, n_fine, m)

    def run(n):
        group = n_fine // n
        dw = dw_fine.view(n_paths, n, group, m).sum(2)  # (B, n, m)
        x = x0.expand(n_paths, -1).clone()
        for i in range(n):
            x = scheme.step(sde, x, 1.0, t_end / n, dw[:, i])
        return x

    ref = run(n_fine)
    hs, strong, weak, weak_se = [], [], [], []
    for j in range(n_levels):
        n = 2 ** (j + 3)
        x = run(n)
        hs.append(t_end / n)
        strong.append(((x - ref) ** 2).mean().sqrt().item())
        diff = observable(x) - observable(ref)
        weak.append(diff.mean().abs().item())
        weak_se.append(diff.std().item() / math.sqrt(n_paths))
    return np.array(hs), np.array(strong), np.array(weak), np.array(weak_se)


def _slope(hs, errs):
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


def test_euler_maruyama_orders():
    # Geometric Brownian motion (multiplicative noise): strong order 1/2.
    gbm = SDE.diagonal(lambda x: 0.5 * x, lambda x: 0.8 * x, dim=1)
    hs, strong, _, _ = _levels_error(
        EulerMaruyama(), gbm, torch.ones(1), 1.0, 5, 2**11, 20_000, lambda x: x[:, 0]
    )
    assert abs(_slope(hs, strong) - 0.5) < 0.2
    # Ornstein–Uhlenbeck (additive noise): weak order 1 on E X², strong order 1.
    ou = SDE.diagonal(lambda x: -2.0 * x, lambda x: torch.full_like(x, 0.7), dim=1)
    hs, strong, weak, weak_se = _levels_error(
        EulerMaruyama(), ou, torch.ones(1), 1.0, 5, 2**11, 20_000, lambda x: x[:, 0] ** 2
    )
    assert abs(_slope(hs, weak) - 1.0) < 0.2
    assert weak_se[-1] < weak[-1] / 5  # Monte Carlo error well below the bias at the finest level
    assert abs(_slope(hs, strong) - 1.0) < 0.2


def test_milstein_strong_order_one():
    gbm = SDE.diagonal(lambda x: 0.5 * x, lambda x: 0.8 * x, dim=1)
    hs, strong, _, _ = _levels_error(
        Milstein(), gbm, torch.ones(1), 1.0, 5, 2**11, 20_000, lambda x: x[:, 0]
    )
    assert abs(_slope(hs, strong) - 1.0) < 0.2


def test_milstein_strong_order_one_on_the_sign_sde():
    """DSignSGD on a separable quadratic: g_j depends on x_j alone, so Milstein with the model's
    ∂g_j/∂x_j has strong order 1 where Euler–Maruyama has 1/2 (a wrong derivative drops it back)."""
    opt = DSignSGD(lr=1.0, noise=so.noise.Gaussian(scale=0.5))
    sde = sde_of(opt, so.problems.Quadratic(diag=[1.0, 2.0]), "first_order")
    x0, obs = torch.tensor([0.5, -0.3]), (lambda x: x[:, 0])
    hs, strong, _, _ = _levels_error(Milstein(), sde, x0, 1.0, 5, 2**9, 4000, obs)
    assert abs(_slope(hs, strong) - 1.0) < 0.2, strong
    hs, strong_em, _, _ = _levels_error(EulerMaruyama(), sde, x0, 1.0, 5, 2**9, 4000, obs)
    assert _slope(hs, strong_em) < 0.8 and strong_em[-1] > 2 * strong[-1], (strong_em, strong)


# SDEs whose diffusion declares itself commutative (g_j depends on x_j only), with ∂g_j/∂x_j.
COMMUTATIVE = {
    "dsgd-gauss": lambda: (
        DSGD(lr=0.3, n_workers=2, noise=so.noise.Gaussian(scale=[0.5, 1.5])),
        quadratic(),
    ),
    "dsgd-affine-1d": lambda: (
        DSGD(
            lr=0.3, n_workers=2, noise=so.noise.AffineVariance(sigma0=[0.3, 0.5], sigma1=[0.8, 0.2])
        ),
        HalfSquarePlusQuartic(),
    ),
    "dsgd-affine-1d-shared": lambda: (
        DSGD(lr=0.3, n_workers=3, noise=so.noise.AffineVariance(sigma1=0.6)),
        HalfSquarePlusQuartic(),
    ),
    "dsgd-affine-additive": lambda: (
        DSGD(lr=0.3, noise=so.noise.AffineVariance(sigma0=0.7)),
        quadratic(),
    ),
    "dsign-gauss": lambda: (
        DSignSGD(lr=0.3, n_workers=2, noise=so.noise.Gaussian(scale=[0.5, 2.0])),
        so.problems.CoshSum(dim=3),
    ),
    "dsign-t": lambda: (
        DSignSGD(lr=0.3, n_workers=3, noise=so.noise.StudentT(nu=1.5, scale=0.8)),
        quadratic(),
    ),
    "dsign-t-1d-quartic": lambda: (
        DSignSGD(lr=0.3, noise=so.noise.StudentT(nu=3.0, scale=0.4)),
        so.problems.Quartic(dim=1),
    ),
    "markov": lambda: (
        so.discrete.MarkovSGD(lr=0.3, noise=so.noise.GaussianAR1(rho=0.5)),
        quadratic(),
    ),
    "ito-chain": lambda: (so.discrete.ItoChain(lr=0.3, gamma=0.5, diffusion=0.7), quadratic()),
}


@pytest.mark.parametrize("case", sorted(COMMUTATIVE))
def test_diffusion_derivative_matches_finite_differences(case, generator):
    """The model's ∂g_j/∂x_j against central differences of g (an independent reference), and
    the off-diagonal derivatives are zero (the commutativity Milstein relies on)."""
    opt, prob = COMMUTATIVE[case]()
    sde = sde_of(opt, prob, "first_order")
    x = torch.randn(6, prob.dim, generator=generator)
    eps = 1e-6
    jac = torch.stack(
        [
            (
                sde.diffusion_at(x + eps * e, 0.7).g.expand_as(x)
                - sde.diffusion_at(x - eps * e, 0.7).g.expand_as(x)
            )
            / (2 * eps)
            for e in torch.eye(prob.dim)
        ],
        dim=-1,
    )  # (B, d, d): ∂g_j/∂x_i
    torch.testing.assert_close(
        sde.diffusion_derivative_fn(x, 0.7).expand_as(x),
        torch.diagonal(jac, dim1=-2, dim2=-1),
        rtol=1e-6,
        atol=1e-8,
    )
    off = jac - torch.diag_embed(torch.diagonal(jac, dim1=-2, dim2=-1))
    assert off.abs().max() < 1e-8


def test_milstein_runs_where_the_noise_is_commutative():
    """DSignSGD's SDE used to raise NotImplementedError (autograd through ``out=`` comparisons)."""
    for opt, prob in (COMMUTATIVE["dsign-t"](), COMMUTATIVE["dsgd-affine-1d"]()):
        path = solve(
            sde_of(opt, prob), torch.full((prob.dim,), 0.5), n_steps=5, n_runs=8, scheme="milstein"
        )
        assert torch.isfinite(path.loss).all()


@pytest.mark.parametrize(
    "opt,prob",
    [
        (
            DSignSGD(lr=0.1, noise=so.noise.Gaussian()),
            so.problems.Quadratic(matrix=[[2.0, 0.5], [0.5, 1.0]]),
        ),
        (
            DSignSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian()),
            so.problems.LogisticRegression(n_workers=2),
        ),
        (DSignSGD(lr=0.1, noise=so.noise.Gaussian()), so.problems.LogisticRegression()),
        (DSGD(lr=0.1, noise=so.noise.AffineVariance(sigma0=0.5, sigma1=0.5)), quadratic()),
    ],
    ids=["dsign-dense-quadratic", "dsign-logistic-heterogeneous", "dsign-logistic", "affine-d3"],
)
def test_milstein_is_refused_on_non_commutative_noise(opt, prob):
    sde = sde_of(opt, prob)
    x0 = torch.zeros(prob.dim)
    with pytest.raises(ValueError, match=r"milstein.*commutative"):
        solve(sde, x0, n_steps=2, n_runs=2, scheme="milstein")
    with pytest.raises(ValueError, match=r"milstein.*commutative"):
        solve(sde, x0, n_steps=2, n_runs=2, backend="torchsde", torchsde_method="milstein")
    solve(sde, x0, n_steps=2, n_runs=2)  # Euler–Maruyama is fine


def test_milstein_on_a_hand_built_sde():
    mixing = SDE.diagonal(
        lambda x: -x, lambda x: 0.5 + 0.1 * x.sum(-1, keepdim=True).expand_as(x), dim=2
    )
    with pytest.raises(ValueError, match="commutative"):
        solve(mixing, [0.0, 0.0], n_steps=2, n_runs=2, scheme="milstein")
    declared = SDE.diagonal(
        lambda x: -x,
        lambda x: 0.5 + 0.1 * x,
        dim=2,
        diffusion_derivative=lambda x: torch.full_like(x, 0.1),
    )
    path = solve(declared, [0.0, 0.0], n_steps=2, n_runs=2, scheme="milstein", record_x=True)
    assert torch.isfinite(path.x).all()


@pytest.mark.slow
@pytest.mark.parametrize("model,order", [("first_order", 1.0), ("second_order", 2.0)])
def test_weak_order_of_dsgd_models(model, order):
    """|E g(x_K) - E g(X_T)| ~ lr^order at T = 1, g(x) = x, with coupled noise and Richardson
    extrapolation of the SDE's Euler–Maruyama estimate (bias O((lr/m)²))."""
    prob, t_end, n_runs, m = HalfSquarePlusQuartic(), 1.0, 100_000, 8
    lrs = [0.2, 0.1, 0.05, 0.025]
    errs, ses = [], []
    for lr in lrs:
        opt = DSGD(lr=lr, n_workers=1, noise=so.noise.Gaussian(scale=0.5))
        k = round(t_end / lr)
        disc = simulate(
            opt,
            prob,
            [1.0],
            n_steps=k,
            n_runs=n_runs,
            record_every=k,
            record_x=True,
            keep_increments=True,
            seed=1,
        )
        sde = sde_of(opt, prob, model)
        coarse = solve(
            sde,
            [1.0],
            n_steps=k,
            n_runs=n_runs,
            substeps=m,
            coupled=disc,
            record_every=k,
            record_x=True,
            seed=2,
        )
        fine = solve(
            sde,
            [1.0],
            n_steps=k,
            n_runs=n_runs,
            substeps=2 * m,
            coupled=disc,
            record_every=k,
            record_x=True,
            seed=2,
        )
        sde_x = 2 * fine.x[-1, :, 0] - coarse.x[-1, :, 0]
        diff = disc.x[-1, :, 0] - sde_x
        errs.append(diff.mean().abs().item())
        ses.append(diff.std().item() / math.sqrt(n_runs))
    slope = _slope(np.array(lrs), np.array(errs))
    assert abs(slope - order) < 0.2, (slope, errs, ses)
    assert ses[-1] < errs[-1] / 4, (errs, ses)


# --- backends and coupling ---------------------------------------------------------------------


def test_native_and_torchsde_agree_in_law():
    opt = DSignSGD(lr=0.05, n_workers=4, noise=so.noise.StudentT(nu=1.5, scale=0.5))
    sde = sde_of(opt, quadratic(), "second_order")
    kw = dict(n_steps=40, n_runs=4000, substeps=2, record_every=40, record_x=True)
    native = solve(sde, [1.0, -1.0, 0.5], seed=0, **kw)
    ref = solve(sde, [1.0, -1.0, 0.5], seed=1, backend="torchsde", **kw)
    for j in range(3):
        assert stats.ks_2samp(native.x[-1, :, j].numpy(), ref.x[-1, :, j].numpy()).pvalue > 1e-4


def test_torchsde_backend_equals_native_on_the_same_brownian_path():
    """torchsde's Euler on our grid Brownian motion is the native scheme, step for step."""
    import torchsde

    from sdeopt.dynamics import GridBrownian

    opt = DSGD(lr=0.1, n_workers=2, noise=so.noise.AffineVariance(sigma0=0.5, sigma1=0.5))
    sde = sde_of(opt, quadratic(), "curvature")
    b, k = 7, 12
    dw = torch.randn(k, b, 3, generator=torch.Generator().manual_seed(0)) * math.sqrt(opt.lr)
    ys = torchsde.sdeint(
        sde.torchsde(),
        torch.ones(b, 3),
        torch.tensor([0.0, k * opt.lr]),
        bm=GridBrownian(0.0, opt.lr, dw),
        dt=opt.lr,
        method="euler",
    )
    x = torch.ones(b, 3)
    for i in range(k):
        x = EulerMaruyama().step(sde, x, 1.0, opt.lr, dw[i])
    torch.testing.assert_close(ys[-1], x, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("schedule", [so.schedules.Constant(), so.schedules.PolyDecay(power=0.5)])
def test_coupling_reproduces_the_discrete_path(schedule, generator):
    opt = DSGD(
        lr=0.05, n_workers=4, noise=so.noise.Gaussian(scale=[1.0, 0.5, 2.0, 1.0]), schedule=schedule
    )
    prob = quadratic()
    x0 = torch.randn(50, 3, generator=generator)
    disc = simulate(
        opt, prob, x0, n_steps=30, n_runs=50, record_x=True, keep_increments=True, seed=4
    )
    path = solve(
        sde_of(opt, prob, "first_order"), x0, n_steps=30, n_runs=50, record_x=True, coupled=disc
    )
    torch.testing.assert_close(path.x, disc.x, rtol=1e-10, atol=1e-12)
    # More substeps: a different (continuous) path, close to the discrete one, run by run.
    fine = solve(
        sde_of(opt, prob, "first_order"),
        x0,
        n_steps=30,
        n_runs=50,
        record_x=True,
        coupled=disc,
        substeps=8,
    )
    gap = (fine.x[-1] - disc.x[-1]).norm(dim=-1).mean()
    spread = (disc.x[-1] - disc.x[-1].mean(0)).norm(dim=-1).mean()
    assert 0 < gap < 0.3 * spread


# Every (method, noise) pair whose one random draw per step is the Gaussian ξ of
# x_{k+1} = x_k - lr_k (ū + S^{1/2} ξ): its first-order SDE's Euler step with substeps=1 is the
# method itself, so a coupled solve must reproduce the discrete path to rounding.
COUPLED_CASES = {
    "gauss-shared": lambda: DSGD(lr=0.05, n_workers=3, noise=so.noise.Gaussian(scale=0.7)),
    "gauss-per-worker": lambda: DSGD(
        lr=0.05, n_workers=2, noise=so.noise.Gaussian(scale=[0.5, 2.0])
    ),
    "affine-additive": lambda: DSGD(lr=0.05, noise=so.noise.AffineVariance(sigma0=2.0)),
    "affine": lambda: DSGD(
        lr=0.05, n_workers=2, noise=so.noise.AffineVariance(sigma0=0.5, sigma1=0.8)
    ),
    "affine-per-worker": lambda: DSGD(
        lr=0.05, n_workers=2, noise=so.noise.AffineVariance(sigma0=[0.5, 1.0], sigma1=[0.3, 0.9])
    ),
    "dcsgd-identity-affine": lambda: DCSGD(
        lr=0.05, n_workers=2, noise=so.noise.AffineVariance(sigma0=1.0, sigma1=0.5)
    ),
}


@pytest.mark.parametrize("case", sorted(COUPLED_CASES))
def test_coupling_reproduces_the_discrete_path_for_every_coupling_law(case, generator):
    """Regression: AffineVariance scaled its normal draw in place, so the recorded increment was
    std(x)·ξ and the coupled SDE applied std twice (E f 0.417 for a discrete 0.104)."""
    opt, prob = COUPLED_CASES[case](), so.problems.Quadratic(diag=[1.0, 3.0])
    x0 = torch.randn(40, 2, generator=generator)
    disc = simulate(
        opt, prob, x0, n_steps=25, n_runs=40, record_x=True, keep_increments=True, seed=3
    )
    # The recorded increments are standard normal draws, whatever the law's state-dependent scale.
    xi = disc.increments.reshape(-1)
    assert abs(float(xi.mean())) < 4 / math.sqrt(xi.numel()) and abs(float(xi.var()) - 1) < 0.1
    path = solve(
        sde_of(opt, prob, "first_order"), x0, n_steps=25, n_runs=40, record_x=True, coupled=disc
    )
    torch.testing.assert_close(path.x, disc.x, rtol=1e-10, atol=1e-12)


def test_keep_increments_refuses_methods_without_one_gaussian_draw():
    opt = DSignSGD(lr=0.1, noise=so.noise.Gaussian())
    with pytest.raises(ValueError, match="keep_increments"):
        simulate(opt, quadratic(), torch.zeros(3), n_steps=2, n_runs=4, keep_increments=True)


def test_solve_freezes_blown_up_runs():
    opt = DSGD(lr=0.5, noise=so.noise.Gaussian(scale=0.1))
    sde = sde_of(opt, so.problems.Quadratic(diag=[10.0]), "curvature")  # drift +, explodes
    path = solve(sde, [1.0], n_steps=200, n_runs=20, blowup_threshold=1e6)
    assert path.diverged.all() and torch.isfinite(path.loss).all()


def test_solve_is_chunk_invariant_and_seeded():
    opt = DSignSGD(lr=0.05, n_workers=3, noise=so.noise.StudentT(nu=1.5))
    sde = sde_of(opt, quadratic(), "second_order")
    kw = dict(n_steps=10, n_runs=40, record_x=True, block_size=8, substeps=3, seed=5)
    a = solve(sde, [1.0, 1.0, 1.0], **kw)
    b = solve(sde, [1.0, 1.0, 1.0], chunk_size=16, **kw)
    assert torch.equal(a.x, b.x) and a.model == "second_order"


# --- bad input ---------------------------------------------------------------------------------


def test_infinite_variance_has_no_brownian_sde():
    opt = DSGD(lr=0.1, noise=so.noise.StudentT(nu=1.5))
    with pytest.raises(ValueError, match="infinite variance"):
        sde_of(opt, quadratic())
    # ... while the sign SDE exists for every nu > 0.
    sde_of(DSignSGD(lr=0.1, noise=so.noise.StudentT(nu=0.5)), quadratic())


@pytest.mark.parametrize(
    "call,name",
    [
        (
            lambda: sde_of(DSGD(lr=0.1, noise=so.noise.Gaussian()), quadratic(), "third_order"),
            "model",
        ),
        (lambda: sde_of("dsgd", quadratic()), "method"),
        (
            lambda: sde_of(
                DCSGD(lr=0.1, noise=so.noise.Gaussian(), compressor=so.compressors.TopK(k=1)),
                quadratic(),
            ),
            "compressor",
        ),
        (lambda: sde_of(DCSGD(lr=0.1, noise=so.noise.Gaussian(), clip=1.0), quadratic()), "method"),
        (
            lambda: sde_of(
                DCSGD(lr=0.1, noise=so.noise.Gaussian(), compressor=so.compressors.RandK(k=5)),
                quadratic(),
            ),
            "k",
        ),
        (
            lambda: sde_of(
                DSignSGD(lr=0.1, noise=so.noise.SymmetricStable(alpha=1.5)), quadratic()
            ),
            "noise",
        ),
        (
            lambda: solve(
                sde_of(DSGD(lr=0.1, noise=so.noise.Gaussian()), quadratic()),
                [0.0] * 3,
                2,
                2,
                substeps=0,
            ),
            "substeps",
        ),
        (
            lambda: solve(
                sde_of(DSGD(lr=0.1, noise=so.noise.Gaussian()), quadratic()),
                [0.0] * 3,
                2,
                2,
                backend="scipy",
            ),
            "backend",
        ),
        (
            lambda: solve(
                sde_of(
                    DCSGD(lr=0.1, noise=so.noise.Gaussian(), compressor=so.compressors.RandK(k=1)),
                    quadratic(),
                ),
                [0.0] * 3,
                2,
                2,
                scheme="milstein",
            ),
            "milstein",
        ),
        (lambda: solve("sde", [0.0] * 3, 2, 2), "sde"),
        (
            lambda: sde_of(DSignSGD(lr=0.1, noise=so.noise.Gaussian()), quadratic(), "curvature"),
            "curvature.*no derivation",
        ),
        (
            lambda: sde_of(
                so.discrete.MarkovSGD(lr=0.1, noise=so.noise.GaussianAR1(rho=0.8)),
                quadratic(),
                "second_order",
            ),
            "second_order.*correlated",
        ),
        (
            lambda: sde_of(
                so.discrete.MarkovSGD(lr=0.1, noise=so.noise.TwoStateMarkov(p=0.1)),
                quadratic(),
                "curvature",
            ),
            "curvature.*correlated",
        ),
        (
            lambda: solve(
                sde_of(DSGD(lr=0.1, noise=so.noise.Gaussian()), quadratic()), [0.0] * 2, 2, 2
            ),
            "x0",
        ),
    ],
)
def test_bad_input(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_solve_method_is_a_deprecated_alias_of_scheme():
    """`method` names the optimizer everywhere else; solve's integration scheme is `scheme`."""
    opt = DSGD(lr=0.1, noise=so.noise.Gaussian())
    sde = sde_of(opt, quadratic())
    kw = dict(n_steps=3, n_runs=4, seed=1, record_x=True)
    new = solve(sde, [0.5] * 3, scheme="milstein", **kw)
    with pytest.warns(DeprecationWarning, match="scheme"):
        old = solve(sde, [0.5] * 3, method="milstein", **kw)
    assert torch.equal(new.x, old.x) and new.config["scheme"] == "milstein"
    with pytest.raises(ValueError, match="scheme"):
        solve(sde, [0.5] * 3, scheme="rk4", **kw)
    with pytest.raises(ValueError, match="method"), pytest.warns(DeprecationWarning):
        solve(sde, [0.5] * 3, scheme="milstein", method="euler", **kw)
