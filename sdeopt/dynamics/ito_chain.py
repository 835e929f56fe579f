r"""The SDE of an Itô chain: :math:`dX = b(X)\,dt + \eta^{\gamma/2} \sigma(X)\,dW`."""

from __future__ import annotations

import math

import torch

from sdeopt.discrete.ito_chain import ItoChain
from sdeopt.dynamics.recipe import zero_derivative
from sdeopt.dynamics.sde import SDE, Diagonal
from sdeopt.problems import Problem


def sde(method: ItoChain, problem: Problem, model: str) -> SDE:
    r""":math:`dX = b(X)\,dt + \eta^{\gamma/2} \sigma(X)\,dW` (Ustimenko & Beznosikov, ICLR 2024).

    One chain step adds :math:`\eta b + \eta^{(1+\gamma)/2} \sigma \varepsilon`: over SDE time
    :math:`\eta` the drift matches and the variance
    :math:`\eta^{1+\gamma} \sigma^2 = (\eta^\gamma \sigma^2)\, \eta` gives the diffusion. The
    inexact terms :math:`\delta`, :math:`\Delta` are errors of the chain, not part of its model.
    Only the first-order model is defined.
    """
    if model != "first_order":
        raise ValueError(f"Invalid model: {model!r} (an Itô chain's SDE is first order only)")
    scale = method.lr ** (method.gamma / 2.0)

    # A schedule factor eta scales the step to eta lr: drift eta b, diffusion
    # eta^{(1+γ)/2} lr^{γ/2} σ (same variance per unit of SDE time as the chain).
    def drift(x: torch.Tensor, eta: float) -> torch.Tensor:
        return eta * method.drift_at(problem, x)

    def diffusion(x: torch.Tensor, eta: float) -> Diagonal:
        g = method.diffusion_at(x) * (scale * eta ** ((1.0 + method.gamma) / 2.0))
        return Diagonal(g.expand_as(x))

    # A constant σ is additive noise (Milstein is Euler); a callable σ may mix coordinates, so its
    # derivative is not known (Milstein then works in one dimension only, by autograd).
    derivative = None if callable(method.diffusion) else zero_derivative
    return SDE(
        dim=problem.dim,
        drift_fn=drift,
        diffusion_fn=diffusion,
        noise_type="diagonal",
        diffusion_derivative_fn=derivative,
        brownian_dim=problem.dim,
        lr=method.lr,
        schedule=method.schedule,
        model=model,
        problem=problem,
        config={
            "method": method.config(),
            "model": model,
            "gamma": method.gamma,
            "diffusion_scale": scale if math.isfinite(scale) else None,
        },
    )
