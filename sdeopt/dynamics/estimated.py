r"""Estimated moments: a first-order SDE for any direction method, from Monte Carlo draws.

Where a method's one-step mean :math:`\bar u(x)` and covariance :math:`S(x)` have no closed form
(TopK, QSGD or Natural compression, clipping, normalisation, ...), the first-order SDE

.. math:: dX = -\eta_t \bar u(X)\,dt + \eta_t \sqrt{\eta}\, S(X)^{1/2}\,dW

is integrated with both moments estimated at the current state, every substep, from S fresh
draws :math:`u_1, \dots, u_S` of the method's own direction (its noise and compressor draws from
the run's random source; nothing is reused across steps):

.. math::

    \hat u = \frac1S \sum_s u_s, \qquad
    X_{t+h} = X_t - h\,\eta_t \hat u + \sqrt{h}\,\eta_t \sqrt{\eta}\,\sqrt{\kappa}\,
        \frac{1}{\sqrt{S-1}} \sum_s (u_s - \hat u)\,\xi_s, \quad \xi_s \sim \mathcal N(0, 1).

Given the draws, the diffusion term is Gaussian with the unbiased sample covariance
:math:`\hat S` (the centred draws themselves are its square root: no d x d factorisation, and
the Brownian dimension is S, not d). The drift estimate adds its own error,
:math:`\operatorname{Cov}(h \eta_t \hat u) = h^2 \eta_t^2 S/S`, which would inflate one step's
covariance :math:`h \eta \eta_t^2 S` by the factor :math:`1 + h/(\eta S)`; the diffusion is scaled
by :math:`\kappa = 1 - h/(\eta S)` so that one step's mean and covariance are those of
Euler–Maruyama on the exact SDE (in expectation over the draws). Valid when S is large enough
for the sample covariance to stand for S(x) in law — it enters only through its expectation at
this order, so any S >= 2 is unbiased; larger S lowers the higher-moment error.

Only the first-order model: the second-order and curvature corrections need the Jacobian of
:math:`\bar u`, which this does not estimate. A direction without a finite covariance (DSGD under
Student-t noise with nu <= 2, unclipped) is refused: its sample covariance does not converge.
"""

from __future__ import annotations

import math
from typing import NoReturn

import torch

from sdeopt._validation import check_int
from sdeopt.discrete.base import DirectionMethod, Method
from sdeopt.dynamics.recipe import MODELS
from sdeopt.dynamics.sde import SDE
from sdeopt.problems import Problem


def estimated_sde(method: Method, problem: Problem, model: str, samples) -> SDE:
    """The estimated-moments first-order SDE of ``method`` (module docstring)."""
    if not isinstance(method, DirectionMethod):
        raise ValueError(
            f"Invalid moments: 'estimated' (needs a method of the form x - lr u(x); "
            f"{type(method).__name__} is not)"
        )
    samples = check_int("samples", samples, minimum=2)
    if model not in MODELS:
        raise ValueError(f"Invalid model: {model!r} (choose from {', '.join(MODELS)})")
    if model != "first_order":
        raise ValueError(
            f"Invalid model: {model!r} (estimated moments give the first-order model only: the "
            "second-order and curvature corrections need the Jacobian of the mean direction)"
        )
    noise = getattr(method, "noise", None)
    if noise is not None and not noise.finite_variance and not method.bounded:
        raise ValueError(
            f"Invalid moments: 'estimated' ({noise!r} has infinite variance and this direction "
            "is not clipped or normalised, so its covariance does not exist and a sample "
            "covariance does not converge; clip or normalise the method (clip=, normalize=), "
            "or use DSignSGD, or a Lévy-driven model for heavy tails)"
        )
    d = problem.dim

    def sampler(x: torch.Tensor, rng) -> torch.Tensor:
        return torch.stack([method.direction(problem, x, rng) for _ in range(samples)])

    def unavailable(x, eta) -> NoReturn:
        raise ValueError(
            "Invalid use: an estimated-moments SDE draws its moments from the run's random "
            "source; integrate it with sdeopt.dynamics.solve"
        )

    return SDE(
        d,
        drift_fn=unavailable,
        diffusion_fn=unavailable,
        noise_type="general",
        brownian_dim=samples,
        lr=method.lr,
        schedule=method.schedule,
        model=model,
        problem=problem,
        config={
            "method": method.config(),
            "model": model,
            "moments": "estimated",
            "samples": samples,
        },
        sampler=sampler,
    )


def estimated_step(sde: SDE, x: torch.Tensor, eta: float, h: float, rng) -> torch.Tensor:
    """One Euler step of size h of an estimated-moments SDE (module docstring), (B, d)."""
    assert sde.sampler is not None
    u = sde.sampler(x, rng)  # (S, B, d)
    s = u.shape[0]
    mean = u.mean(dim=0)  # (B, d)
    z = rng.normal(s)  # (B, S)
    noise = torch.einsum("sbd,bs->bd", u - mean, z) / math.sqrt(s - 1)  # (B, d)
    kappa = max(1.0 - h / (sde.lr * s), 0.0)
    scale = eta * math.sqrt(h * sde.lr * kappa)
    return x - (h * eta) * mean + scale * noise
