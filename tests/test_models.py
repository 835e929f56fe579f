"""Every (method, model) pair pinned against an independent reference.

Drifts against autograd of hand-written objectives and scipy's CDFs (finite differences for
the Jacobian of the sign direction), diffusions against the one-step covariance of the discrete
update written out by hand, and the weak orders of the first- and second-order models against
deterministic references: the discrete method's exact law (Gauss–Hermite backward recursion for
DSGD, the lattice walk of DSignSGD) and the SDE's backward Kolmogorov equation solved by
Crank–Nicolson. No Monte Carlo: a wrong sign, factor or power fails at once, in seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import interpolate, stats

import sdeopt as so
from sdeopt.analysis.closed_forms import kolmogorov_expectation
from sdeopt.discrete import DCSGD, DSGD, DSignSGD, ItoChain, MarkovSGD
from sdeopt.dynamics import sde_of
from tests._reference import HalfSquarePlusQuartic, TwoCenters

ETA = 0.7  # a schedule factor != 1, so that every power of eta_t is pinned too
LR = 0.3


DENSE = [[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]]


def objectives():
    """(problem, the same f written by hand in torch) pairs."""
    h = torch.tensor(DENSE)
    return {
        "dense-quadratic": (so.problems.Quadratic(matrix=DENSE), lambda y: 0.5 * y @ h @ y),
        "cosh": (so.problems.CoshSum(dim=3), lambda y: torch.cosh(y).sum() - 3),
        "quartic": (so.problems.Quartic(dim=3), lambda y: 0.25 * (y**4).sum()),
    }


def points(dim, generator, n=5):
    return 0.8 * torch.randn(n, dim, generator=generator)


def per_sample(fn, x):
    return torch.func.vmap(fn)(x)


# --- DSGD and DCSGD: gradient directions -----------------------------------------------------------

GRADIENT_METHODS = {
    "dsgd-gauss": lambda: DSGD(lr=LR, n_workers=3, noise=so.noise.Gaussian(scale=[0.5, 1.0, 2.0])),
    "dsgd-t5": lambda: DSGD(lr=LR, n_workers=2, noise=so.noise.StudentT(nu=5.0, scale=0.7)),
    "dsgd-affine": lambda: DSGD(
        lr=LR, n_workers=2, noise=so.noise.AffineVariance(sigma0=[0.5, 0.2], sigma1=[0.8, 0.3])
    ),
    "dcsgd-randk": lambda: DCSGD(
        lr=LR, n_workers=2, noise=so.noise.Gaussian(scale=0.6), compressor=so.compressors.RandK(k=1)
    ),
    "dcsgd-randk-t": lambda: DCSGD(
        lr=LR,
        n_workers=3,
        noise=so.noise.StudentT(nu=6.0, scale=[0.3, 0.6, 0.9]),
        compressor=so.compressors.RandK(k=2),
    ),
}
#: model -> s in the reference drift -eta ∇(f + s (lr eta/4) |∇f|²) (Li–Tai–E: +; Compagnoni et al.: -).
GRADIENT_MODELS = {"first_order": 0.0, "second_order": 1.0, "curvature": -1.0}


@pytest.mark.parametrize("objective", ["dense-quadratic", "cosh", "quartic"])
@pytest.mark.parametrize("model", sorted(GRADIENT_MODELS))
@pytest.mark.parametrize("method", sorted(GRADIENT_METHODS))
def test_gradient_method_drifts_against_autograd(method, model, objective, generator):
    prob, f = objectives()[objective]
    opt = GRADIENT_METHODS[method]()
    x = points(prob.dim, generator)
    grad = torch.func.grad(f)
    grad_sq = torch.func.grad(lambda y: (grad(y) ** 2).sum())  # ∇|∇f|² = 2 ∇²f ∇f
    s = GRADIENT_MODELS[model]
    expected = -ETA * per_sample(grad, x) - s * (LR * ETA**2 / 4) * per_sample(grad_sq, x)
    drift = sde_of(opt, prob, model).drift_at(x, ETA)
    torch.testing.assert_close(drift, expected, rtol=1e-10, atol=1e-12)


def _noise_variance(noise, grads):
    """Per-coordinate noise variance v_i of each worker, (B, N), from the law's definition."""
    b, n = grads.shape[0], grads.shape[1]
    if isinstance(noise, so.noise.AffineVariance):
        s0 = torch.tensor(noise.sigma0 if isinstance(noise.sigma0, tuple) else (noise.sigma0,) * n)
        s1 = torch.tensor(noise.sigma1 if isinstance(noise.sigma1, tuple) else (noise.sigma1,) * n)
        return s0**2 + s1**2 * (grads**2).sum(-1)
    scale = torch.tensor(noise.scale if isinstance(noise.scale, tuple) else (noise.scale,) * n)
    var_t = noise.nu / (noise.nu - 2) if isinstance(noise, so.noise.StudentT) else 1.0
    return (scale**2 * var_t).expand(b, n)


