"""The discrete ground truth: batched distributed optimizers and the ``simulate`` engine."""

from sdeopt.discrete.base import DirectionMethod, DistributedMethod, Method, State, simulate
from sdeopt.discrete.dcsgd import DCSGD
from sdeopt.discrete.dsgd import DSGD
from sdeopt.discrete.dsignsgd import DSignSGD
from sdeopt.discrete.ito_chain import ItoChain
from sdeopt.discrete.markov_sgd import MarkovSGD
from sdeopt.discrete.result import Trajectory

#: Every registered method, by name (drives the generic contract tests and configs).
METHODS = {
    "DSGD": DSGD,
    "DCSGD": DCSGD,
    "DSignSGD": DSignSGD,
    "ItoChain": ItoChain,
    "MarkovSGD": MarkovSGD,
}

__all__ = [
    "DCSGD",
    "DSGD",
    "METHODS",
    "DSignSGD",
    "DirectionMethod",
    "DistributedMethod",
    "ItoChain",
    "MarkovSGD",
    "Method",
    "State",
    "Trajectory",
    "simulate",
]
