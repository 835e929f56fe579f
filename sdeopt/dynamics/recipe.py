r"""The general recipe (docs/models.md): from a method's one-step moments to its SDE models.

Write one step as :math:`x_{k+1} = x_k - \eta\,\eta_k u_k` with mean direction
:math:`\bar u(x) = \mathbb{E}\,u_k` and covariance :math:`S(x) = \operatorname{Cov} u_k`. Then,
on the time axis :math:`t_k = k \eta`,

.. math::

    \mathtt{first\_order}: \quad dX &= -\eta_t \bar u\,dt
        + \eta_t \sqrt{\eta}\, S^{1/2} dW \\
    \mathtt{second\_order}: \quad dX &= \big(-\eta_t \bar u
        - (\eta\,\eta_t^2/2) (\nabla \bar u) \bar u\big)\,dt + \eta_t \sqrt{\eta}\, S^{1/2} dW \\
    \mathtt{curvature}: \quad dX &= \big(-\eta_t \bar u
        + (\eta\,\eta_t^2/2) (\nabla \bar u) \bar u\big)\,dt + \eta_t \sqrt{\eta}\, S^{1/2} dW

(Li, Tai, E, JMLR 2019, first and second order weak SMEs; Compagnoni et al., ICML 2026,
arXiv 2506.00181 v2, curvature correction, note the plus sign). :math:`(\nabla \bar u) \bar u` is
a Jacobian-vector product supplied by each method's model (for DSGD it is
:math:`\nabla^2 f\, \nabla f`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sdeopt.dynamics.sde import SDE, Diffusion
from sdeopt.problems import Problem

#: Sign of the (eta eta_t²/2)(∇ū)ū term in the drift, by model name.
MODELS = {"first_order": 0.0, "second_order": -1.0, "curvature": 1.0}


@dataclass(frozen=True)
class Moments:
    r"""A method's one-step moments as functions of x (B, d).

    Attributes:
        mean: :math:`x \mapsto \bar u(x)`, (B, d).
        mean_jvp: :math:`(x, v) \mapsto (\nabla \bar u(x))\, v`, (B, d); None when not
            available (first order only).
        diffusion: :math:`(x, \mathrm{scale}) \mapsto` a ``Diffusion`` :math:`G` with
            :math:`G G^\top = \mathrm{scale}^2 S(x)`.
        noise_type: "diagonal" or "general".
        brownian_dim: :math:`m`.
        diffusion_derivative: :math:`(x, \mathrm{scale}) \mapsto \partial g_j / \partial x_j`,
            (B, d), for diagonal noise whose :math:`g_j` depends on :math:`x_j` alone
            (commutative noise: Milstein needs no Lévy areas); None where that does not hold
            or is not known.
    """

    mean: Callable[[torch.Tensor], torch.Tensor]
    mean_jvp: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    diffusion: Callable[[torch.Tensor, float], Diffusion]
    noise_type: str
    brownian_dim: int
    diffusion_derivative: Callable[[torch.Tensor, float], torch.Tensor] | None = None
    #: model name -> why no derivation backs it for this method (sde_of refuses it with that).
    refused: dict[str, str] = field(default_factory=dict)
    #: True when the diffusion does not depend on x.
    additive: bool = False
    #: (λ (d,), center (d,)) when :math:`\bar u(x) = \lambda \odot (x - \mathrm{center})` (a
    #: diagonal quadratic), else None: every model's drift is then linear and diagonal.
    linear: tuple[torch.Tensor, torch.Tensor] | None = None


def zero_derivative(x: torch.Tensor, scale: float) -> torch.Tensor:
    r""":math:`\partial g / \partial x` of a state-independent (additive) diffusion: 0, (B, d) as
    a view."""
    return x.new_zeros((1, 1)).expand_as(x)


def sde_from_moments(
    moments: Moments, *, model: str, lr: float, schedule, problem: Problem, config: dict
) -> SDE:
    """Build the SDE of ``model`` (a key of ``MODELS``) from ``moments``."""
    if model not in MODELS:
        raise ValueError(f"Invalid model: {model!r} (choose from {', '.join(MODELS)})")
    if model in moments.refused:
        raise ValueError(f"Invalid model: {model!r} ({moments.refused[model]})")
    sign = MODELS[model]
    mean_jvp = moments.mean_jvp
    if sign != 0.0 and mean_jvp is None:
        raise ValueError(
            f"Invalid model: {model!r} (needs the Jacobian of the mean direction, which "
            f"this method's model does not provide for this problem; use 'first_order')"
        )
    sqrt_lr = math.sqrt(lr)

    def drift(x: torch.Tensor, eta: float) -> torch.Tensor:
        u = moments.mean(x)  # (B, d)
        if sign == 0.0:
            return -eta * u
        assert mean_jvp is not None  # refused above when sign != 0
        return -eta * u + (sign * lr * eta * eta / 2.0) * mean_jvp(x, u)

    def diffusion(x: torch.Tensor, eta: float) -> Diffusion:
        return moments.diffusion(x, eta * sqrt_lr)

    derivative = None
    diffusion_derivative = moments.diffusion_derivative
    if diffusion_derivative is not None:

        def derivative(x: torch.Tensor, eta: float) -> torch.Tensor:
            return diffusion_derivative(x, eta * sqrt_lr)

    linear_fn = None
    if moments.linear is not None:
        lam, center = moments.linear

        def linear_fn(eta: float) -> tuple[torch.Tensor, torch.Tensor]:
            # -eta λ e + sign (lr eta²/2) λ² e: the models' drifts on a diagonal quadratic
            return lam * eta - (sign * lr * eta * eta / 2.0) * lam * lam, center

    return SDE(
        dim=problem.dim,
        drift_fn=drift,
        diffusion_fn=diffusion,
        noise_type=moments.noise_type,
        brownian_dim=moments.brownian_dim,
        lr=lr,
        schedule=schedule,
        model=model,
        problem=problem,
        config=config,
        diffusion_derivative_fn=derivative,
        additive=moments.additive,
        linear_fn=linear_fn,
    )
