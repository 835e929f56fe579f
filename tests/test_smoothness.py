"""(L0, L1)-smoothness profiles: power iteration against dense eigenvalues of the autograd Hessian,
the envelope fit against scipy's LP solver and against envelopes known in closed form, the
constants stated in the problems' docstrings, profiles along recorded trajectories, bad input."""

from __future__ import annotations

import math
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from scipy.optimize import linprog

import sdeopt as so
from sdeopt.analysis import fit_envelope, plot_smoothness, smoothness_profile


def dense_norms(problem, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(‖∇f‖₂, ‖∇²f‖₂) per row of x (n, d), from autograd of ``problem.loss`` alone: the
    Hessian by ``torch.autograd.functional.hessian``, its norm as max |eigvalsh|."""
    g, h = [], []
    for xi in x:
        fn = lambda z: problem.loss(z.unsqueeze(0))[0]
        xi = xi.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(xi), xi)
        hess = torch.autograd.functional.hessian(fn, xi.detach())  # (d, d)
        g.append(float(torch.linalg.vector_norm(grad)))
        h.append(float(torch.linalg.eigvalsh(hess).abs().max()))
    return np.array(g), np.array(h)


def _spd(d: int, generator) -> torch.Tensor:
    """A dense SPD matrix with eigenvalues 1, 2, ..., d in a random basis (|λ2/λ1| <= 0.9 at
    d <= 10, so power iteration converges well within the default n_iter)."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator))
    return (q * torch.arange(1.0, d + 1)) @ q.T


PROBLEMS = {
    "Quadratic-dense": (lambda gen: so.problems.Quadratic(matrix=_spd(6, gen)), 2.0),
    "CoshSum": (lambda gen: so.problems.CoshSum(4), 1.5),
    "Quartic": (lambda gen: so.problems.Quartic(4), 1.5),
    "LogisticRegression": (lambda gen: so.problems.LogisticRegression(), 0.5),
}


# --- power iteration ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_power_iteration_matches_eigvalsh_of_the_autograd_hessian(name, generator):
    make, spread = PROBLEMS[name]
    problem = make(generator)
    x = spread * torch.randn(12, problem.dim, generator=generator)  # (n, d)
    g_ref, h_ref = dense_norms(problem, x)
    with warnings.catch_warnings():
        # a point whose two largest |λ| nearly coincide may not converge: checked below
        warnings.simplefilter("ignore", RuntimeWarning)
        prof = smoothness_profile(problem, x, method="power", tol=1e-8, n_iter=2000)
    h, ok = prof["hessian_norm"].values, prof["converged"].values
    # converged: σ² is within tol·σ² of an eigenvalue of H², so |σ - |λ|| <= tol·σ, and a
    # random start vector reaches the largest |λ|; not converged: an underestimate
    assert ok.mean() >= 0.75
    np.testing.assert_allclose(h[ok], h_ref[ok], rtol=1e-8, atol=0)
    assert (h[~ok] <= h_ref[~ok] * (1 + 1e-12)).all()
    np.testing.assert_allclose(prof["grad_norm"].values, g_ref, rtol=1e-12, atol=1e-300)
    assert prof.attrs["method"] == "power"
    if problem.separable:  # the default reads the diagonal Hessian exactly
        exact = smoothness_profile(problem, x)
        assert exact.attrs["method"] == "diagonal"
        np.testing.assert_allclose(exact["hessian_norm"].values, h_ref, rtol=1e-13)


def test_power_iteration_takes_the_largest_eigenvalue_in_magnitude_whatever_its_sign():
    # H = [[1, 0.5], [0.5, -3]] (dominant eigenvalue negative), and H = diag(1, -1) (±λ: v_k
    # oscillates between two vectors, ‖H v_k‖ does not)
    dominant = so.problems.FunctionProblem(
        lambda z: 0.5 * z[0] ** 2 - 1.5 * z[1] ** 2 + 0.5 * z[0] * z[1], dim=2
    )
    saddle = so.problems.FunctionProblem(lambda z: 0.5 * (z[0] ** 2 - z[1] ** 2), dim=2)
    x = torch.tensor([[0.3, -0.2], [1.0, 2.0], [0.0, 0.0]])
    lam = np.abs(np.linalg.eigvalsh([[1.0, 0.5], [0.5, -3.0]])).max()
    prof = smoothness_profile(dominant, x, tol=1e-10)
    np.testing.assert_allclose(prof["hessian_norm"].values, lam, rtol=1e-10)
    prof = smoothness_profile(saddle, x)
    np.testing.assert_allclose(prof["hessian_norm"].values, 1.0, rtol=1e-14)
    assert prof["converged"].values.all()


def test_unconverged_points_are_flagged_underestimates(generator):
    problem = so.problems.Quadratic(matrix=_spd(8, generator))
    x = torch.randn(5, 8, generator=generator)
    with pytest.warns(RuntimeWarning, match="did not converge at 5 of 5"):
        prof = smoothness_profile(problem, x, n_iter=2)
    assert not prof["converged"].values.any() and prof.attrs["n_not_converged"] == 5
    # a Rayleigh quotient of H²: never above the norm
    assert (prof["hessian_norm"].values <= 8.0 * (1 + 1e-12)).all()


def test_the_profile_does_not_depend_on_the_chunk_size(generator):
    problem = so.problems.LogisticRegression()
    x = 0.3 * torch.randn(7, problem.dim, generator=generator)
    a = smoothness_profile(problem, x, seed=4)
    b = smoothness_profile(problem, x, seed=4, chunk_size=3)
    np.testing.assert_allclose(a["hessian_norm"].values, b["hessian_norm"].values, rtol=1e-12)


# --- the envelope fit --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_fit_envelope_solves_the_linear_program(seed):
    rng = np.random.default_rng(seed)
    g = rng.exponential(size=200)
    h = rng.uniform(0.2, 1.0, size=200) * (1.0 + rng.uniform(0, 2) * g) ** rng.uniform(0.5, 1.5)
    env = fit_envelope(g, h)
    # scipy's HiGHS on the same LP: min Σ_k (L0 + L1 g_k) s.t. L0 + L1 g_k >= h_k, L0, L1 >= 0
    ref = linprog(
        [g.size, g.sum()], A_ub=-np.stack([np.ones_like(g), g], axis=1), b_ub=-h, method="highs"
    )
    assert ref.status == 0
    assert (env.L0 + env.L1 * g >= h).all() and env.L0 >= 0 and env.L1 >= 0
    assert env.L0 * g.size + env.L1 * g.sum() == pytest.approx(ref.fun, rel=1e-7)
    assert env.L == h.max()
    # the trade-off curve: each fixed slope gets the smallest intercept and vice versa
    for l1 in (0.0, 0.5 * env.L1, 2 * env.L1):
        other = fit_envelope(g, h, L1=l1)
        assert (other(g) >= h).all() and (other(g) - h).min() == pytest.approx(0, abs=1e-12)
        back = fit_envelope(g, h, L0=other.L0)
        assert back.L1 <= l1 * (1 + 1e-12) and (back(g) >= h * (1 - 1e-12)).all()
    assert fit_envelope(g, h, L1=0.0).L0 == env.L


def test_fit_envelope_edge_cases():
    # one gradient norm only: the slope is undetermined, the flat line L is the fit
    env = fit_envelope([2.0, 2.0], [1.0, 3.0])
    assert (env.L0, env.L1) == (3.0, 0.0)
    # the edge above the mean would cross below 0: the line through 0 and the steepest pair
    # ((1, 1)-(3, 5) above the mean g = 2 has intercept -1; LP optimum (0, 5/3), value 10/3)
    env = fit_envelope([1.0, 2.0, 3.0], [1.0, 0.0, 5.0])
    assert env.L0 == 0.0 and env.L1 == pytest.approx(5 / 3, rel=1e-15)
    with pytest.raises(ValueError, match="Invalid L0"):
        fit_envelope([0.0, 1.0], [2.0, 2.0], L0=1.0)
    with pytest.raises(ValueError, match="Invalid L0/L1"):
        fit_envelope([0.0, 1.0], [2.0, 2.0], L0=1.0, L1=1.0)
    with pytest.raises(ValueError, match="Invalid hessian_norm"):
        fit_envelope([0.0, 1.0], [2.0])
    with pytest.raises(ValueError, match="Invalid grad_norm"):
        fit_envelope([0.0, -1.0], [2.0, 1.0])


# --- known envelopes ---------------------------------------------------------------------------


def test_profile_recovers_the_envelope_of_cosh():
    # On samples t in [-X, X] (0 included) the pairs (|sinh t|, cosh t) lie on the convex curve
    # h = sqrt(1 + g²), so the envelope lowest at the mean g is the chord from (0, 1) to
    # (sinh X, cosh X): L0 = 1, L1 = (cosh X - 1)/sinh X = tanh(X/2), and the tight global pair
    # (1, 1) is within 1 - tanh(X/2) = 2/(e^X + 1) < 2 e^-X of it.
    X = 20.0
    t = torch.linspace(-X, X, 2001).unsqueeze(-1)  # (n, 1), t = 0 at the middle
    prof = smoothness_profile(so.problems.CoshSum(1), t)
    assert float(prof["L0"]) == pytest.approx(1.0, rel=1e-12)
    assert float(prof["L1"]) == pytest.approx(math.tanh(X / 2), rel=1e-12)
    assert abs(float(prof["L1"]) - 1.0) < 2 * math.exp(-X) + 1e-15  # + rounding of 1 - L1
    assert float(prof["L"]) == pytest.approx(math.cosh(X), rel=1e-12)
    # the same along a coordinate axis in d = 3 by power iteration: H = diag(cosh t, 1, 1), so
    # near t = 0 the two largest eigenvalues nearly coincide and power iteration crawls; the
    # points it flags lie there, and their estimates are still within [1, cosh t]
    axis = torch.cat([t, torch.zeros(t.shape[0], 2)], dim=1)  # (n, 3)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        prof3 = smoothness_profile(so.problems.CoshSum(3), axis, method="power")
    slow = ~prof3["converged"].values
    t_slow, h_slow = t[slow, 0].numpy(), prof3["hessian_norm"].values[slow]
    # the residual shrinks like r^k, r = 1/cosh t, which is above 0.97 for |t| < 0.247
    assert 0 < slow.sum() < 50 and (np.abs(t_slow) < 0.25).all()
    assert (h_slow >= 1 - 1e-12).all() and (h_slow <= np.cosh(t_slow) * (1 + 1e-12)).all()
    assert float(prof3["L0"]) == pytest.approx(1.0, rel=1e-9)
    assert float(prof3["L1"]) == pytest.approx(math.tanh(X / 2), rel=1e-9)


def test_profile_recovers_the_envelope_of_exp():
    # f'' = f' = e^t: every pair lies on h = g, and the fit is that line exactly
    prof = smoothness_profile(so.problems.ExpSum(1), torch.linspace(-5, 5, 101).unsqueeze(-1))
    assert abs(float(prof["L0"])) <= 1e-12 * float(prof["L"])
    assert float(prof["L1"]) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(prof["hessian_norm"], prof["grad_norm"], rtol=1e-15)


def test_quadratic_quartic_slope_at_its_smallest_intercept():
    # 1 + 3t² <= 1 + L1 |t + t³| for all t iff L1 >= max_t 3t/(1 + t²) = 3/2 (at t = 1)
    t = torch.linspace(-4, 4, 8001).unsqueeze(-1)  # t = ±1 on the grid
    prof = smoothness_profile(so.problems.QuadraticQuartic(1), t)
    env = fit_envelope(prof["grad_norm"].values, prof["hessian_norm"].values, L0=1.0)
    assert env.L1 == pytest.approx(1.5, rel=1e-12)


# --- the constants stated in the problems' docstrings ------------------------------------------


def _holds(problem, L0, L1, x):
    g, h = dense_norms(problem, x)
    return h <= L0 + L1 * g + 1e-12 * (1 + h)


@pytest.mark.parametrize("l1", [1.0, 2.0, 3.0])
def test_quartic_is_4_over_l1_squared_l1_smooth_and_no_less(l1, generator):
    problem = so.problems.Quartic(3)
    x = 2.0 * torch.randn(200, 3, generator=generator)
    assert _holds(problem, 4 / l1**2, l1, x).all()
    # tight at x = (2/L1) e_1: h = 12/L1², g = 8/L1³, and 4/L1² + L1 g = 12/L1²
    touch = torch.tensor([[2 / l1, 0.0, 0.0]])
    g, h = dense_norms(problem, touch)
    assert h[0] == pytest.approx(4 / l1**2 + l1 * g[0], rel=1e-12)
    assert not _holds(problem, 0.99 * 4 / l1**2, l1, touch).all()


def test_quadratic_quartic_is_1_3_halves_smooth_and_no_less(generator):
    problem = so.problems.QuadraticQuartic(3)
    x = 2.0 * torch.randn(200, 3, generator=generator)
    assert _holds(problem, 1.0, 1.5, x).all()
    touch = torch.tensor([[1.0, 0.0, 0.0]])  # h = 4, g = 2
    assert _holds(problem, 1.0, 1.5, touch).all() and not _holds(problem, 1.0, 1.49, touch).all()
    assert not _holds(problem, 0.99, 1e6, torch.zeros(1, 3)).all()  # at 0: h = 1, g = 0


def test_cosh_and_exp_sums_are_1_1_and_0_1_smooth(generator):
    x = 3.0 * torch.randn(200, 4, generator=generator)
    assert _holds(so.problems.CoshSum(4), 1.0, 1.0, x).all()
    assert _holds(so.problems.ExpSum(4), 0.0, 1.0, x).all()
    # no smaller L1: cosh t - L1 |sinh t| -> inf for L1 < 1; no smaller L0 for cosh at 0
    far = torch.tensor([[20.0, 0.0, 0.0, 0.0]])  # cosh - 0.99 |sinh| ~ e^20 / 200 > 1e3
    assert not _holds(so.problems.CoshSum(4), 1e3, 0.99, far).all()
    assert not _holds(so.problems.ExpSum(4), 1e3, 0.99, far).all()
    assert not _holds(so.problems.CoshSum(4), 0.99, 1e6, torch.zeros(1, 4)).all()


def test_quadratic_models_have_constant_hessian_norm_l(generator):
    quad = so.problems.Quadratic(matrix=_spd(5, generator))
    squares = so.problems.LeastSquares(dim=4, n_samples=50)
    for problem in (quad, squares):
        x = torch.randn(10, problem.dim, generator=generator)
        prof = smoothness_profile(problem, x, tol=1e-10, n_iter=5000)
        _, h_ref = dense_norms(problem, x[:1])
        assert problem.smoothness == pytest.approx(h_ref[0], rel=1e-10)
        np.testing.assert_allclose(prof["hessian_norm"].values, problem.smoothness, rtol=1e-9)
        assert float(prof["L1"]) == 0.0 and float(prof["L0"]) == float(prof["L"])


def test_logistic_regression_attains_its_smoothness_at_zero(generator):
    # every margin is 0 at x = 0, where σ(m)σ(-m) takes its maximum 1/4: ∇²f(0) = gram/4 + reg I
    problem = so.problems.LogisticRegression()
    x = torch.cat([torch.zeros(1, problem.dim), torch.randn(8, problem.dim, generator=generator)])
    _, h = dense_norms(problem, x)
    assert h[0] == pytest.approx(problem.smoothness, rel=1e-12)
    assert (h <= problem.smoothness * (1 + 1e-12)).all()


# --- along recorded trajectories ---------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded():
    opt = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian(scale=3.0))
    problem = so.problems.CoshSum(2)
    ds = so.analysis.compare(
        opt,
        problem,
        [1.0, 1.0],
        n_steps=20,
        n_runs=40,
        models=["first_order"],
        record_every=5,
        record_x=True,
        seed=0,
        dtype=torch.float64,
        blowup_threshold=1.6,  # |x0| = 1.41: a few runs in each model blow up
    )
    return problem, ds