def _step_covariance(opt, grads):
    """Cov of the direction u = (1/N) Σ_i C(∇f_i + Z_i), (B, d, d), from the update rule alone.

    RandK keeps coordinate j with probability k/d and a pair j != l with k(k-1)/(d(d-1)), scaling
    kept ones by d/k, so E[C(v) C(v)ᵀ]_jl = (d/k)² P(j, l kept) v_j v_l; averaging over Z adds
    v_i to the diagonal of v vᵀ; C is unbiased, so the covariance is that minus ∇f_i ∇f_iᵀ.
    """
    b, n, d = grads.shape
    v = _noise_variance(opt.noise, grads)  # (B, N)
    eye = torch.eye(d)
    cov = torch.zeros(b, d, d)
    for i in range(n):
        outer = grads[:, i].unsqueeze(-1) * grads[:, i].unsqueeze(-2)  # (B, d, d)
        second = outer + v[:, i, None, None] * eye  # E (g + Z)(g + Z)ᵀ
        if isinstance(getattr(opt, "compressor", None), so.compressors.RandK):
            k = opt.compressor.k
            pair = k * (k - 1) / (d * (d - 1)) if d > 1 else 0.0  # no pairs in one dimension
            keep = torch.full((d, d), pair).fill_diagonal_(k / d)
            second = second * keep * (d / k) ** 2
        cov += second - outer
    return cov / n**2


HETEROGENEOUS = {
    "dsgd-gauss": lambda: DSGD(lr=LR, n_workers=2, noise=so.noise.Gaussian(scale=[0.5, 1.5])),
    "dcsgd-randk": lambda: DCSGD(
        lr=LR, n_workers=2, noise=so.noise.Gaussian(scale=0.6), compressor=so.compressors.RandK(k=2)
    ),
    "dcsgd-randk-t": lambda: DCSGD(
        lr=LR,
        n_workers=2,
        noise=so.noise.StudentT(nu=4.0, scale=[0.3, 0.9]),
        compressor=so.compressors.RandK(k=1),
    ),
}


@pytest.mark.parametrize("model", sorted(GRADIENT_MODELS))
@pytest.mark.parametrize(
    "case",
    [("homogeneous", m) for m in sorted(GRADIENT_METHODS)]
    + [("heterogeneous", m) for m in sorted(HETEROGENEOUS)],
    ids=str,
)
def test_gradient_method_diffusions_against_the_one_step_covariance(case, model, generator):
    """G Gᵀ lr = Cov(x_1 - x_0) = (lr eta)² Cov u, for every model (they share the diffusion)."""
    kind, name = case
    if kind == "homogeneous":
        opt, prob = GRADIENT_METHODS[name](), so.problems.Quadratic(matrix=DENSE)
    else:
        opt, prob = HETEROGENEOUS[name](), TwoCenters()
    x = points(prob.dim, generator)
    grads = prob.worker_grads(x).expand(-1, opt.n_workers, -1)  # (B, N, d)
    expected = (LR * ETA) ** 2 * _step_covariance(opt, grads)
    cov = sde_of(opt, prob, model).diffusion_at(x, ETA).cov() * LR
    torch.testing.assert_close(cov, expected, rtol=1e-9, atol=1e-12)


