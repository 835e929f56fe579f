"""Itô chains and SGD with Markovian noise, both layers (docs/models.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal, stats

import sdeopt as so
from sdeopt.discrete import ItoChain, MarkovSGD, simulate
from sdeopt.discrete.markov_sgd import MarkovState
from sdeopt.dynamics import sde_of, solve
from sdeopt.random import RandomSource

TWO_STATE_AS_MATRIX = [[0.8, 0.2], [0.2, 0.8]]


# --- Markov noise processes ------------------------------------------------------------------


def _chain_path(chain, n_runs=50_000, n_steps=64, seed=0):
    rng = RandomSource(seed, n_runs)
    z = chain.init(rng, 1)
    values = []
    for _ in range(n_steps):
        values.append(chain.value(z)[:, 0].double())
        z = chain.advance(z, rng)
    return torch.stack(values)  # (T, B)


def _autocovariances(kernel, rho, n_lags=200):
    """γ(0), ..., γ(n_lags) of h(Z) from the chain's definition, not from its closed forms.

    A finite chain (kernel = (P, h)): γ(j) = Σ_i π_i h̄_i (P^j h̄)_i, π the left eigenvector of P
    for eigenvalue 1 (numpy), h̄ = h - π·h. The Gaussian AR(1) Z_{k+1} = rho Z_k + sqrt(1 - rho²) w_k
    (kernel None): its Wold form Z_k = Σ_i ψ_i w_{k-i}, ψ the impulse response of the recursion
    (scipy.signal.lfilter), so γ(j) = Σ_i ψ_i ψ_{i+j}. |rho|^200 < 1e-40: no truncation error.
    """
    if kernel is None:
        impulse = np.zeros(2 * n_lags + 1)
        impulse[0] = 1.0
        psi = signal.lfilter([math.sqrt(1.0 - rho**2)], [1.0, -rho], impulse)
        return np.array([psi[: psi.size - j] @ psi[j:] for j in range(n_lags + 1)])
    p, h = np.asarray(kernel[0], dtype=np.float64), np.asarray(kernel[1], dtype=np.float64)
    evals, evecs = np.linalg.eig(p.T)
    pi = np.real(evecs[:, np.argmin(np.abs(evals - 1.0))])
    pi = pi / pi.sum()
    hc = h - pi @ h
    return np.array([pi @ (hc * (np.linalg.matrix_power(p, j) @ hc)) for j in range(n_lags + 1)])


#: One case per Markov chain law (chain, lag-1 autocorrelation, (kernel, values) or None); every
#: law of sdeopt.noise.NOISES that is a MarkovNoise must appear (tests/test_registry.py).
CHAINS = [
    (so.noise.TwoStateMarkov(p=0.2), 0.6, ([[0.8, 0.2], [0.2, 0.8]], [-1.0, 1.0])),
    (so.noise.GaussianAR1(rho=-0.5), -0.5, None),
    (
        so.noise.FiniteMarkov(TWO_STATE_AS_MATRIX, values=[-1.0, 1.0]),
        0.6,
        (TWO_STATE_AS_MATRIX, [-1.0, 1.0]),
    ),
]


@pytest.mark.parametrize("chain,rho,kernel", CHAINS)
def test_markov_chains_have_their_stationary_law_and_autocorrelation(chain, rho, kernel):
    h = _chain_path(chain)
    n = h.shape[1]
    z = 5.0
    assert abs(h.mean().item()) < z * math.sqrt(chain.stationary_variance / n / 8)
    assert abs(
        h[10].var().item() - chain.stationary_variance
    ) < z * chain.stationary_variance * math.sqrt(2 / n)
    for lag in (1, 2, 3):
        prod = h[20] * h[20 + lag]
        assert abs(prod.mean().item() - rho**lag) < z * prod.std().item() / math.sqrt(n)
    gamma = _autocovariances(kernel, rho)
    assert chain.stationary_variance == pytest.approx(gamma[0], rel=1e-12)
    for lag in (1, 2, 3, 10):
        assert chain.autocorrelation(lag) == pytest.approx(gamma[lag] / gamma[0], rel=1e-10)
    # σ_eff² = Σ_{j ∈ Z} γ(j), summed term by term.
    assert chain.asymptotic_variance == pytest.approx(gamma[0] + 2 * gamma[1:].sum(), rel=1e-10)
    # Var of a T-sum / T, exactly: σ² (1 + 2 Σ_{j<T} (1 - j/T) rho^j).
    t = h.shape[0]
    exact = 1 + 2 * sum((1 - j / t) * rho**j for j in range(1, t))
    sums = h.sum(0) / math.sqrt(t)
    assert abs(sums.var().item() - exact) < z * exact * math.sqrt(2 / n)


def test_mixing_times():
    assert so.noise.TwoStateMarkov(p=0.1).mixing_time == 7  # 0.8^7 <= 1/4 < 0.8^6
    assert so.noise.FiniteMarkov([[0.9, 0.1], [0.1, 0.9]]).mixing_time == 7
    assert so.noise.TwoStateMarkov(p=0.5).mixing_time == 1
    assert so.noise.FiniteMarkov([[0.0, 1.0], [1.0, 0.0]]).mixing_time == math.inf  # periodic
    assert so.noise.GaussianAR1(rho=0.5).mixing_time == 2


def test_finite_chain_asymptotic_variance_by_simulation():
    chain = so.noise.FiniteMarkov(
        [[0.5, 0.5, 0.0], [0.1, 0.6, 0.3], [0.3, 0.0, 0.7]], values=[0.0, 2.0, -1.0]
    )
    h = _chain_path(chain, n_runs=20_000, n_steps=400)
    sums = h.sum(0) / math.sqrt(h.shape[0])
    # Finite-T bias is O(τ/T); the Monte Carlo error about 1%.
    assert sums.var().item() == pytest.approx(chain.asymptotic_variance, rel=0.06)


#: One case per unit law (law, skewness); every class of sdeopt.noise.UNIT_LAWS must appear.
UNIT_LAW_CASES = [
    (so.noise.StandardNormal(), 0.0),
    (so.noise.Rademacher(), 0.0),
    (so.noise.CenteredExponential(), 2.0),
    (so.noise.ScaledUniform(), 0.0),
    (so.noise.StandardizedStudentT(nu=5.0), 0.0),
]


@pytest.mark.parametrize("law,skew", UNIT_LAW_CASES)
def test_unit_laws_are_centred_with_identity_covariance(law, skew):
    n = 400_000
    e = law.sample(RandomSource(1, n), 2)
    z = 5.0
    assert torch.all(e.mean(0).abs() < z * e.std(0) / math.sqrt(n))
    c = torch.cov(e.T)
    assert torch.allclose(
        c, torch.eye(2), atol=z * math.sqrt(2 / n) * 3
    )  # t_5 has a heavy 4th moment
    assert law.skewness == skew
    if skew:
        assert (e**3).mean().item() == pytest.approx(skew, rel=0.05)


# --- MLMC identities (Beznosikov et al. 2023) ----------------------------------------------------


@pytest.mark.parametrize("batch,max_batch", [(1, 8), (2, 12), (3, 1)])
def test_mlmc_mean_and_cost_identities(batch, max_batch):
    """From chains all started at +1 (E h(Z_t) = rho^t), E ĝ = E g^m and E calls = B(m + 2^-m)."""
    p, n = 0.15, 400_000
    rho = 1 - 2 * p
    opt = MarkovSGD(
        lr=1.0,
        noise=so.noise.TwoStateMarkov(p=p),
        estimator="mlmc",
        batch=batch,
        max_batch=max_batch,
    )
    prob = so.problems.Quadratic(diag=[1.0])
    x = torch.zeros(n, 1)
    state = MarkovState(x=x, z=torch.ones(n, 1), oracle_calls=torch.zeros(n))
    new = opt.step(prob, state, 0, 1.0, RandomSource(7, n))
    g_hat = (x - new.x)[:, 0]  # ĝ - ∇f(0) = ĝ
    m = math.floor(math.log2(max_batch))
    length = batch * 2**m
    expected = sum(rho**t for t in range(length)) / length  # E g^m
    assert abs(g_hat.mean().item() - expected) < 5 * g_hat.std().item() / math.sqrt(n)
    g0 = sum(rho**t for t in range(batch)) / batch
    if m > 0:
        assert abs(expected - g0) > 10 * g_hat.std().item() / math.sqrt(n)  # a non-trivial check
    calls = new.oracle_calls
    # The law of the calls, enumerated from the estimator's definition: J = j with probability
    # 2^-j; a run takes B 2^j samples when 2^j <= M, and B otherwise (2^-199 is left out).
    law = {}
    for j in range(1, 200):
        c = float(batch * 2**j if 2**j <= max_batch else batch)
        law[c] = law.get(c, 0.0) + 2.0**-j
    mean_calls = sum(c * p for c, p in law.items())
    assert opt.expected_calls() == pytest.approx(mean_calls, rel=1e-12)
    z_calls = stats.norm.isf(
        1e-6 / (2 * (len(law) + 1))
    )  # Bonferroni: every frequency and the mean
    assert abs(calls.mean().item() - mean_calls) <= z_calls * calls.std().item() / math.sqrt(n)
    for c, p in law.items():
        freq = (calls == c).double().mean().item()
        assert abs(freq - p) <= z_calls * math.sqrt(p * (1 - p) / n), (c, freq, p)
    assert set(calls.unique().tolist()) <= {float(batch * 2**j) for j in range(m + 1)}


def test_mlmc_chain_is_never_restarted():
    opt = MarkovSGD(lr=0.1, noise=so.noise.TwoStateMarkov(p=0.0), estimator="mlmc", max_batch=4)
    # p = 0: the chain never moves, so ĝ = h(z_0) exactly and z keeps its value.
    state = MarkovState(
        x=torch.zeros(3, 2), z=torch.tensor([[1.0, -1.0]] * 3), oracle_calls=torch.zeros(3)
    )
    new = opt.step(so.problems.Quadratic(diag=[1.0, 1.0]), state, 0, 0.1, RandomSource(0, 3))
    assert torch.equal(new.z, state.z)
    torch.testing.assert_close(new.x, -0.1 * state.z)


# --- Markov SGD stationary variance (docs/models.md) ----------------------------------------------------


@pytest.mark.parametrize(
    "chain", [so.noise.TwoStateMarkov(p=0.2, scale=1.0), so.noise.GaussianAR1(rho=0.6)]
)
def test_markov_sgd_stationary_variance_and_the_iid_sde_failure(chain):
    a, lr, n_runs, n_steps = 1.0, 0.02, 20_000, 600
    rho = 0.6
    prob = so.problems.Quadratic(diag=[a])
    opt = MarkovSGD(lr=lr, noise=chain)
    traj = simulate(
        opt, prob, [0.0], n_steps=n_steps, n_runs=n_runs, record_every=n_steps, record_x=True
    )
    var = traj.x[-1, :, 0].var().item()
    c = 1 - lr * a
    exact = lr**2 * (1 + c * rho) / ((1 - c**2) * (1 - c * rho))
    se = exact * math.sqrt(2 / n_runs)
    assert abs(var - exact) < 5 * se, (var, exact)
    # The SDE with Σ_eff: close (model error O(lr τ a)); the i.i.d. SDE: off by (1+rho)/(1-rho).
    sde = sde_of(opt, prob, "first_order")
    path = solve(
        sde, [0.0], n_steps=n_steps, n_runs=n_runs, substeps=4, record_every=n_steps, record_x=True
    )
    assert path.x[-1, :, 0].var().item() == pytest.approx(exact, rel=0.08)
    iid = sde_of(so.discrete.DSGD(lr=lr, noise=so.noise.Gaussian(scale=1.0)), prob, "curvature")
    iid_path = solve(
        iid, [0.0], n_steps=n_steps, n_runs=n_runs, substeps=4, record_every=n_steps, record_x=True
    )
    assert iid_path.x[-1, :, 0].var().item() < exact / 3


# --- Itô chains against their SDE (Ustimenko & Beznosikov 2024) -----------------------------------


def _ou_w2(eps, lrs, n_runs=400_000, a=1.0, x0=2.0, t_end=1.0, quantile=False):
    """W2 at time T between the chain's law (samples) and the exact OU law of the SDE."""
    m_sde = math.exp(-a * t_end) * x0
    s_sde = math.sqrt((1 - math.exp(-2 * a * t_end)) / (2 * a))
    out = []
    for lr in lrs:
        chain = ItoChain(lr=lr, gamma=0.0, diffusion=1.0, eps=eps)
        k = round(t_end / lr)
        x = simulate(
            chain,
            so.problems.Quadratic(diag=[a]),
            [x0],
            n_steps=k,
            n_runs=n_runs,
            record_every=k,
            record_x=True,
            record=(),
        ).x[-1, :, 0]
        if quantile:  # exact 1-D W2 between the empirical law and the Gaussian, by sorting
            q = stats.norm.ppf((np.arange(n_runs) + 0.5) / n_runs, m_sde, s_sde)
            out.append(math.sqrt(np.mean((np.sort(x.numpy()) - q) ** 2)))
        else:  # Bures: both laws Gaussian
            out.append(math.hypot(x.mean().item() - m_sde, x.std().item() - s_sde))
    return np.array(out)


