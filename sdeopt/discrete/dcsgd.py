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

    Update, with :math:`g_i = \nabla f_i(x_k) + Z_i` the stochastic gradient of worker i and
    :math:`C_i` independent draws of the compressor:

    .. math::

        v_k = \frac{1}{N} \sum_i C_i(\kappa(g_i)), \qquad x_{k+1} = x_k - \eta\,\eta_k u_k,

    where :math:`u_k = v_k`, or with (global, server-side) clipping at level :math:`\lambda`
    :math:`u_k = \min(1, \lambda / \|v_k\|)\, v_k`, and with normalisation
    :math:`u_k = v_k / (a + b \|v_k\|)` (clipping first when both are given). Each worker
    clips its own stochastic gradient before compressing it: :math:`\kappa(g) = g` by default,
    :math:`\kappa(g) = \min(1, \tau / \|g\|)\, g` with per-worker norm clipping
    (``worker_clip`` :math:`= \tau`), or :math:`\kappa(g)_j = \max(-\tau, \min(\tau, g_j))`
    with coordinate-wise clipping (``coord_clip`` :math:`= \tau`).

    SDE models (docs/models.md; built in ``sdeopt.dynamics``): for an unbiased compressor,
    :math:`\bar u = \nabla f` and

    .. math::

        S = \frac{1}{N^2} \sum_i \left(\mathbb{E}_Z \operatorname{Cov}_C[C_i(\nabla f_i + Z_i)]
        + \Sigma_i\right)

    The first-order model is :math:`dX = -\eta_t \nabla f\,dt + \eta_t \sqrt{\eta}\, S^{1/2} dW` (weak
    order 1), second order and curvature-corrected drifts
    :math:`-\eta_t \bar u \mp (\eta\,\eta_t^2/2)(\nabla \bar u)\bar u`. For RandK and
    :math:`\Sigma_i = \sigma_i^2 I`,

    .. math::

        S = \frac{1}{N^2} \sum_i \left[c_i \left(d \operatorname{diag}(\nabla f_i)^2
        - \nabla f_i \nabla f_i^\top\right) + (1 + \omega_i) \sigma_i^2 I\right],
        \qquad c_i = \frac{d - k}{k (d - 1)}.

    No Brownian SDE exists for infinite-variance noise.

    Shapes: x (B, d); worker gradients (B, N, d).

    Args:
        compressor: :math:`C`, applied per worker after the noise (default: no compression).
        normalize: :math:`(a, b)` with :math:`a, b \ge 0` and :math:`a + b > 0`, or None.
        clip: :math:`\lambda > 0` (global clipping of the average), or None.
        worker_clip: :math:`\tau > 0`, each worker's gradient clipped to norm :math:`\tau`
            before compression, or None.
        coord_clip: :math:`\tau > 0`, each coordinate of each worker's gradient clipped to
            :math:`[-\tau, \tau]` before compression, or None (not with ``worker_clip``).

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
    worker_clip: float | None = None
    coord_clip: float | None = None

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
        for name in ("clip", "worker_clip", "coord_clip"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_positive(name, value))
        if self.worker_clip is not None and self.coord_clip is not None:
            raise ValueError(
                f"Invalid coord_clip: {self.coord_clip!r} (give one worker-side clipping: "
                f"worker_clip = {self.worker_clip!r} is set too)"
            )

    @property
    def bounded(self) -> bool:
        """Clipped (at any stage) or normalised: the direction has all moments."""
        return self.clip is not None or self.normalize is not None or self.worker_clipped

    @property
    def worker_clipped(self) -> bool:
        """Each worker clips its gradient (``worker_clip`` or ``coord_clip``)."""
        return self.worker_clip is not None or self.coord_clip is not None

    @property
    def couplable(self) -> bool:
        """One standard (B, d) draw per step (normal, or stable: ``increment_law``), entering
        linearly: the uncompressed, unclipped average of workers whose noise law draws its mean
        as one scaled standard draw."""
        return (
            self.shortcuts
            and isinstance(self.compressor, Identity)
            and self.clip is None
            and self.normalize is None
            and not self.worker_clipped
            and self.noise.couplable
        )

    @property
    def increment_law(self) -> dict:
        """The law of the kept draw: the noise's (normal, or stable for SymmetricStable)."""
        return self.noise.increment_law

    def check_problem(self, problem: Problem) -> None:
        super().check_problem(problem)
        self.compressor.check_dim(problem.dim)

    def direction(self, problem: Problem, x: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        n = self.n_workers
        if self.shortcuts and isinstance(self.compressor, Identity) and not self.worker_clipped:
            v = self.noise.oracle_mean(problem, x, n, rng)  # (B, d)
        else:
            g = self.noise.oracle(problem, x, n, rng)  # (B, N, d)
            if self.worker_clip is not None:
                norm = torch.linalg.vector_norm(g, dim=-1, keepdim=True)  # (B, N, 1)
                g = g * torch.clamp(self.worker_clip / norm, max=1.0)
            elif self.coord_clip is not None:
                g = g.clamp(-self.coord_clip, self.coord_clip)
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
