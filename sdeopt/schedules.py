r"""Learning-rate schedules: the dimensionless factor :math:`\eta_k` (time convention:
docs/models.md, Notation).

The step taken at iteration k is :math:`\mathrm{lr} \cdot \eta_k` with :math:`\eta_0 = 1` for
every schedule here. Time is never rescaled by the schedule: iteration k sits at SDE time
:math:`t_k = k \cdot \mathrm{lr}`, and the SDE sees the schedule as the piecewise-constant
factor :math:`\eta_t = \eta_{\lfloor t / \mathrm{lr} \rfloor}`.

A schedule is a frozen, keyword-only dataclass and a pure function of k:

- ``schedule(k)`` for an int k >= 0 returns a Python float; for an integer tensor it returns
  a float64 tensor of the same shape and device;
- ``schedule.factors(n_steps)`` returns the float64 tensor
  :math:`(\eta_0, \dots, \eta_{n_\mathrm{steps}-1})`;
- ``schedule.config()`` is a JSON-able dict, and ``from_config(schedule.config())`` rebuilds
  an equal schedule. ``SCHEDULES`` maps the ``"type"`` names to the classes.

Example:
    >>> s = PolyDecay(power=0.5)
    >>> s(0), s(3)
    (1.0, 0.5)
    >>> from_config(s.config()) == s
    True
    >>> Cosine(n_steps=4).factors(5).tolist()
    [1.0, 0.8535533905932737, 0.5, 0.14644660940672627, 0.0]
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sdeopt._jsonable import REPRODUCIBLE, is_reproducible, jsonable, qualified_name
from sdeopt._validation import check_in_range, check_int, check_nonnegative, check_positive
from sdeopt.registry import Registry

#: Schedules by class name (short names such as "poly" build too): ``schedule = {type = ...}``.
SCHEDULES: Registry = Registry("schedule")


class Schedule(ABC):
    r"""Base class: a map :math:`k \mapsto \eta_k \ge 0` with :math:`\eta_0 = 1`.

    Subclasses implement ``_factor`` once, on int64 tensors; ``__call__`` and ``factors`` are
    built on it, so the scalar and the vectorised paths compute the same formula.
    """

    #: the short name this class also builds from (``type = "poly"``).
    name: ClassVar[str]

    @abstractmethod
    def _factor(self, k: torch.Tensor) -> torch.Tensor:
        r""":math:`\eta_k` for an int64 tensor :math:`k \ge 0`, as a float64 tensor of the same
        shape."""

    def __call__(self, k: int | torch.Tensor) -> float | torch.Tensor:
        r""":math:`\eta_k` for an int :math:`k \ge 0` (a float) or an integer tensor (a float64
        tensor, same shape)."""
        if isinstance(k, torch.Tensor):
            if k.dtype.is_floating_point or k.dtype.is_complex or k.dtype == torch.bool:
                raise ValueError(
                    f"Invalid k: tensor of dtype {k.dtype} (must be an integer tensor)"
                )
            if k.numel() and bool((k < 0).any()):
                raise ValueError(f"Invalid k: tensor with minimum {int(k.min())} (must be >= 0)")
            return self._factor(k.to(torch.int64))
        k = check_int("k", k, minimum=0)
        return float(self._factor(torch.tensor(k, dtype=torch.int64)))

    def factors(self, n_steps: int) -> torch.Tensor:
        r""":math:`(\eta_0, \dots, \eta_{n_\mathrm{steps}-1})` as a float64 tensor of shape
        (n_steps,)."""
        n_steps = check_int("n_steps", n_steps, minimum=0)
        return self._factor(torch.arange(n_steps, dtype=torch.int64))  # (n_steps,)

    def config(self) -> dict:
        """A JSON-able description: ``{"type": name, <hyperparameters>}``.

        A schedule ``from_config`` cannot rebuild (a user subclass outside ``SCHEDULES``) is
        recorded by its qualified class name and marked ``"reproducible": False``, as is any
        callable among its hyperparameters (recorded by name).
        """
        cls = type(self)
        registered = SCHEDULES.get(cls.__name__) is cls
        out: dict[str, Any] = {"type": cls.__name__ if registered else qualified_name(cls)}
        if dataclasses.is_dataclass(self):
            out.update({f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)})
        if not registered or not is_reproducible(out):
            out[REPRODUCIBLE] = False
        return out


@SCHEDULES.register(aliases=("constant",))
@dataclass(frozen=True, kw_only=True)
class Constant(Schedule):
    r"""The constant schedule :math:`\eta_k = 1`."""

    name: ClassVar[str] = "constant"

    def _factor(self, k: torch.Tensor) -> torch.Tensor:
        return torch.ones(k.shape, dtype=torch.float64, device=k.device)


@SCHEDULES.register(aliases=("poly",))
@dataclass(frozen=True, kw_only=True)
class PolyDecay(Schedule):
    r"""Polynomial decay
    :math:`\eta_k = (\mathrm{offset} / (k + \mathrm{offset}))^{\mathrm{power}}`.

    With ``offset = 1`` this is :math:`1 / (k + 1)^{\mathrm{power}}`; ``power = 1/2`` is the
    classical :math:`1/\sqrt{k}` rate of SGD on convex problems and ``power = 1`` the
    Robbins–Monro :math:`1/k` rate (Robbins & Monro, Ann. Math. Statist. 1951). A larger offset
    delays the decay.

    Args:
        power: the exponent :math:`p \ge 0` (:math:`p = 0` is the constant schedule).
        offset: :math:`k_0 > 0`; :math:`\eta_k` halves (for :math:`p = 1`) at :math:`k = k_0`.
    """

    power: float = 0.5
    offset: float = 1.0
    name: ClassVar[str] = "poly"

    def __post_init__(self) -> None:
        object.__setattr__(self, "power", check_nonnegative("power", self.power))
        object.__setattr__(self, "offset", check_positive("offset", self.offset))

    def _factor(self, k: torch.Tensor) -> torch.Tensor:
        return (self.offset / (k.to(torch.float64) + self.offset)).pow(self.power)


@SCHEDULES.register(aliases=("cosine",))
@dataclass(frozen=True, kw_only=True)
class Cosine(Schedule):
    r"""Cosine annealing from 1 to ``min_factor`` over ``n_steps`` iterations.

    .. math::

        \eta_k = \mathrm{min} + (1 - \mathrm{min})\, (1 + \cos(\pi k / n_\mathrm{steps}))/2

    for :math:`k \le n_\mathrm{steps}` and :math:`\eta_k = \mathrm{min}` afterwards (Loshchilov &
    Hutter, SGDR, ICLR 2017, Eq. 5, without restarts). Evaluated as
    :math:`1 - (1 - \mathrm{min})(1 - \cos(\pi k/n))/2` so that :math:`\eta_0 = 1` exactly.

    Args:
        n_steps: the annealing length, an integer >= 1.
        min_factor: the final factor, in :math:`[0, 1]`.
    """

    n_steps: int
    min_factor: float = 0.0
    name: ClassVar[str] = "cosine"

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_steps", check_int("n_steps", self.n_steps, minimum=1))
        object.__setattr__(
            self, "min_factor", check_in_range("min_factor", self.min_factor, 0.0, 1.0)
        )

    def _factor(self, k: torch.Tensor) -> torch.Tensor:
        phase = (math.pi / self.n_steps) * k.clamp(max=self.n_steps).to(torch.float64)
        eta = 1.0 - (1.0 - self.min_factor) * (1.0 - torch.cos(phase)) / 2.0
        return torch.where(k >= self.n_steps, torch.full_like(eta, self.min_factor), eta)


@SCHEDULES.register(aliases=("step",))
@dataclass(frozen=True, kw_only=True)
class StepDecay(Schedule):
    r"""Piecewise-constant decay
    :math:`\eta_k = \mathrm{factor}^{\lfloor k / \mathrm{every} \rfloor}`.

    Args:
        every: iterations between decays, an integer >= 1.
        factor: the multiplier per decay, in :math:`(0, 1]`.
    """

    every: int
    factor: float
    name: ClassVar[str] = "step"

    def __post_init__(self) -> None:
        object.__setattr__(self, "every", check_int("every", self.every, minimum=1))
        object.__setattr__(
            self, "factor", check_in_range("factor", self.factor, 0.0, 1.0, closed="right")
        )

    def _factor(self, k: torch.Tensor) -> torch.Tensor:
        exponent = torch.div(k, self.every, rounding_mode="floor").to(torch.float64)
        return torch.full_like(exponent, self.factor).pow(exponent)


#: The deprecated name of ``SCHEDULES`` (it was keyed by the short names, which still build).
REGISTRY = SCHEDULES


def from_config(config: Mapping) -> Schedule:
    """Rebuild a schedule from ``config()`` output (or a TOML table of the same form).

    Args:
        config: a mapping with ``"type"`` (a class name of ``SCHEDULES``, or its short name:
            "constant", "poly", "cosine", "step") and the hyperparameters.
    Raises:
        ValueError: unknown type or hyperparameter, missing type, or an invalid value (the
            message names the key and the value).
    """
    return SCHEDULES.build(config, where="schedule")