def test_ito_chain_w2_to_its_sde_has_slope_one_and_skewness_slows_it():
    lrs = np.array([0.2, 0.1, 0.05, 0.025])
    gauss = _ou_w2(so.noise.StandardNormal(), lrs)
    slope = np.polyfit(np.log(lrs), np.log(gauss), 1)[0]
    assert abs(slope - 1.0) < 0.2, (slope, gauss)
    # Monte Carlo floor of the moment-based W2: the standard errors of the mean and the std.
    s_sde = math.sqrt((1 - math.exp(-2.0)) / 2)
    floor = s_sde * math.sqrt(1.5 / 400_000)
    assert floor < gauss[-1] / 4
    skewed = _ou_w2(so.noise.CenteredExponential(), lrs, quantile=True)
    symmetric = _ou_w2(so.noise.StandardNormal(), lrs, quantile=True)
    slope_skewed = np.polyfit(np.log(lrs), np.log(skewed), 1)[0]
    slope_symmetric = np.polyfit(np.log(lrs), np.log(symmetric), 1)[0]
    assert slope_skewed < slope_symmetric - 0.3, (slope_skewed, slope_symmetric)
    assert abs(slope_skewed - 0.5) < 0.2


@pytest.mark.parametrize("schedule", [so.schedules.Constant(), so.schedules.PolyDecay(power=0.5)])
def test_ito_chain_sde_is_its_euler_scheme(schedule):
    """With Gaussian ε and one substep, the chain is the Euler scheme of its SDE: same path,
    with or without a step-size schedule (the SDE follows eta_t in drift and diffusion)."""
    chain = ItoChain(
        lr=0.1,
        gamma=1.0,
        diffusion=lambda x: 0.5 + 0.1 * x.abs(),
        drift=lambda x: -(x**3),
        schedule=schedule,
    )
    prob = so.problems.Quadratic(diag=[1.0, 1.0])
    sde = sde_of(chain, prob)
    x = torch.tensor([[0.5, -1.0]])
    torch.testing.assert_close(sde.drift_at(x, 1.0), -(x**3))
    torch.testing.assert_close(sde.diffusion_at(x, 1.0).g, (0.5 + 0.1 * x.abs()) * 0.1**0.5)
    kw = dict(n_steps=20, n_runs=30, record_x=True, seed=3)
    a = simulate(chain, prob, [0.5, -1.0], **kw)
    b = solve(sde, [0.5, -1.0], **kw)
    torch.testing.assert_close(a.x, b.x, rtol=1e-12, atol=1e-12)  # same draws: same Euler path


