"""Objectives written out by hand, as independent references for the tests."""

from __future__ import annotations

import sdeopt as so


class HalfSquarePlusQuartic(so.problems.Problem):
    """f = x²/2 + x⁴/4 in one dimension (analytic gradient and Hessian)."""

    dim = 1

    def loss(self, x):
        return (0.5 * x**2 + 0.25 * x**4).sum(-1)

    def grad(self, x):
        return x + x**3

    def hvp(self, x, v):
        return (1 + 3 * x**2) * v
