"""The SDE of SGD with Markovian noise: the long-run variance of its steps' noise drives it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from sdeopt.discrete.markov_sgd import MLMC, MarkovEstimator, MarkovSGD, SingleSample
from sdeopt.dynamics.recipe import Moments, zero_derivative
from sdeopt.dynamics.sde import Diagonal
from sdeopt.noise import MarkovNoise
from sdeopt.problems import Problem

#: Lags are summed up to ``TAIL_MIXING_TIMES`` mixing times: Dobrushin's coefficient is
#: submultiplicative, so an autocovariance there is below 4^-25 (about 9e-16) of its scale.
TAIL_MIXING_TIMES = 25


class Block(NamedTuple):
    r"""One outcome of the block of consecutive chain samples a step consumes.

    The step's noise is :math:`\varepsilon = \sum_{t < n} w_t\, h(Z_{S + t})` with the block
    starting at chain time S; ``pieces`` lists the nonzero weights as (start, stop, w):
    :math:`w_t = w` for start <= t < stop.
    """

    prob: float
    length: int
    pieces: tuple[tuple[int, int, float], ...]


def _single_sample_blocks(estimator: SingleSample) -> tuple[Block, ...]:
    return (Block(1.0, 1, ((0, 1, 1.0),)),)


def _mlmc_blocks(estimator: MLMC) -> tuple[Block, ...]:
    r"""J = j <= m (probability :math:`2^{-j}`): with :math:`L = 2^{j-1} B` and
    :math:`g^i = (2^i B)^{-1} \sum_{t < 2^i B} h_t`,
    :math:`g^0 + 2^j (g^j - g^{j-1}) = B^{-1}\big(\sum_{t<B} - \sum_{t<L} + \sum_{L \le t < 2L}\big) h_t`:
    weights 0 on [0, B), -1/B on [B, L), +1/B on [L, 2L). J > m (probability :math:`2^{-m}`):
    1/B on [0, B)."""
    b, m = estimator.batch, estimator.level
    blocks = []
    for j in range(1, m + 1):
        half = b * 2 ** (j - 1)
        blocks.append(Block(2.0**-j, 2 * half, ((b, half, -1.0 / b), (half, 2 * half, 1.0 / b))))
    blocks.append(Block(2.0**-m, b, ((0, b, 1.0 / b),)))
    return tuple(blocks)


#: Estimator class -> the law of the block one step consumes (docs/models.md, MarkovSGD).
BLOCK_LAWS: dict[type[MarkovEstimator], Callable[[Any], tuple[Block, ...]]] = {
    SingleSample: _single_sample_blocks,
    MLMC: _mlmc_blocks,
}


def block_law(estimator: MarkovEstimator) -> tuple[Block, ...]:
    """The law of the block of chain samples one step of ``estimator`` consumes."""
    builder = next((BLOCK_LAWS[c] for c in type(estimator).__mro__ if c in BLOCK_LAWS), None)
    if builder is None:
        raise ValueError(
            f"Invalid estimator: {estimator!r} (no block law is known for it; the SDE model "
            f"exists for {', '.join(c.__name__ for c in BLOCK_LAWS)})"
        )
    return builder(estimator)


def _convolve(a: np.ndarray, b: np.ndarray, size: int) -> np.ndarray:
    from scipy.signal import convolve

    return convolve(a, b, method="auto")[:size]


def lag_kernel(blocks: tuple[Block, ...], max_lag: int) -> np.ndarray:
    r""":math:`\kappa(\tau)`, :math:`\tau = 0, \dots,` ``max_lag``: the long-run variance per step
    of the noise sequence is :math:`\sum_{\tau \ge 0} \kappa(\tau)\, C(\tau)` for a stationary
    chain with autocovariance :math:`C` (docs/models.md, MarkovSGD).

    :math:`\kappa = \kappa_{\rm in} + 2 (a * b * R)` with
    :math:`\kappa_{\rm in}(\tau) = (2 - \delta_{\tau 0})\, \mathbb{E} \sum_t w_t w_{t + \tau}`
    (pairs within a block), :math:`a(u) = \mathbb{E}\, w_{n - u}` (:math:`u \ge 1`),
    :math:`b(t) = \mathbb{E}\, w_t`, and the renewal measure
    :math:`R(g) = \sum_{l \ge 0} P(n_1 + \dots + n_l = g)` of the blocks between two
    (pairs across blocks). Exact for every lag it returns. (max_lag + 1,) float64.
    """
    lag = np.arange(max_lag + 1)
    within = np.zeros(max_lag + 1)  # E Σ_t w_t w_{t+τ}
    first = np.zeros(max_lag + 1)  # b(t) = E w_t
    last = np.zeros(max_lag + 1)  # a(u) = E w_{n-u}, 0 at u = 0
    for block in blocks:
        for start, stop, w in block.pieces:
            for start2, stop2, w2 in block.pieces:
                # t in [start, stop) with t + τ in [start2, stop2)
                overlap = np.minimum(stop, stop2 - lag) - np.maximum(start, start2 - lag)
                within += block.prob * w * w2 * np.maximum(overlap, 0)
            first += block.prob * w * ((lag >= start) & (lag < stop))
            last += block.prob * w * ((lag > block.length - stop) & (lag <= block.length - start))
    # R(g) = Σ_n P(n) R(g - n), R(0) = 1: nonzero only on multiples of the lengths' gcd.
    unit = math.gcd(*(block.length for block in blocks))
    steps = [(block.length // unit, block.prob) for block in blocks]
    coarse = [1.0]
    for q in range(1, max_lag // unit + 1):
        coarse.append(sum(p * coarse[q - n] for n, p in steps if n <= q))
    renewal = np.zeros(max_lag + 1)
    renewal[::unit] = coarse
    across = _convolve(_convolve(last, first, max_lag + 1), renewal, max_lag + 1)
    kernel = 2.0 * within + 2.0 * across
    kernel[0] = within[0]  # the lag-0 pairs counted once (across blocks the lag is >= 1)
    return kernel


def long_run_variance(noise: MarkovNoise, estimator: MarkovEstimator) -> float:
    r""":math:`\sigma^2 = \lim_K K^{-1} \operatorname{Var}\sum_{k<K} \varepsilon_k` per unit
    :math:`s^2`, the long-run variance per step of the estimator's noise on a stationary chain.

    :math:`\sigma^2 = \sum_{\tau=0}^{T} \kappa(\tau)\, C(\tau)`, with
    :math:`C(\tau) = \operatorname{Var}_\pi h\, \operatorname{Corr}(h(Z_0), h(Z_\tau))` and
    :math:`\kappa` from ``lag_kernel``, cut at :math:`T = 25 \tau_{\rm mix}`: as
    :math:`|C(t)| \le c_h 4^{-\lfloor t / \tau_{\rm mix} \rfloor}` and
    :math:`|\kappa| \le 4 (m + 1)^2`, the neglected part is below
    :math:`\tfrac{16}{3} (m + 1)^2 \tau_{\rm mix}\, c_h\, 4^{-25}` (docs/models.md), with
    :math:`c_h = \operatorname{Var}_\pi h` for autocorrelation :math:`\rho^{|t|}`. For
    ``SingleSample`` it is the chain's asymptotic variance (m = 0).
    """
    blocks = block_law(estimator)
    if not math.isfinite(noise.mixing_time):
        raise ValueError(
            f"Invalid noise: {noise!r} does not mix (infinite mixing time: its autocovariance "
            "does not decay, so the steps' long-run variance is no convergent sum)"
        )
    autocorrelation = getattr(noise, "autocorrelation", None)
    if autocorrelation is None:
        raise ValueError(
            f"Invalid noise: {noise!r} has no autocorrelation(lag), which the long-run "
            f"variance of {type(estimator).__name__} needs"
        )
    variance = noise.stationary_variance
    if variance == 0.0:
        return 0.0
    max_lag = math.ceil(TAIL_MIXING_TIMES * noise.mixing_time)
    cov = variance * np.array([autocorrelation(t) for t in range(max_lag + 1)], dtype=np.float64)
    return float(lag_kernel(blocks, max_lag) @ cov)


def moments(method: MarkovSGD, problem: Problem) -> Moments:
    r""":math:`\bar u = \nabla f` and :math:`S = \Sigma_{\rm eff} = s^2 \sigma^2 I`, with
    :math:`\sigma^2` the long-run variance per step of the estimator's noise.

    Over the many steps of one unit of SDE time the correlated noise sums like independent
    noise of variance :math:`\Sigma_{\rm eff}` (a central limit theorem for the stationary noise
    sequence), so the first-order model is

    .. math::

        dX = -\eta_t \nabla f\,dt + \eta_t \sqrt{\eta}\, \Sigma_{\rm eff}^{1/2} dW.

    ``SingleSample``: :math:`\sigma^2 = \sum_{j \in \mathbb{Z}} \operatorname{Cov}_\pi(h(Z_0),
    h(Z_j))`, the chain's asymptotic variance (the i.i.d. model,
    :math:`S = s^2 \operatorname{Var}_\pi h`, misses the factor :math:`(1 + \rho)/(1 - \rho)`).
    ``MLMC``: :math:`\sigma^2 = \sum_\tau \kappa(\tau) C(\tau)` over the chain's autocovariance,
    with the kernel of the random blocks (``long_run_variance``). Valid when
    :math:`\eta \lambda_{\max}(\nabla^2 f) (1 + \tau / B) \ll 1`, B the MLMC base batch (1 for
    ``SingleSample``; docs/models.md).
    """
    if isinstance(method.estimator, SingleSample):
        sigma2 = method.noise.asymptotic_variance  # the chain's closed form (= the block route)
        if not math.isfinite(sigma2):
            raise ValueError(
                f"Invalid noise: {method.noise!r} does not mix (infinite asymptotic variance)"
            )
    else:
        # a name became an estimator in MarkovSGD.__post_init__
        assert isinstance(method.estimator, MarkovEstimator)
        sigma2 = long_run_variance(method.noise, method.estimator)
    std = method.noise.scale * math.sqrt(max(sigma2, 0.0))

    def diffusion(x: torch.Tensor, scale: float) -> Diagonal:
        return Diagonal(
            torch.full((1, 1), std * scale, dtype=x.dtype, device=x.device).expand_as(x)
        )

    why = (
        "SGD with Markovian noise has only a first-order model: its steps are correlated, so the "
        "i.i.d. one-step moment matching behind the second-order and curvature corrections does "
        "not apply (an O(eta) correction for a correlated chain is not derived here)"
    )
    return Moments(
        mean=problem.grad,
        mean_jvp=None,
        diffusion=diffusion,  # first order only
        noise_type="diagonal",
        brownian_dim=problem.dim,
        diffusion_derivative=zero_derivative,
        refused={"second_order": why, "curvature": why},
    )
