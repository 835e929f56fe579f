"""sdeopt: batched distributed stochastic optimizers and their SDE approximations."""

from sdeopt import (  # noqa: E402
    analysis,
    compressors,
    discrete,
    dynamics,
    experiments,
    io,
    noise,
    problems,
    random,
    schedules,
    special,
)
from sdeopt._cpu import configure_torch  # noqa: E402
from sdeopt._version import __version__  # noqa: E402
from sdeopt.random import RandomSource  # noqa: E402

__all__ = ["RandomSource", "__version__", "analysis", "compressors", "configure_torch", "discrete", "dynamics",
           "experiments", "io", "noise", "problems", "random", "schedules", "special"]