def test_coupling_an_ito_chain_is_refused():
    """Its noise enters as x + ... + σ ε, the opposite sign to the x - lr(ū + S^½ξ) form that
    coupling assumes: the chain does not declare itself couplable, so its draws are not kept."""
    chain = ItoChain.sgld(lr=0.1)
    prob = so.problems.Quadratic(diag=[1.0])
    assert not chain.couplable
    with pytest.raises(ValueError, match=r"keep_increments.*not couplable"):
        simulate(chain, prob, [0.5], n_steps=5, n_runs=4, keep_increments=True)


def test_sgld_stationary_law_has_its_o_lr_bias():
    a, lr, n = 2.0, 0.1, 100_000
    chain = ItoChain.sgld(lr=lr)
    traj = simulate(
        chain,
        so.problems.Quadratic(diag=[a]),
        [0.0],
        n_steps=200,
        n_runs=n,
        record_every=200,
        record_x=True,
    )
    var = traj.x[-1, :, 0].var().item()
    exact_chain = (1 / a) / (1 - a * lr / 2)  # 2 lr / (1 - (1 - a lr)²)
    assert abs(var - exact_chain) < 5 * exact_chain * math.sqrt(2 / n)
    target = 1 / a
    assert 0 < var - target < a * lr * target  # the O(lr) bias, with its sign


