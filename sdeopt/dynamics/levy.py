r"""The Lévy model: DSGD and DCSGD under heavy-tailed noise as an SDE driven by an
:math:`\alpha`-stable Lévy process (docs/models.md, "The Lévy model").

Under noise without a variance (``SymmetricStable`` with :math:`\alpha < 2`, ``StudentT`` with
:math:`\nu < 2`) the central limit theorem behind the Brownian models fails; the generalised one
gives, on the time axis :math:`t_k = k\eta`,

.. math::

    dX_t = -\eta_t \nabla f(X_t)\,dt + \eta_t \sqrt{\eta}\, S_C(X_t)^{1/2} dW_t
        + \eta_t\, \eta^{1 - 1/\alpha} s\, dL^\alpha_t,

with :math:`L^\alpha` a Lévy process of i.i.d. standard symmetric :math:`\alpha`-stable
coordinates (:math:`\mathbb E e^{iuL_t} = e^{-t|u|^\alpha}`), s the scale of the workers' average
noise (``Noise.stable_limit``; RandK multiplies it by :math:`(d/k)^{1-1/\alpha}`) and
:math:`S_C` the covariance RandK adds to the exact gradients (zero without compression).

Şimşekli, Sagun & Gürbüzbalaban, ICML 2019; Protter & Talay, Ann. Probab. 25(1), 1997 (the
Euler scheme for Lévy-driven SDEs).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from sdeopt._validation import check_in_range, check_nonnegative
from sdeopt.compressors import Identity, RandK
from sdeopt.discrete.base import Method
from sdeopt.discrete.dcsgd import DCSGD
from sdeopt.dynamics import dcsgd
from sdeopt.dynamics.sde import SDE, Diagonal, Diffusion
from sdeopt.noise import Gaussian
from sdeopt.problems import Problem, Quadratic

#: The model's name in ``sde_of``.
MODEL = "levy"
#: The schemes of a ``LevySDE``.
LEVY_SCHEMES = ("euler", "exact")


@dataclass(kw_only=True)
class LevySDE(SDE):
    r""":math:`dX = b\,dt + G\,dW + \eta_t\, c\, dL^\alpha`: an SDE plus an additive symmetric
    :math:`\alpha`-stable driver with i.i.d. coordinates.

    Its attributes are ``SDE``'s and those below.

    Attributes:
        alpha: :math:`\alpha \in (0, 2]` (:math:`L^2 = \sqrt 2\, W`).
        jump_scale: :math:`c \ge 0`; at schedule factor :math:`\eta_t` the driver's
            coefficient is :math:`\eta_t c`.
        brownian: False when the model has no Brownian part (G = 0): the solvers then draw no
            normal increments.
        linear: (rate :math:`\lambda` (d,), center :math:`x^*` (d,)) when the drift is exactly
            :math:`-\eta_t \lambda \odot (x - x^*)` (a diagonal quadratic), else None: the
            ``"exact"`` scheme needs it.

    Solved by ``solve(..., scheme="euler")`` (increments :math:`h^{1/\alpha} S`, S standard
    stable; weak order 1 for smooth drifts, Protter & Talay 1997) or ``scheme="exact"`` (the
    stable Ornstein–Uhlenbeck step: exact in law at any step size).

    Example:
        >>> import sdeopt as so
        >>> opt = so.discrete.DSGD(lr=0.05, n_workers=4,
        ...                        noise=so.noise.SymmetricStable(alpha=1.5, scale=0.5))
        >>> sde = so.dynamics.sde_of(opt, so.problems.Quadratic(diag=[1.0, 4.0]), model="levy")
        >>> path = so.dynamics.solve(sde, [1.0, 1.0], n_steps=100, n_runs=1000, scheme="exact")
    """

    alpha: float
    jump_scale: float
    brownian: bool = True
    linear: tuple[torch.Tensor, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.alpha = check_in_range("alpha", self.alpha, 0.0, 2.0, closed="right")
        self.jump_scale = check_nonnegative("jump_scale", self.jump_scale)


def sde(method: Method, problem: Problem) -> LevySDE:
    """The ``"levy"`` model of DSGD or DCSGD (Identity or RandK) under heavy-tailed noise.

    Raises ``ValueError`` with the reason for anything else: noise with finite variance (the
    Brownian models apply), StudentT with nu >= 2, clipped or normalised steps (their direction
    has all moments), other compressors (no derivation here).
    """
    if not isinstance(method, DCSGD):
        raise ValueError(
            f"Invalid model: {MODEL!r} (the Lévy model exists for DSGD and DCSGD, not "
            f"{type(method).__name__})"
        )
    if method.bounded:
        raise ValueError(
            f"Invalid model: {MODEL!r} (a clipped or normalised direction is bounded, so it has "
            "every moment and the Brownian models apply, not a Lévy-driven SDE)"
        )
    comp = method.compressor
    if not isinstance(comp, (Identity, RandK)):
        raise ValueError(
            f"Invalid model: {MODEL!r} (derived for the Identity and RandK compressors only, "
            f"not {type(comp).__name__})"
        )
    n, d, lr = method.n_workers, problem.dim, method.lr
    alpha, scale, exact = method.noise.stable_limit(n)
    compressed = isinstance(comp, RandK) and comp.k < d
    if compressed:
        assert isinstance(comp, RandK)  # narrowed by compressed
        # Each worker's noise is thinned to k of d coordinates and scaled by d/k: tail constant
        # (k/d)(d/k)^alpha times the uncompressed one (docs/models.md).
        scale *= (d / comp.k) ** (1.0 - 1.0 / alpha)
        exact = False
    brownian_part = None
    if compressed:
        # The compression noise of the exact gradients: DCSGD's covariance without noise.
        brownian_part = dcsgd.moments(dataclasses.replace(method, noise=Gaussian(0.0)), problem)
    sqrt_lr = math.sqrt(lr)

    def drift(x: torch.Tensor, eta: float) -> torch.Tensor:
        return problem.grad(x).mul_(-eta)

    def diffusion(x: torch.Tensor, eta: float) -> Diffusion:
        if brownian_part is None:
            return Diagonal(x.new_zeros((1, 1)).expand_as(x))
        return brownian_part.diffusion(x, eta * sqrt_lr)

    linear = None
    if brownian_part is None and isinstance(problem, Quadratic) and problem.diag is not None:
        linear = (problem.diag, problem.center)
    return LevySDE(
        dim=d,
        drift_fn=drift,
        diffusion_fn=diffusion,
        noise_type="diagonal" if brownian_part is None else brownian_part.noise_type,
        brownian_dim=d if brownian_part is None else brownian_part.brownian_dim,
        lr=lr,
        schedule=method.schedule,
        model=MODEL,
        problem=problem,
        config={"method": method.config(), "model": MODEL, "exact_in_law": exact},
        alpha=alpha,
        jump_scale=scale * lr ** (1.0 - 1.0 / alpha),
        brownian=brownian_part is not None,
        linear=linear,
    )


def stable_ou_step(alpha: float, rate: torch.Tensor, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The exact step of :math:`dX = -\lambda (X - x^*)\,dt + dL^\alpha` over h, coordinate by
    coordinate: :math:`X_{t+h} - x^* = e^{-\lambda h} (X_t - x^*) + \rho\, S`, S standard stable,

    .. math::

        \rho = \Big(\int_0^h e^{-\alpha\lambda s} ds\Big)^{1/\alpha}
             = \Big(\frac{1 - e^{-\alpha\lambda h}}{\alpha\lambda}\Big)^{1/\alpha}

    (the stochastic integral :math:`\int e^{-\lambda(h-s)} dL_s` of a deterministic function is
    stable with scale :math:`\|e^{-\lambda(h - \cdot)}\|_{L^\alpha}`; Samorodnitsky & Taqqu 1994,
    Prop. 3.4.1). Returns (decay :math:`e^{-\lambda h}`, :math:`\rho`), each shaped like rate;
    ``expm1`` keeps :math:`\rho` accurate for small :math:`\lambda h`.
    """
    decay = torch.exp(-rate * h)
    rho = (torch.expm1(-alpha * rate * h).neg_() / (alpha * rate)).pow_(1.0 / alpha)
    return decay, rho


