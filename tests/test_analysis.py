"""Analysis layer: compare(), weak errors, order fits, W2, divergence, tail index."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import sdeopt as so
from sdeopt.analysis import (
    W2,
    bures_w2,
    compare,
    divergence,
    hill_tail_index,
    order_fit,
    wasserstein2,
    weak_error,
)


@pytest.fixture(scope="module")
def ds():
    opt = so.discrete.DSGD(lr=0.05, n_workers=4, noise=so.noise.Gaussian(scale=1.0))
    return compare(
        opt,
        so.problems.Quadratic(diag=[1.0, 4.0]),
        [1.0, 1.0],
        n_steps=40,
        n_runs=3000,
        models=["first_order", "curvature"],
        record_every=10,
        record_x=True,
        seed=3,
        dtype=torch.float64,
    )


def test_compare_schema_and_attrs(ds):
    assert list(ds["model"].values) == ["discrete", "first_order", "curvature"]
    assert ds["loss"].dims == ("model", "step", "run") and ds["x"].dims == (
        "model",
        "step",
        "run",
        "coord",
    )
    assert list(ds["step"].values) == [0, 10, 20, 30, 40]
    np.testing.assert_allclose(ds["time"].values, ds["step"].values * 0.05)
    cfg = json.loads(ds.attrs["config"])
    assert cfg["models"] == ["first_order", "curvature"] and cfg["method"]["type"] == "DSGD"
    assert cfg["problem"]["type"] == "Quadratic" and cfg["seed"] == 3
    assert (
        ds.attrs["torch_version"] == torch.__version__
        and ds.attrs["sdeopt_version"] == so.__version__
    )
    # Independent streams: the models are not copies of one another.
    assert not np.array_equal(
        ds["x"].sel(model="discrete")[-1], ds["x"].sel(model="first_order")[-1]
    )


class _UserProblem(so.problems.Problem):
    """A user's objective whose config() holds a tensor and a function (neither is JSON)."""

    dim = 2

    def loss(self, x):
        return 0.5 * (x * x).sum(-1)

    def grad(self, x):
        return x

    def hvp(self, x, v):
        return v

    def config(self):
        return {"type": "mine", "weights": torch.ones(2), "link": math.exp}


def test_compare_records_user_code_by_name_and_never_crashes(tmp_path):
    opt = so.discrete.DSGD(lr=0.1, noise=so.noise.Gaussian(scale=0.5))
    ds = compare(opt, _UserProblem(), [1.0, 1.0], n_steps=3, n_runs=8, models=["first_order"])
    config = json.loads(ds.attrs["config"])
    assert config["problem"]["weights"] == [1.0, 1.0]
    assert config["problem"]["link"] == {"callable": "math.exp", "reproducible": False}
    assert ds.attrs["reproducible"] == 0
    ds.to_netcdf(tmp_path / "user.nc")
    assert xr.open_dataset(tmp_path / "user.nc").attrs["reproducible"] == 0
    plain = compare(opt, so.problems.Quadratic(diag=[1.0, 2.0]), [1.0, 1.0], n_steps=3, n_runs=8)
    assert plain.attrs["reproducible"] == 1


@pytest.mark.parametrize("engine", ["netcdf", "zarr"])
def test_round_trips_are_lossless(ds, tmp_path, engine):
    if engine == "netcdf":
        ds.to_netcdf(tmp_path / "a.nc")
        back = xr.load_dataset(tmp_path / "a.nc")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr v3's notes on string dtypes
            ds.to_zarr(tmp_path / "a.zarr")
            back = xr.open_zarr(tmp_path / "a.zarr").load()
    xr.testing.assert_identical(ds, back)


def _study(values, diverged=(), coupled=0):
    """A one-step Dataset with the ``compare`` schema: ``values`` maps model -> (run,) "loss" values,
    ``diverged`` lists (model, run) pairs."""
    models = list(values)
    loss = np.stack([np.asarray(values[m], dtype=float) for m in models])[
        :, None, :
    ]  # (model, step, run)
    div = np.zeros((len(models), loss.shape[2]), dtype=bool)  # (model, run)
    for model, run in diverged:
        div[models.index(model), run] = True
    return xr.Dataset(
        {"loss": (("model", "step", "run"), loss), "diverged": (("model", "run"), div)},
        coords={"model": models, "step": [0]},
        attrs={"coupled": coupled},
    )


