"""The discrete ground truth: batched distributed optimizers and the ``simulate`` engine."""

from sdeopt.discrete.base import DirectionMethod, Method, State, simulate
from sdeopt.discrete.dcsgd import DCSGD
from sdeopt.discrete.dsgd import DSGD
from sdeopt.discrete.dsignsgd import DSignSGD
from sdeopt.discrete.result import Trajectory

#: Every registered method, by name (drives the generic contract tests and configs).
METHODS = {"DSGD": DSGD, "DCSGD": DCSGD, "DSignSGD": DSignSGD}

__all__ = ["DCSGD", "DSGD", "DSignSGD", "DirectionMethod", "METHODS", "Method", "State",
           "Trajectory", "simulate"]
