"""The fast tails of DSignSGD's Binomial shortcut and its inversion.

- ``special.student_t_tail`` (a polynomial fitted once per nu and dtype) against scipy's t law
  over the whole line, |t| from 0 to 1e30 and ±inf, as a *relative* error of the tail; closed
  forms for nu = 1 and 2 (scipy's stdtr is off by ~2e-9 near 0 for nu = 1), mpmath where
  scipy underflows (below float64's normal range).
- ``Gaussian.standard_tail`` (erfc) against scipy's normal law, likewise.
- ``dsignsgd.minority_count`` against the inversion of scipy's Binomial CDF: every draw equal
  except where u lies within the rounding of the running CDF of a threshold.
- DSignSGD's direction: the count of + signs against Binomial(N, F(∇f/σ)) by chi-square.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st
import torch

import sdeopt as so
from sdeopt.discrete.dsignsgd import minority_count
from sdeopt.noise import Gaussian, StudentT
from sdeopt.random import RandomSource
from sdeopt.special import (
    _TAIL_FIT_TOL,
    student_t_cdf,
    student_t_tail,
    student_t_tail_fit,
)

NU = [0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1e4]
DTYPES = [torch.float32, torch.float64]


def _abs_grid() -> np.ndarray:
    """|t| from 0 to 1e30: 0, tiny, every decade, and dense where the tail is moderate."""
    return np.concatenate([[0.0], np.logspace(-12, 30, 841), np.linspace(0.0, 40.0, 801)[1:]])


def _reference_log_tail(z: np.ndarray, nu: float) -> np.ndarray:
    """log P(T > z) for z >= 0 in float64, independent of sdeopt: closed forms for nu = 1
    (arctan(1/z)/π) and nu = 2 (1/(s (s + z)), s = sqrt(2 + z²), free of cancellation),
    scipy otherwise."""
    if nu == 1.0:
        return np.log(np.arctan2(1.0, z) / np.pi)
    if nu == 2.0:
        s = np.sqrt(2.0 + z * z)
        return -np.log(s) - np.log(s + z)
    return st.t.logsf(z, nu)


def _bound(log_p: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The stated relative accuracy: twice the fit's tolerance, plus the roundoff of an
    exponent of size |log P| (and of the dozen operations before it), four times over."""
    eps = torch.finfo(dtype).eps
    return 2.0 * _TAIL_FIT_TOL[dtype] + 4.0 * (8.0 + np.abs(log_p)) * eps