def test_weak_error_is_the_difference_of_means_with_its_se(ds):
    # By hand, on 4 runs: discrete 1, 2, 3, 5 (mean 11/4, sample variance 35/12); model 2, 4, 6, 8
    # (mean 5, sample variance 20/3).
    tiny = {"discrete": [1.0, 2.0, 3.0, 5.0], "sde": [2.0, 4.0, 6.0, 8.0]}
    err = weak_error(_study(tiny)).sel(model="sde").isel(step=0)
    assert float(err["signed"]) == pytest.approx(9 / 4) and float(err["error"]) == pytest.approx(
        9 / 4
    )
    assert (
        float(err["se"]) == pytest.approx(math.sqrt((20 / 3 + 35 / 12) / 4))
        and int(err["n_used"]) == 4
    )
    # Paired: differences 1, 2, 3, 3 (mean 9/4, sample variance 11/12).
    paired = weak_error(_study(tiny, coupled=1)).sel(model="sde").isel(step=0)
    assert float(paired["signed"]) == pytest.approx(9 / 4)
    assert float(paired["se"]) == pytest.approx(math.sqrt(11 / 12 / 4))
    # The model's last run diverged: model 2, 4, 6 (mean 4, sample variance 4) against all 4 discrete runs.
    left_out = weak_error(_study(tiny, diverged=[("sde", 3)])).sel(model="sde").isel(step=0)
    assert float(left_out["signed"]) == pytest.approx(5 / 4) and int(left_out["n_used"]) == 3
    assert float(left_out["se"]) == pytest.approx(math.sqrt(4 / 3 + 35 / 12 / 4))

    # Monte Carlo of known laws: discrete N(0, 1), model N(0.3, 2²), n runs each. The se must be
    # the true sd of the difference of means, sqrt((1 + 4) / n), up to the sampling error of two
    # sample variances (relative sd <= 1/sqrt(2 (n - 1))), and the error must be 0.3 within 4 se.
    n = 4000
    rng = np.random.default_rng(7)
    known = weak_error(
        _study({"discrete": rng.normal(0.0, 1.0, n), "sde": rng.normal(0.3, 2.0, n)})
    )
    known = known.sel(model="sde").isel(step=0)
    se_true = math.sqrt(5.0 / n)
    assert float(known["se"]) == pytest.approx(se_true, rel=4 / math.sqrt(2 * (n - 1)))
    assert abs(float(known["signed"]) - 0.3) < 4 * se_true

    err = weak_error(ds, "loss")
    assert list(err["model"].values) == ["first_order", "curvature"]
    assert float(err["error"].isel(step=0).max()) == 0.0  # same start
    x2 = weak_error(ds, "x2")
    manual = weak_error(ds, lambda x: (x**2).sum(-1))
    np.testing.assert_allclose(x2["error"], manual["error"])


def test_coupled_weak_error_is_paired_and_far_more_precise():
    opt = so.discrete.DSGD(lr=0.05, n_workers=1, noise=so.noise.Gaussian(scale=1.0))
    kw = dict(
        n_steps=40,
        n_runs=3000,
        models=["first_order"],
        record_every=40,
        substeps=4,
        seed=1,
        dtype=torch.float64,
    )
    prob = so.problems.Quadratic(diag=[2.0])
    paired = weak_error(compare(opt, prob, [1.0], coupled=True, **kw), "loss")
    indep = weak_error(compare(opt, prob, [1.0], **kw), "loss")
    assert paired.attrs["paired"] == 1 and indep.attrs["paired"] == 0
    assert (
        float(paired["se"].isel(step=-1, model=0)) < float(indep["se"].isel(step=-1, model=0)) / 5
    )