# --- configs of user callables ------------------------------------------------------------------


def _cubic_drift(x):
    return -(x**3)


def _assert_round_trip(ds, path):
    import xarray as xr

    ds.to_netcdf(path)
    back = xr.load_dataset(path)
    xr.testing.assert_identical(ds, back)


def test_ito_chain_callables_are_recorded_by_name_in_every_dataset(tmp_path):
    """A callable drift and diffusion (a named function and a lambda) are recorded by qualified
    name and marked not reproducible, in simulate's, solve's and compare's datasets, which all
    survive netCDF."""
    import json

    chain = ItoChain(
        lr=0.1,
        gamma=1.0,
        drift=_cubic_drift,
        diffusion=lambda x: 0.5 + 0.1 * x.abs(),
        diffusion_error=(0.1, 0.5),
    )
    prob = so.problems.Quadratic(diag=[1.0, 2.0])
    kw = dict(n_steps=4, n_runs=8, record_x=True)
    datasets = {
        "simulate": simulate(chain, prob, [0.5, -1.0], **kw).to_dataset(),
        "solve": solve(sde_of(chain, prob), [0.5, -1.0], **kw).to_dataset(),
        "compare": so.analysis.compare(chain, prob, [0.5, -1.0], **kw),
    }
    lambda_name = f"{__name__}.test_ito_chain_callables_are_recorded_by_name_in_every_dataset.<locals>.<lambda>"
    for name, ds in datasets.items():
        cfg = json.loads(ds.attrs["config"])
        cfg = (
            cfg["sde"]["method"] if name == "solve" else cfg["method"]
        )  # solve's "method" is its scheme
        assert cfg["drift"] == {"callable": f"{__name__}._cubic_drift", "reproducible": False}, name
        assert cfg["diffusion"] == {"callable": lambda_name, "reproducible": False}, name
        assert cfg["reproducible"] is False and cfg["diffusion_error"] == [0.1, 0.5], name
        _assert_round_trip(ds, tmp_path / f"{name}.nc")
    assert (
        datasets["simulate"].attrs["reproducible"] == 0
        and datasets["solve"].attrs["reproducible"] == 0
    )
    # the discrete run itself is untouched by the recording: the chain's own update, by hand
    traj = simulate(chain, prob, [0.5, -1.0], n_steps=1, n_runs=1, record_x=True, seed=5)
    eps = so.noise.StandardNormal().sample(RandomSource(5, 1), 2)
    x = torch.tensor([[0.5, -1.0]])
    hand = x - 0.1 * x**3 + 0.1 * (0.5 + 0.1 * x.abs() + 0.1 * 0.1**0.5) * eps
    torch.testing.assert_close(traj.x[-1], hand, rtol=1e-12, atol=1e-12)


