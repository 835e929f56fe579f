"""Objectives written out by hand, as independent references for the tests."""

from __future__ import annotations

import torch

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


class TwoCenters(so.problems.Problem):
    """Heterogeneous workers: f_i = |x - c_i|²/2 with two centres c_i, the rows of ``centers``."""

    n_workers = 2

    def __init__(self, centers=((1.0, -1.0, 0.5), (-0.5, 2.0, 0.0))):
        self.centers = torch.tensor(centers)  # (2, d)
        self.dim = self.centers.shape[1]

    def loss(self, x):
        return 0.5 * ((x.unsqueeze(1) - self.centers) ** 2).sum(-1).mean(1)

    def grad(self, x):
        return x - self.centers.mean(0)

    def hvp(self, x, v):
        return v

    def worker_grads(self, x):
        return x.unsqueeze(1) - self.centers  # (B, 2, d)