# ---------------------------------------------------------------------------------------------
# Student-t
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nu", NU)
def test_student_t_tail_matches_scipy_over_the_whole_line(nu, dtype):
    pos = _abs_grid()
    t = torch.tensor(np.concatenate([-pos[::-1], pos]), dtype=dtype)
    z = t.abs().double().numpy()  # the arguments as given, exactly
    log_ref = _reference_log_tail(z, nu)
    ref = np.exp(log_ref)
    got = student_t_tail(t, nu)
    assert got.dtype == dtype and got.shape == t.shape
    got = got.double().numpy()
    info = torch.finfo(dtype)
    normal = ref >= info.smallest_normal
    rel = np.abs(got[normal] / ref[normal] - 1.0)
    assert np.all(rel <= _bound(log_ref[normal], dtype)), (rel.max(), z[normal][rel.argmax()])
    # Below the normal range the result is a subnormal or 0, to the same relative accuracy
    # plus two subnormal steps (scipy itself flushes to 0 below float64's normal range).
    low = ~normal & (ref > 0.0)
    subnormal = info.smallest_normal * info.eps
    err = np.abs(got[low] - ref[low])
    assert np.all(err <= _bound(log_ref[low], dtype) * ref[low] + 2.0 * subnormal)
    # The headline figure: where P >= 1e-2, relative error below 1e-6 in float32, 1e-13 in float64.
    central = ref[normal] >= 1e-2
    assert rel[central].max() < (1e-6 if dtype == torch.float32 else 1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nu", [0.05, 1.5, 10.0])
def test_student_t_tail_far_beyond_scipy(nu, dtype):
    """Up to the largest float: float32 near 3e38 (nu = 0.05 keeps P ~ 1e-2 there) and float64
    where P is subnormal; the reference is the regularized incomplete beta in mpmath."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    top = math.log10(torch.finfo(dtype).max)
    z = [10.0**e for e in np.linspace(top - 12.0, top - 0.01, 7)]
    got = student_t_tail(torch.tensor(z, dtype=dtype), nu).double().numpy()
    z_given = torch.tensor(z, dtype=dtype).double().tolist()
    half_nu = mpmath.mpf(nu) / 2
    for g, zz in zip(got, z_given):
        ref = mpmath.betainc(half_nu, 0.5, 0, nu / (nu + mpmath.mpf(zz) ** 2), regularized=True) / 2
        info = torch.finfo(dtype)
        if ref < info.smallest_normal * info.eps / 2:
            assert g == 0.0
            continue
        log_p = float(mpmath.log(ref))
        bound = _bound(np.array(log_p), dtype) * float(ref) + 2.0 * info.smallest_normal * info.eps
        assert abs(g - float(ref)) <= bound, (zz, g, float(ref))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nu", [0.05, 1.5, 30.0, 1e4])
def test_student_t_tail_special_values_symmetry_monotonicity(nu, dtype):
    inf, nan = float("inf"), float("nan")
    got = student_t_tail(torch.tensor([0.0, -0.0, inf, -inf, nan], dtype=dtype), nu)
    tol = 2.0 * _TAIL_FIT_TOL[dtype] + 4.0 * torch.finfo(dtype).eps
    assert abs(float(got[0]) - 0.5) <= 0.5 * tol and got[1] == got[0]
    assert got[2] == 0.0 and got[3] == 0.0 and torch.isnan(got[4])
    fmax = torch.finfo(dtype).max
    pos = torch.tensor(np.sort(np.concatenate([_abs_grid(), [1e35, fmax]])), dtype=dtype).unique()
    f = student_t_tail(pos, nu)
    assert torch.equal(f, student_t_tail(-pos, nu))
    assert torch.all(torch.isfinite(f)) and torch.all(f >= 0.0) and torch.all(f <= 0.5 * (1 + tol))
    # Non-increasing in |t| up to the fit's own error (it interpolates; it is not monotone by
    # construction) and the rounding.
    assert torch.all(f[1:] <= f[:-1] * (1.0 + 2.0 * tol))


def test_student_t_tail_scale_and_other_dtypes():
    t = torch.tensor([0.0, 0.3, -2.0, 7.5, -1e6])
    for scale in (0.25, 2.5):
        torch.testing.assert_close(
            student_t_tail(t, 1.5, scale), student_t_tail(t / scale, 1.5), rtol=4e-6, atol=0.0
        )
        torch.testing.assert_close(
            StudentT(nu=1.5, scale=scale).standard_tail(t, scale),
            student_t_tail(t / scale, 1.5),
            rtol=4e-6,
            atol=0.0,
        )
    half = student_t_tail(t.half(), 1.5)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half, student_t_tail(t, 1.5).half())
    assert student_t_tail(torch.tensor([0, 3]), 1.5).dtype == torch.get_default_dtype()


def test_student_t_tail_fit_is_deterministic_and_falls_back_to_the_continued_fraction():
    from sdeopt.special import _fit_student_t_tail

    for dtype in DTYPES:
        a, b = _fit_student_t_tail(1.5, dtype), _fit_student_t_tail(1.5, dtype)
        assert a.coefficients == b.coefficients and a.horner == b.horner and not a.exact
        assert len(a.coefficients) - 1 <= (7 if dtype == torch.float32 else 13)
    for nu in NU:  # every nu tested above is served by a fit, float64 up to nu = 1000
        assert not student_t_tail_fit(nu, torch.float32).exact
        assert student_t_tail_fit(nu, torch.float64).exact == (nu > 1000.0)
    # float64 with nu = 1e4 needs more than degree 48: the continued fraction, to the bit.
    t = torch.tensor(np.concatenate([-_abs_grid(), _abs_grid()]))
    assert torch.equal(student_t_tail(t, 1e4), student_t_cdf(-t.abs(), 1e4))


@pytest.mark.parametrize("nu,dtype", [(0.0, torch.float32), (math.inf, torch.float64)])
def test_student_t_tail_fit_bad_input(nu, dtype):
    with pytest.raises(ValueError, match="nu"):
        student_t_tail_fit(nu, dtype)
    with pytest.raises(ValueError, match="dtype"):
        student_t_tail_fit(1.5, torch.float16)


# ---------------------------------------------------------------------------------------------
# Gaussian
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_tail_matches_scipy(dtype):
    pos = np.concatenate([[0.0], np.logspace(-12, 2, 561), np.linspace(0.0, 40.0, 801)[1:]])
    t = torch.tensor(np.concatenate([-pos[::-1], pos]), dtype=dtype)
    z = t.abs().double().numpy()
    log_ref = st.norm.logsf(z)
    ref = np.exp(log_ref)
    for scale in (1.0, 0.3):
        got = Gaussian(scale=scale).standard_tail(t * scale, scale).double().numpy()
        normal = ref >= torch.finfo(dtype).smallest_normal
        rel = np.abs(got[normal] / ref[normal] - 1.0)
        # erfc carries no fit error: the roundoff term of _bound only, one more ulp for the scale.
        eps = torch.finfo(dtype).eps
        assert np.all(rel <= 4.0 * (9.0 + np.abs(log_ref[normal])) * eps), rel.max()


def test_default_tail_is_the_cdf_at_minus_abs():
    """A law without its own standard_tail (here the logistic one) takes F(-|y|/scale)."""

    class Logistic(so.noise.SymmetricCDFNoise):
        variance = math.pi**2 / 3

        def sample_standard(self, rng, *shape):
            u = rng.uniform(*shape)
            return torch.log(u) - torch.log1p(-u)

        def standard_pdf(self, y):
            return torch.sigmoid(y) * torch.sigmoid(-y)

        def standard_cdf(self, y):
            return torch.sigmoid(y)

    y = torch.tensor([-3.0, -0.5, 0.0, 0.5, 40.0])
    assert torch.equal(Logistic(2.0).standard_tail(y, 2.0), torch.sigmoid(-y.abs() / 2.0))


# ---------------------------------------------------------------------------------------------
# The Binomial inversion
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 5, 8, 48, 49, 100])
def test_minority_count_is_the_inversion_of_the_binomial_cdf(n, dtype):
    """X = #{k < n : P(X <= k) < u} for the exact CDF (scipy, float64, at the given q and u):
    a draw may differ only where u is within the rounding of the running CDF of a threshold
    (n = 48 / 49: both sides of float32's switch from clamps to comparisons)."""
    g = torch.Generator().manual_seed(n)
    m = 20_000
    q = torch.rand(m, generator=g, dtype=torch.float64) * 0.5
    q[:50], q[50:100] = 0.0, 0.5
    q[100:150] = torch.rand(50, generator=g, dtype=torch.float64) * 1e-30
    u = torch.rand(m, generator=g, dtype=torch.float64)
    q, u = q.to(dtype), u.to(dtype)
    q_before, u_before = q.clone(), u.clone()
    got = minority_count(q, n, u)
    assert torch.equal(q, q_before) and torch.equal(u, u_before)  # overwrite=False
    cdf = st.binom.cdf(np.arange(n)[:, None], n, q.double().numpy()[None, :])  # (n, m)
    ref = (cdf < u.double().numpy()).sum(axis=0)
    got = got.double().numpy()
    assert got.dtype == np.float64 and np.all(got == np.round(got))
    differ = got != ref
    near_tie = (np.abs(cdf - u.double().numpy()) <= 16 * n * torch.finfo(dtype).eps).any(axis=0)
    assert np.all(near_tie[differ]), np.nonzero(differ & ~near_tie)
    assert differ.mean() < 1e-3


def test_minority_count_overwrite_reuses_the_buffers():
    q = torch.tensor([0.1, 0.5, 0.0])
    u = torch.tensor([0.9, 0.2, 0.99])
    expected = minority_count(q.clone(), 8, u.clone())
    count = minority_count(q, 8, u, overwrite=True)
    assert count.data_ptr() == u.data_ptr() and torch.equal(count, expected)


# ---------------------------------------------------------------------------------------------
# DSignSGD's direction
# ---------------------------------------------------------------------------------------------

GRADS = [0.0, 0.05, -0.4, 1.2, -2.5, 6.0]  # ∇f coordinate by coordinate (Quadratic with H = I)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "noise,cdf,n",
    [
        (Gaussian(scale=0.8), lambda y: st.norm.cdf(y), 8),
        (StudentT(nu=1.5, scale=0.8), lambda y: st.t.cdf(y, 1.5), 8),
        (StudentT(nu=0.5, scale=2.0), lambda y: st.t.cdf(y, 0.5), 5),
        (StudentT(nu=30.0, scale=1.0), lambda y: st.t.cdf(y, 30.0), 100),
    ],
    ids=["gauss-8", "t1.5-8", "t0.5-5", "t30-100"],
)
def test_dsignsgd_direction_law_is_binomial(noise, cdf, n, dtype):
    """One step of the shortcut from x with ∇f = GRADS: the number of + signs, n (1 + u)/2, is
    Binomial(n, F(∇f/σ)) coordinate by coordinate (chi-square on the cells expected >= 5,
    the rest lumped; 48 tests at level 1e-6 each)."""
    opt = so.discrete.DSignSGD(lr=0.1, n_workers=n, noise=noise)
    prob = so.problems.Quadratic(diag=[1.0] * len(GRADS)).to("cpu", dtype)
    m = 40_000
    x = torch.tensor(GRADS, dtype=dtype).expand(m, -1)
    u = opt.direction(prob, x, RandomSource(7, m, dtype=dtype))  # (m, d)
    assert u.dtype == dtype
    plus = (n * (1.0 + u.double()) / 2.0).numpy()
    assert np.abs(plus - np.round(plus)).max() < 1e-4 * n  # an average of n signs
    plus = np.round(plus).astype(int)
    sigma = float(noise.scale)
    for j, g in enumerate(GRADS):
        observed = np.bincount(plus[:, j], minlength=n + 1)
        expected = st.binom.pmf(np.arange(n + 1), n, cdf(g / sigma)) * m
        keep = expected >= 5.0
        if keep.sum() <= 1:  # (almost) deterministic: nearly every draw in the likeliest cell
            assert (
                observed[np.argmax(expected)]
                >= m - 5 * math.sqrt(m * (1.0 - expected.max() / m)) - 5
            )
            continue
        obs = np.append(observed[keep], observed[~keep].sum())
        exp = np.append(expected[keep], expected[~keep].sum())
        nonzero = exp > 0
        stat = ((obs[nonzero] - exp[nonzero]) ** 2 / exp[nonzero]).sum()
        assert st.chi2(nonzero.sum() - 1).sf(stat) > 1e-6, (j, g, obs, exp)
