"""Tests of the gradient-noise laws (sdeopt.noise): laws, shortcuts, CDFs, bad input."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import scipy.special
import scipy.stats as st
import torch

from sdeopt.noise import (
    AffineVariance,
    Gaussian,
    Minibatch,
    StudentT,
    SymmetricStable,
    student_t_cdf,
)
from sdeopt.problems import Problem
from tests.conftest import rng_for

KS_ALPHA = 1e-4  # KS tests reject at this level
Z = 5.0  # moment checks: |estimate - truth| < Z * se (two-sided p ~ 6e-7 per check)

NU_SAMPLER = [0.5, 1.0, 1.5, 2.0, 3.0, 10.0]
NU_CDF = [0.05, 0.3, 1.0, 1.5, 2.0, 2.5, 5.0, 30.0, 200.0, 1e4]

# One factory per additive law, for the generic contract tests.
LAWS = {
    "gauss": lambda scale=1.0: Gaussian(scale),
    "t1.5": lambda scale=1.0: StudentT(nu=1.5, scale=scale),
    "t0.3": lambda scale=1.0: StudentT(nu=0.3, scale=scale),
    "stable0.8": lambda scale=1.0: SymmetricStable(alpha=0.8, scale=scale),
    "stable1": lambda scale=1.0: SymmetricStable(alpha=1.0, scale=scale),
    "stable2": lambda scale=1.0: SymmetricStable(alpha=2.0, scale=scale),
    "affine": lambda scale=1.0: AffineVariance(sigma0=scale, sigma1=0.5),
}


def _t_grid() -> np.ndarray:
    """t over [-1e6, 1e6]: 0, tiny (down to 1e-300), moderate and huge values, dense near 0."""
    pos = np.concatenate([np.logspace(-300, -20, 50), np.logspace(-20, 6, 1500)])
    return np.concatenate([-pos[::-1], [0.0], pos, np.linspace(-12, 12, 2401)])


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: StudentT(nu=0.0), "nu"),
        (lambda: StudentT(nu=-1.0), "nu"),
        (lambda: StudentT(nu=float("nan")), "nu"),
        (lambda: StudentT(nu=float("inf")), "nu"),
        (lambda: StudentT(nu="three"), "nu"),
        (lambda: StudentT(nu=1.5, scale=-1.0), "scale"),
        (lambda: StudentT(nu=1.5, scale=[1.0, float("nan")]), "scale"),
        (lambda: SymmetricStable(alpha=0.0), "alpha"),
        (lambda: SymmetricStable(alpha=2.5), "alpha"),
        (lambda: SymmetricStable(alpha=-1.0), "alpha"),
        (lambda: SymmetricStable(alpha=float("nan")), "alpha"),
        (lambda: SymmetricStable(alpha=1.5, scale=-2.0), "scale"),
        (lambda: Gaussian(-1.0), "scale"),
        (lambda: Gaussian(scale=[1.0, -0.5]), "scale"),
        (lambda: Gaussian(scale=[]), "scale"),
        (lambda: AffineVariance(sigma0=-1.0), "sigma0"),
        (lambda: AffineVariance(sigma1=[1.0, -1.0]), "sigma1"),
        (lambda: AffineVariance(sigma0=[1.0, 2.0], sigma1=[1.0, 2.0, 3.0]), "sigma1"),
        (lambda: Minibatch(0), "batch_size"),
        (lambda: Minibatch(-3), "batch_size"),
        (lambda: Minibatch(2.5), "batch_size"),
        (lambda: Minibatch(True), "batch_size"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_parameter(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: Gaussian(scale=[1.0, 2.0]), "scale"),
        (lambda: StudentT(nu=1.5, scale=[1.0, 2.0]), "scale"),
        (lambda: SymmetricStable(alpha=1.5, scale=[1.0, 2.0]), "scale"),
        (lambda: AffineVariance(sigma0=[1.0, 2.0]), "sigma0"),
        (lambda: AffineVariance(sigma0=1.0, sigma1=[1.0, 2.0]), "sigma1"),
    ],
)
def test_per_worker_scales_must_match_n_workers(make, name):
    noise = make()
    noise.check_workers(2)
    with pytest.raises(ValueError, match=name):
        noise.check_workers(3)
    grads = torch.zeros(4, 1, 5)
    with pytest.raises(ValueError, match=name):
        noise.sample(rng_for(4), grads, 3)
    with pytest.raises(ValueError, match=name):
        noise.sample_worker_mean(rng_for(4), grads, 3)


def test_affine_variance_rejects_grads_of_the_wrong_shape():
    noise = AffineVariance(sigma0=1.0, sigma1=1.0)
    with pytest.raises(ValueError, match="grads"):
        noise.variance_at(torch.zeros(4, 3, 5), n_workers=2)
    with pytest.raises(ValueError, match="grads"):
        noise.sample(rng_for(4), torch.zeros(4, 5), n_workers=2)


# ---------------------------------------------------------------------------------------------
# generic contracts: shapes, seeding, config
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("law", sorted(LAWS))
@pytest.mark.parametrize("homogeneous", [True, False])
def test_shapes_dtype_device(law, homogeneous, device):
    n_runs, n_workers, dim = 6, 3, 4
    noise = LAWS[law](scale=[0.5, 1.0, 2.0])
    for dtype in (torch.float64, torch.float32):
        rng = rng_for(n_runs, device=device, dtype=dtype)
        grads = torch.randn(
            n_runs, 1 if homogeneous else n_workers, dim, device=device, dtype=dtype
        )
        z = noise.sample(rng, grads, n_workers)
        assert z.shape == (n_runs, n_workers, dim)
        assert z.dtype == dtype and z.device.type == torch.device(device).type
        m = noise.sample_worker_mean(rng, grads, n_workers)
        assert m.shape == (n_runs, dim) and m.dtype == dtype


@pytest.mark.parametrize("law", sorted(LAWS))
def test_same_seed_same_draws(law):
    noise = LAWS[law]()
    grads = torch.randn(5, 1, 7, generator=torch.Generator().manual_seed(0))
    a = noise.sample(rng_for(5, seed=7), grads, 3)
    b = noise.sample(rng_for(5, seed=7), grads, 3)
    c = noise.sample(rng_for(5, seed=8), grads, 3)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(
        noise.sample_worker_mean(rng_for(5, seed=7), grads, 3),
        noise.sample_worker_mean(rng_for(5, seed=7), grads, 3),
    )


@pytest.mark.parametrize(
    "noise",
    [
        Gaussian(0.5),
        Gaussian(scale=[1.0, 2.0]),
        StudentT(nu=1.5, scale=[0.5, 1.0]),
        SymmetricStable(alpha=1.2, scale=0.3),
        AffineVariance(sigma0=[0.1, 0.2], sigma1=0.5),
        Minibatch(8),
    ],
)
def test_config_is_json_and_repr_is_readable(noise):
    cfg = noise.config()
    assert cfg["type"] == type(noise).__name__
    assert json.loads(json.dumps(cfg)) == cfg
    text = repr(noise)
    assert text.startswith(type(noise).__name__ + "(")
    for key in cfg:
        if key != "type":
            assert key in text


def test_variance_and_finite_variance_flags():
    assert Gaussian().finite_variance and Gaussian().variance == 1.0
    assert StudentT(nu=3.0).finite_variance and StudentT(nu=3.0).variance == pytest.approx(3.0)
    for nu in (0.5, 1.0, 2.0):
        assert not StudentT(nu=nu).finite_variance and StudentT(nu=nu).variance == math.inf
    assert SymmetricStable(alpha=2.0).finite_variance and SymmetricStable(alpha=2.0).variance == 2.0
    assert not SymmetricStable(alpha=1.99).finite_variance
    assert AffineVariance(sigma0=1.0).finite_variance and Minibatch(1).finite_variance


# ---------------------------------------------------------------------------------------------
# laws: KS tests and moments
# ---------------------------------------------------------------------------------------------


def _standard_draws(noise, n, dtype=torch.float64, seed=0) -> np.ndarray:
    return noise.sample_standard(rng_for(1, seed=seed, dtype=dtype), n).double().numpy().ravel()


def test_gaussian_ks():
    x = _standard_draws(Gaussian(), 50_000)
    assert st.kstest(x, st.norm.cdf).pvalue > KS_ALPHA


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nu", NU_SAMPLER)
def test_student_t_sampler_ks_against_scipy(nu, dtype):
    x = _standard_draws(StudentT(nu=nu), 50_000, dtype)
    assert st.kstest(x, st.t(nu).cdf).pvalue > KS_ALPHA


@pytest.mark.parametrize("nu", [0.2, 1e4])
def test_student_t_sampler_extreme_nu(nu):
    # nu < 1 uses the overflow-safe branch: in float32 a naive expm1(2E/nu) overflows for
    # E > 8.9 (probability 1.4e-4), while |T| > 3.4e38 has probability ~1e-8 at nu = 0.2.
    x32 = _standard_draws(StudentT(nu=nu), 100_000, torch.float32)
    assert np.isfinite(x32).all()
    assert st.kstest(x32, st.t(nu).cdf).pvalue > KS_ALPHA
    assert st.kstest(_standard_draws(StudentT(nu=nu), 50_000), st.t(nu).cdf).pvalue > KS_ALPHA


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.5, 2.0])
def test_stable_sampler_ks_against_scipy_levy_stable(alpha):
    # scipy's levy_stable cdf is slow (about 0.3 ms per point): a modest sample.
    scale = 2.0
    noise = SymmetricStable(alpha=alpha, scale=scale)
    x = noise.sample(rng_for(3000, seed=1), torch.zeros(3000, 1, 1), 1).numpy().ravel()
    ref = st.levy_stable(alpha, 0.0, scale=scale)
    assert st.kstest(x, ref.cdf).pvalue > KS_ALPHA


@pytest.mark.parametrize("alpha", [0.5, 0.8, 1.0, 1.2, 1.5, 1.9, 2.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stable_characteristic_function(alpha, dtype):
    # E cos(u S) = exp(-|u|^alpha) for the standard SαS law: a bounded statistic, so a large
    # sample is cheap and pins the parametrisation (alpha = 2 is N(0, 2)).
    n = 200_000
    s = _standard_draws(SymmetricStable(alpha=alpha), n, dtype)
    assert np.isfinite(s).all()
    for u in (0.3, 1.0, 2.5):
        c = np.cos(u * s)
        truth = math.exp(-(abs(u) ** alpha))
        se = max(c.std(), 1e-3) / math.sqrt(n)
        assert abs(c.mean() - truth) < Z * se, (u, c.mean(), truth)


def test_gaussian_and_student_t_moments():
    n = 400_000
    for noise, var, fourth in [
        (Gaussian(), 1.0, 3.0),
        (StudentT(nu=10.0), 10.0 / 8.0, 3 * 100.0 / (8.0 * 6.0)),  # E T^4 = 3nu²/((nu-2)(nu-4))
        (SymmetricStable(alpha=2.0), 2.0, 12.0),
    ]:
        x = _standard_draws(noise, n)
        assert abs(x.mean()) < Z * math.sqrt(var / n)
        se_var = math.sqrt((fourth - var**2) / n)
        assert abs((x**2).mean() - var) < Z * se_var
        assert noise.variance == pytest.approx(var)


# ---------------------------------------------------------------------------------------------
# per-worker scales and worker-mean shortcuts
# ---------------------------------------------------------------------------------------------


def test_per_worker_scales_are_applied_per_worker():
    scales = [0.5, 1.0, 2.0, 0.0]
    n_runs, dim = 20_000, 5
    grads = torch.zeros(n_runs, 1, dim)
    for noise, var in [
        (Gaussian(scale=scales), 1.0),
        (StudentT(nu=10.0, scale=scales), 1.25),
        (SymmetricStable(alpha=2.0, scale=scales), 2.0),
    ]:
        z = noise.sample(rng_for(n_runs, seed=3), grads, len(scales))  # (B, N, d)
        assert torch.all(z[:, 3] == 0)
        m2 = z[:, :3].square().mean(dim=(0, 2))  # (3,)
        kurt = 3.0 if var != 1.25 else 6.25 / 1.5625
        for i in range(3):
            truth = scales[i] ** 2 * var
            se = truth * math.sqrt((kurt - 1.0) / (n_runs * dim))
            assert abs(float(m2[i]) - truth) < Z * se, (noise, i)
    # Heavy tails: worker i's draws divided by σ_i all follow the same law.
    noise = SymmetricStable(alpha=0.8, scale=scales[:3])
    z = noise.sample(rng_for(n_runs, seed=4), grads, 3)
    a = (z[:, 0] / scales[0]).numpy().ravel()
    b = (z[:, 2] / scales[2]).numpy().ravel()
    assert st.ks_2samp(a, b).pvalue > KS_ALPHA


def test_gaussian_worker_mean_shortcut_matches_the_naive_mean():
    scales = [0.5, 1.0, 2.0, 0.0]
    n_workers, n_runs, dim = 4, 20_000, 5
    noise = Gaussian(scale=scales)
    grads = torch.zeros(n_runs, 1, dim)
    fast = noise.sample_worker_mean(rng_for(n_runs, seed=5), grads, n_workers)  # (B, d)
    naive = noise.sample(rng_for(n_runs, seed=6), grads, n_workers).mean(dim=1)  # (B, d)
    truth = sum(s * s for s in scales) / n_workers**2
    n = n_runs * dim
    se = truth * math.sqrt(2.0 / n)  # Gaussian: Var(z²) = 2 var²
    for draws in (fast, naive):
        assert abs(float(draws.square().mean()) - truth) < Z * se
        assert abs(float(draws.mean())) < Z * math.sqrt(truth / n)
    # The two estimates against each other (difference of independent estimates).
    assert abs(float(fast.square().mean() - naive.square().mean())) < Z * math.sqrt(2.0) * se
    assert st.kstest(fast.numpy().ravel() / math.sqrt(truth), st.norm.cdf).pvalue > KS_ALPHA
    # Shared scale: variance σ²/N.
    shared = Gaussian(1.5).sample_worker_mean(rng_for(n_runs, seed=7), grads, 9)
    assert abs(float(shared.square().mean()) - 0.25) < Z * 0.25 * math.sqrt(2.0 / n)


def test_affine_variance_law_and_shortcut():
    n_runs, n_workers, dim = 20_000, 3, 4
    sigma0, sigma1 = [0.1, 0.5, 0.0], [1.0, 0.0, 2.0]
    noise = AffineVariance(sigma0=sigma0, sigma1=sigma1)
    g = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])  # (N, d)
    grads = g.expand(n_runs, n_workers, dim)  # (B, N, d)
    v = noise.variance_at(grads, n_workers)  # (B, N)
    expected = torch.tensor([0.01 + 1.0 * 1.0, 0.25 + 0.0, 0.0 + 4.0 * 1.0])
    assert v.shape == (n_runs, n_workers)
    torch.testing.assert_close(v, expected.expand(n_runs, -1))
    z = noise.sample(rng_for(n_runs, seed=1), grads, n_workers)  # (B, N, d)
    m2 = z.square().mean(dim=(0, 2))  # (N,)
    for i in range(n_workers):
        se = float(expected[i]) * math.sqrt(2.0 / (n_runs * dim))
        assert abs(float(m2[i] - expected[i])) < Z * se
    fast = noise.sample_worker_mean(rng_for(n_runs, seed=2), grads, n_workers)  # (B, d)
    naive = z.mean(dim=1)  # (B, d)
    truth = float(expected.sum()) / n_workers**2
    se = truth * math.sqrt(2.0 / (n_runs * dim))
    for draws in (fast, naive):
        assert abs(float(draws.square().mean()) - truth) < Z * se
    # Homogeneous grads (B, 1, d) and shared scales: variance (B, 1), broadcast over workers.
    shared = AffineVariance(sigma0=0.3, sigma1=0.5)
    gh = torch.full((n_runs, 1, dim), 0.5)
    assert shared.variance_at(gh, 5).shape == (n_runs, 1)
    torch.testing.assert_close(
        shared.variance_at(gh, 5), torch.full((n_runs, 1), 0.09 + 0.25 * 1.0)
    )
    fast = shared.sample_worker_mean(rng_for(n_runs, seed=3), gh, 5)
    truth = (0.09 + 0.25) / 5
    assert abs(float(fast.square().mean()) - truth) < Z * truth * math.sqrt(2.0 / (n_runs * dim))
    # sigma1 = 0 is Gaussian noise of scale sigma0.
    torch.testing.assert_close(
        AffineVariance(sigma0=0.7).variance_at(grads, n_workers),
        torch.full((n_runs, n_workers), 0.49),
    )


# ---------------------------------------------------------------------------------------------
# Student-t CDF
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nu", NU_CDF)
def test_student_t_cdf_float64_matches_scipy(nu):
    t = _t_grid()
    got = StudentT(nu=nu).standard_cdf(torch.tensor(t, dtype=torch.float64))
    assert got.dtype == torch.float64
    err = np.abs(got.numpy() - scipy.special.stdtr(nu, t))
    # 1e-8, not 1e-15: scipy's own stdtr is off by ~2e-9 near t = 0 for nu = 1 (see the
    # closed-form test, which holds to 1e-14).
    assert err.max() < 1e-8, (nu, err.max(), t[err.argmax()])


@pytest.mark.parametrize("nu", NU_CDF)
def test_student_t_cdf_float32_matches_scipy(nu):
    t32 = _t_grid().astype(np.float32)
    got = StudentT(nu=nu).standard_cdf(torch.tensor(t32))
    assert got.dtype == torch.float32
    err = np.abs(got.double().numpy() - scipy.special.stdtr(nu, t32.astype(np.float64)))
    assert err.max() < 2e-6, (nu, err.max())


def test_student_t_cdf_closed_forms():
    t = torch.tensor(_t_grid())
    torch.testing.assert_close(
        student_t_cdf(t, 1.0), 0.5 + torch.atan(t) / math.pi, atol=1e-14, rtol=0
    )
    torch.testing.assert_close(
        student_t_cdf(t, 2.0), 0.5 + t / (2 * torch.sqrt(2 + t * t)), atol=1e-14, rtol=0
    )
    s = t / math.sqrt(3.0)  # nu = 3: F = 1/2 + (s/(1+s²) + arctan s)/π
    torch.testing.assert_close(
        student_t_cdf(t, 3.0), 0.5 + (s / (1 + s * s) + torch.atan(s)) / math.pi, atol=1e-14, rtol=0
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nu", [0.05, 1.0, 7.0, 1e4, 1e12])
def test_student_t_cdf_special_values_symmetry_monotonicity(nu, dtype):
    inf = float("inf")
    f = student_t_cdf(torch.tensor([inf, -inf, 0.0, -0.0, float("nan")], dtype=dtype), nu)
    assert f[0] == 1.0 and f[1] == 0.0 and f[2] == 0.5 and f[3] == 0.5 and torch.isnan(f[4])
    fmax = torch.finfo(dtype).max
    t = torch.tensor(np.sort(np.concatenate([_t_grid(), [-fmax, fmax]])), dtype=dtype)
    f = student_t_cdf(t, nu)
    assert torch.all(torch.isfinite(f)) and torch.all((f >= 0) & (f <= 1))
    eps = torch.finfo(dtype).eps
    assert torch.all(f[1:] - f[:-1] >= -4 * eps)
    torch.testing.assert_close(f + student_t_cdf(-t, nu), torch.ones_like(f), atol=4 * eps, rtol=0)


def test_student_t_cdf_huge_arguments_small_nu():
    # |t| near the float range: t² and even t/sqrt(nu) overflow, but for nu = 0.05 the tail
    # P(T > t) ~ t^-nu is far from 0. scipy's stdtr returns exactly 1 once t² overflows
    # float64 (|t| > 1e154), so the float64 reference comes from mpmath.
    t32 = [1e19, 1e30, -3e38]
    got = student_t_cdf(torch.tensor(t32, dtype=torch.float32), 0.05).double().numpy()
    assert np.abs(got - scipy.special.stdtr(0.05, np.array(t32))).max() < 2e-6
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    t64 = [1e100, 1e160, 1e300, -1e308]
    nu = mpmath.mpf("0.05")
    ref = [
        float(mpmath.betainc(nu / 2, 0.5, 0, nu / (nu + mpmath.mpf(t) ** 2), regularized=True) / 2)
        for t in t64
    ]
    ref = np.where(np.array(t64) > 0, 1.0 - np.array(ref), np.array(ref))
    got = student_t_cdf(torch.tensor(t64, dtype=torch.float64), 0.05).numpy()
    assert np.abs(got - ref).max() < 1e-15
    assert got[-1] > 1e-16  # P(T < -1e308) = 1.8e-16, not 0


def test_student_t_cdf_huge_nu_tends_to_normal():
    t = torch.linspace(-8, 8, 1601)
    ref = torch.special.ndtr(t) - torch.exp(-t * t / 2) / math.sqrt(2 * math.pi) * (t**3 + t) / (
        4 * 1e12
    )
    torch.testing.assert_close(student_t_cdf(t, 1e12), ref, atol=1e-13, rtol=0)


def test_cdfs_on_device_match_cpu(device):
    t = torch.tensor(_t_grid())
    for noise in (Gaussian(), StudentT(nu=1.5), StudentT(nu=40.0)):
        for dtype in (torch.float64, torch.float32):
            ref = noise.standard_cdf(t.to(dtype))
            got = noise.standard_cdf(t.to(device=device, dtype=dtype)).cpu()
            torch.testing.assert_close(got, ref, atol=4 * torch.finfo(dtype).eps, rtol=0)


def test_gaussian_cdf_matches_scipy():
    t = _t_grid()
    err = np.abs(Gaussian().standard_cdf(torch.tensor(t)).numpy() - scipy.special.ndtr(t))
    assert err.max() < 1e-15


# ---------------------------------------------------------------------------------------------
# sign means
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "noise",
    [
        Gaussian(scale=[0.5, 2.0, 0.0]),
        StudentT(nu=1.5, scale=[0.5, 2.0, 0.0]),
        StudentT(nu=0.7, scale=[0.5, 2.0, 0.0]),
    ],
)
def test_sign_mean_matches_monte_carlo(noise):
    n_runs, n_workers = 20_000, 3
    g = torch.tensor(
        [[0.3, -1.0, 0.0, 2.0], [0.3, -1.0, 0.0, 2.0], [0.3, -1.0, 0.0, 2.0]]
    )  # (N, d)
    m = noise.sign_mean(g.unsqueeze(0), n_workers)[0]  # (N, d)
    grads = g.expand(n_runs, n_workers, -1)  # (B, N, d)
    mc = torch.sign(grads + noise.sample(rng_for(n_runs, seed=11), grads, n_workers)).mean(dim=0)
    se = torch.sqrt((1 - m.square()).clamp(min=1e-12) / n_runs)
    assert torch.all((mc - m).abs() < Z * se + 1e-12), (mc, m)
    torch.testing.assert_close(m[2], torch.sign(g[2]))  # σ = 0: the deterministic sign


# ---------------------------------------------------------------------------------------------
# oracles and Minibatch
# ---------------------------------------------------------------------------------------------


class _Linear(Problem):
    """f_i(x) = <c_i, x>: constant worker gradients c_i."""

    def __init__(self, c: torch.Tensor) -> None:
        self.c = c  # (N, d)
        self.dim = c.shape[1]
        self.n_workers = c.shape[0]

    def loss(self, x):
        return x @ self.c.mean(0)

    def grad(self, x):
        return self.c.mean(0).expand_as(x)

    def hvp(self, x, v):
        return torch.zeros_like(v)

    def worker_grads(self, x):
        return self.c.expand(x.shape[0], -1, -1)  # (B, N, d)


class _FakeFiniteSum(_Linear):
    """Minibatch gradients c_i + batch_size * (run index): easy to recognise."""

    def __init__(self, c, shard_sizes=None):
        super().__init__(c)
        self.calls = []
        if shard_sizes is not None:
            self.shard_sizes = torch.tensor(shard_sizes)

    def minibatch_worker_grads(self, x, batch_size, n_workers, rng):
        self.calls.append((batch_size, n_workers, rng))
        runs = torch.arange(x.shape[0], dtype=x.dtype).view(-1, 1, 1)  # (B, 1, 1)
        return self.c.expand(x.shape[0], n_workers, -1) + batch_size * runs  # (B, N, d)


def test_oracle_mean_is_the_mean_gradient_plus_the_worker_mean_noise():
    c = torch.tensor([[1.0, 2.0], [3.0, -2.0], [5.0, 0.0]])  # (N, d)
    problem = _Linear(c)
    x = torch.zeros(30_000, 2)
    noise = Gaussian(scale=[1.0, 2.0, 2.0])
    v = noise.oracle_mean(problem, x, 3, rng_for(30_000))  # (B, d)
    assert v.shape == (30_000, 2)
    truth = 9.0 / 9.0
    n = v.numel()
    dev = v - c.mean(0)
    assert abs(float(dev.mean())) < Z * math.sqrt(truth / n)
    assert abs(float(dev.square().mean()) - truth) < Z * truth * math.sqrt(2.0 / n)
    g = noise.oracle(problem, x[:5], 3, rng_for(5))
    assert g.shape == (5, 3, 2)


def test_minibatch_goes_through_the_problem():
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    problem = _FakeFiniteSum(c)
    noise = Minibatch(batch_size=4)
    noise.check_problem(problem)
    rng = rng_for(3)
    x = torch.zeros(3, 2)
    g = noise.oracle(problem, x, 2, rng)
    assert g.shape == (3, 2, 2)
    assert problem.calls[-1] == (4, 2, rng)
    torch.testing.assert_close(g[2, 1], c[1] + 8.0)
    torch.testing.assert_close(noise.oracle_mean(problem, x, 2, rng), g.mean(dim=1))


def test_minibatch_refuses_problems_without_minibatches_and_additive_use():
    noise = Minibatch(batch_size=4)
    with pytest.raises(ValueError, match="minibatch_worker_grads"):
        noise.check_problem(_Linear(torch.ones(2, 2)))
    with pytest.raises(ValueError, match="minibatch_worker_grads"):
        noise.oracle(_Linear(torch.ones(2, 2)), torch.zeros(3, 2), 2, rng_for(3))
    with pytest.raises(ValueError, match="oracle"):
        noise.sample(rng_for(3), torch.zeros(3, 2, 2), 2)
    with pytest.raises(ValueError, match="oracle"):
        noise.sample_worker_mean(rng_for(3), torch.zeros(3, 2, 2), 2)
    with pytest.raises(ValueError, match="batch_size"):
        noise.check_problem(_FakeFiniteSum(torch.ones(2, 2), shard_sizes=[10, 3]))
    Minibatch(batch_size=3).check_problem(_FakeFiniteSum(torch.ones(2, 2), shard_sizes=[10, 3]))


# ---------------------------------------------------------------------------------------------
# speed (slow: timings on a shared machine)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_student_t_sampler_faster_than_torch_distributions(dtype):
    n, nu = 1_000_000, 1.5
    rng = rng_for(1, dtype=dtype)
    noise = StudentT(nu=nu)
    dist = torch.distributions.StudentT(torch.tensor(nu, dtype=dtype))

    def best(f):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return min(times)

    ours = best(lambda: noise.sample_standard(rng, n))
    theirs = best(lambda: dist.sample((n,)))
    assert ours * 1.5 < theirs, (ours, theirs)
