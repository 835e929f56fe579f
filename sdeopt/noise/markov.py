"""Markov gradient noise (Beznosikov et al., NeurIPS 2023): the chains behind ``MarkovSGD``."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from sdeopt._validation import check_in_range, check_nonnegative, keyword_only
from sdeopt.noise.base import NOISES
from sdeopt.noise.unit import random_signs
from sdeopt.random import RandomSource

# ---------------------------------------------------------------------------------------------
# Markov noise (Beznosikov et al., NeurIPS 2023)
# ---------------------------------------------------------------------------------------------


class MarkovNoise(ABC):
    r"""Additive Markov noise :math:`g = \nabla f(x) + s\, h(Z_k)`, one chain per run and
    coordinate, never restarted.

    Each coordinate carries an independent copy of the chain :math:`(Z_k)`, started from its
    stationary law :math:`\pi`; h is centred under :math:`\pi`. Per coordinate:

    - ``stationary_variance`` :math:`\operatorname{Var}_\pi h(Z_0)`;
    - ``autocorrelation(j)`` :math:`\operatorname{Corr}_\pi(h(Z_0), h(Z_j))`;
    - ``asymptotic_variance``
      :math:`\sigma_{\rm eff}^2 = \sum_{j \in \mathbb{Z}} \operatorname{Cov}_\pi(h(Z_0), h(Z_j))`
      (the SDE's :math:`\Sigma_{\rm eff} / s^2`);
    - ``mixing_time`` :math:`\tau`, the least t with Dobrushin's coefficient
      :math:`\Delta(Q^t) \le 1/4`.

    Args:
        scale: :math:`s \ge 0`.
    """

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = check_nonnegative("scale", scale)

    @abstractmethod
    def init(self, rng: RandomSource, dim: int) -> torch.Tensor:
        """Stationary draws of the chain state, (B, d)."""

    @abstractmethod
    def advance(self, z: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """One transition of every chain, (B, d) -> (B, d)."""

    @abstractmethod
    def value(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`h(z)`, centred under :math:`\pi`, (B, d) floats."""

    @property
    @abstractmethod
    def stationary_variance(self) -> float:
        r""":math:`\operatorname{Var}_\pi h`."""

    @property
    @abstractmethod
    def asymptotic_variance(self) -> float:
        r""":math:`\sigma_{\rm eff}^2
        = \sum_{j \in \mathbb{Z}} \operatorname{Cov}_\pi(h(Z_0), h(Z_j))`."""

    @property
    @abstractmethod
    def mixing_time(self) -> float:
        r""":math:`\tau`: :math:`\Delta(Q^\tau) \le 1/4` (inf for a chain that does not mix)."""

    #: Keys of ``config()`` that describe the built chain rather than construct it.
    derived_keys: tuple[str, ...] = ()

    def config(self) -> dict:
        return {
            "type": type(self).__name__,
            **{
                k: (v.tolist() if isinstance(v, torch.Tensor) else v)
                for k, v in vars(self).items()
                if not k.startswith("_")
            },
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


def _geometric_mixing_time(rho: float) -> float:
    """Least t >= 1 with |rho|^t <= 1/4."""
    if abs(rho) <= 0.25:
        return 1.0
    if abs(rho) >= 1.0:
        return math.inf
    return float(math.ceil(math.log(0.25) / math.log(abs(rho))))


@NOISES.register
class TwoStateMarkov(MarkovNoise):
    r"""Symmetric two-state chain on :math:`\{-1, +1\}` flipping with probability p
    (autocorrelation :math:`1 - 2p`).

    :math:`h(z) = z`; :math:`\pi` uniform; :math:`\operatorname{Corr}(h(Z_0), h(Z_j)) = \rho^j`;
    :math:`\sigma_{\rm eff}^2 = (1 + \rho)/(1 - \rho)`; :math:`\Delta(Q^t) = |\rho|^t`.
    :math:`p = 0` never mixes (:math:`\sigma_{\rm eff}^2` infinite); :math:`p = 1` alternates
    deterministically.

    Args:
        p: flip probability in :math:`[0, 1]`. scale: :math:`s`.
    """

    def __init__(self, p: float, *args, scale: float = 1.0) -> None:
        if args and scale != 1.0:
            raise ValueError("Invalid scale: given both by position and by keyword")
        super().__init__(keyword_only("TwoStateMarkov", ("scale",), args, {}).get("scale", scale))
        self.p = check_in_range("p", p, 0.0, 1.0)

    @property
    def rho(self) -> float:
        return 1.0 - 2.0 * self.p

    def init(self, rng, dim):
        return random_signs(rng, dim)  # (B, d)

    def advance(self, z, rng):
        u = rng.uniform(z.shape[-1])  # (B, d)
        flip = torch.lt(
            u, self.p, out=u
        )  # 1 where the state flips (written as floats: see random_signs)
        return flip.mul_(-2.0).add_(1.0).mul_(z)

    def value(self, z):
        return z

    def autocorrelation(self, lag: int) -> float:
        return self.rho ** abs(lag)

    stationary_variance = property(lambda self: 1.0)
    asymptotic_variance = property(
        lambda self: math.inf if self.p == 0.0 else (1 + self.rho) / (1 - self.rho)
    )
    mixing_time = property(lambda self: _geometric_mixing_time(self.rho))


@NOISES.register
class GaussianAR1(MarkovNoise):
    r"""Gaussian AR(1): :math:`Z_{k+1} = \rho Z_k + \sqrt{1 - \rho^2}\, w_k`,
    :math:`\pi = \mathcal{N}(0, 1)`, :math:`h(z) = z`.

    :math:`\operatorname{Corr} = \rho^j` and :math:`\sigma_{\rm eff}^2 = (1 + \rho)/(1 - \rho)`.
    On :math:`\mathbb{R}`, Dobrushin's coefficient of the Gaussian kernel is 1 (two far-apart
    starts stay distinguishable for a while), so ``mixing_time`` reports the contraction time
    of the chain in Wasserstein distance, :math:`|\rho|^\tau \le 1/4`, which plays the same
    role in the theory's step-size condition.

    Args:
        rho: in :math:`(-1, 1)`. scale: :math:`s`.
    """

    def __init__(self, rho: float, *args, scale: float = 1.0) -> None:
        if args and scale != 1.0:
            raise ValueError("Invalid scale: given both by position and by keyword")
        super().__init__(keyword_only("GaussianAR1", ("scale",), args, {}).get("scale", scale))
        self.rho = check_in_range("rho", rho, -1.0, 1.0, closed="neither")

    def init(self, rng, dim):
        return rng.normal(dim)  # (B, d)

    def advance(self, z, rng):
        return self.rho * z + math.sqrt(1.0 - self.rho**2) * rng.normal(z.shape[-1])

    def value(self, z):
        return z

    def autocorrelation(self, lag: int) -> float:
        return self.rho ** abs(lag)

    stationary_variance = property(lambda self: 1.0)
    asymptotic_variance = property(lambda self: (1 + self.rho) / (1 - self.rho))
    mixing_time = property(lambda self: _geometric_mixing_time(self.rho))


@NOISES.register
class FiniteMarkov(MarkovNoise):
    r"""A finite chain with transition matrix P and values :math:`h(i)` (centred under
    :math:`\pi` automatically).

    :math:`\pi` solves :math:`\pi P = \pi` (unique: the chain must have one recurrent class);

    .. math::

        \sigma_{\rm eff}^2 = 2 \langle \bar h, F \bar h \rangle_\pi
        - \langle \bar h, \bar h \rangle_\pi

    with the fundamental matrix :math:`F = (I - P + \mathbf{1}\pi^\top)^{-1}` (Kemeny & Snell);
    :math:`\tau` from
    :math:`\Delta(P^t) = \max_{i,j} \tfrac12 \|P^t(i, \cdot) - P^t(j, \cdot)\|_1`, stepping
    :math:`t = 1, 2, \dots` (inf when it does not reach 1/4 within :math:`10^4` steps, e.g. a
    periodic chain).

    Args:
        matrix: (S, S) row-stochastic. values: (S,) h before centring (default 0, 1, ..., S-1).
        scale: :math:`s`.
    """

    #: π is computed from the matrix; a config may carry it (``Registry.build`` checks it).
    derived_keys = ("pi",)

    def __init__(self, matrix, *args, values=None, scale: float = 1.0) -> None:
        if args:  # the positional form of the previous version: FiniteMarkov(P, values, scale)
            given = keyword_only("FiniteMarkov", ("values", "scale"), args, {})
            if values is not None or scale != 1.0:
                raise ValueError("Invalid values: given both by position and by keyword")
            values, scale = given.get("values"), given.get("scale", 1.0)
        super().__init__(scale)
        p = torch.as_tensor(matrix, dtype=torch.float64)
        if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 1:
            raise ValueError(f"Invalid matrix: shape {tuple(p.shape)} (must be square, S x S)")
        if not torch.isfinite(p).all() or (p < 0).any():
            raise ValueError(f"Invalid matrix: {p.tolist()!r} (entries must be finite and >= 0)")
        row_sums = p.sum(1)
        if not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-10, rtol=0):
            raise ValueError(
                f"Invalid matrix: row sums {row_sums.tolist()!r} (a transition matrix is "
                "row-stochastic: every row must sum to 1)"
            )
        n = p.shape[0]
        h = (
            torch.arange(n, dtype=torch.float64)
            if values is None
            else torch.as_tensor(values, dtype=torch.float64)
        )
        if h.shape != (n,) or not torch.isfinite(h).all():
            raise ValueError(f"Invalid values: {values!r} (must be {n} finite numbers)")
        a = torch.cat(
            [(p.T - torch.eye(n, dtype=torch.float64)), torch.ones(1, n, dtype=torch.float64)]
        )
        if torch.linalg.matrix_rank(a) < n:
            raise ValueError(
                "Invalid matrix: the stationary law is not unique (more than one recurrent class)"
            )
        # π(P - I) = 0 with one equation (they sum to 0) replaced by Σ π = 1: a square system
        # with a unique solution, solved by LU (lstsq's result moved in the last bit from one
        # call to the next, so a config did not rebuild the same chain bitwise).
        square = a[1:].clone()  # (S, S): rows 2..S of (Pᵀ - I) and the row of ones
        rhs = torch.zeros(n, dtype=torch.float64)
        rhs[-1] = 1.0
        pi = torch.linalg.solve(square, rhs).clamp(min=0.0)
        self.matrix, self.pi = p, pi / pi.sum()
        self._given_values = h  # what config() records: the centring is then redone exactly
        self.values = h - (self.pi * h).sum()
        self._cum = torch.cumsum(p, dim=1)  # (S, S) for inverse-CDF transitions
        self._cum_pi = torch.cumsum(self.pi, dim=0)  # (S,)

    def config(self) -> dict:
        out = super().config()
        out["values"] = self._given_values.tolist()
        return out

    def _invert(self, cum: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Index of the first cumulative weight exceeding u; cum (..., S), u (...)."""
        return (u.unsqueeze(-1) >= cum[..., :-1]).sum(-1)

    def init(self, rng, dim):
        cum = self._cum_pi.to(device=rng.device, dtype=rng.dtype)
        return self._invert(cum, rng.uniform(dim))  # (B, d) int64

    def advance(self, z, rng):
        cum = self._cum.to(device=z.device, dtype=rng.dtype)[z]  # (B, d, S)
        return self._invert(cum, rng.uniform(z.shape[-1]))

    def value(self, z):
        return self.values.to(z.device)[z]

    @property
    def stationary_variance(self) -> float:
        return float((self.pi * self.values**2).sum())

    def autocorrelation(self, lag: int) -> float:
        pj = torch.linalg.matrix_power(self.matrix, abs(lag))
        cov = float((self.pi * self.values * (pj @ self.values)).sum())
        return cov / self.stationary_variance

    @property
    def asymptotic_variance(self) -> float:
        n = self.matrix.shape[0]
        fundamental = torch.linalg.inv(
            torch.eye(n, dtype=torch.float64) - self.matrix + self.pi.unsqueeze(0)
        )
        hv = self.values
        return float(2 * (self.pi * hv * (fundamental @ hv)).sum() - (self.pi * hv * hv).sum())

    @property
    def mixing_time(self) -> float:
        q = torch.eye(self.matrix.shape[0], dtype=torch.float64)
        for t in range(1, 10_001):
            q = q @ self.matrix
            if 0.5 * (q.unsqueeze(0) - q.unsqueeze(1)).abs().sum(-1).max() <= 0.25:
                return float(t)
        return math.inf
