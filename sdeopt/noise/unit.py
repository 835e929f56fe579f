r"""Isotropic unit-covariance laws: the :math:`\varepsilon` of Itô chains
(``sdeopt.discrete.ItoChain``)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from sdeopt._validation import check_positive
from sdeopt.noise.additive import StudentT
from sdeopt.random import RandomSource
from sdeopt.registry import Registry

# ---------------------------------------------------------------------------------------------
# Isotropic unit-covariance laws (the ε of Itô chains)
# ---------------------------------------------------------------------------------------------


#: Unit laws of an Itô chain's ε by class name: ``eps = {type = ...}`` in configs.
UNIT_LAWS: Registry = Registry("unit law")


class UnitLaw(ABC):
    r"""A law of :math:`\varepsilon` in :math:`\mathbb{R}^d` with i.i.d. coordinates,
    :math:`\mathbb{E}\,\varepsilon = 0` and :math:`\mathbb{E}\,\varepsilon\varepsilon^\top = I`
    (Itô chains).

    Attributes:
        skewness: :math:`\mathbb{E}\,\varepsilon_j^3` (zero for symmetric laws; a non-zero value
            slows weak convergence).
    """

    skewness: float = 0.0

    @abstractmethod
    def sample(self, rng: RandomSource, dim: int) -> torch.Tensor:
        """Draws of shape (B, d)."""

    def config(self) -> dict:
        return {"type": type(self).__name__, **{k: v for k, v in vars(self).items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


@UNIT_LAWS.register
class StandardNormal(UnitLaw):
    r""":math:`\varepsilon \sim \mathcal{N}(0, I)`."""

    def sample(self, rng, dim):
        return rng.normal(dim)  # (B, d)


def random_signs(rng: RandomSource, dim: int) -> torch.Tensor:
    r""":math:`\pm 1` with probability 1/2 each, (B, d): -1 where a uniform is below 1/2.

    Comparisons write 0/1 floats (``out=``); a bool tensor and torch.where measured 3-20x
    slower on the CPU.
    """
    u = rng.uniform(dim)
    return torch.ge(u, 0.5, out=u).mul_(2.0).sub_(1.0)


@UNIT_LAWS.register
class Rademacher(UnitLaw):
    r""":math:`\varepsilon_j = \pm 1` with probability 1/2 each."""

    def sample(self, rng, dim):
        return random_signs(rng, dim)  # (B, d)


@UNIT_LAWS.register
class CenteredExponential(UnitLaw):
    r""":math:`\varepsilon_j = E_j - 1`, :math:`E_j \sim \mathrm{Exp}(1)`: mean 0, variance 1,
    skewness 2."""

    skewness = 2.0

    def sample(self, rng, dim):
        return rng.exponential(dim) - 1.0  # (B, d)


@UNIT_LAWS.register
class ScaledUniform(UnitLaw):
    r""":math:`\varepsilon_j` uniform on :math:`[-\sqrt{3}, \sqrt{3}]` (variance 1)."""

    def sample(self, rng, dim):
        return (2.0 * rng.uniform(dim) - 1.0) * math.sqrt(3.0)  # (B, d)


@UNIT_LAWS.register
class StandardizedStudentT(UnitLaw):
    r""":math:`\varepsilon_j = T \sqrt{(\nu - 2)/\nu}`, :math:`T \sim t_\nu`: unit variance,
    defined for :math:`\nu > 2` only (the chain theory needs
    :math:`\mathbb{E}\,\varepsilon\varepsilon^\top = I`)."""

    def __init__(self, nu: float) -> None:
        nu = check_positive("nu", nu)
        if nu <= 2.0:
            raise ValueError(
                f"Invalid nu: {nu!r} (a standardised Student-t needs nu > 2: for nu <= 2 "
                "the variance is infinite and ε cannot have identity covariance)"
            )
        self.nu = nu

    def sample(self, rng, dim):
        t = StudentT(nu=self.nu).sample_standard(rng, dim)  # (B, d)
        return t * math.sqrt((self.nu - 2.0) / self.nu)
