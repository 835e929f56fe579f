"""Gaps that mutation testing (tools/mutation.py, issue 11) found in sdeopt/dynamics/sde.py and
solvers.py: the diffusion structures, GridBrownian, the torchsde adapter and backend, the
Milstein step and the solver's bookkeeping, each against a reference written out here
(matrix products, hand-rolled Euler loops on the same Brownian increments, closed forms of
deterministic paths). Fast, float64 (conftest), no timing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sdeopt as so
from sdeopt.discrete import DSGD, simulate
from sdeopt.dynamics import (
    SDE,
    Dense,
    Diagonal,
    DiagonalPlusRankOne,
    GridBrownian,
    sde_of,
    solve,
)
from sdeopt.dynamics.sde import sqrt_psd
from sdeopt.dynamics.solvers import Milstein
from sdeopt.random import RandomSource

# --- diffusion structures -------------------------------------------------------------------------


def test_dense_applies_its_matrix(generator):
    g = torch.randn(4, 3, 5, generator=generator)  # (B, d, m), m != d
    dw = torch.randn(4, 5, generator=generator)
    expected = torch.stack([g[b] @ dw[b] for b in range(4)])
    torch.testing.assert_close(Dense(g).apply(dw), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Dense(g).cov(), torch.stack([g[b] @ g[b].T for b in range(4)]))


def test_sqrt_psd_is_the_symmetric_root(generator):
    a = torch.randn(3, 4, 4, generator=generator)
    cov = a @ a.transpose(-1, -2)
    cov[0] = torch.diag(torch.tensor([2.0, 1.0, 0.0, 0.5]))  # singular
    root = sqrt_psd(cov)
    torch.testing.assert_close(root, root.transpose(-1, -2), rtol=0, atol=1e-12)
    torch.testing.assert_close(root @ root, cov, rtol=1e-10, atol=1e-12)


def test_diagonal_plus_rank_one_with_zero_diagonal_entries():
    """D_j = 0 forces w_j = 0 (PSD); the root must stay finite and exact there."""
    diag = torch.tensor([[0.0, 2.0, 1.0], [1.5, 0.0, 0.0]])
    w = torch.tensor([[0.0, 0.4, -0.3], [0.5, 0.0, 0.0]])
    for sign in (-1.0, 1.0):
        g = DiagonalPlusRankOne(diag, w, sign)
        expected = torch.diag_embed(diag) + sign * w.unsqueeze(-1) * w.unsqueeze(-2)
        assert torch.isfinite(g.dense()).all()
        torch.testing.assert_close(g.cov(), expected, rtol=1e-12, atol=1e-12)
        dw = torch.tensor([[0.3, -1.0, 2.0], [1.0, 0.5, -0.7]])
        torch.testing.assert_close(g.apply(dw), (g.dense() @ dw.unsqueeze(-1)).squeeze(-1))


# --- SDE bookkeeping ---------------------------------------------------------------------------------


def test_eta_is_the_schedule_factor_of_the_step_containing_t():
    schedule = so.schedules.PolyDecay(power=1.0)
    for lr in (0.5, 0.1, 0.3):
        sde = SDE.diagonal(
            lambda x: -x, lambda x: torch.ones_like(x), dim=1, lr=lr, schedule=schedule
        )
        for k in range(6):
            factor = float(schedule(k))
            assert sde.eta(k * lr) == factor  # a grid time belongs to the step it starts
            assert sde.eta((k + 0.5) * lr) == factor
            assert sde.eta((k + 1) * lr - 1e-6 * lr) == factor


def test_sde_validates_its_dimensions():
    drift, diffusion = (lambda x, eta: -x), (lambda x, eta: Diagonal(torch.ones_like(x)))
    for kw, name in (
        (dict(dim=0, brownian_dim=1, noise_type="general"), "Invalid dim:"),
        (dict(dim=2, brownian_dim=0, noise_type="general"), "Invalid brownian_dim:"),
        (dict(dim=2, brownian_dim=3), "Invalid brownian_dim:"),
        (dict(dim=2, brownian_dim=2, lr=0.0), "Invalid lr:"),
        (dict(dim=2, brownian_dim=2, noise_type="scalar"), "Invalid noise_type:"),
    ):
        with pytest.raises(ValueError, match=name):
            SDE(drift_fn=drift, diffusion_fn=diffusion, **dict(dict(noise_type="diagonal"), **kw))
    SDE(
        dim=2, brownian_dim=3, drift_fn=drift, diffusion_fn=diffusion, noise_type="general"
    )  # m != d: fine


def test_sde_diagonal_keeps_its_keyword_arguments():
    prob = so.problems.Quadratic(diag=[1.0])
    schedule = so.schedules.PolyDecay(power=0.5)
    sde = SDE.diagonal(
        lambda x: -x,
        lambda x: torch.ones_like(x),
        dim=1,
        lr=0.25,
        schedule=schedule,
        model="ou",
        problem=prob,
        config={"name": "ou"},
    )
    assert (sde.lr, sde.schedule, sde.model, sde.problem, sde.config) == (
        0.25,
        schedule,
        "ou",
        prob,
        {"name": "ou"},
    )


def _scheduled_sde(lr=0.1):
    """dX = -eta a X dt + eta s (1 + X²/4) dW: both coefficients depend on x and on eta_t."""
    a, s = 1.5, 0.6
    return SDE(
        dim=2,
        drift_fn=lambda x, eta: -eta * a * x,
        diffusion_fn=lambda x, eta: Diagonal(eta * s * (1 + 0.25 * x * x)),
        noise_type="diagonal",
        brownian_dim=2,
        lr=lr,
        schedule=so.schedules.PolyDecay(power=0.5),
    )


def test_torchsde_adapter_evaluates_the_sde_at_the_time_of_the_step():
    sde = _scheduled_sde()
    adapter = sde.torchsde()
    x = torch.tensor([[0.5, -1.0], [2.0, 0.1]])
    for k in (0, 3):
        t = torch.tensor(k * sde.lr + 0.02)
        eta = float(sde.schedule(k))
        torch.testing.assert_close(adapter.f(t, x), -eta * 1.5 * x)
        torch.testing.assert_close(adapter.g(t, x), eta * 0.6 * (1 + 0.25 * x * x))
    general = SDE(
        dim=2,
        drift_fn=lambda x, eta: -x,
        diffusion_fn=lambda x, eta: Dense(x.unsqueeze(-1) * x.new_ones(3)),
        noise_type="general",
        brownian_dim=3,
    )
    torch.testing.assert_close(
        general.torchsde().g(torch.tensor(0.0), x), x.unsqueeze(-1).expand(2, 2, 3)
    )


# --- GridBrownian ------------------------------------------------------------------------------------


def test_grid_brownian_sums_its_increments_and_refuses_off_grid_queries(generator):
    t0, h = 0.5, 0.25
    inc = torch.randn(6, 3, 2, generator=generator)  # (n, B, m)
    bm = GridBrownian(t0, h, inc)
    torch.testing.assert_close(bm(t0 + 2 * h, t0 + 3 * h), inc[2])
    torch.testing.assert_close(bm(t0 + h, t0 + 4 * h), inc[1] + inc[2] + inc[3])
    torch.testing.assert_close(bm(t0 + 4 * h, t0 + h), -(inc[1] + inc[2] + inc[3]))
    torch.testing.assert_close(bm(t0 + 3 * h, t0 + 2 * h), -inc[2])  # one step back
    torch.testing.assert_close(bm(t0, t0 + 2 * h), inc[0] + inc[1])  # two steps
    assert repr(bm) == "GridBrownian(t0=0.5, h=0.25, n=6)"
    torch.testing.assert_close(bm(t0 + 3 * h), inc[0] + inc[1] + inc[2])  # W(t) - W(t0)
    torch.testing.assert_close(bm(t0 + 6 * h), inc.sum(0))
    assert bm(t0 + 2 * h, t0 + 2 * h).abs().max() == 0
    assert bm.shape == (3, 2) and bm.dtype == inc.dtype
    for t in (t0 + 0.5 * h, t0 + 7 * h, t0 - h, t0 + 2 * h + 1e-4):
        with pytest.raises(ValueError, match="off its grid"):
            bm(t0, t)
    with pytest.raises(ValueError, match="Lévy area"):
        bm(t0, t0 + h, return_U=True)
    with pytest.raises(ValueError, match="Lévy area"):
        bm(t0, t0 + h, return_A=True)


# --- the torchsde backend's bookkeeping ---------------------------------------------------------------


def _euler_reference(sde, x0, n_steps, n_runs, substeps, seed, block_size):
    """Euler–Maruyama by hand on the increments the backend draws: RandomSource(seed, B) normals
    of shape (B, n_steps * substeps, m) times sqrt(h), at the schedule factor of each step."""
    h = sde.lr / substeps
    dw = RandomSource(seed, n_runs, block_size=block_size).normal(
        n_steps * substeps, sde.brownian_dim
    )
    dw = dw * math.sqrt(h)
    x = x0.expand(n_runs, -1).clone() if x0.dim() == 1 else x0.clone()
    xs = [x]
    for k in range(n_steps):
        eta = float(sde.schedule(k))
        for i in range(substeps):
            x = (
                x
                + sde.drift_at(x, eta) * h
                + sde.diffusion_at(x, eta).apply(dw[:, k * substeps + i])
            )
        xs.append(x)
    return torch.stack(xs)  # (n_steps + 1, B, d)


def test_torchsde_backend_is_euler_on_its_drawn_increments(generator):
    sde = _scheduled_sde()
    n_steps, n_runs, substeps, block = 6, 12, 2, 4
    x0 = torch.randn(n_runs, 2, generator=generator)
    ref = _euler_reference(sde, x0, n_steps, n_runs, substeps, seed=7, block_size=block)
    kw = dict(
        n_steps=n_steps,
        n_runs=n_runs,
        substeps=substeps,
        seed=7,
        block_size=block,
        record_x=True,
        backend="torchsde",
    )
    whole = solve(sde, x0, **kw)
    torch.testing.assert_close(whole.x, ref, rtol=1e-10, atol=1e-12)
    chunked = solve(sde, x0, chunk_size=4, **kw)  # per-run x0 and streams, chunk by chunk
    torch.testing.assert_close(chunked.x, ref, rtol=1e-10, atol=1e-12)
    sparse = solve(sde, x0, **dict(kw, record_every=3))
    torch.testing.assert_close(sparse.x, ref[::3], rtol=1e-10, atol=1e-12)
    assert sparse.steps.tolist() == [0, 3, 6] and sparse.steps.dtype == np.int64
    lr_sum = np.concatenate(
        [[0.0], np.cumsum([sde.lr * float(sde.schedule(k)) for k in range(n_steps)])]
    )
    np.testing.assert_allclose(sparse.lr_sum, lr_sum[[0, 3, 6]], rtol=1e-12)
    assert not whole.diverged.any() and (whole.blowup_step == -1).all()
    assert whole.blowup_step.dtype == torch.int64 and whole.diverged.dtype == torch.bool
    assert solve(sde, x0, **dict(kw, record_x=False)).x is None
    assert (whole.model, whole.lr, whole.seed) == (sde.model, sde.lr, 7)
    assert {
        k: whole.config[k]
        for k in (
            "n_steps",
            "n_runs",
            "block_size",
            "first_run",
            "blowup_threshold",
            "backend",
            "substeps",
        )
    } == {
        "n_steps": n_steps,
        "n_runs": n_runs,
        "block_size": block,
        "first_run": 0,
        "blowup_threshold": 1e10,
        "backend": "torchsde",
        "substeps": substeps,
    }
    assert whole.config["problem"] == {"type": "none", "dim": 2}
    # Two runs with their own x0, one chunk each (block_size 1).
    pair = solve(sde, x0[:2], **dict(kw, n_runs=2, block_size=1, chunk_size=1))
    torch.testing.assert_close(
        pair.x,
        _euler_reference(sde, x0[:2], n_steps, 2, substeps, seed=7, block_size=1),
        rtol=1e-10,
        atol=1e-12,
    )
    # Runs first_run.. of a larger batch are that batch's rows.
    tail = solve(sde, x0[4:], **dict(kw, n_runs=8, first_run=4))
    torch.testing.assert_close(tail.x, ref[:, 4:], rtol=1e-10, atol=1e-12)


def test_torchsde_backend_records_in_the_requested_dtype():
    sde = _scheduled_sde()
    path = solve(
        sde,
        [0.5, -0.5],
        n_steps=3,
        n_runs=4,
        record_x=True,
        backend="torchsde",
        dtype=torch.float32,
    )
    assert path.x.dtype == torch.float32 and path.dtype == "float32" and path.device == "cpu"
    prob_path = solve(
        sde_of(DSGD(lr=0.1, noise=so.noise.Gaussian(0.5)), so.problems.Quadratic(diag=[1.0, 2.0])),
        [0.5, -0.5],
        n_steps=3,
        n_runs=4,
        backend="torchsde",
        dtype=torch.float32,
    )
    assert prob_path.loss.dtype == torch.float32


def _doubling_sde():
    """dX = X dt, no noise, lr = 1: Euler with one substep doubles x every step."""
    return SDE(
        dim=1,
        drift_fn=lambda x, eta: x,
        diffusion_fn=lambda x, eta: Diagonal(torch.zeros_like(x)),
        noise_type="diagonal",
        brownian_dim=1,
    )


@pytest.mark.parametrize("backend", ["native", "torchsde"])
def test_divergence_is_judged_at_records_and_frozen_at_the_last_good_one(backend):
    x0 = torch.tensor([[1.0], [-3.0], [0.0], [0.375], [0.5]])
    path = solve(
        _doubling_sde(),
        x0,
        n_steps=8,
        n_runs=5,
        record_x=True,
        blowup_threshold=100.0,
        backend=backend,
    )
    # |x_k| = |x0| 2^k > 100 first at k = 7 (1 -> 128) and k = 6 (3 -> 192); 0 never; 0.375 -> 96 at
    # k = 8, never; 0.5 -> 128 at the last step, k = 8.
    assert path.diverged.tolist() == [True, True, False, False, True]
    assert path.blowup_step.tolist() == [7, 6, -1, -1, 8]
    expected = torch.tensor(
        [
            [
                min(2.0**k, 64.0),
                -3.0 * min(2.0**k, 32.0),
                0.0,
                0.375 * 2.0**k,
                min(0.5 * 2.0**k, 64.0),
            ]
            for k in range(9)
        ]
    )
    torch.testing.assert_close(path.x[..., 0], expected)


@pytest.mark.parametrize("backend", ["native", "torchsde"])
def test_the_threshold_bounds_the_norm(backend):
    """A run is over the threshold when |x| > threshold (not |x|² > 2 threshold, |x|² > threshold³).
    dx = x dt with h = 1 doubles x: |x| = 10, 100 (the threshold itself) and 50 become 20, 200, 100."""
    doubling = SDE(
        dim=2,
        drift_fn=lambda x, eta: x,
        lr=1.0,
        diffusion_fn=lambda x, eta: Diagonal(torch.zeros_like(x)),
        noise_type="diagonal",
        brownian_dim=2,
    )
    x0 = torch.tensor([[6.0, 8.0], [60.0, 80.0], [30.0, 40.0]])
    path = solve(doubling, x0, n_steps=1, n_runs=3, blowup_threshold=100.0, backend=backend)
    assert path.diverged.tolist() == [False, True, False]
    with pytest.raises(ValueError, match=r"x0.*blowup_threshold"):  # a start beyond it is refused
        solve(doubling, 2 * x0, n_steps=1, n_runs=3, blowup_threshold=100.0, backend=backend)


# --- Milstein -------------------------------------------------------------------------------------------


def test_milstein_step_is_its_formula():
    """x + b h + g dW + ½ g g' (dW² - h), with g' given and by autograd (1-D), at eta != 1."""
    x = torch.tensor([[0.3], [-1.2], [2.0]])
    dw = torch.tensor([[0.4], [-0.1], [0.25]])
    h, eta = 0.05, 0.7
    b = lambda y, e: -e * torch.sin(y)
    g = lambda y, e: e * (0.5 + y * y)
    dg = lambda y, e: e * 2 * y
    expected = x + b(x, eta) * h + g(x, eta) * dw + 0.5 * g(x, eta) * dg(x, eta) * (dw * dw - h)
    for derivative in (lambda y, e: dg(y, e), None):  # None: forward-mode autograd in one dimension
        sde = SDE(
            dim=1,
            drift_fn=b,
            diffusion_fn=lambda y, e: Diagonal(g(y, e)),
            noise_type="diagonal",
            brownian_dim=1,
            diffusion_derivative_fn=derivative,
        )
        torch.testing.assert_close(
            Milstein().step(sde, x, eta, h, dw), expected, rtol=1e-12, atol=1e-12
        )


# --- coupling -----------------------------------------------------------------------------------------


def _coupled_pair(lr=0.1, n_steps=5, n_runs=6):
    opt = DSGD(lr=lr, noise=so.noise.Gaussian(scale=0.5))
    prob = so.problems.Quadratic(diag=[1.0, 2.0])
    disc = simulate(
        opt,
        prob,
        torch.ones(2),
        n_steps=n_steps,
        n_runs=n_runs,
        record_x=True,
        keep_increments=True,
        seed=2,
    )
    return opt, prob, disc


def test_coupled_substeps_split_the_discrete_increment():
    """dX = c dt + s dW: any split of the step's increment ends at x0 + c t + s ΣΔW exactly, and
    the coupled increment over step k is -sqrt(lr) ξ_k."""
    opt, _prob, disc = _coupled_pair()
    c, s = torch.tensor([0.3, -0.2]), 0.7
    sde = SDE(
        dim=2,
        drift_fn=lambda x, eta: c.expand_as(x),
        diffusion_fn=lambda x, eta: Diagonal(torch.full_like(x, s)),
        noise_type="diagonal",
        brownian_dim=2,
        lr=opt.lr,
    )
    total = -math.sqrt(opt.lr) * torch.cumsum(disc.increments[:5], 0)  # (K, B, d)
    for substeps in (1, 2, 3):
        path = solve(
            sde, torch.ones(2), n_steps=5, n_runs=6, substeps=substeps, coupled=disc, record_x=True
        )
        steps = torch.arange(1, 6, dtype=torch.float64)[:, None, None]
        torch.testing.assert_close(
            path.x[1:], 1.0 + c * opt.lr * steps + s * total, rtol=1e-10, atol=1e-12
        )


def test_coupling_refuses_mismatched_trajectories():
    opt, prob, disc = _coupled_pair()
    sde = sde_of(opt, prob)
    plain = simulate(opt, prob, torch.ones(2), n_steps=5, n_runs=6, seed=2)
    with pytest.raises(ValueError, match="keep_increments"):
        solve(sde, torch.ones(2), n_steps=5, n_runs=6, coupled=plain)
    for kw in (dict(n_steps=6, n_runs=6), dict(n_steps=5, n_runs=4)):
        with pytest.raises(ValueError, match="increments have shape"):
            solve(sde, torch.ones(2), coupled=disc, **kw)
    solve(sde, torch.ones(2), n_steps=4, n_runs=6, coupled=disc)  # fewer steps than recorded: fine
    with pytest.raises(ValueError, match="increments have shape"):
        solve(
            sde_of(opt, so.problems.Quadratic(diag=[1.0, 2.0, 3.0])),
            torch.ones(3),
            n_steps=5,
            n_runs=6,
            coupled=disc,
        )
    with pytest.raises(ValueError, match="first_run"):
        solve(sde, torch.ones(2), n_steps=5, n_runs=6, coupled=disc, first_run=4096)
    later = simulate(
        opt, prob, torch.ones(2), n_steps=5, n_runs=6, keep_increments=True, seed=2, first_run=4096
    )
    solve(
        sde, torch.ones(2), n_steps=5, n_runs=6, coupled=later, first_run=4096
    )  # the same runs: fine
    with pytest.raises(ValueError, match="first_run"):
        solve(sde, torch.ones(2), n_steps=5, n_runs=6, coupled=later)
    near = DSGD(lr=0.1 * (1 + 1e-10), noise=so.noise.Gaussian(scale=0.5))
    with pytest.raises(ValueError, match="lr"):
        solve(sde_of(near, prob), torch.ones(2), n_steps=5, n_runs=6, coupled=disc)


# --- solve's bookkeeping --------------------------------------------------------------------------------


def test_torchsde_strong_schemes_need_commutative_noise():
    mixing = SDE.diagonal(
        lambda x: -x, lambda x: 0.5 + 0.1 * x.sum(-1, keepdim=True).expand_as(x), dim=2
    )
    for ts_method in ("milstein", "srk"):
        with pytest.raises(ValueError, match="commutative"):
            solve(
                mixing,
                [0.0, 0.0],
                n_steps=2,
                n_runs=2,
                backend="torchsde",
                torchsde_method=ts_method,
            )


def test_a_hand_built_sde_with_a_problem_runs_in_float32():
    prob = so.problems.Quadratic(diag=[1.0, 2.0])
    sde = SDE.diagonal(lambda x: -x, lambda x: torch.full_like(x, 0.1), dim=2, problem=prob)
    path = solve(
        sde, [1.0, -1.0], n_steps=3, n_runs=2, dtype=torch.float32
    )  # no rebuild: runs as given
    assert path.loss.dtype == torch.float32 and torch.isfinite(path.loss).all()


def test_solve_defaults_and_config():
    opt = DSGD(lr=0.1, noise=so.noise.Gaussian(scale=0.5))
    sde = sde_of(opt, so.problems.Quadratic(diag=[1.0, 2.0]), "second_order")
    path = solve(sde, [1.0, -1.0], n_steps=4, n_runs=5)
    assert path.x is None and path.seed == 0
    torch.testing.assert_close(
        path.loss, solve(sde, [1.0, -1.0], n_steps=4, n_runs=5, seed=0).loss, rtol=0, atol=0
    )
    assert {k: path.config[k] for k in ("model", "scheme", "backend", "substeps", "coupled")} == {
        "model": "second_order",
        "scheme": "euler",
        "backend": "native",
        "substeps": 1,
        "coupled": False,
    }
    assert path.model == "second_order"


@pytest.mark.parametrize(
    "opt,model",
    [
        (DSGD(lr=0.1, noise=so.noise.Gaussian(scale=0.5)), "second_order"),
        (so.discrete.ItoChain(lr=0.1, gamma=0.5, diffusion=0.7), "first_order"),
    ],
)
def test_solve_rebuilds_the_sde_on_the_problem_moved_to_its_dtype(opt, model):
    sde = sde_of(opt, so.problems.Quadratic(diag=[1.0, 2.0]), model)
    moved, rebuilt = [], []
    rebuild = sde.rebuild
    sde.rebuild = lambda p: moved.append(p) or rebuilt.append(rebuild(p)) or rebuilt[-1]
    solve(sde, [1.0, -1.0], n_steps=2, n_runs=3)  # float64, cpu: nothing to move
    assert moved == []
    path = solve(sde, [1.0, -1.0], n_steps=2, n_runs=3, dtype=torch.float32, record_x=True)
    assert len(moved) == 1 and moved[0].diag.dtype == torch.float32
    assert rebuilt[0].problem is moved[0] and rebuilt[0].model == model and path.model == model
    assert path.x.dtype == torch.float32 and path.loss.dtype == torch.float32
