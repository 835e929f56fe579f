"""The discrete ground truth: batched distributed optimizers and the ``simulate`` engine."""

from sdeopt.discrete.base import (
    METHODS,
    DirectionMethod,
    DistributedMethod,
    Method,
    State,
    simulate,
)
from sdeopt.discrete.dcsgd import DCSGD
from sdeopt.discrete.dsgd import DSGD
from sdeopt.discrete.dsignsgd import DSignSGD
from sdeopt.discrete.ito_chain import ItoChain
from sdeopt.discrete.markov_sgd import (
    MARKOV_ESTIMATORS,
    MLMC,
    MarkovEstimator,
    MarkovSGD,
    SingleSample,
)
from sdeopt.discrete.svag import SVAG
from sdeopt.trajectory import Trajectory

__all__ = [
    "DCSGD",
    "DSGD",
    "MARKOV_ESTIMATORS",
    "METHODS",
    "MLMC",
    "SVAG",
    "DSignSGD",
    "DirectionMethod",
    "DistributedMethod",
    "ItoChain",
    "MarkovEstimator",
    "MarkovSGD",
    "Method",
    "SingleSample",
    "State",
    "Trajectory",
    "simulate",
]
