"""Distributed compressed SGD (DCSGD), with optional normalised and clipped steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sdeopt._validation import check_nonnegative, check_positive
from sdeopt.compressors import Compressor, Identity
from sdeopt.discrete.base import METHODS, DirectionMethod
from sdeopt.problems import Problem
from sdeopt.random import RandomSource


@METHODS.register
@dataclass(frozen=True, kw_only=True)
class DCSGD(DirectionMethod):
    r"""Distributed compressed SGD: every worker sends a compressed stochastic gradient.

    Update, with g_i = ∇f_i(x_k) + Z_i the stochastic gradient of worker i and
    C_i independent draws of the compressor:

        v_k = (1/N) Σ_i C_i(g_i),     x_{k+1} = x_k - eta eta_k u_k,

    where u_k = v_k, or with clipping at level λ ``u_k = min(1, λ/||v_k||) v_k``, and with
    normalisation ``u_k = v_k / (a + b ||v_k||)`` (clipping first when both are given).

    SDE models (docs/models.md; built in ``sdeopt.dynamics``): for an unbiased compressor,
    ū = ∇f and S = (1/N²) Σ_i (E_Z Cov_C[C_i(∇f + Z_i)] + Σ_i); first order
    dX = -eta_t ∇f dt + eta_t sqrt(eta) S^{1/2} dW (weak order 1), second order and
    curvature-corrected drifts -eta_t ū ∓ (eta eta_t²/2)(∇ū)ū. For RandK and Σ_i = σ_i² I,
    S = (1/N²) Σ_i [c_i (d diag(∇f)² - ∇f∇fᵀ) + (1+ω_i) σ_i² I], c_i = (d-k)/(k(d-1)).
    No Brownian SDE exists for infinite-variance noise.

    Shapes: x (B, d); worker gradients (B, N, d).

    Args:
        compressor: C, applied per worker after the noise (default: no compression).
        normalize: (a, b) with a, b >= 0 and a + b > 0, or None.
        clip: λ > 0, or None.

    References:
        Compagnoni et al., ICML 2026, arXiv 2506.00181 v2 (DCSGD and its SDEs, curvature
        correction); docs/models.md.
        Li, Tai, E, "Stochastic modified equations and dynamics of stochastic gradient
        algorithms I", JMLR 2019.

    Example:
        >>> import sdeopt as so
        >>> opt = so.discrete.DCSGD(lr=0.01, n_workers=4, noise=so.noise.Gaussian(1.0),
        ...                         compressor=so.compressors.RandK(k=2))
        >>> traj = so.discrete.simulate(opt, so.problems.Quadratic(diag=[1.0, 4.0, 9.0]),
        ...                             [1.0, 1.0, 1.0], n_steps=100, n_runs=1000)
    """

    compressor: Compressor = field(default_factory=Identity)
    normalize: tuple[float, float] | None = None
    clip: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.compressor, Compressor):
            raise ValueError(
                f"Invalid compressor: {self.compressor!r} (must be an sdeopt.compressors operator)"
            )
        if self.normalize is not None:
            if not (isinstance(self.normalize, (tuple, list)) and len(self.normalize) == 2):
                raise ValueError(
                    f"Invalid normalize: {self.normalize!r} (must be a pair (a, b) or None)"
                )
            a = check_nonnegative("normalize[0]", self.normalize[0])
            b = check_nonnegative("normalize[1]", self.normalize[1])
            if a + b == 0:
                raise ValueError(f"Invalid normalize: {self.normalize!r} (a + b must be > 0)")
            object.__setattr__(self, "normalize", (a, b))
        if self.clip is not None:
            check_positive("clip", self.clip)

    @property
    def couplable(self) -> bool:
        """One standard normal (B, d) draw per step, entering linearly: the uncompressed,
        unclipped average of workers whose noise law draws its mean as one scaled normal."""
        return (
            self.shortcuts
            and isinstance(self.compressor, Identity)
            and self.clip is None
            and self.normalize is None
            and self.noise.couplable
        )

    def check_problem(self, problem: Problem) -> None:
        super().check_problem(problem)
        self.compressor.check_dim(problem.dim)

    def direction(self, problem: Problem, x: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        n = self.n_workers
        if self.shortcuts and isinstance(self.compressor, Identity):
            v = self.noise.oracle_mean(problem, x, n, rng)  # (B, d)
        else:
            g = self.noise.oracle(problem, x, n, rng)  # (B, N, d)
            v = self.compressor.compress(g, rng).mean(dim=1)  # (B, d)
        if self.clip is not None:
            norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)  # (B, 1)
            v = v * torch.clamp(self.clip / norm, max=1.0)
        if self.normalize is not None:
            a, b = self.normalize
            denom = a + b * torch.linalg.vector_norm(v, dim=-1, keepdim=True)  # (B, 1)
            # a + b||v|| = 0 only for a = 0 and v = 0: the step is 0 there, not 0/0.
            v = v / torch.where(denom > 0, denom, torch.ones_like(denom))
        return v
