"""The one run loop (``sdeopt.engine``): every model runs through it, with one meaning of
divergence, and a state larger than the problem's x (an SDE on (x, memory)) is observed, not
recorded whole."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

import sdeopt as so
from sdeopt.dynamics import SDE, Dense, Diagonal, solve, solvers


def _doubling(dim: int = 1) -> SDE:
    """dX = X dt, no noise, lr = 1: Euler with one substep doubles x every step."""
    return SDE(
        dim=dim,
        drift_fn=lambda x, eta: x,
        diffusion_fn=lambda x, eta: Diagonal(torch.zeros_like(x)),
        noise_type="diagonal",
        brownian_dim=dim,
    )


@pytest.mark.parametrize("backend", ["native", "torchsde"])
def test_divergence_is_judged_at_every_step_whatever_is_recorded(backend):
    """|x0| 2^k > 100 first at k = 7 (x0 = 1), 6 (-3) and 8 (0.5), never for 0 and 0.375. Recording
    every 4th step does not move blowup_step: the torchsde backend used to judge at records only
    (and would have said 8, 8, 8)."""
    x0 = torch.tensor([[1.0], [-3.0], [0.0], [0.375], [0.5]])
    path = solve(
        _doubling(), x0, n_steps=8, n_runs=5, record_every=4, record_x=True,
        blowup_threshold=100.0, backend=backend,
    )  # fmt: skip
    assert path.blowup_step.tolist() == [7, 6, -1, -1, 8]
    assert path.diverged.tolist() == [True, True, False, False, True]
    # Frozen at the last good value: 64, -96, 0, 0.375 * 2^8 = 96, 64.
    torch.testing.assert_close(path.x[-1, :, 0], torch.tensor([64.0, -96.0, 0.0, 96.0, 64.0]))


def test_the_torchsde_window_does_not_change_the_result(monkeypatch):
    """sdeint integrates windows of steps; one step per window gives the same path."""
    opt = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian(0.7))
    sde = so.dynamics.sde_of(opt, so.problems.Quadratic(diag=[1.0, 3.0]))
    kw = dict(n_steps=12, n_runs=16, substeps=3, record_x=True, seed=5, backend="torchsde")
    whole = solve(sde, [1.0, -1.0], **kw)
    monkeypatch.setattr(solvers._TorchsdeStepper, "WINDOW_VALUES", 1)
    stepwise = solve(sde, [1.0, -1.0], **kw)
    torch.testing.assert_close(whole.x, stepwise.x, rtol=1e-12, atol=1e-12)


def _langevin(lam: float, gamma: float, sigma: float, problem=None, lr: float = 1.0) -> SDE:
    """Underdamped Langevin dynamics on f = λ x²/2 (d = 1): X = (x, v),
    dx = v dt, dv = (-λ x - γ v) dt + σ dW. Only x is observed."""
    return SDE(
        dim=2,
        observed_dim=1,
        drift_fn=lambda y, eta: torch.cat([y[:, 1:], -lam * y[:, :1] - gamma * y[:, 1:]], -1),
        diffusion_fn=lambda y, eta: Dense(
            torch.tensor([[0.0], [sigma]], dtype=y.dtype).expand(y.shape[0], 2, 1)
        ),
        noise_type="general",
        brownian_dim=1,
        lift_fn=lambda x: torch.cat([x, torch.zeros_like(x)], -1),
        observe_fn=lambda y: y[:, :1],
        problem=problem,
        lr=lr,
    )


def test_an_sde_state_larger_than_x_is_observed():
    """The stationary variance of x under Euler with step h solves the discrete Lyapunov equation
    P = M P Mᵀ + h G Gᵀ, M = I + h A (scipy: an independent reference, exact for the scheme);
    the continuous value σ²/(2γλ) is within the scheme's O(h) bias of it."""
    lam, gamma, sigma, h = 2.0, 1.5, 0.8, 0.05
    prob = so.problems.Quadratic(diag=[lam])
    sde = _langevin(lam, gamma, sigma, problem=prob, lr=h)  # one Euler step of h per step
    n_runs, n_steps = 20_000, 400  # T = 20: transients e^{-γT/2} ~ 3e-7
    path = solve(sde, [1.0], n_steps=n_steps, n_runs=n_runs, record_every=n_steps, record_x=True)
    assert path.x.shape == (2, n_runs, 1)  # the observed x, not the state (x, v)
    x = path.x[-1, :, 0].double()
    var, se = x.var().item(), x.var().item() * math.sqrt(2.0 / (n_runs - 1))
    a = np.array([[0.0, 1.0], [-lam, -gamma]])
    m = np.eye(2) + h * a
    p = linalg.solve_discrete_lyapunov(m, h * np.array([[0.0, 0.0], [0.0, sigma**2]]))
    assert abs(var - p[0, 0]) < 4 * se, (var, p[0, 0], se)
    # The loss is recorded from the observed x too: E f = λ Var x / 2.
    loss = path.loss[-1].double()
    torch.testing.assert_close(loss, lam * x * x / 2)
    continuous = sigma**2 / (2 * gamma * lam)
    assert abs(p[0, 0] - continuous) < 0.1 * continuous  # Euler's bias at h = 0.05


