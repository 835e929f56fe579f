r"""The gradient-noise interface: worker i returns :math:`g_i = \nabla f_i(x) + Z_i` (``Noise``),
and the symmetric scale families every law of ``additive`` belongs to."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from sdeopt import _fuse
from sdeopt._validation import check_scales
from sdeopt.covariance import CoordinateLaw, NoiseFactor, StructuredCov
from sdeopt.problems import Problem
from sdeopt.random import RandomSource
from sdeopt.registry import Registry

#: Gradient-noise laws (additive and Markov) by class name: ``noise = {type = ...}`` in configs.
NOISES: Registry = Registry("noise law")


class Noise(ABC):
    """Base class of additive gradient-noise laws.

    A law with per-worker scales (a length-N sequence) fixes the number of workers it can
    serve; ``check_workers`` enforces it.
    """

    #: True when Z has finite variance (a Brownian SDE exists).
    finite_variance: bool = True
    #: True when :math:`\operatorname{Cov} Z_i = v_i I` (``worker_variance``): then DSGD's SDE
    #: has an isotropic diffusion, a number per run.
    isotropic: ClassVar[bool] = True
    #: True when ``sample_worker_mean`` is one standard (B, d) draw :math:`\xi` of the law
    #: ``increment_law`` times a scale: a discrete run's draws can then drive the SDE
    #: (coupling): (1/N) S(x)^{1/2} ξ with ξ standard normal for the Brownian models, a
    #: stable ξ for the Lévy model.
    couplable: bool = False

    @property
    def increment_law(self) -> dict:
        """The law of the one standard draw per step that coupling keeps: ``{"law": "normal"}``
        here; ``{"law": "stable", "alpha": α}`` for ``SymmetricStable``."""
        return {"law": "normal"}

    @abstractmethod
    def sample(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        """Draw :math:`Z_i` for all runs and workers.

        Args:
            rng: source of randomness (B runs).
            grads: exact worker gradients, (B, N, d) or (B, 1, d); state-dependent laws use them.
            n_workers: N.
        Returns:
            (B, N, d) noise.
        """

    def sample_worker_mean(
        self, rng: RandomSource, grads: torch.Tensor, n_workers: int
    ) -> torch.Tensor:
        r""":math:`\frac{1}{N} \sum_i Z_i`, exact in law, (B, d). Laws with a shortcut (Gaussian)
        override this."""
        return self.sample(rng, grads, n_workers).mean(dim=1)

    def oracle(
        self, problem: Problem, x: torch.Tensor, n_workers: int, rng: RandomSource
    ) -> torch.Tensor:
        r"""Stochastic worker gradients :math:`g_i = \nabla f_i(x) + Z_i`, (B, N, d)."""
        grads = problem.worker_grads(x)
        return grads + self.sample(rng, grads, n_workers)

    def oracle_mean(
        self, problem: Problem, x: torch.Tensor, n_workers: int, rng: RandomSource
    ) -> torch.Tensor:
        r""":math:`\frac{1}{N} \sum_i g_i`, exact in law, (B, d); uses ``sample_worker_mean``
        shortcuts."""
        grads = problem.worker_grads(x)  # (B, N or 1, d)
        mean = grads[:, 0] if grads.shape[1] == 1 else grads.mean(dim=1)  # (B, d)
        return mean + self.sample_worker_mean(rng, grads, n_workers)

    def worker_variance(self, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        r"""The per-coordinate variance :math:`v_i(x)` of :math:`Z_i`
        (:math:`\operatorname{Cov} Z_i = v_i I`), (B or 1, N or 1).

        What the SDE builders take the noise's second moment from. Raises ``ValueError`` for a
        law whose covariance is not :math:`v_i I` with :math:`v_i` known in closed form
        (infinite variance, minibatch noise) — with the reason, which the SDE builders pass on.

        Args:
            grads: exact worker gradients, (B, N or 1, d).
            n_workers: N.
        """
        raise ValueError(
            f"Invalid noise: {self!r} (no SDE model for this noise law yet: its covariance "
            "is not available in closed form here)"
        )

    def worker_cov(
        self, problem: Problem, x: torch.Tensor, grads: torch.Tensor, n_workers: int
    ) -> StructuredCov:
        r""":math:`\operatorname{Cov} Z_i` of every worker at x, in structured form: what the SDE
        builders take the noise's second moment from (``Compressor.noisy_cov`` combines it with
        the compressor's).

        The default is :math:`v_i I` from ``worker_variance``; a law whose covariance depends on
        the data (``Minibatch``) overrides it with its low-rank factors.

        Args:
            problem: the objective (on the simulation's device and dtype).
            x: (B, d) states.
            grads: exact worker gradients at x, (B, N or 1, d).
            n_workers: N.
        Returns:
            diag (B or 1, N or 1, d) and factors (B or 1, N or 1, d, r).
        """
        v = self.worker_variance(grads, n_workers).unsqueeze(-1)  # (B or 1, N or 1, 1)
        return StructuredCov.diagonal(v.expand(torch.broadcast_shapes(v.shape, grads.shape)))

    def coordinate_law(self, grads: torch.Tensor, n_workers: int) -> CoordinateLaw | None:
        r"""The law of :math:`Z_i` coordinate by coordinate (``CoordinateLaw``) where its
        coordinates are independent scaled copies of one standard law with closed-form partial
        moments (Gaussian, Student-t with :math:`\nu > 2`, affine variance); None otherwise.

        Args:
            grads: exact worker gradients, (B, N or 1, d) (state-dependent scales use them).
            n_workers: N.
        """
        return None

    def stable_limit(self, n_workers: int) -> tuple[float, float, bool]:
        r"""The symmetric :math:`\alpha`-stable law that the workers' average noise
        :math:`\frac1N \sum_i Z_i` is (or, summed over many steps, behaves like): what the
        ``"levy"`` model is driven by (docs/models.md, "The Lévy model").

        Returns:
            (alpha, scale, exact): the average is :math:`\mathrm{scale} \cdot S`, S standard
            :math:`S\alpha S` per coordinate, exactly in law when ``exact``, else in the
            domain-of-attraction limit. Raises ``ValueError`` for laws with finite variance
            (the Brownian models apply) or without a stable limit here.
        """
        raise ValueError(
            f"Invalid noise: {self!r} has finite variance, so the central limit theorem gives "
            "a Brownian SDE: use the models 'first_order', 'second_order' or 'curvature' (the "
            "'levy' model is for SymmetricStable noise and StudentT with nu < 2)"
        )

    def noise_factor(self, problem: Problem, n_workers: int) -> NoiseFactor | None:
        """The covariance as a low-rank operator :math:`F_i` (``NoiseFactor``), for laws whose
        covariance is a data-dependent low-rank matrix (``Minibatch``); None for the others."""
        return None

    def check_workers(self, n_workers: int) -> None:
        """Raise ``ValueError`` if per-worker scales do not match ``n_workers``."""

    def check_problem(self, problem: Problem) -> None:
        """Raise ``ValueError`` if this law cannot serve ``problem``."""

    def config(self) -> dict:
        """A JSON-able description (for dataset attrs)."""
        return {"type": type(self).__name__}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({params})"


@dataclass(frozen=True)
class PerWorker:
    r"""A noise hyperparameter given once for every worker or once per worker: the one place that
    knows the difference (a scale that was float-or-tuple was re-checked at every use).

    Attributes:
        name: the parameter's name, for messages.
        values: :math:`(\sigma,)` shared, or :math:`(\sigma_1,\dots,\sigma_N)` per worker; all >= 0.
        per_worker: True for the per-worker form (even with one entry).
    """

    name: str
    values: tuple[float, ...]
    per_worker: bool

    @classmethod
    def of(cls, name: str, value: float | Sequence[float]) -> PerWorker:
        """Validate one number >= 0 or a non-empty sequence of them (``ValueError`` naming it)."""
        checked = check_scales(name, value)
        if isinstance(checked, tuple):
            return cls(name, checked, True)
        return cls(name, (checked,), False)

    @property
    def given(self) -> float | tuple[float, ...]:
        """The value as the user gave it: a number, or a tuple per worker."""
        return self.values if self.per_worker else self.values[0]

    def check(self, n_workers: int) -> None:
        """Raise ``ValueError`` if per-worker values do not number ``n_workers``."""
        if self.per_worker and len(self.values) != n_workers:
            raise ValueError(
                f"Invalid {self.name}: {list(self.values)!r} (has {len(self.values)} "
                f"per-worker entries but n_workers={n_workers})"
            )

    def for_workers(self, n_workers: int) -> tuple[float, ...]:
        """One value per worker, length N."""
        self.check(n_workers)
        return self.values if self.per_worker else self.values * n_workers

    def tensor(self, device=None, dtype=None) -> torch.Tensor:
        """(N,) per worker or (1,) shared: broadcasts against a workers axis."""
        return torch.tensor(self.values, device=device, dtype=dtype)

    def jsonable(self) -> float | list[float]:
        return list(self.values) if self.per_worker else self.values[0]


class ScaledSymmetricNoise(Noise):
    r""":math:`Z_i = \sigma_i T` with T i.i.d. per coordinate, symmetric about 0, of a fixed
    standard law.

    Args:
        scale: :math:`\sigma`, one number :math:`\ge 0` shared by all workers, or a length-N
            sequence (per worker).
    """

    def __init__(self, scale: float | Sequence[float] = 1.0) -> None:
        self._scale = PerWorker.of("scale", scale)

    if TYPE_CHECKING:
        # Var T: each law gives it, as a class attribute (Gaussian) or a property (StudentT).
        @property
        def variance(self) -> float: ...

    @property
    def scale(self) -> float | tuple[float, ...]:
        r""":math:`\sigma` as given: one number, or a tuple of N (one per worker)."""
        return self._scale.given

    @property
    def per_worker(self) -> bool:
        """True when every worker has its own scale."""
        return self._scale.per_worker

    def worker_scales(self, n_workers: int) -> tuple[float, ...]:
        r""":math:`(\sigma_1, \dots, \sigma_N)`, length N."""
        return self._scale.for_workers(n_workers)

    @abstractmethod
    def sample_standard(self, rng: RandomSource, *shape: int) -> torch.Tensor:
        r"""Draws of the standard law :math:`T`, shape (B, \*shape)."""

    def scales(self, n_workers: int, device=None, dtype=None) -> torch.Tensor:
        r""":math:`\sigma_i` as a (N,) tensor (per-worker) or a (1,) tensor (shared)."""
        self.check_workers(n_workers)
        return self._scale.tensor(device, dtype)

    def worker_variance(self, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        r""":math:`\sigma_i^2 \operatorname{Var} T`, (1, N or 1); ``ValueError`` when
        :math:`\operatorname{Var} T` is infinite."""
        if not self.finite_variance:
            raise ValueError(
                f"Invalid noise: {self!r} has infinite variance, so no Brownian SDE "
                "approximates this method (the central limit theorem behind the diffusion "
                "fails); a Lévy-driven SDE is the right model for heavy tails: "
                "sde_of(..., model='levy') builds it for DSGD and DCSGD (Identity, RandK). Or "
                "use DSignSGD, whose sign SDE exists for every nu > 0, or noise with nu > 2"
            )
        s = self.scales(n_workers, grads.device, grads.dtype)  # (N or 1,)
        return (s * s * self.variance).unsqueeze(0)

    def sample(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        t = self.sample_standard(rng, n_workers, grads.shape[-1])  # (B, N, d)
        return t * self.scales(n_workers, t.device, t.dtype).unsqueeze(-1)

    def check_workers(self, n_workers: int) -> None:
        self._scale.check(n_workers)

    def config(self) -> dict:
        return {"type": type(self).__name__, "scale": self._scale.jsonable()}


class SymmetricCDFNoise(ScaledSymmetricNoise):
    """A scaled symmetric law whose standard CDF :math:`F` is available on any device."""

    @abstractmethod
    def standard_pdf(self, y: torch.Tensor) -> torch.Tensor:
        """The density :math:`F'(y)` of the standard law, elementwise."""

    @abstractmethod
    def standard_cdf(self, y: torch.Tensor) -> torch.Tensor:
        r""":math:`F(y) = P(T \le y)`, elementwise, same shape, dtype and device as y."""

    def standard_tail(self, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        r""":math:`F(-|y|/\mathrm{scale})`, the standard law's tail beyond :math:`|y|/\mathrm{scale}`
        (:math:`\le 1/2`), elementwise, computed directly, never as :math:`1 - F`, so that it
        keeps its relative accuracy far out; scale > 0 is a Python number. Same shape, dtype and
        device as y. Laws override it with a faster form (``Gaussian``: erfc; ``StudentT``:
        ``special.student_t_tail``)."""
        return self.standard_cdf(y.abs().div_(-scale))

    def standard_partial_moments(
        self, lo: torch.Tensor, hi: torch.Tensor, p: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        r""":math:`(P, \mathbb E[T 1_I], \mathbb E[T^2 1_I])` of the standard law over
        :math:`I = [\mathrm{lo}, \mathrm{hi})` in closed form (finite bounds always; infinite
        ones where the moment exists), or None for a law without them (then
        ``coordinate_law`` is None, and coordinate-wise clipping has no closed-form SDE). ``p``:
        the interval's probability when the caller has it (saves two CDF evaluations)."""
        return None

    @property
    def has_partial_moments(self) -> bool:
        """True when the law gives ``standard_partial_moments`` (a subclass overrides it)."""
        return type(self).standard_partial_moments is not SymmetricCDFNoise.standard_partial_moments

    #: :math:`t_{\max}` of ``CoordinateLaw``: the standard law's share of :math:`\mathbb E T^2`
    #: beyond :math:`|T| > t_{\max}` is below 1e-12.
    t_max: float = math.inf

    def coordinate_law(self, grads: torch.Tensor, n_workers: int) -> CoordinateLaw | None:
        if not self.finite_variance or not self.has_partial_moments:
            return None
        s = self.scales(n_workers, grads.device, grads.dtype)  # (N or 1,)
        return CoordinateLaw(
            scales=s.view(1, -1, 1),
            partial_moments=self.standard_partial_moments,  # type: ignore[arg-type]
            t_max=self.t_max,
        )

    def sign_probabilities(
        self, grads: torch.Tensor, n_workers: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`P(\operatorname{sign}(\nabla f_i + \sigma_i T) = +1)` and
        :math:`P(\ldots = -1)`, each shaped like grads (B, N or 1, d).

        One CDF evaluation: the smaller probability is the tail :math:`F(-|y|)`, computed
        directly (not as :math:`1 - F(|y|)`) so that it stays accurate far out;
        :math:`\sigma_i = 0` gives the deterministic sign (with :math:`\operatorname{sign}(0) = 0`).
        """
        if min(self._scale.values) > 0:
            # where(y > 0, 1 - tail, tail) as arithmetic (torch.where measured ~20x slower on
            # the CPU); the smaller probability stays the tail itself, exactly.
            tail, up = self.sign_tails(grads, n_workers)
            gap = 1.0 - 2.0 * tail
            return torch.addcmul(tail, up, gap), torch.addcmul(tail, 1.0 - up, gap)
        s = self.scales(n_workers, grads.device, grads.dtype).unsqueeze(-1)  # (N or 1, 1)
        positive = s > 0
        y = grads / torch.where(positive, s, torch.ones_like(s))
        tail = self.standard_cdf(-y.abs())
        up = y > 0
        p_plus = torch.where(
            positive, torch.where(up, 1.0 - tail, tail), (grads > 0).to(grads.dtype)
        )
        p_minus = torch.where(
            positive, torch.where(up, tail, 1.0 - tail), (grads < 0).to(grads.dtype)
        )
        return p_plus, p_minus

    def clipped_moments(
        self, grads: torch.Tensor, n_workers: int, tau: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Mean, variance and slope of :math:`\kappa(\nabla f_i + \sigma_i T)`, coordinate-wise
        clipping :math:`\kappa(v) = \max(-\tau, \min(\tau, v))`, in closed form for every law
        with ``standard_partial_moments`` (docs/models.md).

        With :math:`v = g + \sigma T`, the interval :math:`|v| \le \tau` is
        :math:`T \in [\ell, h] = [(-\tau - g)/\sigma, (\tau - g)/\sigma]`, with partial moments
        :math:`P, M_1, M_2` there and the atoms :math:`P_+ = F(-h)` at :math:`\tau`,
        :math:`P_- = F(\ell)` at :math:`-\tau`:

        .. math::

            m = \tau (P_+ - P_-) + g P + \sigma M_1, \qquad
            \operatorname{Var} = \mathbb E(\kappa - y_0)^2 - (m - y_0)^2,

        :math:`\mathbb E(\kappa - y_0)^2 = (\tau - y_0)^2 P_+ + (\tau + y_0)^2 P_-
        + (g - y_0)^2 P + 2 (g - y_0) \sigma M_1 + \sigma^2 M_2`, taken about
        :math:`y_0 = \kappa(g)` (no cancellation when the noise is small against
        :math:`|g - y_0|`). The slope :math:`\partial m / \partial g = P` (the chain rule's
        factor in :math:`(\nabla \bar u) v`). :math:`\sigma_i = 0` gives
        :math:`(\kappa(g), 0, 1_{|g| < \tau})`. Every :math:`\nu > 0` of Student-t is served:
        the clipped law has all moments.

        Args:
            grads: (B, N or 1, d).
            n_workers: N.
            tau: :math:`\tau > 0`.
        Returns:
            mean, variance, slope, each (B, N or 1, d) ((B, N, d) for per-worker scales).
        """
        if not self.has_partial_moments:
            raise ValueError(
                f"Invalid noise: {self!r} (coordinate-wise clipping's SDE needs the law's "
                "partial moments in closed form: Gaussian or StudentT)"
            )
        s = self.scales(n_workers, grads.device, grads.dtype).view(1, -1, 1)  # (1, N or 1, 1)
        # One compiled kernel with configure_torch(fuse=True) (sdeopt._fuse), else eager.
        return _fuse.fused(_clipped_law)(grads, s, self, tau)

    def sign_tails(self, grads: torch.Tensor, n_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
        r"""For scales :math:`\sigma_i > 0`: the minority sign's probability
        :math:`\mathrm{tail} = F(-|\nabla f_i| / \sigma_i) \le 1/2`, computed directly (never as
        :math:`1 - F`), and :math:`\mathrm{up} = [\nabla f_i > 0]` as 0/1 floats (the majority
        sign is + where up = 1; at :math:`\nabla f_i = 0` both are 1/2). tail is (B, N, d) for
        per-worker scales (or grads of shape (B, N, d)), else shaped like grads; up is shaped
        like grads.

        One ``standard_tail`` evaluation. Comparisons write floats through ``out=``: a bool
        result cast to float measured ~7x slower on the CPU.
        """
        if self.per_worker:
            s = self.scales(n_workers, grads.device, grads.dtype).unsqueeze(-1)  # (N, 1)
            tail = self.standard_tail(grads / s)  # (B, N, d)
        else:  # a Python scalar: folded into the tail's first pass, no broadcast
            tail = self.standard_tail(grads, self._scale.values[0])
        return tail, torch.gt(grads, 0.0, out=torch.empty_like(grads))  # up: shaped like grads

    def sign_mean(self, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        r""":math:`m_i = \mathbb{E} \operatorname{sign}(\nabla f_i + \sigma_i T)
        = 2 F(\nabla f_i / \sigma_i) - 1` (docs/models.md), shaped like grads."""
        p_plus, p_minus = self.sign_probabilities(grads, n_workers)
        return p_plus - p_minus


def _clipped_law(
    grads: torch.Tensor, s: torch.Tensor, noise: SymmetricCDFNoise, tau: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The body of ``SymmetricCDFNoise.clipped_moments`` (scales s, (1, N or 1, 1)), a module
    function so that ``sdeopt._fuse`` compiles it once per law."""
    positive = s > 0
    s_safe = torch.where(positive, s, torch.ones_like(s))
    lo, hi = (-tau - grads) / s_safe, (tau - grads) / s_safe
    # Two CDF evaluations: the atoms' tails, each computed directly (never as 1 - F), and
    # the interval's probability from them (absolute error ~1e-16 where it is tiny).
    p_up, p_down = noise.standard_cdf(-hi), noise.standard_cdf(lo)
    inside_p = (1.0 - p_up - p_down).clamp_(min=0.0)
    p, m1, m2 = noise.standard_partial_moments(lo, hi, inside_p)  # type: ignore[misc]
    y0 = grads.clamp(-tau, tau)
    off = grads - y0
    mean = tau * (p_up - p_down) + grads * p + s * m1
    second = (
        (tau - y0).square() * p_up
        + (tau + y0).square() * p_down
        + off.square() * p
        + 2.0 * off * s * m1
        + s.square() * m2
    )
    var = (second - (mean - y0).square()).clamp_(min=0.0)
    inside = (grads.abs() < tau).to(grads.dtype)
    return (
        torch.where(positive, mean, y0),
        torch.where(positive, var, torch.zeros_like(var)),
        torch.where(positive, p, inside),
    )


def _check_grads(grads: torch.Tensor, n_workers: int) -> None:
    if grads.dim() != 3 or grads.shape[1] not in (1, n_workers):
        raise ValueError(
            f"Invalid grads: shape {tuple(grads.shape)} (must be (B, N, d) or "
            f"(B, 1, d) with N = n_workers = {n_workers})"
        )