def test_profile_along_a_compare_dataset_has_one_point_per_kept_record(recorded):
    problem, ds = recorded
    blowup = ds["blowup_step"].values  # (model, run)
    assert (blowup >= 0).any() and (blowup < 0).any()  # the check below sees both kinds
    prof = smoothness_profile(problem, trajectory=ds)
    expected = set()
    for m, model in enumerate(ds["model"].values):
        for r, run in enumerate(ds["run"].values):
            for step in ds["step"].values:
                if blowup[m, r] < 0 or step < blowup[m, r]:
                    expected.add((str(model), int(step), int(run)))
    got = list(
        zip(
            prof["model"].values.tolist(), prof["step"].values.tolist(), prof["run"].values.tolist()
        )
    )
    assert len(got) == len(set(got)) == len(expected) and set(got) == expected
    # each point is the recorded iterate it names
    x = np.stack([ds["x"].sel(model=m, step=s, run=r).values for m, s, r in got])
    direct = smoothness_profile(problem, x)
    np.testing.assert_array_equal(prof["hessian_norm"].values, direct["hessian_norm"].values)
    np.testing.assert_array_equal(prof["grad_norm"].values, direct["grad_norm"].values)
    np.testing.assert_allclose(prof["time"].values, 0.1 * prof["step"].values)
    assert prof.attrs["source_config"] == ds.attrs["config"]


