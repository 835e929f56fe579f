"""The first-order SDE of MarkovSGD with the MLMC estimator, and its cost model (docs/models.md).

References, none of them the library's route (a renewal kernel over the chain's autocovariance):
the discrete method itself by Monte Carlo; for autocorrelation rho^|t| a closed form derived here
from the weights written out from the estimator's definition; the chain's asymptotic variance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import sdeopt as so
from sdeopt.discrete import MarkovSGD, simulate
from sdeopt.discrete.markov_sgd import MLMC, SingleSample
from sdeopt.dynamics import sde_of
from sdeopt.dynamics.markov_sgd import long_run_variance

FINITE = so.noise.FiniteMarkov(
    [[0.5, 0.5, 0.0], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], values=[-1.0, 0.5, 2.0]
)


def _mlmc_weights(batch: int, max_batch: int) -> list[tuple[float, np.ndarray]]:
    """(probability, weights w) of the step's noise sum_t w_t h(Z_t) over its block, written out
    from ĝ = g^0 + 2^J (g^J - g^{J-1}) (2^J <= M) or g^0, g^j the mean of the first 2^j B
    samples; J = j with probability 2^-j, and every J > m gives g^0 (probability 2^-m)."""
    m = math.floor(math.log2(max_batch))

    def mean_of_first(count: int, length: int) -> np.ndarray:
        return np.r_[np.ones(count), np.zeros(length - count)] / count

    out = []
    for j in range(1, m + 1):
        n = batch * 2**j
        w = mean_of_first(batch, n) + 2**j * (
            mean_of_first(batch * 2**j, n) - mean_of_first(batch * 2 ** (j - 1), n)
        )
        out.append((2.0**-j, w))
    out.append((2.0**-m, mean_of_first(batch, batch)))
    return out


def _geometric(batch: int, max_batch: int, rho: float) -> tuple[float, float, float]:
    """For Corr(h(Z_0), h(Z_t)) = rho^|t| and Var h = 1: (c_0, a b, phi) with
    Cov(eps_0, eps_l) = a b phi^(l-1), l >= 1.

    Steps 0 and l >= 1 are n_0 - t + G + t' apart (t in block 0, t' in block l, G the lengths
    between), so rho^(lag) factorises: a = E sum_t w_t rho^(n - t), phi = E rho^n per block
    between, b = E sum_t w_t rho^t, blocks being i.i.d. and independent of the chain."""
    c0 = ab_a = ab_b = phi = 0.0
    for p, w in _mlmc_weights(batch, max_batch):
        t = np.arange(len(w))
        c0 += p * w @ (rho ** np.abs(t[:, None] - t[None, :])) @ w
        ab_a += p * w @ rho ** (len(w) - t)
        ab_b += p * w @ rho**t
        phi += p * rho ** len(w)
    return c0, ab_a * ab_b, phi


def _geometric_sigma2(batch: int, max_batch: int, rho: float) -> float:
    c0, ab, phi = _geometric(batch, max_batch, rho)
    return c0 + 2 * ab / (1 - phi)


# --- the long-run variance against closed forms -----------------------------------------------


@pytest.mark.parametrize(
    "chain",
    [
        so.noise.GaussianAR1(rho=0.5),
        so.noise.GaussianAR1(rho=-0.9),
        so.noise.TwoStateMarkov(p=0.05),
        so.noise.TwoStateMarkov(p=0.5),
        FINITE,
    ],
    ids=["ar1", "ar1-negative", "two-state-slow", "white", "finite"],
)
def test_single_sample_and_block_means_give_the_asymptotic_variance(chain):
    """One sample per step is the chain itself; a block mean of B samples per step (MLMC with
    M = 1: J > 0 = m always) sums to B^-1 sum_t h(Z_t), so its long-run variance is sigma_eff²/B."""
    asymptotic = chain.asymptotic_variance
    assert long_run_variance(chain, SingleSample()) == pytest.approx(asymptotic, rel=0, abs=1e-10)
    for batch in (1, 3):
        assert long_run_variance(chain, MLMC(batch=batch, max_batch=1)) == pytest.approx(
            asymptotic / batch, rel=0, abs=1e-10
        )


@pytest.mark.parametrize("rho", [0.0, 0.5, -0.4, 0.9, 0.99])
@pytest.mark.parametrize("batch,max_batch", [(1, 2), (1, 8), (2, 8), (3, 12), (1, 64), (4, 4)])
def test_long_run_variance_against_the_geometric_closed_form(batch, max_batch, rho):
    chain = so.noise.GaussianAR1(rho=rho, scale=2.0)  # the scale is s, outside sigma²
    expected = _geometric_sigma2(batch, max_batch, rho)
    got = long_run_variance(chain, MLMC(batch=batch, max_batch=max_batch))
    assert got == pytest.approx(expected, rel=1e-11, abs=1e-13)
    if rho == 0.0:  # white noise: E sum_t w_t² = (m - 1 + 2^(1-m)) / B
        m = math.floor(math.log2(max_batch))
        assert got == pytest.approx((m - 1 + 2.0 ** (1 - m)) / batch, rel=1e-13)


# --- the long-run variance against the discrete method -----------------------------------------

#: chain, (B, M); FINITE's autocorrelation is not geometric (complex eigenvalues of P).
MC_CASES = [
    (so.noise.GaussianAR1(rho=0.5, scale=1.5), (1, 4)),
    (so.noise.GaussianAR1(rho=0.5, scale=1.5), (2, 8)),
    (so.noise.TwoStateMarkov(p=0.2), (1, 4)),
    (so.noise.TwoStateMarkov(p=0.2), (2, 8)),
    (FINITE, (1, 4)),
    (FINITE, (2, 8)),
]
Z_MC = stats.norm.isf(1e-4 / (2 * len(MC_CASES)))  # two-sided, 1e-4 over all cases


def _zero(x):
    return 0.0 * x.sum()


@pytest.mark.parametrize(
    "chain,sizes", MC_CASES, ids=[f"{type(c).__name__}-B{b}-M{m}" for c, (b, m) in MC_CASES]
)
def test_long_run_variance_against_monte_carlo_of_the_discrete_method(chain, sizes):
    """Zero gradient: x_k = -lr s sum_{i<k} eps_i. The chain starts stationary (init draws from
    pi), so the steps' noise is a stationary sequence and Var x_2K - Var x_K = K lr² s² sigma²
    up to covariances at lags >= K (negligible here), free of the O(1/K) end effect that
    Var x_K / K carries."""
    batch, max_batch = sizes
    n_runs, dim, k = 4000, 8, 50
    opt = MarkovSGD(lr=1.0, noise=chain, estimator=MLMC(batch=batch, max_batch=max_batch))
    traj = simulate(
        opt,
        so.problems.FunctionProblem(_zero, dim=dim),
        [0.0] * dim,
        n_steps=2 * k,
        n_runs=n_runs,
        record_every=k,
        record_x=True,
        record=(),
        seed=11,
    )
    # Coordinates carry independent chains but share a run's J draws: average within a run, take
    # the standard error across runs.
    per_run = ((traj.x[2] ** 2 - traj.x[1] ** 2).mean(-1) / (k * chain.scale**2)).numpy()
    mc, se = per_run.mean(), per_run.std(ddof=1) / math.sqrt(n_runs)
    sigma2 = long_run_variance(chain, opt.estimator)
    assert abs(mc - sigma2) <= Z_MC * se, (mc, se, sigma2)
    # Non-trivial: the i.i.d. MLMC variance (no chain correlation) and the single-sample one are
    # both resolved away.
    m = math.floor(math.log2(max_batch))
    iid = chain.stationary_variance * (m - 1 + 2.0 ** (1 - m)) / batch
    assert min(abs(sigma2 - iid), abs(sigma2 - chain.asymptotic_variance)) > 2 * Z_MC * se


# --- the SDE against the discrete method, as a user runs it ------------------------------------


def test_stationary_loss_of_the_sde_against_the_discrete_method_through_compare():
    """f = a |x|²/2 (d = 4, a = 1), GaussianAR1(0.5), MLMC(1, 4), lr = 0.02, Euler at one substep.

    With c = 1 - lr a, the discrete stationary variance per coordinate is
    lr² s² (c_0 + 2 sum_l c^l c_l) / (1 - c²) (c_l = Cov(eps_0, eps_l), closed form above); the
    Euler SDE's is lr² s² sigma² / (1 - c²) with sigma² = c_0 + 2 sum_l c_l. Their ratio is
    1 - 2 lr a sum_l l c_l / sigma² + O(lr²): the model's O(lr) bias, allowed for on top of the
    Monte Carlo error."""
    a, lr, dim, n_runs, n_steps = 1.0, 0.02, 4, 4000, 300
    rho, batch, max_batch = 0.5, 1, 4
    opt = MarkovSGD(
        lr=lr, noise=so.noise.GaussianAR1(rho=rho), estimator=MLMC(batch=batch, max_batch=max_batch)
    )
    ds = so.analysis.compare(
        opt,
        so.problems.Quadratic(diag=[a] * dim),
        [0.0] * dim,
        n_steps=n_steps,
        n_runs=n_runs,
        models=("first_order",),
        record=("loss",),
        record_every=10,
        seed=5,
    )
    # From x0 = 0 the variance is within c^500 (4e-5 relative) of stationary after step 250.
    late = ds.loss.sel(step=slice(250, None)).mean("step")  # (model, run)
    mean = late.mean("run").values
    se = (late.std("run") / math.sqrt(n_runs)).values
    c = 1 - lr * a
    c0, ab, phi = _geometric(batch, max_batch, rho)
    sigma2 = c0 + 2 * ab / (1 - phi)
    to_loss = dim * a / 2 * lr**2 / (1 - c**2)  # E f per unit of (c_0 + 2 sum_l c^l c_l)
    discrete = to_loss * (c0 + 2 * ab * c / (1 - c * phi))
    sde = to_loss * sigma2
    z = stats.norm.isf(1e-4 / (2 * 3))  # two-sided, 1e-4 over the three checks
    assert abs(mean[0] - discrete) <= z * se[0], (mean[0], se[0], discrete)
    assert abs(mean[1] - sde) <= z * se[1], (mean[1], se[1], sde)
    bias = abs(discrete - sde)  # the O(lr) allowance, exact here
    first_order = 2 * lr * a * ab / (1 - phi) ** 2 / sigma2  # 2 lr a sum_l l c_l / sigma²
    assert bias / sde == pytest.approx(first_order, rel=0.1)
    assert abs(mean[0] - mean[1]) <= z * math.hypot(*se) + bias
    # Non-trivial: the SDE of the single-sample estimator is resolved away.
    assert abs(mean[0] - to_loss * opt.noise.asymptotic_variance) > 2 * z * se[0]


# --- the cost model, and what stays refused -----------------------------------------------------


@pytest.mark.parametrize("batch,max_batch", [(1, 4), (3, 12)])
def test_expected_oracle_calls_are_in_the_comparison(batch, max_batch, tmp_path):
    """ds.attrs["oracle_calls_per_step"] against the law of the calls enumerated from the
    estimator's definition and against the discrete run's own count; the cost axis
    step * oracle_calls_per_step then holds for every model, also in a streamed store."""
    opt = MarkovSGD(
        lr=0.05,
        noise=so.noise.TwoStateMarkov(p=0.2),
        estimator=MLMC(batch=batch, max_batch=max_batch),
    )
    prob = so.problems.Quadratic(diag=[1.0, 2.0])
    law: dict[float, float] = {}
    for j in range(1, 200):  # 2^-199 left out
        calls = float(batch * 2**j if 2**j <= max_batch else batch)
        law[calls] = law.get(calls, 0.0) + 2.0**-j
    expected = sum(c * p for c, p in law.items())
    n_steps, n_runs = 20, 2000
    ds = so.analysis.compare(
        opt, prob, [1.0, 1.0], n_steps=n_steps, n_runs=n_runs, models=("first_order",)
    )
    assert list(ds.model.values) == ["discrete", "first_order"]
    assert ds.attrs["oracle_calls_per_step"] == pytest.approx(expected, rel=1e-12)
    cost = ds.step * ds.attrs["oracle_calls_per_step"]  # the x axis of a cost plot
    assert float(cost[-1]) == pytest.approx(n_steps * expected, rel=1e-12)
    counted = (
        simulate(opt, prob, [1.0, 1.0], n_steps=n_steps, n_runs=n_runs, record=("oracle_calls",))
        .to_dataset()["oracle_calls"]
        .isel(step=-1)
    )  # (model: 1, run)
    spread = math.sqrt(n_steps * sum(p * (c - expected) ** 2 for c, p in law.items()))
    assert abs(float(counted.mean()) - n_steps * expected) <= 4.5 * spread / math.sqrt(n_runs)
    streamed = so.analysis.compare(
        opt, prob, [1.0, 1.0], n_steps=2, n_runs=8, out=str(tmp_path / "cmp.zarr")
    )
    assert streamed.attrs["oracle_calls_per_step"] == pytest.approx(expected, rel=1e-12)
    single = MarkovSGD(lr=0.05, noise=so.noise.TwoStateMarkov(p=0.2))
    assert so.analysis.compare(single, prob, [1.0, 1.0], 2, 4).attrs["oracle_calls_per_step"] == 1
    dsgd = so.discrete.DSGD(lr=0.05, noise=so.noise.Gaussian())
    assert "oracle_calls_per_step" not in so.analysis.compare(dsgd, prob, [1.0, 1.0], 2, 4).attrs


def test_mlmc_model_diffusion_and_refusals():
    chain = so.noise.GaussianAR1(rho=0.5, scale=1.5)
    opt = MarkovSGD(lr=0.1, noise=chain, estimator="mlmc", batch=2, max_batch=8)
    prob = so.problems.Quadratic(diag=[1.0, 3.0])
    x = torch.zeros(5, 2)
    cov = sde_of(opt, prob).diffusion_at(x, 1.0).cov() * opt.lr  # lr² s² sigma² I per step
    torch.testing.assert_close(
        cov, (0.1 * 1.5) ** 2 * _geometric_sigma2(2, 8, 0.5) * torch.eye(2).expand(5, 2, 2)
    )
    for model in ("second_order", "curvature"):
        with pytest.raises(ValueError, match=rf"Invalid model: '{model}'.*correlated"):
            sde_of(opt, prob, model)
    for p in (0.0, 1.0):  # never moves, or alternates forever: no convergent long-run sum
        stuck = MarkovSGD(lr=0.1, noise=so.noise.TwoStateMarkov(p=p), estimator="mlmc")
        with pytest.raises(ValueError, match=r"Invalid noise.*does not mix"):
            sde_of(stuck, prob)


def test_compare_refuses_the_methods_own_observable_beside_sde_models_before_running():
    """oracle_calls exists for the discrete method only: with SDE models it is refused up front
    (not after the discrete run), and recorded when the method runs alone."""
    opt = MarkovSGD(lr=0.1, noise=so.noise.GaussianAR1(rho=0.5), estimator="mlmc", max_batch=4)
    prob = so.problems.Quadratic(diag=[1.0])
    with pytest.raises(ValueError, match=r"Invalid record: 'oracle_calls'.*models=\[\]"):
        so.analysis.compare(
            opt, prob, [1.0], n_steps=3, n_runs=4, models=["first_order"],
            record=("loss", "oracle_calls"),
        )  # fmt: skip
    ds = so.analysis.compare(
        opt, prob, [1.0], n_steps=3, n_runs=4, models=[], record=("oracle_calls",)
    )
    assert ds["oracle_calls"].sel(model="discrete").isel(step=-1).min() >= 3
