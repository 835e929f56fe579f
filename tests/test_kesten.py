"""Tail-index oracles (issue 17): the Kesten equation of SGD on least squares against closed forms
at integer indices, Monte Carlo, and the Hill estimate on discrete runs; the SDE's index."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize

import sdeopt as so
from sdeopt.analysis.kesten import kesten_tail_index, sde_tail_index


def _chi2_moments(b: int, n: int) -> list[float]:
    """E X^k for X ~ chi²_b, k = 0..n: b (b + 2) ... (b + 2k - 2)."""
    out = [1.0]
    for k in range(1, n + 1):
        out.append(out[-1] * (b + 2 * k - 2))
    return out


@pytest.mark.parametrize("b", [1, 2, 4, 8])
def test_integer_indices_against_the_chi2_moments(b):
    """E(1 - hX/b)^2 = 1 - 2h + h²(b + 2)/b is 1 at h = 2b/(b + 2): there α = 2 exactly. And
    α = 4 where the quartic E(1 - hX/b)^4 (from the chi² moments) returns to 1."""
    assert kesten_tail_index(2 * b / (b + 2), b).alpha == pytest.approx(2.0, abs=1e-8)
    m = _chi2_moments(b, 4)

    def quartic(h):
        return sum(math.comb(4, k) * (-h / b) ** k * m[k] for k in range(5)) - 1.0

    h4 = optimize.brentq(quartic, 1e-3, 2 * b / (b + 2))  # below the α = 2 step size
    assert kesten_tail_index(h4, b).alpha == pytest.approx(4.0, abs=1e-7)


@pytest.mark.parametrize(("lr", "b"), [(0.3, 1), (0.5, 1), (0.8, 1), (1.5, 4)])
def test_one_dimensional_root_against_monte_carlo(lr, b):
    """At the returned α, E|1 - (ηλ/b)χ²_b|^α = 1 within the Monte Carlo error of 4·10^6 draws
    (numpy's chi² sampler), with λ = 2 (η λ enters only as a product)."""
    k = kesten_tail_index(lr / 2, b, eigenvalue=2.0)
    x = np.random.default_rng(1).chisquare(b, 4_000_000)
    w = np.abs(1 - lr * x / b) ** k.alpha
    assert abs(w.mean() - 1.0) < 4.5 * w.std() / math.sqrt(len(w))
    assert k.lyapunov < 0 and k.method == "quadrature"


def test_isotropic_monte_carlo_against_the_second_moment_closed_form():
    """d = 3, b = 2: E‖M e1‖² = 1 - 2h + h²(b + 1 + d)/b, so α = 2 at h = 2b/(b + d + 1) = 2/3,
    within 4 of the reported Monte Carlo standard errors."""
    k = kesten_tail_index(2 / 3, 2, dim=3, n_samples=400_000, seed=2)
    assert abs(k.alpha - 2.0) < 4 * k.se and k.se < 0.05 and k.method == "monte_carlo"


def test_hill_on_discrete_runs_finds_the_kesten_index():
    """10^5 runs of SGD (b = 2, lr = 1, λ = 1: α = 2 exactly) on streaming least squares with
    Gaussian labels, 300 steps from 0: the Hill estimate (k = √n) within 2.5 of its standard
    errors of 2, and far from the SDE's index 1 + b/(ηλ) = 3."""
    prob = so.problems.StreamingLeastSquares([1.0])
    opt = so.discrete.DSGD(lr=1.0, noise=so.noise.Streaming(2, label=so.noise.Gaussian(1.0)))
    x = so.discrete.simulate(
        opt,
        prob,
        [0.0],
        n_steps=300,
        n_runs=100_000,
        record_every=300,
        record_x=True,
        record=["loss"],
        seed=4,
    ).x[-1, :, 0]
    hill = so.analysis.hill_tail_index(x)
    assert abs(hill.alpha - 2.0) < 2.5 * hill.se
    assert sde_tail_index(1.0, 2) == 3.0 and abs(hill.alpha - 3.0) > 4 * hill.se


def test_sde_tail_index_against_its_stationary_density():
    """The first-order SDE's stationary density p ∝ (c x² + e)^{-1-λ/c}: the survival function by
    scipy quadrature decays like x^{-(1 + b/(ηλ))} far out."""
    lr, b, lam, sigma = 0.4, 1, 1.5, 0.7
    c, e = 2 * lr * lam**2 / b, lr * lam * sigma**2 / b

    def density(x):
        return (c * x * x + e) ** (-1 - lam / c)

    def tail(x):  # t = x/u maps [x, inf) to (0, 1]: a smooth integrand for quad
        return integrate.quad(lambda u: density(x / u) * x / (u * u), 0.0, 1.0)[0]

    x1, x2 = 1e3, 1e4
    slope = -math.log(tail(x2) / tail(x1)) / math.log(x2 / x1)
    assert slope == pytest.approx(sde_tail_index(lr, b, eigenvalue=lam), rel=1e-4)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: kesten_tail_index(0.0), "lr"),
        (lambda: kesten_tail_index(0.5, 0), "batch_size"),
        (lambda: kesten_tail_index(0.5, eigenvalue=-1.0), "eigenvalue"),
        (lambda: kesten_tail_index(0.5, dim=0), "dim"),
        (lambda: kesten_tail_index(0.5, dim=2, n_samples=10), "n_samples"),
        (lambda: kesten_tail_index(3.0, 1), "lr"),  # E log|1 - 3 chi²_1| > 0: diverges
        (lambda: sde_tail_index(-0.1), "lr"),
        (lambda: so.analysis.hill_tail_index(np.ones(5)), "samples"),
    ],
)
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        call()