# --- DSignSGD: the sign direction ------------------------------------------------------------------

SIGN_METHODS = {
    "gauss": lambda: DSignSGD(lr=LR, n_workers=2, noise=so.noise.Gaussian(scale=[0.5, 2.0])),
    "t1.5": lambda: DSignSGD(lr=LR, n_workers=3, noise=so.noise.StudentT(nu=1.5, scale=0.8)),
    "t3-per-worker": lambda: DSignSGD(
        lr=LR, n_workers=2, noise=so.noise.StudentT(nu=3.0, scale=[0.4, 1.1])
    ),
}


def _sign_mean(opt, grads):
    """ū = (1/N) Σ_i (2 F(∇f_i/σ_i) - 1) with F from scipy, (B, d) numpy; grads (B, N or 1, d)."""
    noise, n = opt.noise, opt.n_workers
    scale = np.array(noise.scale if isinstance(noise.scale, tuple) else (noise.scale,) * n)[:, None]
    cdf = (
        stats.norm.cdf
        if isinstance(noise, so.noise.Gaussian)
        else (lambda y: stats.t.cdf(y, noise.nu))
    )
    g = np.broadcast_to(grads, (grads.shape[0], n, grads.shape[-1]))
    return (2 * cdf(g / scale) - 1).mean(1), (2 * cdf(g / scale) - 1)


