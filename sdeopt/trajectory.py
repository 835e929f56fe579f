"""Light result objects of a batched simulation, convertible to the xarray schema (docs/schema.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sdeopt._jsonable import is_reproducible, jsonable, to_json
from sdeopt.random import seed_attr


@dataclass
class Trajectory:
    r"""Recorded observables of B runs at S recorded steps.

    Attributes:
        model: "discrete" or the name of an SDE model.
        steps: (S,) int64 recorded iteration indices k.
        lr: the base learning rate :math:`\eta`; SDE time of step k is
            :math:`t_k = k \cdot \mathrm{lr}`.
        lr_sum: (S,) float64 :math:`\sum_{j<k} \eta\,\eta_j`, the learning rate actually summed.
        observables: name -> (S, B) tensor ("loss", "grad_norm", "dist").
        x: (S, B, d) recorded iterates, or None.
        diverged: (B,) bool, runs frozen after a non-finite or over-threshold iterate.
        blowup_step: (B,) int64, the first step whose iterate blew up, -1 for none.
        config: configuration of the run (JSON-able for library parts; user callables are
            recorded by name, marked ``"reproducible": False``).
        seed, device, dtype: how it was run.
        increments: (n_steps, B, d) standard normal noise draws :math:`\xi_k`, when kept for
            coupling.
    """

    model: str
    steps: np.ndarray
    lr: float
    lr_sum: np.ndarray
    observables: dict[str, torch.Tensor]
    x: torch.Tensor | None
    diverged: torch.Tensor
    blowup_step: torch.Tensor
    config: dict
    seed: int
    device: str
    dtype: str
    increments: torch.Tensor | None = None

    @property
    def time(self) -> np.ndarray:
        r"""(S,) float64 SDE time :math:`t_k = k \cdot \mathrm{lr}`."""
        return self.steps.astype(np.float64) * self.lr

    @property
    def n_runs(self) -> int:
        return int(self.diverged.shape[0])

    def __getattr__(self, name: str):
        observables = self.__dict__.get("observables", {})
        if name in observables:
            return observables[name]
        raise AttributeError(
            f"{type(self).__name__} has no attribute or recorded observable {name!r}"
            f" (recorded: {', '.join(observables) or 'none'})"
        )

    def final(self, name: str = "loss") -> torch.Tensor:
        """The observable at the last recorded step, (B,)."""
        return getattr(self, name)[-1]

    def to_dataset(self):
        """An ``xarray.Dataset`` with dims (model, step, run[, coord]) per docs/schema.md.

        attrs: ``config`` (JSON), ``reproducible`` (1, or 0 when the config records user code
        by name only, e.g. a callable drift: the config then cannot rebuild the run), ``seed``,
        ``device``, ``dtype``, ``lr`` and the versions.
        """
        import xarray as xr

        from sdeopt._version import __version__

        coords = {
            "model": [self.model],
            "step": self.steps,
            "run": np.arange(self.n_runs),
            "time": ("step", self.time, {"units": "optimizer steps x lr"}),
            "lr_sum": ("step", self.lr_sum, {"long_name": "summed learning rate"}),
        }
        data: dict[str, tuple[tuple[str, ...], np.ndarray]] = {
            name: (("model", "step", "run"), v.numpy()[None])
            for name, v in self.observables.items()
        }
        if self.x is not None:
            coords["coord"] = np.arange(self.x.shape[-1])
            data["x"] = (("model", "step", "run", "coord"), self.x.numpy()[None])
        data["diverged"] = (("model", "run"), self.diverged.numpy()[None])
        data["blowup_step"] = (("model", "run"), self.blowup_step.numpy()[None])
        config = jsonable(self.config)
        attrs = {
            "config": to_json(config),
            "reproducible": int(is_reproducible(config)),
            "seed": seed_attr(self.seed),
            "device": self.device,
            "dtype": self.dtype,
            "lr": self.lr,
            "sdeopt_version": __version__,
            "torch_version": torch.__version__,
        }
        return xr.Dataset(data, coords=coords, attrs=attrs)