def test_weak_error_leaves_out_diverged_runs_without_nan():
    opt = so.discrete.DSGD(
        lr=0.1, n_workers=1, noise=so.noise.StudentT(nu=3.0, scale=3.0), shortcuts=False
    )
    d = compare(
        opt,
        so.problems.Quadratic(diag=[1.0]),
        [0.0],
        n_steps=50,
        n_runs=400,
        models=["first_order"],
        blowup_threshold=2.5,
        dtype=torch.float64,
    )
    div = divergence(d)
    assert 0 < float(div["fraction"].sel(model="discrete")) < 1
    err = weak_error(d, "loss")
    assert np.isfinite(err["error"]).all() and np.isfinite(err["se"]).all()
    assert int(err["n_used"].isel(step=-1, model=0)) < 400
    assert div["fraction_by_step"].sel(model="discrete").values[-1] == float(
        div["fraction"].sel(model="discrete")
    )
    assert np.all(np.diff(div["fraction_by_step"].sel(model="discrete").values) >= 0)


def _blowup_study(blowup):
    """Two models, steps 0, 1, 2, three runs with losses run + step, and the given blow-up steps."""
    loss = np.array(
        [
            [[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]],
            [[0.5, 1.5, 2.5], [1.5, 2.5, 3.5], [2.5, 3.5, 4.5]],
        ]
    )  # (model, step, run)
    blowup = np.array(blowup)  # (model, run)
    return xr.Dataset(
        {
            "loss": (("model", "step", "run"), loss),
            "diverged": (("model", "run"), blowup >= 0),
            "blowup_step": (("model", "run"), blowup),
        },
        coords={"model": ["discrete", "sde"], "step": [0, 1, 2]},
        attrs={"coupled": 0},
    )


def test_weak_error_uses_the_runs_alive_at_each_step():
    """A run that blows up at step 2 counts at steps 0 and 1 (it used to be dropped everywhere,
    conditioning the early steps on the future); where no run is left, n_used says so."""
    err = weak_error(_blowup_study([[-1, -1, 2], [-1, -1, -1]]), "loss").sel(model="sde")
    # step 1: all three runs of both models: means 3.0 and 2.5 -> +0.5; step 2: discrete runs 0, 1
    np.testing.assert_allclose(err["signed"].values, [0.5, 0.5, 3.5 - 2.5])
    np.testing.assert_array_equal(err["n_used"].values, [3, 3, 2])
    gone = weak_error(_blowup_study([[1, 2, 2], [-1, -1, -1]]), "loss").sel(model="sde")
    np.testing.assert_array_equal(gone["n_used"].values, [3, 2, 0])
    assert np.isfinite(gone["signed"].values[:2]).all() and np.isnan(gone["error"].values[2])
    paired = weak_error(_blowup_study([[-1, -1, 2], [1, -1, -1]]), "loss", paired=True).sel(
        model="sde"
    )
    np.testing.assert_array_equal(paired["n_used"].values, [3, 2, 1])  # alive in both models
    np.testing.assert_allclose(paired["signed"].values, [0.5, 0.5, 0.5])


def test_order_fit_slope_interval_and_mc_warning():
    lrs = np.array([0.2, 0.1, 0.05, 0.025])
    rng = np.random.default_rng(0)
    errs = 0.7 * lrs**2 * np.exp(rng.normal(0, 0.02, 4))
    fit = order_fit(lrs, errs, ses=errs / 20)
    assert abs(fit.slope - 2) < 0.1 and fit.ci_low < 2 < fit.ci_high and fit.reliable
    with pytest.warns(RuntimeWarning, match="Monte Carlo"):
        noisy = order_fit(lrs, errs, ses=errs)
    assert not noisy.reliable
    with pytest.raises(ValueError, match="lrs"):
        order_fit(lrs[:3], errs[:3])


def test_w2_one_dimensional_shift_is_exact():
    rng = np.random.default_rng(1)
    a = rng.standard_normal(200_000)
    b = rng.standard_normal(200_000) + 0.3
    w = wasserstein2(a, b)
    assert w.method == "sorted" and abs(w.value - 0.3) < 0.01 and w.floor < 0.01


