r"""Bounded observables, for weak errors of laws without moments.

Under Cauchy or :math:`\alpha`-stable noise (:math:`\alpha < 2`) the iterates may have no
mean or no variance, so ``weak_error`` of :math:`\|x\|^2` or of the loss estimates nothing
and its se does not shrink. A bounded observable g has an expectation under every law, and its
Monte Carlo se is at most :math:`\sup|g| / \sqrt{n}`. Each function here returns such a g, a
callable mapping x (..., d) to values (...), to pass as the ``observable`` of ``weak_error``:

- ``exceedance(c)``: :math:`1\{\|x - x_0\| > c\}`, so :math:`\mathbb{E} g` is a tail
  probability;
- ``arctan_norm(scale)``: :math:`\arctan(\|x - x_0\| / s) \in [0, \pi/2)`;
- ``arctan_coordinate(j, scale)``: :math:`\arctan((x_j - c) / s) \in (-\pi/2, \pi/2)`, signed.

Each callable is named by the call that builds it (``repr``, ``__name__`` and
``__qualname__``, e.g. ``exceedance(c=1.5)``), so ``weak_error`` records it in its attrs as
``sdeopt.analysis.observables.exceedance(c=1.5)``.

Example:
    >>> import sdeopt as so
    >>> g = so.analysis.observables.arctan_norm(2.0)
    >>> g
    arctan_norm(scale=2.0)
    >>> round(float(g(torch.tensor([[2.0, 0.0]]))[0]), 6)  # arctan(1) = pi/4
    0.785398
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from sdeopt._validation import check_int, check_nonnegative, check_positive

#: Centers longer than this are abbreviated in an observable's name.
NAME_MAX_ENTRIES = 8


def _float_repr(v: float) -> str:
    return repr(float(v))


def _check_center(center) -> tuple[float, ...] | None:
    if center is None:
        return None
    if isinstance(center, torch.Tensor):
        center = center.detach().cpu().tolist()
    try:
        values = tuple(float(v) for v in center)
    except (TypeError, ValueError):
        raise ValueError(
            f"Invalid center: {center!r} (must be None or a sequence of d finite numbers)"
        ) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"Invalid center: {center!r} (must be None or a sequence of d finite numbers)"
        )
    return values


def _center_repr(center: tuple[float, ...]) -> str:
    if len(center) <= NAME_MAX_ENTRIES:
        return (
            "("
            + ", ".join(_float_repr(v) for v in center)
            + ("," if len(center) == 1 else "")
            + ")"
        )
    head = ", ".join(_float_repr(v) for v in center[:3])
    return f"({head}, ..., {_float_repr(center[-1])}) (d = {len(center)})"


def _as_states(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 1:
        raise ValueError(f"Invalid x: shape {tuple(x.shape)} (need (..., d))")
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _distance(x: torch.Tensor, center: tuple[float, ...] | None) -> torch.Tensor:
    """:math:`\\|x - x_0\\|` over the last axis, (...)."""
    if center is not None:
        if x.shape[-1] != len(center):
            raise ValueError(
                f"Invalid x: dimension {x.shape[-1]}, but the observable's center has "
                f"{len(center)} coordinates"
            )
        x = x - torch.as_tensor(center, dtype=x.dtype, device=x.device)
    return torch.linalg.vector_norm(x, dim=-1)


class _Named(ABC):
    """Names an observable instance by the call that builds it (``repr``, ``__name__``,
    ``__qualname__``); subclasses define ``_call_repr``."""

    def _set_name(self) -> None:
        name = self._call_repr()
        object.__setattr__(self, "__name__", name)
        object.__setattr__(self, "__qualname__", name)

    @abstractmethod
    def _call_repr(self) -> str:
        """The call that builds this observable, e.g. ``exceedance(c=1.5)``."""

    def __repr__(self) -> str:
        return self._call_repr()


@dataclass(frozen=True, repr=False)
class Exceedance(_Named):
    r""":math:`g(x) = 1\{\|x - x_0\| > c\}`: :math:`\mathbb{E}\, g = P(\|x - x_0\| > c)`.

    Args:
        c: the threshold, a finite number >= 0.
        center: :math:`x_0`, d coordinates; None: the origin.

    Shapes: x (..., d) to values (...), in x's dtype (0 or 1).
    """

    c: float
    center: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "c", check_nonnegative("c", self.c))
        object.__setattr__(self, "center", _check_center(self.center))
        self._set_name()

    def _call_repr(self) -> str:
        center = "" if self.center is None else f", center={_center_repr(self.center)}"
        return f"exceedance(c={_float_repr(self.c)}{center})"

    def __call__(self, x) -> torch.Tensor:
        x = _as_states(x)
        return (_distance(x, self.center) > self.c).to(x.dtype)  # (...)


@dataclass(frozen=True, repr=False)
class ArctanNorm(_Named):
    r""":math:`g(x) = \arctan(\|x - x_0\| / s) \in [0, \pi/2)`.

    Args:
        scale: s, a finite number > 0: distances well below s count about linearly
            (:math:`g \approx \|x - x_0\|/s`), those well above saturate at :math:`\pi/2`.
        center: :math:`x_0`, d coordinates; None: the origin.

    Shapes: x (..., d) to values (...).
    """

    scale: float = 1.0
    center: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_positive("scale", self.scale))
        object.__setattr__(self, "center", _check_center(self.center))
        self._set_name()

    def _call_repr(self) -> str:
        center = "" if self.center is None else f", center={_center_repr(self.center)}"
        return f"arctan_norm(scale={_float_repr(self.scale)}{center})"

    def __call__(self, x) -> torch.Tensor:
        x = _as_states(x)
        return torch.atan(_distance(x, self.center) / self.scale)  # (...)


@dataclass(frozen=True, repr=False)
class ArctanCoordinate(_Named):
    r""":math:`g(x) = \arctan((x_j - c) / s) \in (-\pi/2, \pi/2)`, signed, so it sees a shift of
    a symmetric law (where ``arctan_norm`` sees a change of spread).

    Args:
        j: the coordinate, an integer in 0..d-1 (checked against x's d when called).
        scale: s, a finite number > 0.
        center: c, the value subtracted from :math:`x_j`.

    Shapes: x (..., d) to values (...).
    """

    j: int = 0
    scale: float = 1.0
    center: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "j", check_int("j", self.j, minimum=0))
        object.__setattr__(self, "scale", check_positive("scale", self.scale))
        try:
            center = math.nan if isinstance(self.center, bool) else float(self.center)
        except (TypeError, ValueError):
            center = math.nan
        if not math.isfinite(center):
            raise ValueError(f"Invalid center: {self.center!r} (must be a finite number)")
        object.__setattr__(self, "center", center)
        self._set_name()

    def _call_repr(self) -> str:
        center = "" if self.center == 0.0 else f", center={_float_repr(self.center)}"
        return f"arctan_coordinate(j={self.j}, scale={_float_repr(self.scale)}{center})"

    def __call__(self, x) -> torch.Tensor:
        x = _as_states(x)
        if self.j >= x.shape[-1]:
            raise ValueError(f"Invalid j: {self.j} (x has d = {x.shape[-1]} coordinates)")
        return torch.atan((x[..., self.j] - self.center) / self.scale)  # (...)


def exceedance(c: float, *, center=None) -> Exceedance:
    r"""The indicator :math:`1\{\|x - x_0\| > c\}`, whose expectation is a tail probability.

    Its weak error is a difference of probabilities, with se at most
    :math:`\sqrt{(p_1(1-p_1) + p_2(1-p_2))/n}`. For :math:`x \sim \mathcal{N}(0, I_2)`,
    :math:`P(\|x\| > c) = e^{-c^2/2}`.

    Args:
        c: the threshold, a finite number >= 0.
        center: :math:`x_0`, a sequence (or tensor) of d coordinates; None: the origin.

    Returns:
        ``Exceedance``: a callable mapping x (..., d) to values (...) in {0, 1}, in x's dtype.

    Example:
        >>> g = exceedance(1.0)
        >>> g
        exceedance(c=1.0)
        >>> g(torch.tensor([[3.0, 4.0], [0.3, 0.4]])).tolist()
        [1.0, 0.0]
    """
    return Exceedance(c=c, center=center)


def arctan_norm(scale: float = 1.0, *, center=None) -> ArctanNorm:
    r""":math:`\arctan(\|x - x_0\| / s)`, bounded by :math:`\pi/2`: a size of x that has an
    expectation under every law.

    For a 1-D Cauchy law of scale :math:`\gamma` centred at :math:`x_0`,
    :math:`\mathbb{E} \arctan(|x - x_0| / \gamma) = \pi/4` (with :math:`x - x_0 = \gamma \tan V`,
    V uniform on :math:`(-\pi/2, \pi/2)`, the value is :math:`|V|`).

    Args:
        scale: s, a finite number > 0, the distance at which g reaches :math:`\pi/4`.
        center: :math:`x_0`, a sequence (or tensor) of d coordinates; None: the origin.

    Returns:
        ``ArctanNorm``: a callable mapping x (..., d) to values (...) in :math:`[0, \pi/2)`.
    """
    return ArctanNorm(scale=scale, center=center)


def arctan_coordinate(j: int = 0, scale: float = 1.0, *, center: float = 0.0) -> ArctanCoordinate:
    r""":math:`\arctan((x_j - c) / s)`, bounded by :math:`\pi/2` in magnitude and signed.

    For :math:`x_j` Cauchy of location m and scale :math:`\gamma`,
    :math:`\mathbb{E} \arctan((x_j - c)/s) = \arctan((m - c)/(s + \gamma))` (the harmonic
    extension of :math:`\arctan(t/s)` to the upper half-plane, evaluated at
    :math:`m - c + i\gamma`).

    Args:
        j: the coordinate, an integer >= 0 and < d.
        scale: s, a finite number > 0.
        center: c, a finite number subtracted from :math:`x_j`.

    Returns:
        ``ArctanCoordinate``: a callable mapping x (..., d) to values (...) in
        :math:`(-\pi/2, \pi/2)`.
    """
    return ArctanCoordinate(j=j, scale=scale, center=center)