def test_profile_of_a_trajectory():
    opt = so.discrete.DSGD(lr=0.05, n_workers=1, noise=so.noise.Gaussian(scale=0.5))
    problem = so.problems.Quartic(2)
    traj = so.discrete.simulate(
        opt, problem, [1.0, -0.5], n_steps=6, n_runs=5, seed=1, record_x=True, record_every=2
    )
    prof = smoothness_profile(problem, trajectory=traj)
    assert prof.sizes["point"] == traj.x.shape[0] * traj.x.shape[1]
    assert set(prof["model"].values.tolist()) == {"discrete"}
    assert sorted(set(prof["step"].values.tolist())) == traj.steps.tolist()


def test_plot_smoothness(recorded):
    problem, ds = recorded
    prof = smoothness_profile(problem, trajectory=ds)
    for log in (False, True):
        ax = plot_smoothness(prof, log=log)
        assert isinstance(ax, Axes)
        labels = ax.get_legend_handles_labels()[1]
        assert {"discrete", "first_order"} <= set(labels)
        assert any(label.startswith("envelope") for label in labels)
        assert any(label.startswith("L = max") for label in labels)
        plt.close(ax.figure)
    fig, ax = plt.subplots()
    assert plot_smoothness(smoothness_profile(problem, np.ones((3, 2))), ax=ax) is ax
    plt.close(fig)
    with pytest.raises(ValueError, match="Invalid profile"):
        plot_smoothness(ds)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input_names_the_parameter(recorded):
    problem, ds = recorded
    with pytest.raises(ValueError, match=r"Invalid x: .*non-finite"):
        smoothness_profile(problem, [[1.0, float("nan")], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"Invalid x: .*non-finite"):
        smoothness_profile(problem, torch.tensor([[1.0, math.inf]]))
    with pytest.raises(ValueError, match="Invalid x: shape"):
        smoothness_profile(problem, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="Invalid x: shape"):
        smoothness_profile(problem, np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"Invalid trajectory: .*'x'"):
        smoothness_profile(problem, trajectory=ds.drop_vars("x"))
    with pytest.raises(ValueError, match=r"Invalid trajectory: .*coordinates"):
        smoothness_profile(so.problems.CoshSum(3), trajectory=ds)
    with pytest.raises(ValueError, match="Invalid trajectory"):
        smoothness_profile(problem, trajectory=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="Invalid x/trajectory"):
        smoothness_profile(problem)
    with pytest.raises(ValueError, match="Invalid x/trajectory"):
        smoothness_profile(problem, np.zeros((1, 2)), trajectory=ds)
    with pytest.raises(ValueError, match="Invalid method"):
        smoothness_profile(so.problems.LogisticRegression(), np.zeros((1, 31)), method="diagonal")
    with pytest.raises(ValueError, match="Invalid n_iter"):
        smoothness_profile(problem, np.zeros((1, 2)), n_iter=0)
    with pytest.raises(ValueError, match=r"Invalid problem: .*not finite"):
        smoothness_profile(problem, [[800.0, 0.0]])  # cosh overflows
    opt = so.discrete.DSGD(lr=0.05, n_workers=1, noise=so.noise.Gaussian(scale=0.5))
    traj = so.discrete.simulate(opt, problem, [1.0, 0.0], n_steps=2, n_runs=2)
    with pytest.raises(ValueError, match=r"Invalid trajectory: .*record_x"):
        smoothness_profile(problem, trajectory=traj)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smoothness_profile(problem, np.zeros(2))  # one point (d,) is fine, and warns of nothing
