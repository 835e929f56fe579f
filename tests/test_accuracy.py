"""Choosing the scheme and the substeps (sdeopt.dynamics.accuracy, compare's defaults).

References: Euler–Maruyama's second moment on the Ornstein–Uhlenbeck process by its exact
recursion (m' = (1 - λh)² m + g² h) against the OU law's closed form; Brownian increments
summed exactly; Richardson weights against the closed form of an exact and a weak order 2 level.
"""

import itertools
import json
import math

import numpy as np
import pytest
import torch

import sdeopt as so
from sdeopt.dynamics import SDE, best_scheme, choose_substeps
from sdeopt.experiments.runner import richardson_weak_error, solver_levels

LAM, LR, X0 = 2.0, 0.1, 1.5
N_STEPS, RECORD = 20, 2


def _ou():
    """DSGD's first-order SDE on f = λx²/2 with N(0, 1) noise, one worker:
    dX = -λX dt + √lr dW."""
    opt = so.discrete.DSGD(lr=LR, n_workers=1, noise=so.noise.Gaussian(1.0))
    return opt, so.problems.Quadratic(diag=[LAM])


def _euler_relative_bias(substeps: int) -> float:
    """max over the recorded steps of |E_h f - E f| / E f, Euler with h = lr/substeps, exactly."""
    h, g2 = LR / substeps, LR
    m, worst = X0**2, 0.0
    for k in range(1, N_STEPS + 1):
        for _ in range(substeps):
            m = (1 - LAM * h) ** 2 * m + g2 * h
        if k % RECORD == 0:
            t = k * LR
            exact = math.exp(-2 * LAM * t) * X0**2 + g2 * (1 - math.exp(-2 * LAM * t)) / (2 * LAM)
            worst = max(worst, abs(m - exact) / exact)
    return worst


def test_best_scheme_picks_the_most_accurate_that_applies():
    opt, quad = _ou()
    sde_of = so.dynamics.sde_of
    assert best_scheme(sde_of(opt, quad)) == "exact"
    assert best_scheme(sde_of(opt, quad, "curvature")) == "exact"
    assert best_scheme(sde_of(opt, so.problems.QuadraticQuartic(dim=2))) == "weak2"
    sign = so.discrete.DSignSGD(lr=0.05, n_workers=4, noise=so.noise.Gaussian(1.0))
    diag = so.problems.Quadratic(diag=[1.0, 3.0])
    assert best_scheme(sde_of(sign, diag)) == "weak2"  # diagonal, commutative
    randk = so.discrete.DCSGD(
        lr=0.05, n_workers=2, noise=so.noise.Gaussian(1.0), compressor=so.compressors.RandK(k=1)
    )
    general = sde_of(randk, diag, "curvature")
    assert best_scheme(general) == "euler"  # non-commutative: neither weak2 nor milstein
    assert best_scheme(general, coupled=True) == "euler"
    stable = so.discrete.DSGD(lr=0.05, n_workers=2, noise=so.noise.SymmetricStable(alpha=1.5))
    assert best_scheme(sde_of(stable, diag, "levy")) == "exact"
    assert best_scheme(sde_of(stable, so.problems.DoubleWell(width=1.0), "levy")) == "euler"
    estimated = sde_of(opt, quad, moments="estimated", samples=8)
    assert best_scheme(estimated) == "euler"
    with pytest.raises(ValueError, match="Invalid sde"):
        best_scheme("not an sde")


def test_an_exact_scheme_needs_one_substep_and_no_pilot():
    opt, quad = _ou()
    choice = choose_substeps(so.dynamics.sde_of(opt, quad), [X0], N_STEPS)
    assert (choice.scheme, choice.substeps, choice.bias, choice.levels) == ("exact", 1, 0.0, ())