@pytest.mark.parametrize("model", ["first_order", "second_order"])
@pytest.mark.parametrize("objective", ["dense-quadratic", "cosh"])
@pytest.mark.parametrize("method", sorted(SIGN_METHODS))
def test_sign_drifts_against_scipy_and_finite_differences(method, objective, model, generator):
    prob, _ = objectives()[objective]
    opt = SIGN_METHODS[method]()
    x = points(prob.dim, generator)

    def mean(y):  # y (B, d) numpy -> ū (B, d)
        return _sign_mean(opt, prob.worker_grads(torch.as_tensor(y)).numpy())[0]

    u = mean(x.numpy())
    expected = -ETA * u
    if model == "second_order":
        h = 1e-6
        jac = np.stack(
            [
                (mean(x.numpy() + h * e) - mean(x.numpy() - h * e)) / (2 * h)
                for e in np.eye(prob.dim)
            ],
            axis=-1,
        )  # (B, d, d): ∂ū_j/∂x_l
        expected = expected - (LR * ETA**2 / 2) * np.einsum("bjl,bl->bj", jac, u)
    drift = sde_of(opt, prob, model).drift_at(x, ETA)
    np.testing.assert_allclose(drift.numpy(), expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    "case", [("homogeneous", m) for m in sorted(SIGN_METHODS)] + [("heterogeneous", "t2")], ids=str
)
def test_sign_diffusion_against_the_one_step_covariance(case, generator):
    """Signs of different workers and coordinates are independent given x:
    Cov u = diag((1/N²) Σ_i (1 - m_i²)); heterogeneous workers have their own m_i (first order)."""
    kind, name = case
    if kind == "homogeneous":
        opt, prob, models = (
            SIGN_METHODS[name](),
            so.problems.Quadratic(matrix=DENSE),
            GRADIENT_MODELS,
        )
    else:
        opt, prob = (
            DSignSGD(lr=LR, n_workers=2, noise=so.noise.StudentT(nu=2.0, scale=[0.5, 1.5])),
            TwoCenters(),
        )
        models = ["first_order"]
    x = points(prob.dim, generator)
    mean, m = _sign_mean(opt, prob.worker_grads(x).numpy())  # (B, d), (B, N, d)
    expected = np.apply_along_axis(
        np.diag, -1, (LR * ETA) ** 2 * (1 - m**2).sum(1) / opt.n_workers**2
    )
    for model in models:
        if model == "curvature":
            continue
        cov = sde_of(opt, prob, model).diffusion_at(x, ETA).cov() * LR
        np.testing.assert_allclose(cov.numpy(), expected, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(
        sde_of(opt, prob).drift_at(x, ETA).numpy(), -ETA * mean, rtol=1e-9, atol=1e-12
    )


# --- SGD with Markov noise and Itô chains ------------------------------------------------------------


def _asymptotic_variance(matrix, values):
    """σ² = Σ_{j ∈ Z} Cov_π(h(Z_0), h(Z_j)) by the fundamental matrix (I - P + 1πᵀ)^{-1}."""
    p = np.asarray(matrix, dtype=float)
    w, vl = np.linalg.eig(p.T)
    pi = np.real(vl[:, np.argmin(abs(w - 1))])
    pi = pi / pi.sum()
    h = np.asarray(values, dtype=float) - pi @ values
    z = np.linalg.inv(np.eye(len(pi)) - p + np.outer(np.ones(len(pi)), pi))
    return 2 * pi @ (h * (z @ h)) - pi @ (h * h)


MARKOV = {
    "two-state": (
        so.noise.TwoStateMarkov(p=0.2, scale=0.5),
        0.5**2 * _asymptotic_variance([[0.8, 0.2], [0.2, 0.8]], [-1.0, 1.0]),
    ),
    "ar1": (so.noise.GaussianAR1(rho=0.6, scale=1.5), 1.5**2 * (1 + 0.6) / (1 - 0.6)),
    "finite": (
        so.noise.FiniteMarkov(
            [[0.5, 0.5, 0.0], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], values=[-1.0, 0.5, 2.0]
        ),
        _asymptotic_variance([[0.5, 0.5, 0.0], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], [-1.0, 0.5, 2.0]),
    ),
}


@pytest.mark.parametrize("chain", sorted(MARKOV))
def test_markov_sgd_model_against_the_chain_clt(chain, generator):
    noise, sigma2 = MARKOV[chain]
    prob, f = objectives()["cosh"]
    x = points(prob.dim, generator)
    sde = sde_of(MarkovSGD(lr=LR, noise=noise), prob)
    torch.testing.assert_close(sde.drift_at(x, ETA), -ETA * per_sample(torch.func.grad(f), x))
    torch.testing.assert_close(
        sde.diffusion_at(x, ETA).cov() * LR,
        (LR * ETA) ** 2 * sigma2 * torch.eye(3).expand(5, 3, 3),
        rtol=1e-9,
        atol=1e-12,
    )


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_ito_chain_model_against_its_update(gamma, generator):
    """One chain step at factor eta: mean eta lr b, covariance (eta lr)^{1+γ} σ² (unit-covariance ε)."""
    drift, diffusion = (lambda y: -torch.sin(y)), (lambda y: 0.5 + y**2)
    prob = so.problems.Quadratic(diag=[1.0, 2.0])
    x = points(2, generator)
    for chain, sigma in (
        (ItoChain(lr=LR, gamma=gamma, drift=drift, diffusion=diffusion), diffusion(x)),
        (ItoChain(lr=LR, gamma=gamma, diffusion=0.7), torch.full_like(x, 0.7)),
    ):
        sde = sde_of(chain, prob)
        b = drift(x) if chain.drift is not None else -prob.grad(x)
        torch.testing.assert_close(sde.drift_at(x, ETA) * LR, ETA * LR * b)
        torch.testing.assert_close(
            sde.diffusion_at(x, ETA).cov() * LR,
            torch.diag_embed((ETA * LR) ** (1 + gamma) * sigma**2),
        )


@pytest.mark.parametrize(
    "make,model",
    [
        (lambda: DSignSGD(lr=LR, noise=so.noise.Gaussian()), "curvature"),
        (lambda: MarkovSGD(lr=LR, noise=so.noise.GaussianAR1(rho=0.5)), "second_order"),
        (lambda: MarkovSGD(lr=LR, noise=so.noise.GaussianAR1(rho=0.5)), "curvature"),
        (lambda: ItoChain(lr=LR), "second_order"),
        (lambda: ItoChain(lr=LR), "curvature"),
    ],
)
def test_models_without_a_derivation_are_refused(make, model):
    with pytest.raises(ValueError, match=f"Invalid model: '{model}'"):
        sde_of(make(), so.problems.Quadratic(diag=[1.0, 2.0, 3.0]), model)


@pytest.mark.parametrize("scale", [0.0, [0.0, 1.0]])
def test_sign_model_refuses_a_zero_noise_scale(scale):
    """σ = 0 makes the sign deterministic: m jumps at ∇f = 0 and the drift is not smooth."""
    with pytest.raises(ValueError, match="zero scale"):
        sde_of(
            DSignSGD(lr=LR, n_workers=2, noise=so.noise.Gaussian(scale=scale)),
            so.problems.Quadratic(diag=[1.0]),
        )
    sde_of(
        DSignSGD(lr=LR, n_workers=2, noise=so.noise.Gaussian(scale=[1.0, 2.0])),
        so.problems.Quadratic(diag=[1.0]),
    )


def test_a_method_without_a_model_is_refused():
    class PlainGradient(so.discrete.base.DirectionMethod):
        def direction(self, problem, x, rng):
            return problem.grad(x)

    with pytest.raises(ValueError, match="has no SDE model"):
        sde_of(PlainGradient(lr=LR, noise=so.noise.Gaussian()), so.problems.Quadratic(diag=[1.0]))


def test_heterogeneous_sign_method_has_no_second_order_model():
    with pytest.raises(ValueError, match="second_order"):
        sde_of(
            DSignSGD(lr=LR, n_workers=2, noise=so.noise.Gaussian()), TwoCenters(), "second_order"
        )


# --- what a model must keep: dtype, structure, edge cases, its record ---------------------------------

DTYPE_CASES = {
    "dsgd-gauss": lambda: (GRADIENT_METHODS["dsgd-gauss"](), so.problems.CoshSum(dim=3)),
    "dsgd-affine-1d": lambda: (
        DSGD(lr=LR, noise=so.noise.AffineVariance(sigma0=0.5, sigma1=0.8)),
        HalfSquarePlusQuartic(),
    ),
    "dcsgd-randk": lambda: (GRADIENT_METHODS["dcsgd-randk"](), so.problems.CoshSum(dim=3)),
    "dcsgd-randk-heterogeneous": lambda: (HETEROGENEOUS["dcsgd-randk"](), TwoCenters()),
    "dsign-t": lambda: (SIGN_METHODS["t3-per-worker"](), so.problems.CoshSum(dim=3)),
    "markov": lambda: (MarkovSGD(lr=LR, noise=MARKOV["ar1"][0]), so.problems.CoshSum(dim=3)),
    "ito-chain": lambda: (ItoChain(lr=LR, gamma=0.5, diffusion=0.7), so.problems.CoshSum(dim=3)),
}


@pytest.mark.parametrize("case", sorted(DTYPE_CASES))
def test_models_compute_in_the_dtype_of_x(case, generator):
    """float32 in, float32 out: drift, G dW, G Gᵀ and ∂g (no silent float64 constants)."""
    opt, prob = DTYPE_CASES[case]()
    sde = sde_of(opt, prob.to("cpu", torch.float32))
    x = points(prob.dim, generator).float()
    diffusion = sde.diffusion_at(x, ETA)
    outputs = [
        sde.drift_at(x, ETA),
        diffusion.apply(x.new_ones(x.shape[0], sde.brownian_dim)),
        diffusion.cov(),
    ]
    if sde.diffusion_derivative_fn is not None:
        outputs.append(sde.diffusion_derivative_fn(x, ETA))
    assert all(out.dtype == torch.float32 for out in outputs), [out.dtype for out in outputs]
    reference = sde_of(opt, prob).diffusion_at(x.double(), ETA).cov()
    torch.testing.assert_close(diffusion.cov().double(), reference, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("d,k", [(1, 1), (2, 1), (2, 2), (4, 3)])
def test_randk_diffusion_in_small_dimensions(d, k, generator):
    """k = d keeps everything (no compression noise); d = 2 is the smallest case with c != 0."""
    opt = DCSGD(
        lr=LR, n_workers=2, noise=so.noise.Gaussian(scale=0.6), compressor=so.compressors.RandK(k=k)
    )
    prob = so.problems.Quadratic(diag=list(np.linspace(1.0, 2.0, d)))
    x = points(d, generator)
    expected = (LR * ETA) ** 2 * _step_covariance(opt, prob.worker_grads(x).expand(-1, 2, -1))
    sde = sde_of(opt, prob)
    torch.testing.assert_close(sde.diffusion_at(x, ETA).cov() * LR, expected, rtol=1e-9, atol=1e-12)
    assert sde.noise_type == "general"  # G Gᵀ is not diagonal: torchsde needs the dense G
    path = so.dynamics.solve(sde, x[0], n_steps=3, n_runs=4, backend="torchsde")
    assert torch.isfinite(path.loss).all()


def test_sign_model_where_the_signs_are_certain():
    """Far from the minimum Φ(∇f/σ) = 1 in float64: g = 0 there and ∂g = 0, not 0/0."""
    opt = DSignSGD(lr=LR, n_workers=2, noise=so.noise.Gaussian(scale=[0.1, 0.2]))
    sde = sde_of(opt, so.problems.Quadratic(diag=[1.0, 2.0]))
    x = torch.tensor([[60.0, -80.0], [0.3, 70.0]])
    assert torch.equal(sde.diffusion_at(x, ETA).g[0], torch.zeros(2))
    deriv = sde.diffusion_derivative_fn(x, ETA)
    assert (
        torch.isfinite(deriv).all() and torch.equal(deriv[0], torch.zeros(2)) and deriv[1, 1] == 0
    )
    torch.testing.assert_close(sde.drift_at(x, ETA)[0], torch.tensor([-ETA, ETA]))


def test_affine_derivative_where_the_noise_vanishes():
    """σ0 = 0 and ∇f = 0 at the minimum: g = 0 and its Milstein derivative is 0 there, not 0/0."""
    opt = DSGD(lr=LR, n_workers=3, noise=so.noise.AffineVariance(sigma1=0.6))
    sde = sde_of(opt, HalfSquarePlusQuartic())
    x = torch.tensor([[0.0], [0.5]])
    deriv = sde.diffusion_derivative_fn(x, ETA)
    assert deriv[0, 0] == 0 and sde.diffusion_at(x, ETA).g[0, 0] == 0
    # g = eta sqrt(lr) sqrt(3 σ1² f'²)/3 = eta sqrt(lr) σ1 |f'| / sqrt(3), f' = x + x³, f'' = 1 + 3x²
    torch.testing.assert_close(
        deriv[1, 0], torch.tensor(ETA * LR**0.5 * 0.6 / 3**0.5 * (1 + 3 * 0.25))
    )


def test_heterogeneous_sign_drift_in_one_dimension(generator):
    opt = DSignSGD(lr=LR, n_workers=2, noise=so.noise.Gaussian(scale=[0.5, 1.0]))
    prob, x = TwoCenters([[1.0], [-2.0]]), points(1, generator)
    mean, _ = _sign_mean(opt, prob.worker_grads(x).numpy())
    np.testing.assert_allclose(
        sde_of(opt, prob).drift_at(x, ETA).numpy(), -ETA * mean, rtol=1e-9, atol=1e-12
    )


def test_itô_chain_with_a_callable_diffusion_has_no_milstein_in_several_dimensions():
    """A user's σ(x) may mix coordinates: its ∂g is unknown, so Milstein is refused for d > 1 (in
    1-D autograd gives it); a constant σ is additive noise."""
    chain = ItoChain(lr=LR, diffusion=lambda y: 0.5 + 0.1 * y.sum(-1, keepdim=True).expand_as(y))
    sde = sde_of(chain, so.problems.Quadratic(diag=[1.0, 2.0]))
    assert sde.diffusion_derivative_fn is None
    with pytest.raises(ValueError, match="milstein"):
        so.dynamics.solve(sde, [0.5, 0.5], n_steps=2, n_runs=2, scheme="milstein")
    one_d = so.dynamics.solve(
        sde_of(ItoChain(lr=LR, diffusion=lambda y: 0.5 + y**2), so.problems.Quadratic(diag=[1.0])),
        [0.5],
        n_steps=2,
        n_runs=2,
        scheme="milstein",
    )
    assert torch.isfinite(one_d.loss).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: (GRADIENT_METHODS["dsgd-gauss"](), "curvature"),
        lambda: (SIGN_METHODS["gauss"](), "second_order"),
        lambda: (MarkovSGD(lr=LR, noise=MARKOV["ar1"][0]), "first_order"),
        lambda: (ItoChain(lr=LR, gamma=0.5, diffusion=0.7), "first_order"),
    ],
    ids=["dsgd", "dsign", "markov", "ito"],
)
def test_models_record_what_they_are(make):
    """The SDE knows its model, its problem (observables are recorded) and its configuration."""
    opt, model = make()
    prob = so.problems.Quadratic(diag=[1.0, 2.0, 3.0])
    sde = sde_of(opt, prob, model)
    assert sde.model == model and sde.problem is prob and sde.lr == LR
    assert sde.config["model"] == model and sde.config["method"] == opt.config()
    if isinstance(opt, ItoChain):
        assert sde.config["gamma"] == 0.5 and sde.config["diffusion_scale"] == pytest.approx(
            LR**0.25
        )
    path = so.dynamics.solve(sde, [1.0, 1.0, 1.0], n_steps=2, n_runs=4)
    assert path.model == model and torch.isfinite(path.loss).all()


