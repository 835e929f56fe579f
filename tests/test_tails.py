"""Laws without moments: tail-index estimators, bounded observables, quantile errors, and W2's
refusal of laws without a second moment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import stats

import sdeopt as so
from sdeopt.analysis import (
    TailIndex,
    arctan_coordinate,
    arctan_norm,
    exceedance,
    exit_times,
    hill_tail_index,
    quantile_error,
    stable_tail_index,
    wasserstein2,
    weak_error,
)
from sdeopt.random import RandomSource

# --- datasets built by hand --------------------------------------------------------------------


def _study(values: dict, blowup_step: dict | None = None) -> xr.Dataset:
    """A Dataset with the compare schema from model -> (step, run) "loss" values (or
    (step, run, d) states, stored as "x"); ``blowup_step`` maps model -> (run,) steps (-1: none)."""
    models = list(values)
    data = np.stack([np.asarray(values[m], dtype=float) for m in models])
    n_steps, n_runs = data.shape[1], data.shape[2]
    blow = np.full((len(models), n_runs), -1)  # (model, run)
    for model, steps in (blowup_step or {}).items():
        blow[models.index(model)] = steps
    if data.ndim == 4:
        var = {"x": (("model", "step", "run", "coord"), data)}  # (model, step, run, d)
    else:
        var = {"loss": (("model", "step", "run"), data)}  # (model, step, run)
    return xr.Dataset(
        {
            **var,
            "diverged": (("model", "run"), blow >= 0),
            "blowup_step": (("model", "run"), blow),
        },
        coords={"model": models, "step": np.arange(n_steps), "run": np.arange(n_runs)},
    )


# --- tail indices --------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.8, 1.2, 1.5, 1.9])
def test_stable_tail_index_recovers_alpha_with_an_honest_se(alpha):
    # 40 independent samples of 10^4 SαS values from the package's sampler (one run each).
    reps, n = 40, 10_000
    x = so.noise.SymmetricStable(alpha=alpha).sample_standard(RandomSource(17, reps), n)
    est = [stable_tail_index(row) for row in x]  # (reps,)
    values = np.array([t.alpha for t in est])
    ses = np.array([t.se for t in est])
    assert est[0].method == "stable" and est[0].k == 100  # block sqrt(n)
    assert abs(est[0].alpha - alpha) < 4 * est[0].se
    # Unbiased: the mean of 40 within 4 of its own se; measured at n = 10^5: |bias| < 0.006.
    spread = values.std(ddof=1)
    assert abs(values.mean() - alpha) < 4 * spread / math.sqrt(reps)
    # Honest: the spread over repetitions matches the reported se (the sd of 40 values is
    # itself known to ~11 %, so a factor 1.5 is a 3.6-sigma bound).
    assert 1 / 1.5 < spread / ses.mean() < 1.5, (spread, ses.mean())


def test_stable_tail_index_of_vectors_uses_row_norms_and_any_block():
    # Rows of 3 i.i.d. SαS(1.5) coordinates are a stable vector: the sum of K rows is K^(1/α) one.
    x = so.noise.SymmetricStable(alpha=1.5).sample_standard(RandomSource(5, 1), 20_000, 3)[0]
    t = stable_tail_index(x)
    assert t.k == 141 and abs(t.alpha - 1.5) < 4 * t.se
    small = stable_tail_index(x, block=10)
    assert small.k == 10 and abs(small.alpha - 1.5) < 4 * small.se
    assert small.se < t.se  # small blocks are more precise on exactly stable samples
    # A Gaussian is stable with α = 2.
    g = torch.randn(20_000, generator=torch.Generator().manual_seed(2))
    gt = stable_tail_index(g)
    assert abs(gt.alpha - 2.0) < 4 * gt.se
    # Sums that cancel (far lighter than stable) give a non-positive 1/alpha: alpha is inf.
    cancelling = stable_tail_index(np.tile([1.0, -1.001], 50), block=2)
    assert math.isinf(cancelling.alpha) and math.isinf(cancelling.se)
    # Non-finite and zero rows are dropped before the blocks are cut.
    padded = torch.cat([x, torch.full((50, 3), math.nan), torch.zeros(7, 3)])
    assert stable_tail_index(padded) == t


def test_hill_is_within_its_error_on_exact_pareto():
    rng = np.random.default_rng(8)
    for alpha in (1.5, 3.0):
        x = rng.pareto(alpha, (40, 10_000)) + 1.0  # P(X > t) = t^-alpha on [1, inf)
        est = [hill_tail_index(row) for row in x]
        values = np.array([t.alpha for t in est])
        assert est[0].method == "hill" and est[0].k == 100
        assert abs(est[0].alpha - alpha) < 4 * est[0].se
        # Exact Pareto: the mean is alpha k/(k-1) (1 % high), the spread alpha/sqrt(k).
        assert abs(values.mean() - alpha) < 4 * values.std(ddof=1) / math.sqrt(40)
        assert 1 / 1.5 < values.std(ddof=1) / np.mean([t.se for t in est]) < 1.5
    # The record stays backward compatible: three fields positionally, the method by default.
    assert TailIndex(1.0, 0.1, 10).method == "hill"


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: stable_tail_index(np.ones(19)), "samples"),
        (lambda: stable_tail_index(np.full(100, np.nan)), "samples"),
        (lambda: stable_tail_index(np.ones((10, 10, 2))), "samples"),
        (lambda: stable_tail_index(np.ones(100), block=1), "block"),
        (lambda: stable_tail_index(np.ones(100), block=11), "block"),
        (lambda: stable_tail_index(np.ones(100), block=2.0), "block"),
        (lambda: stable_tail_index(np.ones(100), block=True), "block"),
    ],
)
def test_stable_tail_index_bad_input(call, name):
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        call()


# --- bounded observables ----------------------------------------------------------------------


def test_observables_against_closed_forms(generator):
    n = 200_000
    z = torch.randn(n, 2, generator=generator)  # (n, 2): N(0, I_2)
    for c in (0.5, 1.5, 2.5):
        v = exceedance(c)(z)
        se = math.sqrt(math.exp(-(c**2) / 2) * (1 - math.exp(-(c**2) / 2)) / n)
        assert abs(float(v.mean()) - math.exp(-(c**2) / 2)) < 4 * se
    # Centred elsewhere: the same law shifted.
    shifted = exceedance(1.5, center=[3.0, -1.0])(z + torch.tensor([3.0, -1.0]))
    assert torch.equal(shifted, exceedance(1.5)(z))
    # Cauchy of scale gamma and location m: E arctan(|x - m| / gamma) = pi/4 and
    # E arctan((x - c) / s) = arctan((m - c) / (s + gamma)).
    gamma, m = 2.0, 1.0
    x = m + gamma * torch.tan(math.pi * (torch.rand(n, 1, generator=generator) - 0.5))  # (n, 1)
    v = arctan_norm(gamma, center=[m])(x)
    assert abs(float(v.mean()) - math.pi / 4) < 4 * float(v.std()) / math.sqrt(n)
    assert float(v.max()) < math.pi / 2
    for s, c in ((1.0, 0.0), (0.5, 3.0)):
        v = arctan_coordinate(0, s, center=c)(x)
        want = math.atan((m - c) / (s + gamma))
        assert abs(float(v.mean()) - want) < 4 * float(v.std()) / math.sqrt(n)
    # Shapes: (..., d) to (...), any leading dims.
    assert exceedance(1.0)(torch.zeros(4, 3, 2)).shape == (4, 3)
    assert arctan_coordinate(1)(np.ones((5, 2))).shape == (5,)


def test_observables_are_named_by_their_call():
    g = exceedance(1.5)
    assert repr(g) == g.__name__ == g.__qualname__ == "exceedance(c=1.5)"
    assert repr(arctan_norm(2, center=[1, 0])) == "arctan_norm(scale=2.0, center=(1.0, 0.0))"
    assert (
        repr(arctan_coordinate(1, 0.5, center=-1))
        == "arctan_coordinate(j=1, scale=0.5, center=-1.0)"
    )
    assert eval(repr(g), vars(so.analysis.observables)) == g
    assert "d = 20" in repr(exceedance(1.0, center=torch.zeros(20)))
    assert so.analysis.observables.exceedance is exceedance


def test_weak_error_of_exceedance_between_known_laws():
    # discrete N(0, I_2), model N(0, sigma^2 I_2): P(|x| > c) = exp(-c^2 / (2 sigma^2)).
    rng = np.random.default_rng(3)
    n, sigma, c = 20_000, 1.2, 1.5
    ds = _study(
        {
            "discrete": rng.standard_normal((1, n, 2)),
            "sde": sigma * rng.standard_normal((1, n, 2)),
        }
    )
    err = weak_error(ds, exceedance(c)).sel(model="sde").isel(step=0)
    want = math.exp(-(c**2) / (2 * sigma**2)) - math.exp(-(c**2) / 2)
    assert abs(float(err["signed"]) - want) < 4 * float(err["se"])
    assert float(err["se"]) < 0.5 / math.sqrt(n) * math.sqrt(2)  # a bounded observable's se
    assert err.attrs["observable"] == "sdeopt.analysis.observables.exceedance(c=1.5)"


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: exceedance(-1.0), "c"),
        (lambda: exceedance(math.nan), "c"),
        (lambda: exceedance(1.0, center=[0.0, math.inf]), "center"),
        (lambda: exceedance(1.0, center=[]), "center"),
        (lambda: exceedance(1.0, center="origin"), "center"),
        (lambda: exceedance(1.0, center=[0.0, 0.0])(torch.zeros(4, 3)), "x"),
        (lambda: arctan_norm(0.0), "scale"),
        (lambda: arctan_norm(-1.0), "scale"),
        (lambda: arctan_coordinate(-1), "j"),
        (lambda: arctan_coordinate(1.5), "j"),
        (lambda: arctan_coordinate(2)(torch.zeros(4, 2)), "j"),
        (lambda: arctan_coordinate(0, center=math.nan), "center"),
        (lambda: arctan_norm()(torch.tensor(1.0)), "x"),
    ],
)
def test_observables_bad_input(call, name):
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        call()


# --- quantile error -----------------------------------------------------------------------------

QS = np.array([0.1, 0.25, 0.5, 0.75, 0.9])


def _cauchy_quantile_sd(q, gamma, n):
    """sqrt(q (1 - q) / n) / f(xi_q) for the Cauchy law of scale gamma."""
    return np.sqrt(q * (1 - q) / n) * np.pi * gamma / np.cos(np.pi * (q - 0.5)) ** 2


def test_quantile_error_between_cauchy_laws_and_its_se():
    # Reference Cauchy(1), model Cauchy(1.1), 20 independent steps of 20,000 runs: the
    # quantile difference is 0.1 tan(pi (q - 1/2)).
    rng = np.random.default_rng(6)
    steps, n = 20, 20_000
    ds = _study(
        {
            "discrete": rng.standard_cauchy((steps, n)),
            "sde": 1.1 * rng.standard_cauchy((steps, n)),
        }
    )
    err = quantile_error(ds).sel(model="sde")
    assert err["signed"].dims == ("step", "quantile") and err["n_used"].dims == ("step",)
    want = 0.1 * np.tan(np.pi * (QS - 0.5))
    z = stats.norm.ppf(1 - 0.01 / (2 * steps * len(QS)))  # 100 checks at 1 % overall
    assert np.all(np.abs(err["signed"] - want) < z * err["se"])
    # The se is the sd of the difference of sample quantiles (to ~2 %, averaged over 20 steps).
    theory = np.hypot(_cauchy_quantile_sd(QS, 1.0, n), _cauchy_quantile_sd(QS, 1.1, n))
    np.testing.assert_allclose(err["se"].mean("step"), theory, rtol=0.08)
    # ... and the pooled mean difference is right to its se / sqrt(20).
    assert np.all(np.abs(err["signed"].mean("step") - want) < 4 * theory / math.sqrt(steps))
    assert err.attrs["reference"] == "discrete" and err.attrs["level"] == 0.95
    assert (err["n_used"] == n).all()


def test_quantile_error_se_covers_at_its_level():
    # Same law in both models, 200 independent steps of 1,000 runs, 5 quantiles: |signed| / se
    # exceeds 2 in about 4.6 % of 1,000 checks if the se is right (measured: 3.7 % ± 0.7 %, the
    # se a few % conservative at n = 1,000); an se too small by a third would give ~18 %.
    rng = np.random.default_rng(7)
    steps, n = 200, 1000
    ds = _study(
        {"discrete": rng.standard_cauchy((steps, n)), "sde": rng.standard_cauchy((steps, n))}
    )
    err = quantile_error(ds).sel(model="sde")
    rate = float((np.abs(err["signed"]) / err["se"] > 2).mean())
    assert 0.015 < rate < 0.08, rate


def test_quantile_error_by_hand_with_blowups():
    # Values 1..100 in a shuffled order: the median is 50.5; at q = 1/2 the ranks are
    # floor(50 - 1.96 * 5) = 40 and ceil(50 + 9.8) = 60, so one sample's se is 20 / (2 z).
    rng = np.random.default_rng(0)
    ref = rng.permutation(np.arange(1.0, 101.0))
    model = ref + 3.0
    blow = np.full(100, -1)
    blow[np.argsort(model)[-10:]] = 1  # the 10 largest blow up at step 1
    ds = _study({"discrete": np.stack([ref, ref]), "sde": np.stack([model, model])}, {"sde": blow})
    err = quantile_error(ds, quantiles=[0.1, 0.5], level=0.95).sel(model="sde")
    z = stats.norm.ppf(0.975)
    at0 = err.isel(step=0)
    np.testing.assert_allclose(at0["value"], np.quantile(model, [0.1, 0.5]))
    np.testing.assert_allclose(at0["signed"], [3.0, 3.0])
    # q = 0.1: ranks floor(10 - 5.88) = 4 and ceil(15.88) = 16.
    np.testing.assert_allclose(at0["se"], np.sqrt(2) * np.array([12.0, 20.0]) / (2 * z))
    # From step 1 the 10 blown-up runs are left out: 90 runs 4..93.
    at1 = err.isel(step=1)
    assert int(at1["n_used"]) == 90 and int(at0["n_used"]) == 100
    np.testing.assert_allclose(at1["value"], np.quantile(np.arange(4.0, 94.0), [0.1, 0.5]))
    # Too few runs for a two-sided interval: inf, not a made-up number; none at all: NaN.
    tiny = quantile_error(_study({"discrete": [ref[:10]], "sde": [model[:10]]}), quantiles=[0.1])
    assert math.isinf(float(tiny["se"].squeeze()))
    none = quantile_error(
        _study({"discrete": [ref], "sde": [model]}, {"sde": np.zeros(100, int)}), quantiles=[0.5]
    )
    assert int(none["n_used"].squeeze()) == 0 and math.isnan(float(none["signed"].squeeze()))


def test_quantile_error_of_a_callable_on_x():
    rng = np.random.default_rng(9)
    ds = _study(
        {"discrete": rng.standard_normal((1, 4000, 2)), "sde": rng.standard_normal((1, 4000, 2))}
    )
    err = quantile_error(ds, arctan_norm(1.0), quantiles=[0.5])
    assert err.attrs["observable"] == "sdeopt.analysis.observables.arctan_norm(scale=1.0)"
    assert abs(float(err["signed"].squeeze())) < 4 * float(err["se"].squeeze())
    x2 = quantile_error(ds, "x2", quantiles=[0.5]).sel(model="sde").isel(step=0)
    # |x|^2 of N(0, I_2) is Exp(1/2): median 2 log 2.
    assert abs(float(x2["reference_value"].squeeze()) - 2 * math.log(2)) < 0.1


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"quantiles": (0.0, 0.5)}, "quantiles"),
        ({"quantiles": (0.5, 1.0)}, "quantiles"),
        ({"quantiles": ()}, "quantiles"),
        ({"quantiles": (0.5, 0.5)}, "quantiles"),
        ({"quantiles": (math.nan,)}, "quantiles"),
        ({"level": 1.0}, "level"),
        ({"level": 0.0}, "level"),
        ({"reference": "exact"}, "reference"),
        ({"observable": "energy"}, "observable"),
    ],
)
def test_quantile_error_bad_input(kwargs, name):
    ds = _study({"discrete": np.zeros((1, 10)), "sde": np.zeros((1, 10))})
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        quantile_error(ds, **kwargs)
    with pytest.raises(ValueError, match="Invalid ds"):
        quantile_error(_study({"discrete": np.zeros((1, 10))}))


# --- W2 refuses laws without a second moment ----------------------------------------------------


def test_w2_refuses_samples_without_a_second_moment():
    rng = np.random.default_rng(12)
    gauss = rng.standard_normal((10_000, 2))
    cauchy = rng.standard_cauchy(10_000)
    with pytest.raises(ValueError, match=r"Invalid a: its Hill tail index .* is below 2") as info:
        wasserstein2(cauchy, rng.standard_normal(10_000))
    assert "quantile_error" in str(info.value) and "check_tails=False" in str(info.value)
    stable = stats.levy_stable.rvs(1.5, 0.0, size=(10_000, 2), random_state=rng)
    with pytest.raises(ValueError, match="Invalid b"):
        wasserstein2(gauss, stable, method="gaussian")
    # check_tails=False bypasses; Gaussian samples pass.
    assert math.isfinite(wasserstein2(cauchy, cauchy + 1.0, check_tails=False).value)
    assert wasserstein2(
        gauss, gauss + np.array([1.0, 0.0]), method="gaussian"
    ).value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="Invalid check_tails"):
        wasserstein2(gauss, gauss, check_tails="yes")
    # Fewer than 300 rows: no check.
    wasserstein2(cauchy[:299], cauchy[:299] + 1.0)


def test_w2_tail_check_rarely_refuses_laws_with_a_second_moment():
    # Gaussian and Student t (nu = 3) samples from 300 to 10^5 rows, in d = 1 and 3. Measured
    # over many more: Gaussian never refused; t(3) in about 5 in 10^4 samples of 300 rows in
    # d = 1, none from 1000 rows on.
    rng = np.random.default_rng(13)
    for n, reps in ((300, 600), (1000, 200), (10_000, 30), (100_000, 3)):
        for d in (1, 3):
            refused = {"gauss": 0, "t3": 0}
            for _ in range(reps):
                for law, draw in (
                    ("gauss", rng.standard_normal),
                    ("t3", lambda size: rng.standard_t(3, size)),
                ):
                    try:
                        wasserstein2(draw((n, d)), draw((n, d)), method="gaussian")
                    except ValueError:
                        refused[law] += 1
            assert refused["gauss"] == 0, (n, d)
            # 2 reps samples each: the bounds allow rates ~10x those measured.
            assert refused["t3"] <= (5 if n == 300 else 2), (n, d, refused)


# --- first exit times ------------------------------------------------------------------------------


def _exit_dataset(steps_by_model):
    models = list(steps_by_model)
    blow = np.array([steps_by_model[m] for m in models], dtype=np.int64)
    return xr.Dataset(
        {"blowup_step": (("model", "run"), blow), "diverged": (("model", "run"), blow >= 0)},
        coords={"model": models},
    )


def test_exit_times_of_an_exponential_law():
    """Geometric exit steps of mean 1/p (an exponential clock): the mean within 4 se of 1/p, the
    median's interval covering the closed-form median ceil(log(1/2)/log(1-p)), and censoring:
    a model with a quarter of its runs still inside keeps a finite median but no mean."""
    rng = np.random.default_rng(11)
    p = 0.01
    steps = rng.geometric(p, 20_000)
    censored = steps.copy()
    censored[: len(steps) // 4] = -1
    out = exit_times(_exit_dataset({"discrete": steps, "levy": censored}))
    full = out.sel(model="discrete")
    assert abs(float(full["mean"]) - 1 / p) < 4 * float(full["mean_se"])
    true_median = math.ceil(math.log(0.5) / math.log(1 - p))
    assert float(full["median_low"]) <= true_median <= float(full["median_high"])
    cens = out.sel(model="levy")
    assert float(cens["fraction"]) == 0.75 and math.isnan(float(cens["mean"]))
    assert math.isfinite(float(cens["median"]))
    mostly_inside = exit_times(_exit_dataset({"discrete": np.where(steps > 5, -1, steps)}))
    assert math.isinf(float(mostly_inside["median"].sel(model="discrete")))
    with pytest.raises(ValueError, match="Invalid level"):
        exit_times(_exit_dataset({"discrete": steps}), level=1.0)
