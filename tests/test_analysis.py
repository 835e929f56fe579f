"""Analysis layer: compare(), weak errors, order fits, W2, divergence, tail index (MATH.md §8)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import sdeopt as so
from sdeopt.analysis import (bures_w2, compare, divergence, hill_tail_index, order_fit, wasserstein2,
                             weak_error)


@pytest.fixture(scope="module")
def ds():
    opt = so.discrete.DSGD(lr=0.05, n_workers=4, noise=so.noise.Gaussian(scale=1.0))
    return compare(opt, so.problems.Quadratic(diag=[1.0, 4.0]), [1.0, 1.0], n_steps=40, n_runs=3000,
                   models=["first_order", "curvature"], record_every=10, record_x=True, seed=3,
                   dtype=torch.float64)


def test_compare_schema_and_attrs(ds):
    assert list(ds["model"].values) == ["discrete", "first_order", "curvature"]
    assert ds["loss"].dims == ("model", "step", "run") and ds["x"].dims == ("model", "step", "run", "coord")
    assert list(ds["step"].values) == [0, 10, 20, 30, 40]
    np.testing.assert_allclose(ds["time"].values, ds["step"].values * 0.05)
    cfg = json.loads(ds.attrs["config"])
    assert cfg["models"] == ["first_order", "curvature"] and cfg["method"]["type"] == "DSGD"
    assert cfg["problem"]["type"] == "Quadratic" and cfg["seed"] == 3
    assert ds.attrs["torch_version"] == torch.__version__ and ds.attrs["sdeopt_version"] == so.__version__
    # Independent streams: the models are not copies of one another.
    assert not np.array_equal(ds["x"].sel(model="discrete")[-1], ds["x"].sel(model="first_order")[-1])


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


def test_weak_error_is_the_difference_of_means_with_its_se(ds):
    err = weak_error(ds, "loss")
    assert list(err["model"].values) == ["first_order", "curvature"]
    means = ds["loss"].mean("run")
    expected = abs(means.sel(model="curvature") - means.sel(model="discrete"))
    np.testing.assert_allclose(err["error"].sel(model="curvature"), expected)
    n = ds.sizes["run"]
    se = np.sqrt(ds["loss"].sel(model="curvature").var("run", ddof=1) / n
                 + ds["loss"].sel(model="discrete").var("run", ddof=1) / n)
    np.testing.assert_allclose(err["se"].sel(model="curvature"), se)
    assert float(err["error"].isel(step=0).max()) == 0.0  # same start
    x2 = weak_error(ds, "x2")
    manual = weak_error(ds, lambda x: (x**2).sum(-1))
    np.testing.assert_allclose(x2["error"], manual["error"])


def test_coupled_weak_error_is_paired_and_far_more_precise():
    opt = so.discrete.DSGD(lr=0.05, n_workers=1, noise=so.noise.Gaussian(scale=1.0))
    kw = dict(n_steps=40, n_runs=3000, models=["first_order"], record_every=40, substeps=4, seed=1,
              dtype=torch.float64)
    prob = so.problems.Quadratic(diag=[2.0])
    paired = weak_error(compare(opt, prob, [1.0], coupled=True, **kw), "loss")
    indep = weak_error(compare(opt, prob, [1.0], **kw), "loss")
    assert paired.attrs["paired"] == 1 and indep.attrs["paired"] == 0
    assert float(paired["se"].isel(step=-1, model=0)) < float(indep["se"].isel(step=-1, model=0)) / 5


def test_weak_error_leaves_out_diverged_runs_without_nan():
    opt = so.discrete.DSGD(lr=0.1, n_workers=1, noise=so.noise.StudentT(nu=3.0, scale=3.0), shortcuts=False)
    d = compare(opt, so.problems.Quadratic(diag=[1.0]), [0.0], n_steps=50, n_runs=400, models=["first_order"],
                blowup_threshold=2.5, dtype=torch.float64)
    div = divergence(d)
    assert 0 < float(div["fraction"].sel(model="discrete")) < 1
    err = weak_error(d, "loss")
    assert np.isfinite(err["error"]).all() and np.isfinite(err["se"]).all()
    assert int(err["n_used"].isel(step=-1, model=0)) < 400
    assert div["fraction_by_step"].sel(model="discrete").values[-1] == float(div["fraction"].sel(model="discrete"))
    assert np.all(np.diff(div["fraction_by_step"].sel(model="discrete").values) >= 0)


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
    b = a + np.array([0.5, 0.0, 0.0])  # a translate: exact assignment pairs each point with its copy
    w = wasserstein2(a, b)
    assert w.method == "exact" and w.value == pytest.approx(0.5, rel=1e-9)
    big_a = rng.standard_normal((20_000, 10))
    big_b = rng.standard_normal((20_000, 10))
    big_b[:, 0] += 1.0
    s = wasserstein2(big_a, big_b, method="sliced", n_projections=400)
    # Sliced W2 of a shift δ e_1 is δ sqrt(E θ_1²) = δ / sqrt(d).
    assert abs(s.value - 1.0 / math.sqrt(10)) < 0.03 and s.floor < s.value / 3


def test_hill_estimator_recovers_a_pareto_index():
    rng = np.random.default_rng(4)
    x = rng.pareto(1.5, 200_000) + 1.0  # P(X > t) = t^-1.5
    t = hill_tail_index(x, k=2000)
    assert abs(t.alpha - 1.5) < 4 * t.se


@pytest.mark.parametrize("call,name", [
    (lambda d: weak_error(d, "energy"), "observable"),
    (lambda d: weak_error(d, "loss", reference="exact"), "reference"),
    (lambda d: wasserstein2(np.zeros(10), np.zeros(10), method="emd"), "method"),
    (lambda d: wasserstein2(np.zeros((10, 2)), np.zeros((10, 3))), "b"),
    (lambda d: wasserstein2(np.zeros((10, 2)), np.zeros((10, 2)), method="sorted"), "sorted"),
    (lambda d: hill_tail_index(np.ones(5)), "samples"),
    (lambda d: compare(so.discrete.DSGD(lr=0.1, noise=so.noise.Gaussian()), so.problems.Quadratic(diag=[1.0]),
                       [0.0], 2, 2, models=["curvature", "curvature"]), "models"),
    (lambda d: compare(so.discrete.DSGD(lr=0.1, noise=so.noise.StudentT(nu=1.5)), so.problems.Quadratic(diag=[1.0]),
                       [0.0], 2, 2), "infinite variance"),
])
def test_bad_input(ds, call, name):
    with pytest.raises(ValueError, match=name):
        call(ds)


def test_richardson_weak_error_is_exact_per_run_and_its_se_is_not_inflated():
    from sdeopt.analysis.experiments import richardson_weak_error

    opt = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian(scale=1.0))
    kw = dict(n_steps=10, n_runs=4000, models=["first_order"], record_every=10, seed=5,
              record=("loss", "grad_norm"), dtype=torch.float64)
    prob = so.problems.Quadratic(diag=[1.0, 3.0])
    coarse = compare(opt, prob, [1.0, -1.0], substeps=1, **kw)
    fine = compare(opt, prob, [1.0, -1.0], substeps=2, **kw)
    err = richardson_weak_error(coarse, fine, "grad_norm").isel(step=-1).sel(model="first_order")
    f = fine["grad_norm"].isel(step=-1)
    c = coarse["grad_norm"].isel(step=-1)
    h = 2 * f.sel(model="first_order") - c.sel(model="first_order")
    d = f.sel(model="discrete")
    assert float(err["signed"]) == pytest.approx(float(h.mean() - d.mean()), rel=1e-12)
    se = math.sqrt(float(h.var(ddof=1) + d.var(ddof=1)) / 4000)
    assert float(err["se"]) == pytest.approx(se, rel=1e-12)
    # The old formula sqrt(4 se_fine² + se_coarse²) counted the discrete variance five times.
    old = math.sqrt(4 * float(weak_error(fine, "grad_norm")["se"].isel(step=-1)[0]) ** 2
                    + float(weak_error(coarse, "grad_norm")["se"].isel(step=-1)[0]) ** 2)
    assert float(err["se"]) < 0.8 * old
    with pytest.raises(ValueError, match="coarse"):
        richardson_weak_error(compare(opt, prob, [1.0, -1.0], substeps=1, **{**kw, "seed": 6}), fine, "loss")
