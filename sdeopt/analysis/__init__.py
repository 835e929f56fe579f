"""Comparing the discrete methods with their SDE models: datasets, metrics, figures."""

from sdeopt.analysis import observables
from sdeopt.analysis.closed_forms import stationary_loss
from sdeopt.analysis.compare import compare, model_seed
from sdeopt.analysis.equivalents import clipping_factors, risk_ode
from sdeopt.analysis.kesten import KestenIndex, kesten_tail_index, sde_tail_index
from sdeopt.analysis.metrics import (
    W2,
    OrderFit,
    TailIndex,
    bures_w2,
    divergence,
    exit_times,
    hill_tail_index,
    order_fit,
    quantile_error,
    stable_tail_index,
    wasserstein2,
    weak_error,
)
from sdeopt.analysis.observables import arctan_coordinate, arctan_norm, exceedance
from sdeopt.analysis.plots import (
    plot_divergence,
    plot_marginals,
    plot_smoothness,
    plot_trajectories,
    plot_weak_error,
)
from sdeopt.analysis.smoothness import Envelope, fit_envelope, smoothness_profile
from sdeopt.analysis.validity import ladder_seed, plot_validity_ladder, validity_ladder

__all__ = [
    "W2",
    "Envelope",
    "KestenIndex",
    "OrderFit",
    "TailIndex",
    "arctan_coordinate",
    "arctan_norm",
    "bures_w2",
    "clipping_factors",
    "compare",
    "divergence",
    "exceedance",
    "exit_times",
    "fit_envelope",
    "hill_tail_index",
    "kesten_tail_index",
    "ladder_seed",
    "model_seed",
    "observables",
    "order_fit",
    "plot_divergence",
    "plot_marginals",
    "plot_smoothness",
    "plot_trajectories",
    "plot_validity_ladder",
    "plot_weak_error",
    "quantile_error",
    "risk_ode",
    "sde_tail_index",
    "smoothness_profile",
    "stable_tail_index",
    "stationary_loss",
    "validity_ladder",
    "wasserstein2",
    "weak_error",
]
