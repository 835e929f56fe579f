"""Deprecated alias of ``sdeopt.experiments.runner``, where this module moved (issue 13: analysis holds
compare, metrics and plots); it will be removed in the next version."""

import warnings

from sdeopt.experiments.runner import *  # noqa: F403

warnings.warn(
    "sdeopt.analysis.experiments moved to sdeopt.experiments.runner; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
