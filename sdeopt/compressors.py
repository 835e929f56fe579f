r"""Compression operators applied per worker, after the noise.

Every compressor maps a worker's vector :math:`v` (the last axis, length d) to :math:`C(v)` and
exposes

- ``unbiased``: whether :math:`\mathbb{E}\, C(v) = v`;
- ``omega(dim)``: the error constant of :math:`\mathbb{E}\|C(v) - v\|^2 \le \omega \|v\|^2`
  (the variance constant for unbiased compressors, ``1 - contraction`` for biased ones; see
  ``Compressor``);
- ``cov(v)``: the exact covariance :math:`\operatorname{Cov}[C(v)]` for a fixed v, as a
  ``StructuredCov`` (diagonal + signed low rank, applied in O(d r), never a dense
  :math:`d \times d` matrix);
- ``compress(v, rng)``: independent draws of :math:`C(v)` for every run and worker.

Example:
    >>> import torch
    >>> from sdeopt.random import RandomSource
    >>> comp = RandK(k=2)
    >>> v = torch.ones(4, 3, 10, dtype=torch.float64)      # (B, N, d)
    >>> out = comp.compress(v, RandomSource(0, 4))           # (B, N, d), 2 entries of 5.0 each
    >>> int((out != 0).sum(-1).max()), comp.omega(10)
    (2, 4.0)

References:
    Alistarh, Grubic, Li, Tomioka, Vojnovic. QSGD: Communication-efficient SGD via gradient
    quantization and encoding. NeurIPS 2017.
    Stich, Cordonnier, Jaggi. Sparsified SGD with memory. NeurIPS 2018.
    Horváth, Ho, Horváth, Sahu, Canini, Richtárik. Natural compression for distributed deep
    learning. arXiv:1905.10988, 2019.
    Beznosikov, Horváth, Richtárik, Safaryan. On biased compression for distributed learning.
    arXiv:2002.12410, 2020.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from sdeopt._validation import check_int
from sdeopt.covariance import CoordinateLaw, FactoredCov, StructuredCov
from sdeopt.random import RandomSource
from sdeopt.registry import Registry

#: RandK draws its subset by Floyd's algorithm (one integer draw per kept or dropped
#: coordinate) when min(k, d - k) is at most this, and by the k largest of d uniform keys
#: otherwise. The choice depends on (k, d) only, never on the batch size, so a run's result
#: does not depend on how many runs are drawn together.
FLOYD_MAX_DRAWS = 64


#: Compressors by class name: ``compressor = {type = ...}`` in configs.
COMPRESSORS: Registry = Registry("compressor")


class Compressor(ABC):
    r"""Base class: :math:`C` maps each worker's vector :math:`v` to a compressed one.

    ``omega(dim)`` has one meaning for every compressor: the smallest constant with
    :math:`\mathbb{E}\|C(v) - v\|^2 \le \omega \|v\|^2` for all
    :math:`v \in \mathbb{R}^{\mathrm{dim}}`. For an unbiased compressor this is the usual
    variance constant (:math:`\mathbb{E}\, C(v) = v`,
    :math:`\operatorname{Var} = \mathbb{E}\|C(v) - v\|^2`). For a biased one
    (``unbiased = False``) it is a contraction constant: :math:`\omega < 1` makes :math:`C` a
    :math:`\delta`-contraction with :math:`\delta = 1 - \omega` in the sense of Stich,
    Cordonnier, Jaggi (2018, Def. 2.1) (TopK: :math:`\omega = 1 - k/d`, :math:`\delta = k/d`),
    the class :math:`B^3(1/\delta)` of Beznosikov et al. (2020). Formulas that assume
    unbiasedness (the DCSGD SDE of docs/models.md) must check ``unbiased`` first; they must not
    read :math:`\omega` of a biased compressor as a variance.

    Concrete compressors are frozen, keyword-only dataclasses validated in ``__post_init__``.

    Attributes:
        unbiased: True when :math:`\mathbb{E}\, C(v) = v`.
    """

    unbiased: ClassVar[bool] = True

    @abstractmethod
    def omega(self, dim: int) -> float:
        r"""The error constant: :math:`\mathbb{E}\|C(v) - v\|^2 \le \omega \|v\|^2` for all
        :math:`v \in \mathbb{R}^{\mathrm{dim}}`."""

    @abstractmethod
    def compress(self, v: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """Args: v (B, N, d). Returns: :math:`C(v)`, (B, N, d), independently per run and worker."""

    @abstractmethod
    def cov(self, v: torch.Tensor) -> StructuredCov:
        r""":math:`\operatorname{Cov}[C(v)]` for fixed v (..., d), in diagonal + low-rank form."""

    def noisy_cov(
        self, grad: torch.Tensor, noise: StructuredCov, law: CoordinateLaw | None = None
    ) -> StructuredCov:
        r""":math:`\operatorname{Cov}[C(g + Z)]` over the compressor's draw and the noise, for
        :math:`Z` with :math:`\operatorname{Cov} Z = \Sigma` (``noise``, e.g. ``Noise.worker_cov``)
        and, where the noise gives it, the law of its coordinates (``law``,
        ``Noise.coordinate_law``: what a covariance nonlinear in v needs beyond :math:`\Sigma`).

        For an unbiased compressor this is :math:`\mathbb E_Z \mathrm{Cov}_C[C(g + Z)] + \Sigma`,
        the worker's share of the DCSGD SDE's diffusion (docs/models.md): the SDE builders take
        it from here, so a compressor that implements it has an SDE. The default refuses, with
        the reason: a biased compressor moves the drift (:math:`\mathbb{E}\, C(g + Z) \neq g`),
        and an unbiased one without this closed form has no model yet.

        Args:
            grad: worker gradients :math:`g`, (B, N or 1, d).
            noise: :math:`\Sigma`, diag (B or 1, N or 1, d) and factors (B or 1, N or 1, d, r).
            law: the coordinates' law, or None.
        Returns:
            A ``StructuredCov`` of shape (B, N or 1, d) (diag) and (B, N or 1, d, r) (factors).
        """
        if not self.unbiased:
            raise ValueError(
                f"Invalid compressor: {self!r} is biased (E C(∇f + Z) ≠ ∇f moves the drift), "
                "and no SDE model of biased compression is derived here"
            )
        raise ValueError(
            f"Invalid compressor: {self!r} (the SDE needs E_Z Cov_C[C(∇f + Z)] in closed form, "
            f"which {type(self).__name__} does not provide yet)"
        )

    def factored_noisy_cov(
        self, grad: torch.Tensor, factor_diag: torch.Tensor
    ) -> FactoredCov | None:
        r""":math:`\operatorname{Cov}[C(g + Z)]` for noise given as a factor,
        :math:`\operatorname{Cov} Z = F F^\top` with F kept as an operator (minibatch noise),
        in the form :math:`\operatorname{diag} + a^2 F F^\top - u u^\top` (``FactoredCov``), or None
        where the compressor's covariance does not take that form (then ``noisy_cov`` with F
        formed is used).

        Args:
            grad: worker gradients, (B, N or 1, d).
            factor_diag: :math:`\operatorname{diag}(F F^\top)`, (B, N or 1, d).
        """
        return None

    def check_dim(self, dim: int) -> None:
        """Raise ``ValueError`` if the compressor cannot act on vectors of length ``dim``."""

    def config(self) -> dict:
        """A JSON-able description (for dataset attrs): the type and every hyperparameter."""
        out = {"type": type(self).__name__}
        if dataclasses.is_dataclass(self):
            out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        return out


def _zero_cov(v: torch.Tensor) -> StructuredCov:
    """The covariance of a deterministic map: all zeros, (..., d) diagonal, rank 0."""
    return StructuredCov.diagonal(torch.zeros_like(v))  # (..., d)


@dataclass(frozen=True, kw_only=True)
class _KeepK(Compressor):
    """Compressors that keep k of the d coordinates (RandK, TopK): k validated once here."""

    k: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", check_int("k", self.k, minimum=1))

    def check_dim(self, dim: int) -> None:
        if not 1 <= self.k <= dim:
            raise ValueError(f"Invalid k: {self.k!r} (must satisfy 1 <= k <= d, and d = {dim})")


@COMPRESSORS.register
@dataclass(frozen=True, kw_only=True)
class Identity(Compressor):
    r"""No compression: :math:`C(v) = v`.

    :math:`\omega = 0` and :math:`\operatorname{Cov}[C(v)] = 0`; DCSGD with this compressor is
    DSGD.
    ``compress`` returns its input tensor itself, not a copy.
    """

    unbiased: ClassVar[bool] = True

    def omega(self, dim: int) -> float:
        return 0.0

    def compress(self, v: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        return v

    def cov(self, v: torch.Tensor) -> StructuredCov:
        return _zero_cov(v)

    def noisy_cov(
        self, grad: torch.Tensor, noise: StructuredCov, law: CoordinateLaw | None = None
    ) -> StructuredCov:
        r""":math:`\operatorname{Cov} Z = \Sigma` itself."""
        return noise


@COMPRESSORS.register
@dataclass(frozen=True, kw_only=True)
class RandK(_KeepK):
    r"""Random sparsification: keep k uniformly chosen coordinates, scaled by :math:`d/k`.

    :math:`C(v) = (d/k) \sum_{j \in S} v_j e_j` with S a uniformly random k-subset of
    :math:`\{1, \dots, d\}`, drawn independently for every run and worker. Unbiased, with

    .. math::

        \omega &= d/k - 1 \qquad
            (\text{equality: } \mathbb{E}\|C(v) - v\|^2 = (d/k - 1) \|v\|^2), \\
        \operatorname{Cov}[C(v)] &= c\, (d \operatorname{diag}(v)^2 - v v^\top), \qquad
            c = \frac{d - k}{k (d - 1)} \quad (c = 0 \text{ when } d = 1),

    from :math:`P(j \in S) = k/d` and :math:`P(i, j \in S) = k(k-1)/(d(d-1))`. ``cov`` returns
    it as ``diag`` :math:`= c\, d\, v^2` and one factor :math:`\sqrt{c}\, v` with sign -1.

    Sampling: Floyd's algorithm draws the :math:`\min(k, d-k)` kept (or dropped) coordinates
    with one integer draw each, vectorised over all runs and workers; for :math:`\min(k, d-k)`
    above ``FLOYD_MAX_DRAWS`` the subset is the k largest of d uniform keys instead.

    Args:
        k: coordinates kept, an integer >= 1 (and <= d, checked by ``check_dim``).

    References:
        Stich, Cordonnier, Jaggi, NeurIPS 2018 (rand-k); Beznosikov et al. 2020, Def. 2.
        Floyd's sampling: Bentley & Floyd, "Programming pearls: a sample of brilliance",
        CACM 30(9), 1987.
    """

    unbiased: ClassVar[bool] = True

    def omega(self, dim: int) -> float:
        self.check_dim(dim)
        return dim / self.k - 1.0

    def _c(self, dim: int) -> float:
        """c = (d - k) / (k (d - 1)), 0 for d = 1 (then k = 1 and C is the identity)."""
        return 0.0 if dim == 1 else (dim - self.k) / (self.k * (dim - 1))

    def keep_mask(self, rng: RandomSource, shape: tuple[int, ...], dim: int) -> torch.Tensor:
        r"""A boolean mask of shape (B, \*shape, dim) on ``rng.device`` with exactly k True per row.

        Each row's True set is a uniform k-subset of the d coordinates, independent across
        rows (runs and workers).
        """
        return self.keep_weights(rng, shape, dim, torch.float32, 1.0) > 0

    def keep_weights(
        self, rng: RandomSource, shape: tuple[int, ...], dim: int, dtype: torch.dtype, value: float
    ) -> torch.Tensor:
        r"""``value`` on a uniform k-subset of each row and 0 elsewhere, shape (B, \*shape, dim).

        The same subsets as ``keep_mask`` from the same random numbers, as floats: multiplying
        by it measured ~3x faster than ``torch.where`` on a boolean mask on the CPU.
        """
        self.check_dim(dim)
        k = self.k
        m = min(k, dim - k)  # draw the smaller of the kept / dropped sets
        if m > FLOYD_MAX_DRAWS:
            keys = rng.uniform(*shape, dim)  # (B, *shape, d)
            idx = keys.topk(k, dim=-1).indices  # (B, *shape, k)
            return torch.zeros(keys.shape, dtype=dtype, device=keys.device).scatter_(-1, idx, value)
        drawn = (
            0.0 if m < k else value
        )  # Floyd marks the drawn set; the kept one is it or its complement
        weights = torch.full(
            (rng.n_runs, *shape, dim), value - drawn, dtype=dtype, device=rng.device
        )
        flat = weights.view(-1)  # rows of d; 1-D index_fill_ measured 4x faster than scatter_
        row_start = torch.arange(0, flat.numel(), dim, device=rng.device)  # (B * prod(shape),)
        # Floyd: for j = d-m .. d-1 draw t uniform in {0..j}; take t, or j if t is already
        # taken. Every m-subset comes out with probability 1/binom(d, m).
        for j in range(dim - m, dim):
            t = rng.integers(j + 1, *shape, 1).view(-1)  # (B * prod(shape),)
            if j > dim - m:
                t = torch.where(flat.index_select(0, row_start + t) == drawn, j, t)
            flat.index_fill_(0, row_start + t, drawn)
        return weights

    def compress(self, v: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        dim = v.shape[-1]
        return v * self.keep_weights(
            rng, tuple(v.shape[1:-1]), dim, v.dtype, dim / self.k
        )  # (B, N, d)

    def cov(self, v: torch.Tensor) -> StructuredCov:
        dim = v.shape[-1]
        self.check_dim(dim)
        c = self._c(dim)
        diag = (c * dim) * v.square()  # (..., d)
        factors = (math.sqrt(c) * v).unsqueeze(-1)  # (..., d, 1)
        return StructuredCov(diag=diag, factors=factors, signs=(-1.0,))

    def noisy_cov(
        self, grad: torch.Tensor, noise: StructuredCov, law: CoordinateLaw | None = None
    ) -> StructuredCov:
        r""":math:`c\, (d \operatorname{diag}(g^2 + \operatorname{diag}\Sigma) - g g^\top - \Sigma)
        + \Sigma`.

        :math:`\mathbb{E}_Z` of ``cov(g + Z)`` (:math:`\mathbb{E}\,(g + Z)^2 = g^2 +
        \operatorname{diag}\Sigma`, :math:`\mathbb{E}\,(g + Z)(g + Z)^\top = g g^\top + \Sigma`)
        plus :math:`\operatorname{Cov} Z`. With :math:`\Sigma = \operatorname{diag}(D) +
        \sum_r s_r f_r f_r^\top` this is the diagonal :math:`c\, d\, (g^2 + \sum_r s_r f_r^2) +
        (d/k) D` (:math:`c\, d - c + 1 = d/k`), the term :math:`-c\, g g^\top` and the noise's own
        factors scaled by :math:`\sqrt{1 - c}`.
        """
        dim = grad.shape[-1]
        self.check_dim(dim)
        c = self._c(dim)
        diag = (c * dim) * grad.square() + (dim / self.k) * noise.diag  # (B, N or 1, d)
        factors = (math.sqrt(c) * grad).unsqueeze(-1)  # (B, N or 1, d, 1)
        if not noise.signs:
            return StructuredCov(diag=diag, factors=factors, signs=(-1.0,))
        f = noise.factors  # (B or 1, N or 1, d, r)
        diag = diag + (c * dim) * (f.square() * noise._signs()).sum(-1)
        shape = torch.broadcast_shapes(factors.shape[:-1], f.shape[:-1])
        stacked = torch.cat(
            [factors.expand(*shape, 1), math.sqrt(1.0 - c) * f.expand(*shape, f.shape[-1])], -1
        )  # (B, N or 1, d, 1 + r)
        return StructuredCov(diag=diag, factors=stacked, signs=(-1.0, *noise.signs))

    def factored_noisy_cov(self, grad: torch.Tensor, factor_diag: torch.Tensor) -> FactoredCov:
        r"""``noisy_cov`` for :math:`\Sigma = F F^\top` with F an operator:
        :math:`\operatorname{diag}(c\, d\, (g^2 + \operatorname{diag} F F^\top)) + (1 - c) F F^\top
        - c\, g g^\top`."""
        dim = grad.shape[-1]
        self.check_dim(dim)
        c = self._c(dim)
        return FactoredCov(
            diag=(c * dim) * (grad.square() + factor_diag),
            down=math.sqrt(c) * grad,
            factor_scale=math.sqrt(1.0 - c),
        )


@COMPRESSORS.register
@dataclass(frozen=True, kw_only=True)
class Natural(Compressor):
    r"""Natural compression: stochastic rounding to a neighbouring signed power of two.

    For :math:`v_j \neq 0` with :math:`2^a \le |v_j| < 2^{a+1}`,

    .. math::

        C(v)_j = \begin{cases}
            \operatorname{sign}(v_j)\, 2^{a+1} & \text{with probability } p_j = |v_j|/2^a - 1, \\
            \operatorname{sign}(v_j)\, 2^a & \text{otherwise;}
        \end{cases}
        \qquad C(v)_j = 0 \text{ if } v_j = 0,

    independently per coordinate. Unbiased, with diagonal covariance

    .. math::

        \operatorname{Var} C(v)_j = (2^{a+1} - |v_j|)(|v_j| - 2^a),

    and :math:`\omega = \max_{t \in [1, 2]} (2 - t)(t - 1)/t^2 = 1/8` (attained at
    :math:`t = 4/3`), for every d. The power of two comes from ``torch.frexp``
    (:math:`v = m\, 2^e`, :math:`|m| \in [1/2, 1)`): :math:`2^a = 2^{e-1} = |v|/(2|m|)` and
    :math:`p = 2|m| - 1` are both exact in floating point.

    References:
        Horváth, Ho, Horváth, Sahu, Canini, Richtárik, arXiv:1905.10988 (2019), Def. 1 and
        Thm. 1 (omega = 1/8).
    """

    unbiased: ClassVar[bool] = True

    def omega(self, dim: int) -> float:
        return 0.125

    @staticmethod
    def _split(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sign(v) 2^a, 2|m|): the signed lower power of two, and 1 + the round-up probability.

        ``2|m|`` is 0 where v = 0 (then the lower power is 0 too).
        """
        mantissa, _ = torch.frexp(v)  # v = mantissa * 2^e, |mantissa| in [1/2, 1), 0 for v = 0
        two_m = mantissa.abs().mul_(2.0)  # (..., d), in [1, 2), or 0 where v = 0
        low = v / two_m.clamp_min(0.5)  # sign(v) 2^{e-1}, exact; 0 where v = 0
        return low, two_m

    def compress(self, v: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        low, two_m = self._split(v)  # (B, N, d) each
        # round up iff u < p = 2|m| - 1 (exact; p = -1 where v = 0, so zeros stay zero)
        up = rng.uniform(*v.shape[1:]) < two_m.sub_(1.0)  # (B, N, d)
        return low.mul_(up.to(low.dtype).add_(1.0))

    def cov(self, v: torch.Tensor) -> StructuredCov:
        low, two_m = self._split(v)
        p = (two_m - 1.0).clamp_min_(0.0)  # round-up probability, 0 where v = 0
        # (2^{a+1} - |v|)(|v| - 2^a) = 2^{2a} (1 - p) p with |v| = 2^a (1 + p).
        return StructuredCov.diagonal(low.square() * p * (1.0 - p))  # (..., d)

    def noisy_cov(
        self, grad: torch.Tensor, noise: StructuredCov, law: CoordinateLaw | None = None
    ) -> StructuredCov:
        r""":math:`\operatorname{diag}\big(\mathbb E_Z \operatorname{Var} C(g + Z)_j\big) + \Sigma`,
        exact for noise with independent coordinates :math:`Z_j = \sigma T_j` of a law with
        closed-form partial moments (``law``: Gaussian, Student-t with :math:`\nu > 2`, affine
        variance).

        :math:`C` rounds each coordinate independently, so :math:`\operatorname{Cov}_C` is
        diagonal and its :math:`\mathbb E_Z` needs only the marginal of :math:`v = g_j + \sigma T`.
        On :math:`|v| \in [L, 2L)`, :math:`L = 2^a`,
        :math:`\operatorname{Var} C(v) = (2L - |v|)(|v| - L) = L^2/4 - (|v| - 3L/2)^2`, a
        quadratic in T on each side of 0, so

        .. math::

            \mathbb E_T \operatorname{Var} C(v) = \sum_a \sum_{\pm}
                \Big(\tfrac{L^2}{4} P - \big(c^2 P + 2 c \sigma M_1 + \sigma^2 M_2\big)\Big),
            \qquad c = g_j \mp \tfrac32 L,

        with :math:`(P, M_1, M_2)` the partial moments of T over the interval where
        :math:`\pm v \in [L, 2L)`. The sum runs over the dyadic intervals from
        :math:`2^{\lfloor \log_2 \ell \rfloor}`, :math:`\ell = \max(|g_j| - \sigma t_{\max},
        2^{-16} \sigma)`, up to past :math:`|g_j| + \sigma t_{\max}`: the intervals below hold
        at most :math:`\ell^2/16 \le 2^{-36} \sigma^2` of variance (:math:`\operatorname{Var}
        C \le L^2/4` there), those above a share below 1e-12 of the law's second moment
        (docs/models.md). Coordinates with :math:`\sigma = 0` take ``cov(g)`` itself.

        Raises ValueError without ``law`` (minibatch noise, infinite variance, a law without
        partial moments): ``sde_of(..., moments="estimated")`` serves those.
        """
        if law is None or not math.isfinite(law.t_max) or noise.rank:
            raise ValueError(
                f"Invalid compressor: {self!r} (E_Z Cov_C[C(g + Z)] is exact here only for noise "
                "with independent coordinates of a law with closed-form partial moments: "
                "Gaussian, Student-t with nu > 2, AffineVariance; for other noise use "
                "sde_of(..., moments='estimated', samples=S))"
            )
        sigma = law.scales  # (B or 1, N or 1, 1)
        positive = sigma > 0
        s = torch.where(positive, sigma, torch.ones_like(sigma))
        a = grad.abs()  # (B, N or 1, d)
        lowest = torch.maximum(a - s * law.t_max, s * 2.0**-16)
        a0 = torch.floor(torch.log2(lowest))
        n_intervals = 18 + math.ceil(math.log2(law.t_max))
        # Every interval and both sides at once, on a last axis of 2K: (B, N or 1, d, 2K).
        powers = torch.arange(n_intervals, dtype=a.dtype, device=a.device)  # (K,)
        big_l = torch.exp2(a0.unsqueeze(-1) + powers).repeat(*(1,) * a0.dim(), 2)  # L = 2^a
        side = torch.ones(2 * n_intervals, dtype=a.dtype, device=a.device)  # (2K,): +1 then -1
        side[n_intervals:] = -1.0
        g, s = grad.unsqueeze(-1), s.unsqueeze(-1)
        # side * v in [L, 2L), v = g + s T: T between (side L - g)/s and (2 side L - g)/s.
        near, far = (side * big_l - g) / s, (2.0 * side * big_l - g) / s
        p, m1, m2 = law.partial_moments(torch.minimum(near, far), torch.maximum(near, far))
        c = g - 1.5 * side * big_l
        total = (
            0.25 * big_l.square() * p - (c.square() * p + 2.0 * c * s * m1 + s.square() * m2)
        ).sum(-1)
        expected = torch.where(positive, total.clamp_min(0.0), self.cov(grad).diag)
        return StructuredCov.diagonal(expected + noise.diag)


@COMPRESSORS.register
@dataclass(frozen=True, kw_only=True)
class QSGD(Compressor):
    r"""QSGD random dithering with s levels.

    With :math:`r_j = s |v_j| / \|v\|` and :math:`l_j = \lfloor r_j \rfloor`,

    .. math::

        C(v)_j = (\|v\|/s) \operatorname{sign}(v_j)\, \xi_j, \qquad
        \xi_j = l_j + 1 \text{ with probability } r_j - l_j, \text{ else } l_j,

    independently per coordinate; :math:`C(0) = 0`. Unbiased, with diagonal covariance

    .. math::

        \operatorname{Var} C(v)_j = (\|v\|^2/s^2)\, (r_j - l_j)(l_j + 1 - r_j),

    and :math:`\omega = \min(d/s^2, \sqrt{d}/s)` (the sum of the variances is at most
    :math:`(\|v\|^2/s^2) \min(d/4, s \|v\|_1 / \|v\|)`).

    Args:
        s: number of quantisation levels, an integer >= 1.

    References:
        Alistarh, Grubic, Li, Tomioka, Vojnovic, NeurIPS 2017, Sec. 3.1 and Lemma 3.1.
    """

    s: int
    unbiased: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "s", check_int("s", self.s, minimum=1))

    def omega(self, dim: int) -> float:
        return min(dim / self.s**2, math.sqrt(dim) / self.s)

    def _levels(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(||v||/s (..., 1), l (..., d), r - l (..., d)), with r = 0 where ||v|| = 0."""
        norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)  # (..., 1)
        scale = self.s / torch.where(norm > 0, norm, torch.ones_like(norm))  # (..., 1)
        r = v.abs().mul_(scale)  # (..., d)
        low = r.floor()
        return norm / self.s, low, r.sub_(low)

    def compress(self, v: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        unit, low, frac = self._levels(v)
        xi = low.add_(rng.uniform(*v.shape[1:]) < frac)  # (B, N, d), l + Bernoulli(r - l)
        return xi.mul_(unit).copysign_(v)

    def cov(self, v: torch.Tensor) -> StructuredCov:
        unit, _, frac = self._levels(v)
        return StructuredCov.diagonal(unit.square() * frac * (1.0 - frac))  # (..., d)

    def noisy_cov(
        self, grad: torch.Tensor, noise: StructuredCov, law: CoordinateLaw | None = None
    ) -> StructuredCov:
        r"""``cov(g)`` when the noise is zero (compression the only randomness); refused
        otherwise.

        With noise, :math:`\operatorname{Var} C(g + Z)_j` depends on :math:`\|g + Z\|` (the level
        spacing :math:`\|v\|/s` couples every coordinate), so :math:`\mathbb E_Z
        \operatorname{Cov}_C` is a d-dimensional integral without a closed form even for Gaussian
        Z; ``sde_of(..., moments="estimated")`` is the model then (docs/models.md).
        """
        zero = not noise.rank and not bool(noise.diag.any())
        if not zero:
            raise ValueError(
                f"Invalid compressor: {self!r} (with gradient noise, QSGD's E_Z Cov_C[C(g + Z)] "
                "couples every coordinate through ||g + Z|| and has no closed form; use "
                "sde_of(..., moments='estimated', samples=S))"
            )
        return self.cov(grad)


@COMPRESSORS.register
@dataclass(frozen=True, kw_only=True)
class TopK(_KeepK):
    r"""Greedy sparsification (biased): keep the k entries of largest :math:`|v_j|`, unscaled.

    :math:`C(v) = \sum_{j \in \text{top-}k(|v|)} v_j e_j` (ties broken by ``torch.topk``).
    Deterministic, so :math:`\operatorname{Cov}[C(v)] = 0`, and biased:
    :math:`\mathbb{E}\, C(v) = C(v) \neq v`. The d - k dropped entries are the smallest, so
    :math:`\|C(v) - v\|^2 \le (1 - k/d) \|v\|^2` and

    .. math::

        \omega = 1 - k/d

    (a contraction constant, not a variance: see ``Compressor``).

    Args:
        k: coordinates kept, an integer >= 1 (and <= d, checked by ``check_dim``).

    References:
        Stich, Cordonnier, Jaggi, NeurIPS 2018, Lemma A.1; Beznosikov et al. 2020, Sec. 3.
    """

    unbiased: ClassVar[bool] = False

    def omega(self, dim: int) -> float:
        self.check_dim(dim)
        return 1.0 - self.k / dim

    def compress(self, v: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        self.check_dim(v.shape[-1])
        idx = v.abs().topk(self.k, dim=-1).indices  # (B, N, k)
        return torch.zeros_like(v).scatter_(-1, idx, v.gather(-1, idx))  # (B, N, d)

    def cov(self, v: torch.Tensor) -> StructuredCov:
        self.check_dim(v.shape[-1])
        return _zero_cov(v)