def test_bures_matches_the_gaussian_estimator():
    rng = np.random.default_rng(2)
    c1 = np.array([[2.0, 0.3], [0.3, 1.0]])
    c2 = np.array([[1.0, -0.2], [-0.2, 0.5]])
    exact = bures_w2([0.0, 0.0], c1, [1.0, 0.0], c2)
    # 1-D check of the closed form: W2(N(m1, s1²), N(m2, s2²)) = sqrt((m1-m2)² + (s1-s2)²).
    assert bures_w2([0.0], [[4.0]], [1.0], [[1.0]]) == pytest.approx(math.sqrt(2.0))
    a = rng.multivariate_normal([0, 0], c1, 200_000)
    b = rng.multivariate_normal([1, 0], c2, 200_000)
    w = wasserstein2(a, b, method="gaussian")
    assert abs(w.value - exact) < 0.02


def test_exact_and_sliced_w2_with_floors():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 3))
    b = a + np.array(
        [0.5, 0.0, 0.0]
    )  # a translate: exact assignment pairs each point with its copy
    w = wasserstein2(a, b)
    assert w.method == "exact" and w.value == pytest.approx(0.5, rel=1e-9)
    big_a = rng.standard_normal((20_000, 10))
    big_b = rng.standard_normal((20_000, 10))
    big_b[:, 0] += 1.0
    s = wasserstein2(big_a, big_b, method="sliced", n_projections=400)
    # Sliced W2 of a shift δ e_1 is δ sqrt(E θ_1²) = δ / sqrt(d).
    assert abs(s.value - 1.0 / math.sqrt(10)) < 0.03 and s.floor < s.value / 3
    assert w.distance == "w2" and s.distance == "sliced_w2"
    assert wasserstein2(a, b, method="gaussian").distance == "gaussian_w2"


def _consistent_with_w2(w, true_w2, shift):
    """Whether an exact-assignment estimate between independent samples of P and of P shifted by
    ``shift`` is consistent with the true W2 (= |shift|), given its floor.

    For equal-size samples a and b = b' + shift, the mean of a_i - b'_σ(i) is the same for every
    pairing σ, so W2²(a, b) = W2²(a, b') + |shift|² - 2 shift·(mean a - mean b') exactly. The last
    term has mean 0 and sd 2 |shift| sqrt(2/k) (k rows). W2²(a, b') is a same-law estimate at size
    k: >= 0, and below the floor² (the same estimator at size k/2; estimates shrink with the size,
    by far more than the floor's own fluctuation: 3.6 against 4.2 in d = 10 at k = 2000).
    """
    k = w.n_used[0]
    slack = 4 * 2 * float(np.linalg.norm(shift)) * math.sqrt(2 / k)
    return true_w2**2 - slack <= w.value**2 <= true_w2**2 + w.floor**2 + slack


def test_auto_w2_estimates_w2_on_both_sides_of_the_exact_size():
    # N(0, I_10) against N(e_1, I_10): W2 = 1 (Bures with equal covariances: |m|), while the
    # sliced distance is 1/sqrt(10). "auto" must estimate W2 at n = 2000 and at n = 2001 alike.
    d, shift = 10, np.eye(10)[0]
    rng = np.random.default_rng(11)
    for n in (2000, 2001):
        a = rng.standard_normal((n, d))  # (n, d)
        # A translate of a has W2 = |shift| to a exactly, at any n: the identity pairing is optimal.
        w = wasserstein2(a, a + shift)
        assert w.distance == "w2" and w.value == pytest.approx(1.0, rel=1e-9)
        assert w.subsampled == (n > 2000) and w.n_used == (2000, 2000)
        w = wasserstein2(a, rng.standard_normal((n, d)) + shift, seed=n)
        assert w.method == "exact" and w.distance == "w2" and _consistent_with_w2(w, 1.0, shift), w
    # The sliced distance, asked for by name, says so. For a translate each direction θ gives
    # exactly (θ·e_1)², of mean 1/d and variance 3/(d(d+2)) - 1/d² over the sphere.
    s = wasserstein2(a, a + shift, method="sliced")
    assert s.distance == "sliced_w2" and s.method == "sliced"
    assert abs(s.value**2 - 1 / d) < 4 * math.sqrt((3 / (d * (d + 2)) - 1 / d**2) / 200)
    assert not _consistent_with_w2(
        wasserstein2(a, rng.standard_normal((n, d)) + shift, method="sliced"), 1.0, shift
    )


