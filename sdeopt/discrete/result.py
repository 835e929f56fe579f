"""Deprecated alias of ``sdeopt.trajectory``, where ``Trajectory`` moved (issue 13: beside the one
run loop, ``sdeopt.engine``, that makes it); it will be removed in the next version."""

import warnings

from sdeopt.trajectory import Trajectory

warnings.warn(
    "sdeopt.discrete.result moved to sdeopt.trajectory; import Trajectory from there "
    "(or use sdeopt.discrete.Trajectory)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["Trajectory"]
