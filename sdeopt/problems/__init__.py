r"""Objectives :math:`f(x) = \frac{1}{N} \sum_i f_i(x)`, batched over runs.

Every problem maps a batch of states x of shape (B, d) to losses (B,), gradients (B, d) and
Hessian-vector products (B, d). Problems whose workers hold different data (heterogeneous
splits) also give per-worker gradients (B, N, d); homogeneous problems give (B, 1, d), which
broadcasts over any number of workers.
"""

from sdeopt.problems.base import PROBLEMS, Problem
from sdeopt.problems.finite_sum import FiniteSumProblem, LogisticRegression
from sdeopt.problems.function import FunctionProblem
from sdeopt.problems.least_squares import LeastSquares
from sdeopt.problems.quadratic import Quadratic
from sdeopt.problems.separable import (
    CoshSum,
    DoubleWell,
    ExpSum,
    QuadraticQuartic,
    Quartic,
    SeparableProblem,
)
from sdeopt.problems.streaming import StreamingLeastSquares

__all__ = [
    "PROBLEMS",
    "CoshSum",
    "DoubleWell",
    "ExpSum",
    "FiniteSumProblem",
    "FunctionProblem",
    "LeastSquares",
    "LogisticRegression",
    "Problem",
    "Quadratic",
    "QuadraticQuartic",
    "Quartic",
    "SeparableProblem",
    "StreamingLeastSquares",
]