# --- weak orders against deterministic references ----------------------------------------------------


def sde_expectation(sde, g, x0, t_end, lo, hi, n_x=2001, n_t=400):
    """E g(X_T | X_0 = x0) of a 1-D SDE by Crank–Nicolson on its backward Kolmogorov equation
    (``closed_forms.kolmogorov_expectation``)."""
    return kolmogorov_expectation(sde, g, x0, t_end, lo=lo, hi=hi, n_x=n_x, n_t=n_t)


def dsgd_expectation(grad, lr, sigma, g, x0, n_steps, lo, hi, n_x=3001, n_nodes=40):
    """E g(x_K) of x_{k+1} = x_k - lr (f'(x_k) + σ ξ_k): backward recursion u_k = E u_{k+1}(x_{k+1}),
    Gauss–Hermite in ξ, cubic splines in x."""
    x = np.linspace(lo, hi, n_x)
    z, w = np.polynomial.hermite_e.hermegauss(n_nodes)
    after = np.clip((x - lr * grad(x))[:, None] + lr * sigma * z[None, :], lo, hi)
    u = g(x)
    for _ in range(n_steps):
        u = interpolate.CubicSpline(x, u)(after) @ (w / w.sum())
    return float(interpolate.CubicSpline(x, u)(x0))


def dsign_expectation(grad, lr, sigma, n_workers, g, x0, n_steps):
    """E g(x_K) of DSignSGD with Gaussian noise, exactly: the iterates live on x0 + (lr/N) Z and
    the number of + signs is Binomial(N, Φ(f'(x)/σ))."""
    n = n_workers
    pos = x0 + lr / n * np.arange(-n_steps * n, n_steps * n + 1)
    p = np.zeros_like(pos)
    p[n_steps * n] = 1.0
    up = stats.norm.cdf(grad(pos) / sigma)
    for _ in range(n_steps):
        new = np.zeros_like(p)
        for c in range(n + 1):  # c plus signs: x -> x - lr (2c - n)/n, n - 2c lattice sites
            mass, shift = p * stats.binom.pmf(c, n, up), n - 2 * c
            if shift >= 0:
                new[shift:] += mass[: len(p) - shift]
            else:
                new[:shift] += mass[-shift:]
        p = new
    return float(p @ g(pos))


