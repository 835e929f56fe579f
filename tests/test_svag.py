"""SVAG(ℓ) and the validity ladder (docs/validity.md): SVAG(1) is the method bitwise; one step of
SVAG(ℓ) has the method's mean and ℓ times its covariance; the ladder's stationary loss on a
quadratic follows the closed forms from the chain's (ℓ = 1) to the first-order SDE's (ℓ → ∞)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes

import sdeopt as so
from sdeopt.analysis.closed_forms import stationary_loss
from sdeopt.analysis.metrics import alive
from sdeopt.analysis.validity import plot_validity_ladder, validity_ladder
from sdeopt.discrete import DCSGD, DSGD, SVAG, DSignSGD, simulate

DIAG = [1.0, 2.0, 3.0]
X0 = [1.0, -0.5, 0.3]

#: Direction methods of the SVAG tests (lr = 1: one step's move is minus the direction).
METHODS = {
    "dsgd-gauss": lambda lr=1.0: DSGD(
        lr=lr, n_workers=3, noise=so.noise.Gaussian(scale=[0.5, 1.0, 1.5])
    ),
    "dcsgd-randk": lambda lr=1.0: DCSGD(
        lr=lr,
        n_workers=4,
        noise=so.noise.Gaussian(scale=0.7),
        compressor=so.compressors.RandK(k=1),
    ),
    "dsign-t": lambda lr=1.0: DSignSGD(lr=lr, n_workers=5, noise=so.noise.StudentT(nu=1.5)),
}


def problem():
    return so.problems.Quadratic(diag=DIAG)


# --- SVAG(1) is the method ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(METHODS))
def test_svag_of_one_is_the_method_bitwise(name):
    opt = METHODS[name](lr=0.05)
    kw = dict(n_steps=40, n_runs=64, seed=3, record_x=True, record=("loss", "grad_norm", "dist"))
    own = simulate(opt, problem(), X0, **kw)
    svag = simulate(SVAG(opt, ell=1), problem(), X0, **kw)
    assert SVAG(opt, ell=1).lr == opt.lr
    assert torch.equal(own.x, svag.x)
    for obs in own.observables:
        assert torch.equal(own.observables[obs], svag.observables[obs])
    assert torch.equal(own.blowup_step, svag.blowup_step)


def test_the_ladder_at_ell_one_is_the_methods_own_runs():
    opt = METHODS["dcsgd-randk"](lr=0.1)
    ds = validity_ladder(opt, problem(), X0, horizon=2.0, ells=(1, 2), n_runs=50, keep_runs=True)
    own = simulate(opt, problem(), X0, n_steps=20, n_runs=50, record_every=20, record="loss")
    np.testing.assert_array_equal(
        ds["values"].sel(ell=1, observable="loss").values, own.observables["loss"].numpy()
    )


# --- one step's moments ---------------------------------------------------------------------


def _directions(method, ell: int, n: int, seed: int) -> np.ndarray:
    """n one-step directions at X0: (x0 - x1) / step, step = lr / ℓ (= 1 / ℓ here). (n, d)"""
    target = method if ell == 1 else SVAG(method, ell=ell)
    traj = simulate(target, problem(), X0, n_steps=1, n_runs=n, seed=seed, record_x=True)
    x = traj.x.numpy()  # (2, n, d)
    return (x[0] - x[1]) * ell / method.lr


N_MOMENT = 100_000
#: 3 methods x 3 ℓ x (3 means + 6 covariance entries) = 81 two-sided checks: z = 4.5 keeps the
#: chance of any false failure under 81 * 7e-6 = 6e-4.
Z_MOMENT = 4.5


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_svag_step_has_the_methods_mean_and_ell_times_its_covariance(name):
    method = METHODS[name]()
    u = _directions(method, 1, N_MOMENT, seed=1)  # the method's own directions
    du = u - u.mean(axis=0)
    for i, ell in enumerate((2, 4, 8)):
        v = _directions(method, ell, N_MOMENT, seed=10 + i)  # independent of u
        dv = v - v.mean(axis=0)
        se = np.sqrt(u.var(axis=0, ddof=1) / N_MOMENT + v.var(axis=0, ddof=1) / N_MOMENT)
        z = (v.mean(axis=0) - u.mean(axis=0)) / se
        assert np.all(np.abs(z) < Z_MOMENT), (ell, "mean", z)
        for a, b in [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]:
            pu, pv = du[:, a] * du[:, b], dv[:, a] * dv[:, b]  # products whose mean is a covariance
            gap = pv.mean() - ell * pu.mean()
            se = math.sqrt(pv.var(ddof=1) / N_MOMENT + ell**2 * pu.var(ddof=1) / N_MOMENT)
            assert abs(gap) < Z_MOMENT * se, (ell, (a, b), gap / se)
        # ... and resolves a wrong factor: the diagonal is far from ℓ/2 or 2ℓ times the method's.
        ratio = dv.var(axis=0).sum() / du.var(axis=0).sum()
        assert 0.9 * ell < ratio < 1.1 * ell, (ell, ratio)


def test_svag_of_a_noiseless_method_is_gradient_descent_with_step_lr_over_ell():
    """Zero noise: û = ∇f, so SVAG(ℓ) is GD with step η/ℓ held for ℓ steps per step of the
    schedule: x_K = Π_k (1 - λ η η_k / ℓ)^ℓ x_0 coordinate-wise."""
    schedule = so.schedules.StepDecay(every=3, factor=0.5)
    lr, ell, n_steps = 0.2, 4, 7
    opt = DSGD(lr=lr, noise=so.noise.Gaussian(0.0), schedule=schedule)
    traj = simulate(
        SVAG(opt, ell=ell), problem(), X0, n_steps=ell * n_steps, n_runs=2, record_x=True
    )
    factors = [0.5 ** (k // 3) for k in range(n_steps)]
    expected = [
        x * math.prod((1.0 - lam * lr * f / ell) ** ell for f in factors)
        for lam, x in zip(DIAG, X0, strict=True)
    ]
    torch.testing.assert_close(traj.x[-1, 0], torch.tensor(expected), rtol=1e-12, atol=1e-14)
    method_sum = lr * sum(factors)  # the SDE time the method's schedule spends in n_steps
    assert traj.lr_sum[-1] == pytest.approx(method_sum, rel=1e-12)


# --- the ladder converges to the first-order SDE --------------------------------------------


def test_the_ladder_moves_from_the_chain_to_the_first_order_sde_closed_form():
    """DSGD on a quadratic, Gaussian noise, lr = 0.1: the chain's stationary loss is 15% above the
    first-order SDE's. SVAG(ℓ) on a quadratic has the second-moment recursion of Euler-Maruyama
    with step lr/ℓ on the first-order SDE (docs/validity.md), whose stationary value is a closed
    form (``stationary_loss(..., substeps=ℓ)``; ℓ = 1 is the chain's). The horizon is 8
    relaxation times of the slowest coordinate (transient below 1e-3 se)."""
    opt = DSGD(lr=0.1, noise=so.noise.Gaussian(1.0))
    prob = so.problems.Quadratic(diag=[1.0, 4.0])
    ds = validity_ladder(opt, prob, [0.0, 0.0], horizon=4.0, n_runs=20_000, seed=7)
    end = ds.sel(observable="loss").isel(time=-1)
    chain, sde = stationary_loss(opt, prob), stationary_loss(opt, prob, "first_order")
    assert chain / sde > 1.15
    z = 4.0  # 5 rungs + 3 checks below
    for ell in ds["ell"].values:
        closed = stationary_loss(opt, prob, "first_order", substeps=int(ell))
        row = end.sel(ell=ell)
        assert abs(float(row["mean"]) - closed) < z * float(row["se"]), (ell, closed)
    top = end.sel(ell=16)
    bias = stationary_loss(opt, prob, "first_order", substeps=16) - sde  # O(lr / 16)
    assert 0 < bias < 0.01 * sde
    assert abs(float(top["mean"]) - sde) < z * float(top["se"]) + bias
    # the ladder sees that the SDE is not the chain's model at this lr ...
    assert float(end.sel(ell=1)["change"]) > 10 * float(end.sel(ell=1)["change_se"])
    # ... and its Richardson extrapolation lands on the SDE's value.
    assert abs(float(end["extrapolated"]) - sde) < z * float(end["extrapolated_se"])
    assert (ds["n_alive"] == 20_000).all() and (ds["n_diverged"] == 0).all()


def test_runs_that_blow_up_are_left_out_from_their_blowup_step():
    """Student-t 1.5 noise with a low threshold: some runs freeze; the ladder's ℓ = 1 mean at each
    time is the method's, over the runs ``alive`` then, and never NaN."""
    opt = DSGD(lr=0.1, noise=so.noise.StudentT(nu=1.5))
    kw = dict(n_runs=400, seed=2, blowup_threshold=4.0)
    ds = validity_ladder(
        opt,
        problem(),
        X0,
        horizon=3.0,
        ells=(1, 4),
        record_every=10,
        quantiles=(0.5, 0.9),
        **kw,
    )
    own = simulate(opt, problem(), X0, n_steps=30, record_every=10, record="loss", **kw)
    own_ds = own.to_dataset()
    ok = alive(own_ds).isel(model=0)
    expected = own_ds["loss"].isel(model=0).where(ok).mean("run").values
    np.testing.assert_allclose(ds["mean"].sel(ell=1, observable="loss").values, expected)
    np.testing.assert_array_equal(ds["n_alive"].sel(ell=1).values, ok.sum("run").values)
    assert 0 < int(ds["n_diverged"].sel(ell=1)) < 400
    assert int(ds["n_diverged"].sel(ell=1)) == int(own.diverged.sum())
    assert np.isfinite(ds["mean"].values).all() and np.isfinite(ds["quantile_value"].values).all()


# --- plot -------------------------------------------------------------------------------------


def test_plot_validity_ladder_draws_one_line_per_time_on_a_log_axis():
    opt = DSGD(lr=0.1, noise=so.noise.Gaussian(1.0))
    ds = validity_ladder(opt, problem(), X0, horizon=1.0, record_every=5, n_runs=200)
    ax = plot_validity_ladder(ds)
    assert isinstance(ax, Axes) and ax.get_xscale() == "log"
    assert len(ax.containers) == 1  # one errorbar line: the final time
    ax = plot_validity_ladder(ds, times=[0.5, 1.0])
    assert len(ax.containers) == 2
    with pytest.raises(ValueError, match="Invalid times"):
        plot_validity_ladder(ds, times=0.3)
    with pytest.raises(ValueError, match="Invalid observable"):
        plot_validity_ladder(ds, observable="grad_norm")
    plt.close("all")


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda opt: SVAG(so.discrete.ItoChain(lr=0.1), ell=2), "Invalid method"),
        (lambda opt: SVAG(SVAG(opt, ell=2), ell=2), "Invalid method"),
        (lambda opt: SVAG("DSGD", ell=2), "Invalid method"),
        (lambda opt: SVAG(opt, ell=0), "Invalid ell: 0"),
        (lambda opt: SVAG(opt, ell=2.5), "Invalid ell: 2.5"),
        (lambda opt: SVAG(opt, ell=2.0), "Invalid ell: 2.0"),
        (lambda opt: SVAG(opt, ell=True), "Invalid ell: True"),
        (lambda opt: SVAG(opt, ell="2"), "Invalid ell: '2'"),
    ],
)
def test_svag_refuses_bad_input_naming_the_parameter(build, match):
    with pytest.raises(ValueError, match=match):
        build(METHODS["dsgd-gauss"]())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(method=so.discrete.ItoChain(lr=0.1)), "Invalid method"),
        (dict(horizon=0.25), r"Invalid horizon: 0\.25"),
        (dict(horizon=0.0), "Invalid horizon"),
        (dict(horizon=-1.0), "Invalid horizon"),
        (dict(horizon=0.05), "Invalid horizon"),
        (dict(ells=(1,)), "Invalid ells"),
        (dict(ells=(1, 2, 2)), "Invalid ells"),
        (dict(ells=(0, 2)), r"Invalid ells\[0\]"),
        (dict(ells=(1, 2.5)), r"Invalid ells\[1\]"),
        (dict(ells=4), "Invalid ells"),
        (dict(observables=("x",)), "Invalid observables"),
        (dict(observables=()), "Invalid observables"),
        (dict(observables=("loss", "loss")), "Invalid observables"),
        (dict(quantiles=(1.5,)), "Invalid quantiles"),
        (dict(quantiles=(0.5, 0.5)), "Invalid quantiles"),
        (dict(record_every=0), "Invalid record_every"),
        (dict(n_runs=0), "Invalid n_runs"),
        (dict(level=1.0), "Invalid level"),
        (dict(keep_runs="yes"), "Invalid keep_runs"),
        (dict(seed=-1), "Invalid seed"),
        (dict(problem="quadratic"), "Invalid problem"),
        (dict(x0=[1.0, 2.0]), "Invalid x0"),
    ],
)
def test_validity_ladder_refuses_bad_input_naming_the_parameter(kwargs, match):
    args = dict(
        method=DSGD(lr=0.1, noise=so.noise.Gaussian(1.0)),
        problem=problem(),
        x0=X0,
        horizon=1.0,
        n_runs=8,
        ells=(1, 2),
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        validity_ladder(**args)