def test_w2_between_samples_of_unequal_sizes_is_w2():
    # 1-D, by hand: a = {0, 1}, b = {0, 0, 3}. Quantile functions: a is 0 on (0, 1/2], 1 after;
    # b is 0 on (0, 2/3], 3 after, so W2² = (1/2 → 2/3) 1² + (2/3 → 1) 2² = 1/6 + 4/3 = 3/2.
    w = wasserstein2([0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 3.0, 0.0, 0.0, 3.0])
    assert w.method == "sorted" and w.value == pytest.approx(math.sqrt(1.5), rel=1e-12)
    # 1-D, against scipy: repeating a 3 times and b 2 times gives equal-size samples of the same
    # laws, whose W2 is an optimal assignment.
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(12)
    a, b = rng.standard_normal(12), rng.exponential(1.0, 18)
    ra, rb = np.repeat(a, 3), np.repeat(b, 2)
    cost = (ra[:, None] - rb[None, :]) ** 2
    rows, cols = linear_sum_assignment(cost)
    assert wasserstein2(a, b).value == pytest.approx(math.sqrt(cost[rows, cols].mean()), rel=1e-12)
    # d > 1: "auto" and "exact" assign equal-size subsamples (never a partial matching, never sliced).
    shift = np.array([1.0, 0.0, 0.0])
    a, b = rng.standard_normal((300, 3)), rng.standard_normal((450, 3)) + shift
    for method in ("auto", "exact"):
        w = wasserstein2(a, b, method=method)
        assert (
            w.method == "exact" and w.distance == "w2" and w.n_used == (300, 300) and w.subsampled
        )
        assert _consistent_with_w2(w, 1.0, shift), w
    # Same seed, same subsample; the result keeps its old fields, and names the sliced distance.
    assert wasserstein2(a, b, seed=3) == wasserstein2(a, b, seed=3)
    assert W2(0.5, 0.1, "sliced").distance == "sliced_w2" and W2(0.5, 0.1, "exact").distance == "w2"


def test_hill_estimator_recovers_a_pareto_index():
    rng = np.random.default_rng(4)
    x = rng.pareto(1.5, 200_000) + 1.0  # P(X > t) = t^-1.5
    t = hill_tail_index(x, k=2000)
    assert abs(t.alpha - 1.5) < 4 * t.se


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda d: weak_error(d, "energy"), "observable"),
        (lambda d: weak_error(d, "loss", reference="exact"), "reference"),
        (lambda d: wasserstein2(np.zeros(10), np.zeros(10), method="emd"), "method"),
        (lambda d: wasserstein2(np.zeros((10, 2)), np.zeros((10, 3))), "b"),
        (lambda d: wasserstein2(np.zeros((10, 2)), np.zeros((10, 2)), method="sorted"), "sorted"),
        (lambda d: wasserstein2(np.zeros((10, 2)), np.zeros((10, 2)), exact_max=1), "exact_max"),
        (lambda d: hill_tail_index(np.ones(5)), "samples"),
        (
            lambda d: compare(
                so.discrete.DSGD(lr=0.1, noise=so.noise.Gaussian()),
                so.problems.Quadratic(diag=[1.0]),
                [0.0],
                2,
                2,
                models=["curvature", "curvature"],
            ),
            "models",
        ),
        (
            lambda d: compare(
                so.discrete.DSGD(lr=0.1, noise=so.noise.StudentT(nu=1.5)),
                so.problems.Quadratic(diag=[1.0]),
                [0.0],
                2,
                2,
            ),
            "infinite variance",
        ),
    ],
)
def test_bad_input(ds, call, name):
    with pytest.raises(ValueError, match=name):
        call(ds)