def test_ito_chain_callable_errors_are_recorded_and_library_chains_are_reproducible(tmp_path):
    import json

    chain = ItoChain(lr=0.1, drift_error=lambda x: 0.01 * x, diffusion_error=_cubic_drift)
    cfg = chain.config()
    assert cfg["drift_error"]["callable"].endswith("<lambda>") and cfg["reproducible"] is False
    assert cfg["diffusion_error"] == {"callable": f"{__name__}._cubic_drift", "reproducible": False}
    ds = simulate(chain, so.problems.Quadratic(diag=[1.0]), [0.5], n_steps=3, n_runs=4).to_dataset()
    _assert_round_trip(ds, tmp_path / "errors.nc")
    # A chain made of library parts only (what a TOML config builds) carries no flag and
    # rebuilds from its config.
    sgld = ItoChain.sgld(
        lr=0.1, eps=so.noise.Rademacher(), schedule=so.schedules.PolyDecay(power=0.5)
    )
    cfg = json.loads(json.dumps(sgld.config()))
    assert "reproducible" not in cfg and cfg == sgld.config()
    rebuilt = ItoChain(
        lr=cfg["lr"],
        gamma=cfg["gamma"],
        diffusion=cfg["diffusion"],
        eps=so.noise.Rademacher(),
        schedule=so.schedules.from_config(cfg["schedule"]),
    )
    assert rebuilt.config() == cfg
    ds = simulate(sgld, so.problems.Quadratic(diag=[1.0]), [0.5], n_steps=3, n_runs=4).to_dataset()
    assert ds.attrs["reproducible"] == 1


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: so.noise.TwoStateMarkov(p=1.5), "p"),
        (lambda: so.noise.TwoStateMarkov(p=-0.1), "p"),
        (lambda: so.noise.GaussianAR1(rho=1.0), "rho"),
        (lambda: so.noise.FiniteMarkov([[0.5, 0.6], [0.5, 0.5]]), "matrix"),
        (lambda: so.noise.FiniteMarkov([[1.2, -0.2], [0.5, 0.5]]), "matrix"),
        (lambda: so.noise.FiniteMarkov([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "matrix"),
        (lambda: so.noise.FiniteMarkov([[1.0, 0.0], [0.0, 1.0]]), "matrix"),
        (lambda: so.noise.FiniteMarkov([[0.5, 0.5], [0.5, 0.5]], values=[1.0]), "values"),
        (lambda: so.noise.StandardizedStudentT(nu=2.0), "nu"),
        (lambda: so.noise.StandardizedStudentT(nu=1.5), "nu"),
        (lambda: ItoChain(lr=0.1, gamma=1.5), "gamma"),
        (lambda: ItoChain(lr=0.1, gamma=-0.1), "gamma"),
        (lambda: ItoChain(lr=0.1, eps=so.noise.Gaussian()), "eps"),
        (lambda: ItoChain(lr=0.1, diffusion=-1.0), "diffusion"),
        (lambda: ItoChain(lr=0.1, drift_error=(0.1,)), "drift_error"),
        (lambda: ItoChain(lr=0.0), "lr"),
        (lambda: MarkovSGD(lr=0.1, noise=so.noise.Gaussian()), "noise"),
        (
            lambda: MarkovSGD(lr=0.1, noise=so.noise.TwoStateMarkov(p=0.1), estimator="mc"),
            "estimator",
        ),
        (lambda: MarkovSGD(lr=0.1, noise=so.noise.TwoStateMarkov(p=0.1), batch=0), "batch"),
        (
            lambda: sde_of(
                MarkovSGD(lr=0.1, noise=so.noise.TwoStateMarkov(p=0.1), estimator="mlmc"),
                so.problems.Quadratic(diag=[1.0]),
                "second_order",
            ),
            "Invalid model",
        ),
        (
            lambda: sde_of(
                MarkovSGD(lr=0.1, noise=so.noise.TwoStateMarkov(p=0.0)),
                so.problems.Quadratic(diag=[1.0]),
            ),
            "noise",
        ),
        (
            lambda: sde_of(ItoChain.sgld(lr=0.1), so.problems.Quadratic(diag=[1.0]), "curvature"),
            "model",
        ),
    ],
)
def test_bad_input(make, name):
    with pytest.raises(ValueError, match=name):
        make()