def test_euler_substeps_meet_the_tolerance_against_the_closed_form():
    """The chosen s has a true relative bias within the tolerance (up to the pilot's 2 se),
    half of it does not, and every level's estimate matches the exact Euler bias."""
    opt, quad = _ou()
    sde = so.dynamics.sde_of(opt, quad)
    tol = 0.03
    choice = choose_substeps(
        sde, [X0], N_STEPS, tolerance=tol, scheme="euler", pilot_runs=20_000, record_every=RECORD
    )
    assert choice.scheme == "euler" and choice.resolved
    s = choice.substeps
    assert _euler_relative_bias(s) <= tol + 2 * choice.bias_se
    assert s == 1 or _euler_relative_bias(s // 2) > tol
    for substeps, estimate, se in choice.levels:
        # Richardson's estimate of the h bias is exact to leading order only: O(h²) besides.
        exact = _euler_relative_bias(substeps)
        assert abs(estimate - exact) <= 4 * se + 0.25 * exact, (substeps, estimate, exact, se)


def test_weak2_needs_fewer_substeps_than_euler():
    opt = so.discrete.DSGD(lr=0.2, n_workers=1, noise=so.noise.Gaussian(1.0))
    sde = so.dynamics.sde_of(opt, so.problems.QuadraticQuartic(dim=1))
    pick = {
        scheme: choose_substeps(sde, [1.0], 25, tolerance=0.01, scheme=scheme, pilot_runs=4000)
        for scheme in ("euler", "weak2")
    }
    assert pick["weak2"].substeps < pick["euler"].substeps
    assert pick["euler"].levels[0][1] > 3 * pick["weak2"].levels[0][1]


def test_path_seed_shares_the_brownian_path_across_substeps():
    """dX = dW: X at every optimizer step is x0 + W(t_k), whatever the substeps."""
    sde = SDE.diagonal(
        drift=torch.zeros_like,
        diffusion=torch.ones_like,
        dim=2,
        lr=0.1,
    )
    ends = [
        so.dynamics.solve(sde, [0.0, 0.0], 5, 64, seed=s, substeps=s, path_seed=9, record_x=True).x
        for s in (1, 2, 8)
    ]
    for x in ends[1:]:
        torch.testing.assert_close(x, ends[0], rtol=0, atol=1e-12)
    var = so.dynamics.solve(sde, [0.0, 0.0], 5, 4000, path_seed=3, record_x=True).x[-1].var(0)
    assert torch.allclose(var, torch.full((2,), 0.5, dtype=var.dtype), rtol=0.1)  # Var W(0.5)


def test_path_seed_refusals():
    opt, quad = _ou()
    sde = so.dynamics.sde_of(opt, quad)
    with pytest.raises(ValueError, match="Invalid path_seed"):
        so.dynamics.solve(sde, [1.0], 2, 4, scheme="leimkuhler_matthews", path_seed=1)
    with pytest.raises(ValueError, match="Invalid path_seed"):
        so.dynamics.solve(sde, [1.0], 2, 4, backend="torchsde", path_seed=1)
    with pytest.raises(ValueError, match="Invalid path_seed"):
        so.dynamics.solve(sde, [1.0], 2, 4, path_seed=-1)


def test_compare_records_its_choices_and_keeps_the_discrete_runs():
    opt = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian(1.0))
    prob = so.problems.QuadraticQuartic(dim=2)
    auto = so.analysis.compare(
        opt, prob, [1.0, 1.0], 20, 500, models=["first_order", "second_order"], record_every=5
    )
    solver = json.loads(auto.attrs["solver"])
    assert {m: solver[m]["scheme"] for m in solver} == {
        "first_order": "weak2",
        "second_order": "weak2",
    }
    assert all(solver[m]["tolerance"] == 0.01 for m in solver)
    fixed = so.analysis.compare(
        opt,
        prob,
        [1.0, 1.0],
        20,
        500,
        models=["first_order", "second_order"],
        record_every=5,
        substeps={"first_order": 3},
        sde_method="euler",
    )
    solver = json.loads(fixed.attrs["solver"])
    assert solver["first_order"] == {"scheme": "euler", "substeps": 3}
    assert solver["second_order"]["scheme"] == "euler" and "levels" in solver["second_order"]
    np.testing.assert_array_equal(
        auto["loss"].sel(model="discrete").values, fixed["loss"].sel(model="discrete").values
    )
    with pytest.raises(ValueError, match=r"Invalid substeps.*'curvature'"):
        so.analysis.compare(opt, prob, [1.0, 1.0], 2, 4, substeps={"curvature": 2})
    with pytest.raises(ValueError, match="Invalid tolerance"):
        so.analysis.compare(opt, prob, [1.0, 1.0], 2, 4, tolerance=0.0)