def _slope(lrs, errs):
    return float(np.polyfit(np.log(lrs), np.log(errs), 1)[0])


LRS = [0.1, 0.05, 0.025, 0.0125]


def test_weak_orders_of_the_dsgd_models():
    """E x_T² at T = 1 on f = x²/2 + x⁴/4: first order 1, second order 2, curvature 1 (its
    correction has the opposite sign: exact for quadratics' stationary law, not a weak order 2)."""
    prob, square = HalfSquarePlusQuartic(), (lambda x: x**2)
    errs = {model: [] for model in GRADIENT_MODELS}
    for lr in LRS:
        exact = dsgd_expectation(lambda x: x + x**3, lr, 1.0, square, 1.0, round(1 / lr), -3.0, 3.0)
        for model in errs:
            sde = sde_of(DSGD(lr=lr, noise=so.noise.Gaussian(scale=1.0)), prob, model)
            errs[model].append(abs(sde_expectation(sde, square, 1.0, 1.0, -3.0, 3.0) - exact))
    assert abs(_slope(LRS[1:], errs["first_order"][1:]) - 1) < 0.2, errs
    assert abs(_slope(LRS, errs["second_order"]) - 2) < 0.2, errs
    assert abs(_slope(LRS[1:], errs["curvature"][1:]) - 1) < 0.2, errs
    assert errs["second_order"][-1] < errs["first_order"][-1] / 20