def test_a_state_larger_than_x_needs_its_maps():
    with pytest.raises(ValueError, match=r"observed_dim.*lift_fn and observe_fn"):
        SDE(
            dim=2,
            observed_dim=1,
            drift_fn=lambda y, eta: y,
            diffusion_fn=lambda y, eta: Diagonal(y),
            noise_type="diagonal",
            brownian_dim=2,
        )
    with pytest.raises(ValueError, match=r"problem.*dimension 2.*observed dimension 1"):
        _langevin(1.0, 1.0, 1.0, problem=so.problems.Quadratic(diag=[1.0, 2.0]))


def test_one_default_dtype_everywhere():
    """float64 unless asked, from Python as from TOML, whatever torch's own default dtype is."""
    opt = so.discrete.DSGD(lr=0.1, noise=so.noise.Gaussian())
    prob = so.problems.Quadratic(diag=[1.0, 2.0])
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        traj = so.discrete.simulate(opt, prob, [1.0, 1.0], n_steps=2, n_runs=3, record_x=True)
        path = solve(so.dynamics.sde_of(opt, prob), [1.0, 1.0], n_steps=2, n_runs=3)
        ds = so.analysis.compare(opt, prob, [1.0, 1.0], n_steps=2, n_runs=3, models=["first_order"])
        asked = so.discrete.simulate(opt, prob, [1.0, 1.0], 2, 3, dtype=torch.float32)
    finally:
        torch.set_default_dtype(old)
    assert traj.x.dtype == torch.float64 and traj.dtype == "float64"
    assert path.loss.dtype == torch.float64
    assert ds["loss"].dtype == np.float64 and ds.attrs["dtype"] == "float64"
    assert asked.loss.dtype == torch.float32
    from sdeopt.experiments.config import build

    run = {
        "problem": {"type": "Quadratic", "diag": [1.0, 2.0]},
        "noise": {"type": "Gaussian"},
        "method": {"type": "DSGD", "lr": 0.1},
        "x0_fill": 1.0,
    }
    assert build(run)["dtype"] == torch.float64


def test_divergence_of_a_larger_state_is_judged_on_the_observed_x():
    """The threshold bounds x, as for the discrete method: a memory coordinate of 200 with
    blowup_threshold=100 is no divergence, while a non-finite memory is (it would poison x)."""
    big = SDE(
        dim=2,
        observed_dim=1,
        drift_fn=lambda y, eta: torch.cat([torch.zeros_like(y[:, :1]), y[:, 1:] * y[:, 1:]], -1),
        diffusion_fn=lambda y, eta: Diagonal(torch.zeros_like(y)),
        noise_type="diagonal",
        brownian_dim=2,
        lift_fn=lambda x: torch.cat([x, 200.0 * torch.ones_like(x) * (x > 0)], -1),
        observe_fn=lambda y: y[:, :1],
    )
    # x0 = 1: memory 200 -> 200 + 200² -> ... overflows to inf after a few steps: diverged.
    # x0 = -1: memory 0 stays 0: never diverged, although nothing about x differs.
    path = solve(big, torch.tensor([[1.0], [-1.0]]), n_steps=12, n_runs=2, blowup_threshold=100.0)
    assert path.diverged.tolist() == [True, False]
    assert path.blowup_step[0] > 1  # not at step 1, where only the memory exceeded 100
