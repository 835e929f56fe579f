"""SGD with Markovian noise: one oracle call on a running chain, or the MLMC batch estimator."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar

import torch

from sdeopt._validation import check_int
from sdeopt.discrete.base import METHODS, Method, State
from sdeopt.noise import MarkovNoise
from sdeopt.problems import Problem
from sdeopt.random import RandomSource
from sdeopt.registry import Registry


@dataclass
class MarkovState(State):
    """Iterates plus the chain each run carries (never restarted) and its oracle count.

    Attributes:
        z: (B, d) chain states (one chain per coordinate).
        oracle_calls: (B,) float, oracle calls used so far.
    """

    z: torch.Tensor | None = None
    oracle_calls: torch.Tensor | None = None


#: Estimator class name -> class (a config's ``estimator = {type = "MLMC", ...}``).
MARKOV_ESTIMATORS: Registry = Registry("MarkovSGD estimator")


class MarkovEstimator(ABC):
    """How MarkovSGD turns its running chain into the noise of one gradient estimate per step.

    Estimators are frozen, keyword-only dataclasses; ``MARKOV_ESTIMATORS`` registers them by
    class name (a config's ``estimator = {type = "MLMC", batch = 4}``).
    """

    #: Every estimator is a dataclass (``config`` reads its fields): declared for the type checker.
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    @abstractmethod
    def sample(self, chain: MarkovNoise, z: torch.Tensor, rng: RandomSource, dtype):
        r"""The estimate's noise :math:`\hat g - \nabla f` in units of the oracle scale s (B, d),
        the advanced chain (B, d) and the oracle calls it used ((B,) or a number)."""

    @abstractmethod
    def expected_calls(self) -> float:
        """Expected oracle calls per step."""

    def config(self) -> dict:
        out = {"type": type(self).__name__}
        out.update({f.name: getattr(self, f.name) for f in fields(self)})
        return out


@MARKOV_ESTIMATORS.register(aliases=("single",))
@dataclass(frozen=True, kw_only=True)
class SingleSample(MarkovEstimator):
    r"""One oracle call at the chain's current state, then one chain transition:
    :math:`\hat g = g(x, Z_k)`."""

    def sample(self, chain: MarkovNoise, z: torch.Tensor, rng: RandomSource, dtype):
        return chain.value(z).to(dtype), chain.advance(z, rng), 1.0

    def expected_calls(self) -> float:
        return 1.0


@MARKOV_ESTIMATORS.register(aliases=("mlmc",))
@dataclass(frozen=True, kw_only=True)
class MLMC(MarkovEstimator):
    r"""The MLMC randomized batch estimator (Beznosikov et al., NeurIPS 2023, Algorithm 1).

    Draw :math:`J \sim \mathrm{Geom}(1/2)` (:math:`P(J = j) = 2^{-j}`, :math:`j \ge 1`), let
    :math:`g^j` be the average of the oracle over the next :math:`2^j B` consecutive chain
    samples, and

    .. math::

        \hat g = g^0 + 2^J (g^J - g^{J-1}) \text{ if } 2^J \le M, \qquad
        \hat g = g^0 \text{ otherwise},

    so :math:`\mathbb{E}\,\hat g = \mathbb{E}\,g^m` with :math:`m = \lfloor \log_2 M \rfloor`, at
    :math:`B (m + 2^{-m})` expected samples per step.

    Args:
        batch: :math:`B \ge 1`, the base batch.
        max_batch: :math:`M \ge 1`, the truncation level (:math:`2^J \le M`).
    """

    batch: int = 1
    max_batch: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch", check_int("batch", self.batch, minimum=1))
        object.__setattr__(self, "max_batch", check_int("max_batch", self.max_batch, minimum=1))

    @property
    def level(self) -> int:
        r""":math:`m = \lfloor \log_2 M \rfloor`."""
        return math.floor(math.log2(self.max_batch))

    def expected_calls(self) -> float:
        m = self.level
        return self.batch * (m + 2.0**-m)

    def sample(self, chain: MarkovNoise, z: torch.Tensor, rng: RandomSource, dtype):
        r"""The MLMC combination of chain averages: :math:`\hat g - \nabla f`, the advanced chain,
        calls (B,).

        The oracle is affine in :math:`h(Z)`, so averaging oracle calls at a fixed x is
        averaging h over the chain samples: one pass over the chain with running sums at the
        batch boundaries. The pass always has the maximal length :math:`2^m B`, runs that need
        fewer samples being masked: a data-dependent length would make a run's random stream
        depend on the other runs of its chunk (and cost a host sync per step). Oracle calls are
        counted exactly.
        """
        b, m = self.batch, self.level
        # J ~ Geom(1/2) on {1, 2, ...}: J = 1 + floor(E / log 2), E ~ Exp(1).
        j = 1 + torch.floor(rng.exponential() / math.log(2.0)).to(torch.int64)  # (B,)
        used = torch.where(j <= m, j, torch.zeros_like(j))  # level actually combined, 0 = g^0 only
        n_samples = b * torch.pow(2, used)  # (B,) chain samples each run consumes
        longest = b * 2**m
        total = torch.zeros_like(z, dtype=dtype)  # running sum of h, (B, d)
        sum_prev = torch.zeros_like(total)  # sum over the first 2^{J-1} B samples
        sum_0 = torch.zeros_like(total)  # sum over the first B samples
        prev_len = torch.where(used > 0, n_samples // 2, torch.zeros_like(n_samples)).unsqueeze(
            -1
        )  # (B, 1)
        # Per-run masks are blended as 0/1 numbers, a v + (1 - a) w, exact for a in {0, 1} and
        # finite v, w (torch.where measured ~20x slower than a multiply on the CPU).
        for t in range(longest):
            active = (t < n_samples).unsqueeze(-1)  # (B, 1)
            on = active.to(dtype)
            total.addcmul_(on, chain.value(z).to(dtype))
            on_z = active.to(z.dtype)
            z = chain.advance(z, rng).mul_(on_z).add_(z * (1 - on_z))
            if t + 1 == b:
                sum_0 = total.clone()
            sum_prev.addcmul_(
                (prev_len == t + 1).to(dtype), total
            )  # one t per run: exactly total there
        g0 = sum_0 / b
        weight = torch.pow(2.0, used.to(dtype)).unsqueeze(-1)  # 2^J
        len_j = n_samples.to(dtype).unsqueeze(-1)
        correction = weight * (total / len_j - sum_prev / prev_len.clamp(min=1).to(dtype))
        noise = g0 + torch.where(used.unsqueeze(-1) > 0, correction, 0.0)
        return noise, z, n_samples.to(dtype)


@METHODS.register
@dataclass(frozen=True, kw_only=True)
class MarkovSGD(Method):
    r"""SGD whose gradient noise is a Markov chain (Beznosikov et al., NeurIPS 2023).

    Oracle: :math:`g(x, Z) = \nabla f(x) + s\,h(Z)`, with :math:`(Z_k)` the chain of ``noise``.
    Update:

    .. math::

        x_{k+1} = x_k - \eta\,\eta_k\,\hat g_k,

    where :math:`\hat g_k` is one oracle call at the chain's current state (``SingleSample``,
    the default) or the MLMC randomized batch estimator (``MLMC``; docs/methods.md). The chain
    is never restarted; ``oracle_calls`` is recorded per run.

    SDE model (``sdeopt.dynamics``, first order, both estimators):
    :math:`dX = -\eta_t \nabla f\,dt + \eta_t \sqrt{\eta}\,\Sigma_{\rm eff}^{1/2} dW` with
    :math:`\Sigma_{\rm eff} = s^2 \sigma^2 I`, :math:`\sigma^2` the long-run variance per step
    of the estimator's noise: the chain's asymptotic variance for ``SingleSample`` (for
    autocorrelation :math:`\rho`: :math:`(1 + \rho)/(1 - \rho)`), a lag kernel of the random
    blocks summed against the chain's autocovariance for ``MLMC``
    (``sdeopt.dynamics.markov_sgd.long_run_variance``); valid when
    :math:`\eta \lambda_{\max} (1 + \tau / b_0) \ll 1`, :math:`b_0` the MLMC base batch (1 for
    ``SingleSample``; docs/models.md).

    Shapes: x, z (B, d); oracle_calls (B,).

    Args:
        noise: a ``MarkovNoise`` (TwoStateMarkov, GaussianAR1, FiniteMarkov).
        estimator: a ``MarkovEstimator`` (``SingleSample()``, ``MLMC(batch=..., max_batch=...)``)
            or its name, "single" or "mlmc".
        batch, max_batch: with ``estimator="mlmc"`` given by name, the MLMC parameters
            (:math:`B \ge 1`, default 1; :math:`M \ge 1`, default 64); refused with any other
            estimator.
    """

    noise: MarkovNoise
    estimator: MarkovEstimator | str = "single"
    batch: int | None = None
    max_batch: int | None = None

    extra_observables: ClassVar[tuple[str, ...]] = ("oracle_calls",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.noise, MarkovNoise):
            raise ValueError(
                f"Invalid noise: {self.noise!r} (must be an sdeopt.noise Markov chain: "
                "TwoStateMarkov, GaussianAR1 or FiniteMarkov)"
            )
        given = {
            k: v for k, v in (("batch", self.batch), ("max_batch", self.max_batch)) if v is not None
        }
        if isinstance(self.estimator, str) and self.estimator in MARKOV_ESTIMATORS:
            cls = MARKOV_ESTIMATORS[self.estimator]  # a class name or its short name ("mlmc")
            if cls is not MLMC and given == {"batch": 1, "max_batch": 64}:
                given = {}  # the defaults every config of the previous version recorded
            if given and cls is not MLMC:
                key = next(iter(given))
                raise ValueError(
                    f"Invalid {key}: {given[key]!r} (a parameter of the MLMC estimator; "
                    f"estimator is {self.estimator!r})"
                )
            object.__setattr__(self, "estimator", cls(**given))
        elif not isinstance(self.estimator, MarkovEstimator):
            raise ValueError(
                f"Invalid estimator: {self.estimator!r} (a MarkovEstimator, or one of "
                f"{', '.join(repr(n) for n in ('single', 'mlmc', *MARKOV_ESTIMATORS))})"
            )
        elif given:
            key = next(iter(given))
            raise ValueError(
                f"Invalid {key}: {given[key]!r} (give batch and max_batch to the estimator "
                f"object, {self.estimator!r})"
            )
        # One home for the estimator's parameters: the object (configs record it there).
        object.__setattr__(self, "batch", None)
        object.__setattr__(self, "max_batch", None)

    def config(self) -> dict:
        out = super().config()
        # batch and max_batch only carry estimator="mlmc" given by name into the MLMC object.
        out.pop("batch", None)
        out.pop("max_batch", None)
        return out

    @property
    def mlmc_level(self) -> int:
        r""":math:`m = \lfloor \log_2 M \rfloor` of the MLMC estimator."""
        if not isinstance(self.estimator, MLMC):
            raise ValueError(f"Invalid estimator: {self.estimator!r} (has no MLMC level)")
        return self.estimator.level

    def expected_calls(self) -> float:
        """Expected oracle calls per step: 1, or :math:`B (m + 2^{-m})` for MLMC."""
        assert isinstance(self.estimator, MarkovEstimator)  # a name became one in __post_init__
        return self.estimator.expected_calls()

    def init_state(self, x0: torch.Tensor, problem: Problem, rng: RandomSource) -> MarkovState:
        return MarkovState(
            x=x0,
            z=self.noise.init(rng, x0.shape[-1]),
            oracle_calls=torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device),
        )

    def step(
        self, problem: Problem, state: State, k: int, lr_k: float, rng: RandomSource
    ) -> MarkovState:
        # run passes back the state init_state made; a name became an estimator in __post_init__
        assert isinstance(state, MarkovState) and isinstance(self.estimator, MarkovEstimator)
        assert state.z is not None and state.oracle_calls is not None
        x = state.x
        noise_mean, z, calls = self.estimator.sample(self.noise, state.z, rng, x.dtype)
        # x - lr_k (∇f + s h̄), with the scalars in the fused adds' alpha.
        new = torch.add(x, problem.grad(x), alpha=-lr_k).add_(
            noise_mean, alpha=-lr_k * self.noise.scale
        )
        return MarkovState(x=new, z=z, oracle_calls=state.oracle_calls + calls)