def test_weak_orders_of_the_sign_models():
    """DSignSGD, 2 workers, Gaussian noise, f = x²/2, E x_T² at T = 1: first order 1, second order 2."""
    prob, square = so.problems.Quadratic(diag=[1.0]), (lambda x: x**2)
    errs = {"first_order": [], "second_order": []}
    for lr in LRS:
        exact = dsign_expectation(lambda x: x, lr, 1.0, 2, square, 0.5, round(1 / lr))
        for model in errs:
            sde = sde_of(
                DSignSGD(lr=lr, n_workers=2, noise=so.noise.Gaussian(scale=1.0)), prob, model
            )
            errs[model].append(abs(sde_expectation(sde, square, 0.5, 1.0, -2.5, 3.5) - exact))
    assert abs(_slope(LRS[1:], errs["first_order"][1:]) - 1) < 0.2, errs
    assert abs(_slope(LRS, errs["second_order"]) - 2) < 0.2, errs
    assert errs["second_order"][-1] < errs["first_order"][-1] / 5


def test_the_references_are_exact_where_closed_forms_exist():
    """The deterministic references themselves: OU (E X_T² in closed form) and DSGD on x²/2 (the
    linear recursion of E x_k²)."""
    a, s, x0, t = 2.0, 0.7, 1.0, 1.0
    ou = so.dynamics.SDE.diagonal(lambda x: -a * x, lambda x: torch.full_like(x, s), dim=1)
    exact = x0**2 * math.exp(-2 * a * t) + s**2 * (1 - math.exp(-2 * a * t)) / (2 * a)
    assert abs(sde_expectation(ou, lambda x: x**2, x0, t, -3.0, 3.0) - exact) < 1e-6
    lr, sigma, k = 0.1, 1.0, 10
    m2 = x0**2
    for _ in range(k):
        m2 = (1 - lr) ** 2 * m2 + (lr * sigma) ** 2
    assert (
        abs(dsgd_expectation(lambda x: x, lr, sigma, lambda x: x**2, x0, k, -3.0, 3.0) - m2) < 1e-9
    )