def test_richardson_weak_error_is_exact_per_run_and_its_se_is_not_inflated():
    from sdeopt.experiments.runner import richardson_weak_error

    opt = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian(scale=1.0))
    kw = dict(
        n_steps=10,
        n_runs=4000,
        models=["first_order"],
        record_every=10,
        seed=5,
        record=("loss", "grad_norm"),
        dtype=torch.float64,
        sde_method="euler",  # Euler's Richardson weight 2 (the exact OU step would need none)
    )
    prob = so.problems.Quadratic(diag=[1.0, 3.0])
    coarse = compare(opt, prob, [1.0, -1.0], substeps=1, **kw)
    fine = compare(opt, prob, [1.0, -1.0], substeps=2, **kw)
    err = richardson_weak_error(coarse, fine, "grad_norm").isel(step=-1).sel(model="first_order")

    # By hand, on 4 runs: discrete 1, 2, 3, 5 at both levels (mean 11/4, sample variance 35/12);
    # SDE 1, 2, 3, 4 at h/2 and 1, 1, 1, 1 at h, so 2 g(X^{h/2}) - g(X^h) = 1, 3, 5, 7 (mean 4,
    # sample variance 20/3).
    disc, sde_fine, sde_coarse = [1.0, 2.0, 3.0, 5.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]
    tiny = (
        richardson_weak_error(
            _study({"discrete": disc, "sde": sde_coarse}),
            _study({"discrete": disc, "sde": sde_fine}),
        )
        .sel(model="sde")
        .isel(step=0)
    )
    assert float(tiny["signed"]) == pytest.approx(4 - 11 / 4)
    assert float(tiny["se"]) == pytest.approx(math.sqrt((20 / 3 + 35 / 12) / 4))
    # The SDE's first run diverged at h only: it is left out (3, 5, 7: mean 5, sample variance 4).
    tiny = (
        richardson_weak_error(
            _study({"discrete": disc, "sde": sde_coarse}, diverged=[("sde", 0)]),
            _study({"discrete": disc, "sde": sde_fine}),
        )
        .sel(model="sde")
        .isel(step=0)
    )
    assert float(tiny["signed"]) == pytest.approx(5 - 11 / 4) and int(tiny["n_used"]) == 3
    assert float(tiny["se"]) == pytest.approx(math.sqrt(4 / 3 + 35 / 12 / 4))

    # Monte Carlo of known laws with strongly correlated levels: g(X^{h/2}) = 1 + Z and
    # g(X^h) = 1.1 + Z + 0.3 W, Z, W ~ N(0, 1), discrete 0.5 + N(0, 1) independent. Then
    # 2 g(X^{h/2}) - g(X^h) = 0.9 + Z - 0.3 W has variance 1.09, so the error has mean 0.4 and
    # sd sqrt((1.09 + 1) / n); the se must match it up to the sampling error of two sample
    # variances (relative sd <= 1/sqrt(2 (n - 1))).
    n = 4000
    rng = np.random.default_rng(8)
    z, w, disc = rng.standard_normal(n), rng.standard_normal(n), 0.5 + rng.standard_normal(n)
    known = (
        richardson_weak_error(
            _study({"discrete": disc, "sde": 1.1 + z + 0.3 * w}),
            _study({"discrete": disc, "sde": 1.0 + z}),
        )
        .sel(model="sde")
        .isel(step=0)
    )
    se_true = math.sqrt(2.09 / n)
    assert float(known["se"]) == pytest.approx(se_true, rel=4 / math.sqrt(2 * (n - 1)))
    assert abs(float(known["signed"]) - 0.4) < 4 * se_true
    # The old formula sqrt(4 se_fine² + se_coarse²) counted the discrete variance five times.
    old = math.sqrt(
        4 * float(weak_error(fine, "grad_norm")["se"].isel(step=-1)[0]) ** 2
        + float(weak_error(coarse, "grad_norm")["se"].isel(step=-1)[0]) ** 2
    )
    assert float(err["se"]) < 0.8 * old
    with pytest.raises(ValueError, match="coarse"):
        richardson_weak_error(
            compare(opt, prob, [1.0, -1.0], substeps=1, **{**kw, "seed": 6}), fine, "loss"
        )