def test_richardson_weights_follow_the_weak_order():
    """A weak2 model is extrapolated as (4 E_{h/2} - E_h)/3, an exact one not at all."""
    opt = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian(1.0))
    quad = so.problems.Quadratic(diag=[1.0, 2.0])
    kw = dict(models=["first_order", "second_order"], record_every=10, seed=4)
    schemes = {"first_order": "weak2", "second_order": "exact"}
    coarse = so.analysis.compare(
        opt, quad, [1.0, 1.0], 10, 300, substeps=1, sde_method=schemes, **kw
    )
    fine = so.analysis.compare(opt, quad, [1.0, 1.0], 10, 300, substeps=2, sde_method=schemes, **kw)
    weights = solver_levels(coarse)["weight"]
    assert weights == {"first_order": 4 / 3, "second_order": 1.0}
    err = richardson_weak_error(coarse, fine, "loss", weights).isel(step=-1)
    disc = coarse["loss"].sel(model="discrete").isel(step=-1).mean().item()
    for model, w in weights.items():
        f_h = coarse["loss"].sel(model=model).isel(step=-1).values
        f_h2 = fine["loss"].sel(model=model).isel(step=-1).values
        expected = (w * f_h2 + (1 - w) * f_h).mean() - disc
        assert float(err["signed"].sel(model=model)) == pytest.approx(expected, rel=1e-9)


def test_dyadic_path_seed_refines_the_same_path():
    """Euler on dX = -X dt + dW has strong order 1: on one refined path the gap between s and
    2s substeps halves with each doubling (on independent bridges it would stay O(√lr))."""
    sde = SDE.diagonal(drift=lambda x: -x, diffusion=torch.ones_like, dim=1, lr=0.5)

    def end(s):
        path = so.dynamics.solve(sde, [1.0], 2, 2000, substeps=s, path_seed=5, record_x=True)
        return path.x[-1, :, 0]

    ends = {s: end(s) for s in (2, 4, 8, 16)}
    gaps = [float((ends[s] - ends[2 * s]).abs().mean()) for s in (2, 4, 8)]
    for coarse, fine in itertools.pairwise(gaps):
        assert 0.4 < fine / coarse < 0.6, gaps


def test_compare_pilots_take_per_run_starts_and_refuse_a_bad_scheme_before_work():
    opt = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian(1.0))
    prob = so.problems.QuadraticQuartic(dim=2)
    x0 = torch.linspace(-1.0, 1.0, 2 * 300, dtype=torch.float64).reshape(300, 2)
    ds = so.analysis.compare(opt, prob, x0, 10, 300, record_every=5)
    assert json.loads(ds.attrs["solver"])["first_order"]["pilot_runs"] == 300
    general = so.discrete.DCSGD(
        lr=0.1, n_workers=2, noise=so.noise.Gaussian(1.0), compressor=so.compressors.RandK(k=1)
    )
    with pytest.raises(ValueError, match="Invalid scheme: 'weak2'"):
        so.analysis.compare(general, prob, [1.0, 1.0], 10**9, 10, sde_method="weak2")
    with pytest.raises(ValueError, match="Invalid scheme: 'bogus'"):
        so.analysis.compare(opt, prob, [1.0, 1.0], 10**9, 10, sde_method="bogus")
