"""Structured covariances: a diagonal plus signed low-rank terms, applied without a d x d matrix.

Compressors (``Compressor.cov``, ``noisy_cov``) and noise laws (``Noise.worker_cov``) describe
their covariances in this form; the SDE builders sum the workers' terms and take a square root
that keeps the structure (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class StructuredCov:
    r"""A covariance in O(d) form:
    :math:`\operatorname{diag}(\mathrm{diag}) + \sum_r \mathrm{sign}_r\, u_r u_r^\top`.

    Attributes:
        diag: (..., d) diagonal part.
        factors: (..., d, r) low-rank factors :math:`u_r` (r may be 0).
        signs: (r,) tuple of +1.0 / -1.0.
    """

    diag: torch.Tensor
    factors: torch.Tensor
    signs: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.factors.shape[-1] != len(self.signs):
            raise ValueError(
                f"Invalid signs: {self.signs!r} (factors have rank {self.factors.shape[-1]})"
            )
        if self.factors.shape[-2] != self.diag.shape[-1]:
            raise ValueError(
                f"Invalid factors: shape {tuple(self.factors.shape)} does not match "
                f"diag of shape {tuple(self.diag.shape)}"
            )

    @classmethod
    def diagonal(cls, diag: torch.Tensor) -> StructuredCov:
        r"""A purely diagonal covariance :math:`\operatorname{diag}(\mathrm{diag})` (rank-0 low-rank
        part)."""
        factors = diag.new_zeros((*diag.shape, 0))  # (..., d, 0)
        return cls(diag=diag, factors=factors, signs=())

    @property
    def rank(self) -> int:
        """:math:`r`, the number of low-rank terms."""
        return len(self.signs)

    def _signs(self) -> torch.Tensor:
        return torch.tensor(self.signs, dtype=self.diag.dtype, device=self.diag.device)  # (r,)

    def matvec(self, w: torch.Tensor) -> torch.Tensor:
        r""":math:`\operatorname{Cov}\, w` for w (..., d), in O(d r)."""
        proj = (self.factors * w.unsqueeze(-1)).sum(-2) * self._signs()  # (..., r)
        return self.diag * w + (self.factors * proj.unsqueeze(-2)).sum(-1)

    def trace(self) -> torch.Tensor:
        r""":math:`\operatorname{tr} \operatorname{Cov}`, (...,); for an unbiased compressor this is
        :math:`\mathbb{E}\|C(v) - v\|^2`."""
        return self.diag.sum(-1) + (self.factors.square().sum(-2) * self._signs()).sum(-1)

    def dense(self) -> torch.Tensor:
        """The full (..., d, d) matrix, for tests and small d only."""
        signed = self.factors * self._signs()  # (..., d, r)
        return torch.diag_embed(self.diag) + signed @ self.factors.transpose(-1, -2)


@dataclass(frozen=True)
class NoiseFactor:
    r""":math:`\operatorname{Cov} Z_i = F_i(x) F_i(x)^\top` as an operator: an SDE applies
    :math:`F_i` to a Brownian motion of dimension ``rank`` per shard without forming it.

    Attributes:
        shards: S, the number of distinct laws (N, or 1 when every worker's law is the same).
        rank: r, the columns of each :math:`F_i`.
        apply: (x (B, d), w (B, S, r)) -> :math:`F_i w_i`, (B, S, d).
        factors: x (B, d) -> the explicit :math:`F_i`, (B, S, d, r) (tests, dense fallbacks).
        diag: x (B, d) -> :math:`\operatorname{diag}(F_i F_i^\top)`, (B, S, d), without forming
            :math:`F_i` (what a compressor's ``factored_noisy_cov`` needs), or None.
    """

    shards: int
    rank: int
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    factors: Callable[[torch.Tensor], torch.Tensor]
    diag: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True, eq=False)
class FactoredCov:
    r""":math:`\operatorname{diag}(\mathrm{diag}) + a^2 F F^\top - u u^\top`, with F the noise's
    factor (``NoiseFactor``) kept as an operator: a compressor's covariance on noise given that
    way (``Compressor.factored_noisy_cov``).

    Attributes:
        diag: (B, S, d).
        down: u, (B, S, d), the one negative rank-one term.
        factor_scale: a, the number F is multiplied by.
    """

    diag: torch.Tensor
    down: torch.Tensor
    factor_scale: float


@dataclass(frozen=True)
class CoordinateLaw:
    r"""The law of a noise with independent coordinates: :math:`Z_{ij} = \sigma_i T_{ij}`, the
    :math:`T_{ij}` i.i.d. of one standard law with closed-form partial moments.

    What a compressor whose covariance is nonlinear in its input needs to take
    :math:`\mathbb E_Z` of it exactly (``Natural.noisy_cov``): the covariance alone does not
    determine :math:`\mathbb E_Z h(g + Z)` for a nonlinear h.

    Attributes:
        scales: :math:`\sigma_i`, broadcastable to (B, N, 1): (1, N or 1, 1) for fixed scales,
            (B, N or 1, 1) for state-dependent ones (affine variance).
        partial_moments: (lo, hi) -> :math:`(P, \mathbb E[T 1_I], \mathbb E[T^2 1_I])` over
            :math:`I = [\mathrm{lo}, \mathrm{hi})`, elementwise.
        t_max: beyond :math:`|T| > t_{\max}` the law holds a share below 1e-12 of its second
            moment (what a quadrature over :math:`|T| \le t_{\max}` may ignore).
    """

    scales: torch.Tensor
    partial_moments: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]
    t_max: float