def euler_step(
    sde: LevySDE, x: torch.Tensor, eta: float, h: float, dw: torch.Tensor | None, s: torch.Tensor
) -> torch.Tensor:
    r""":math:`x + b\,h + G\,dW + \eta_t c\, h^{1/\alpha} S` (S standard stable, (B, d); dW
    (B, m) or None without a Brownian part)."""
    out = torch.add(x, sde.drift_at(x, eta), alpha=h)
    if dw is not None:
        out.add_(sde.diffusion_at(x, eta).apply(dw))
    return out.add_(s, alpha=eta * sde.jump_scale * h ** (1.0 / sde.alpha))


def check_scheme(sde: LevySDE, scheme: str) -> None:
    """Raise ``ValueError`` unless ``scheme`` applies to ``sde``."""
    if scheme not in LEVY_SCHEMES:
        raise ValueError(
            f"Invalid scheme: {scheme!r} (a Lévy-driven SDE is solved by "
            f"{' or '.join(repr(s) for s in LEVY_SCHEMES)})"
        )
    if scheme == "exact" and (sde.linear is None or sde.brownian):
        raise ValueError(
            "Invalid scheme: 'exact' (the stable Ornstein–Uhlenbeck step needs a linear drift "
            "-λ(x - x*) with additive noise: DSGD or uncompressed DCSGD on a diagonal "
            "Quadratic; use 'euler')"
        )
