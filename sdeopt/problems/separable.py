r"""Separable objectives :math:`f(x) = \sum \varphi(x_j)`: quartic, quadratic + quartic, cosh and
exp sums, double wells."""

from __future__ import annotations

from abc import abstractmethod

import torch

from sdeopt._validation import check_int, check_positive
from sdeopt.problems.base import (
    PROBLEMS,
    Problem,
)

# ---------------------------------------------------------------------------------------------
# Separable objectives f(x) = Σ_j φ(x_j)
# ---------------------------------------------------------------------------------------------


class SeparableProblem(Problem):
    r""":math:`f(x) = \sum_j \varphi(x_j)` for a scalar function :math:`\varphi`:
    :math:`\nabla f = \varphi'(x)`, :math:`\nabla^2 f = \operatorname{diag}(\varphi''(x))`.

    Every operation is elementwise, so row b of a batch equals run b alone. Subclasses define
    ``_phi``, ``_dphi`` and ``_d2phi`` (elementwise on tensors). Homogeneous.

    Smoothness in d dimensions: :math:`\|\nabla^2 f(x)\|_2 = \max_j |\varphi''(x_j)|` and
    :math:`\|\nabla f(x)\|_2 \ge \max_j |\varphi'(x_j)|`, so a one-dimensional bound
    :math:`|\varphi''(t)| \le L_0 + L_1 |\varphi'(t)|`, applied at the coordinate with the
    largest :math:`|\varphi''|`, gives the same :math:`(L_0, L_1)` in every dimension. Conversely,
    where :math:`\varphi'(0) = 0` the point :math:`t e_1` has :math:`\|\nabla f\|_2 = |\varphi'(t)|`
    and :math:`\|\nabla^2 f\|_2 \ge |\varphi''(t)|`, so a pair valid in d dimensions is valid in
    one: the valid pairs do not depend on d.

    Args:
        dim: :math:`d \ge 1`.
    """

    separable = True
    #: True when φ has its minimum 0 at 0, so that f has minimiser 0 and minimum 0.
    minimum_at_zero = False

    def __init__(self, dim: int) -> None:
        self.dim = check_int("dim", dim, minimum=1)
        if self.minimum_at_zero:
            self.minimizer = torch.zeros(self.dim, dtype=torch.float64)  # (d,)
            self.min_value = 0.0

    @abstractmethod
    def _phi(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _dphi(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _d2phi(self, x: torch.Tensor) -> torch.Tensor: ...

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self._phi(x).sum(dim=-1)  # (B,)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self._dphi(x)  # (B, d)

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._d2phi(x) * v  # (B, d)


@PROBLEMS.register
class Quartic(SeparableProblem):
    r""":math:`f(x) = \tfrac14 \sum_j x_j^4`: :math:`\nabla f = x^3`,
    :math:`\nabla^2 f = \operatorname{diag}(3 x^2)`; minimiser 0, minimum 0.

    Not L-smooth (the curvature grows without bound), but :math:`(4/L_1^2, L_1)`-smooth for
    every :math:`L_1 > 0`, e.g. :math:`(1, 2)` or :math:`(4/9, 3)`: the least :math:`L_0` for a
    given :math:`L_1` is :math:`\max_{t \ge 0} (3t^2 - L_1 t^3) = 4/L_1^2`, attained at
    :math:`t = 2/L_1`. These least pairs form the curve :math:`L_0 L_1^2 = 4`, a trade-off with
    no least element (neither :math:`L_1 = 0` nor :math:`L_0 = 0` is possible), the same in
    every dimension (see ``SeparableProblem``).
    Its minimiser is degenerate (zero curvature), so convergence is sublinear.

    Args:
        dim: :math:`d \ge 1`.

    References:
        Zhang, He, Sra, Jadbabaie, "Why gradient clipping accelerates training", ICLR 2020
        (the :math:`(L_0, L_1)`-smoothness condition
        :math:`\|\nabla^2 f\| \le L_0 + L_1 \|\nabla f\|`).
    """

    minimum_at_zero = True

    @staticmethod
    def _phi(x):
        x2 = x * x
        return 0.25 * x2 * x2

    @staticmethod
    def _dphi(x):
        return x * x * x

    @staticmethod
    def _d2phi(x):
        return 3.0 * x * x


@PROBLEMS.register
class QuadraticQuartic(SeparableProblem):
    r""":math:`f(x) = \sum_j (x_j^2/2 + x_j^4/4)`: :math:`\nabla f = x + x^3`,
    :math:`\nabla^2 f = \operatorname{diag}(1 + 3x^2)`; min 0 at 0.

    A quadratic bowl with quartic walls: strongly convex (:math:`\mu = 1`) with a
    non-degenerate minimiser, like ``Quadratic``, but not L-smooth, like ``Quartic``.
    :math:`(1, 3/2)`-smooth: :math:`1 + 3t^2 \le 1 + \tfrac32 |t + t^3|`, as
    :math:`3|t| \le \tfrac32 (1 + t^2)`, with equality at :math:`t = 0` and :math:`t = \pm 1`.
    :math:`L_0 = 1` is the least possible (at t = 0), and :math:`3/2` the least :math:`L_1`
    with it; a smaller :math:`L_1 > 0` needs
    :math:`L_0 = \max_{t \ge 0} (1 + 3t^2 - L_1 (t + t^3)) > 1`. The same in every dimension
    (see ``SeparableProblem``). The smallest smooth objective on which
    the SDE models' drift corrections are not linear in x (weak-order studies).

    Args:
        dim: :math:`d \ge 1`.

    References:
        Li, Tai, E, "Stochastic modified equations and dynamics of stochastic gradient
        algorithms I", JMLR 2019 (weak-order studies of SGD on smooth objectives).
    """

    minimum_at_zero = True

    @staticmethod
    def _phi(x):
        x2 = x * x
        return 0.5 * x2 + 0.25 * x2 * x2

    @staticmethod
    def _dphi(x):
        return x + x * x * x

    @staticmethod
    def _d2phi(x):
        return 1.0 + 3.0 * x * x


@PROBLEMS.register
class CoshSum(SeparableProblem):
    r""":math:`f(x) = \sum_j \cosh(x_j) - d`: :math:`\nabla f = \sinh(x)`,
    :math:`\nabla^2 f = \operatorname{diag}(\cosh(x))`; min 0 at 0.

    :math:`(1, 1)`-smooth: :math:`\cosh(t) = |\sinh(t)| + e^{-|t|} \le 1 + |\sinh(t)|`. The
    valid pairs are exactly :math:`L_0 \ge 1, L_1 \ge 1`, in every dimension (see
    ``SeparableProblem``): :math:`L_0 \ge \cosh 0 = 1`, and for :math:`L_1 < 1`,
    :math:`\cosh(t) - L_1 |\sinh(t)| \to \infty`. Strongly convex (:math:`\mu = 1`), not
    L-smooth. The value is computed as
    :math:`\sum_j 2 \sinh^2(x_j / 2)`, equal to :math:`\cosh(x_j) - 1` but free of the
    cancellation of :math:`\cosh(x) - 1` near the minimiser.

    Args:
        dim: :math:`d \ge 1`.

    References:
        Zhang, He, Sra, Jadbabaie, ICLR 2020 (the (L0, L1)-smoothness condition).
    """

    minimum_at_zero = True

    @staticmethod
    def _phi(x):
        s = torch.sinh(0.5 * x)
        return 2.0 * s * s

    @staticmethod
    def _dphi(x):
        return torch.sinh(x)

    @staticmethod
    def _d2phi(x):
        return torch.cosh(x)


@PROBLEMS.register
class ExpSum(SeparableProblem):
    r""":math:`f(x) = \sum_j \exp(x_j)`: :math:`\nabla f = \exp(x)`,
    :math:`\nabla^2 f = \operatorname{diag}(\exp(x))`.

    :math:`(0, 1)`-smooth: :math:`\|\nabla^2 f(x)\|_2 = \max_j e^{x_j} \le \|\nabla f(x)\|_2`.
    The valid pairs are exactly :math:`L_0 \ge 0, L_1 \ge 1` (for :math:`L_1 < 1` the bound
    fails at :math:`t e_1` as :math:`t \to \infty`); not L-smooth.
    Convex and bounded below with infimum 0, which is not attained (no minimiser:
    ``minimizer`` and ``min_value`` are None). A :math:`(0, L_1)`-smooth function with a
    minimiser would be constant (Grönwall), so this is the typical member of the class.

    Args:
        dim: :math:`d \ge 1`.

    References:
        Zhang, He, Sra, Jadbabaie, ICLR 2020.
    """

    @staticmethod
    def _phi(x):
        return torch.exp(x)

    @staticmethod
    def _dphi(x):
        return torch.exp(x)

    @staticmethod
    def _d2phi(x):
        return torch.exp(x)


@PROBLEMS.register
class DoubleWell(SeparableProblem):
    r""":math:`f(x) = \sum_j \frac{x_j^2 (x_j - 2w)^2}{8 w^2}`: two wells per coordinate, at 0 and
    :math:`2w`, separated by a barrier at :math:`w` of height :math:`w^2/8`.

    :math:`\nabla f = x (x - w)(x - 2w) / (2w^2)`,
    :math:`\nabla^2 f = \operatorname{diag}((3x^2 - 6wx + 2w^2) / (2w^2))`: curvature 1 at both
    minima and :math:`-1/2` on the barrier, whatever the width, so the width :math:`w` (the
    distance from a minimum to the barrier) and the barrier's height :math:`w^2/8` are the only
    things that change with it. This is the potential of the first-exit studies: a Brownian
    SDE leaves the well at 0 after a time exponential in the height (Kramers), a Lévy-driven
    one after a time polynomial in the width (one jump, :math:`\propto w^\alpha`; Imkeller &
    Pavlyukevich 2006). Minimiser 0 (the other, :math:`2w e`, has the same value 0); not
    L-smooth (the curvature grows like :math:`x^2`).

    Args:
        width: :math:`w > 0`.
        dim: :math:`d \ge 1`.

    References:
        Imkeller & Pavlyukevich, "First exit times of SDEs driven by stable Lévy processes",
        Stoch. Proc. Appl. 116(4), 2006; Şimşekli, Sagun & Gürbüzbalaban, ICML 2019 (wide
        minima under heavy-tailed noise).
    """

    minimum_at_zero = True

    def __init__(self, width: float = 1.0, dim: int = 1) -> None:
        self.width = check_positive("width", width)
        super().__init__(dim)

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        w = self.width
        y = x * (x - 2.0 * w)
        return y * y / (8.0 * w * w)

    def _dphi(self, x: torch.Tensor) -> torch.Tensor:
        w = self.width
        return x * (x - w) * (x - 2.0 * w) / (2.0 * w * w)

    def _d2phi(self, x: torch.Tensor) -> torch.Tensor:
        w = self.width
        return (3.0 * x * x - 6.0 * w * x + 2.0 * w * w) / (2.0 * w * w)

    def config(self) -> dict:
        return {**super().config(), "width": self.width}
