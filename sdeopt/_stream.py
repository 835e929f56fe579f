"""Results that outgrow memory: a zarr store written chunk by chunk (``out=`` of ``simulate``,
``solve`` and ``compare``), and the up-front memory check for results kept in memory.

A store is created (beside its final path, then renamed into place) when the first chunk of
runs finishes, with the full shape of the results; each chunk is written into its region of
runs, for its model, and dropped, so memory holds one chunk at a time whatever the number of
runs. The store's ``sdeopt_complete`` attribute turns 1 when every chunk is in; a store left by
an interrupted run says 0 and is refused by ``sdeopt.io.open_stream``. Every chunk carries a
crc32c (``sdeopt.io.zarr_encoding``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

from sdeopt.io import COMPLETE, open_stream, zarr_encoding


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_shortfall(n_bytes: float) -> str | None:
    """Why results of ``n_bytes`` cannot be kept in memory, with the fixes; None if they fit."""
    available = available_memory()
    if available is None or n_bytes <= available:
        return None
    return (
        f"the recorded results need {n_bytes / 2**30:.1f} GiB and {available / 2**30:.1f} GiB of memory is "
        "available: record less (a larger record_every, fewer observables, record_x=False), simulate fewer "
        "runs or steps, or stream the results to disk with out='study.zarr' (stream = true in a config)"
    )


def check_output_memory(n_bytes: float, n_runs: int) -> None:
    """Refuse results that cannot fit in memory, naming n_runs, with the figure and the fixes."""
    why = memory_shortfall(n_bytes)
    if why is not None:
        raise ValueError(f"Invalid n_runs: {n_runs} ({why})")


def output_bytes(
    n_rec: int, n_runs: int, values_per_record: int, itemsize: int, increments: int = 0
) -> int:
    """Bytes of one model's results kept in memory: (S, B) per observable, (S, B, d) iterates,
    (K, B, d) increments, and the (B,) divergence flags and steps."""
    return n_runs * ((n_rec * values_per_record + increments) * itemsize + 9)


def n_records(n_steps: int, record_every: int) -> int:
    """How many steps are recorded: 0, r, 2r, ... and always n_steps (``record_steps``, counted)."""
    return n_steps // record_every + 1 + (n_steps % record_every != 0)


def comparison_bytes(
    n_steps: int,
    record_every: int,
    n_runs: int,
    n_models: int,
    values_per_record: int,
    dtype: torch.dtype,
) -> int:
    """Bytes a comparison keeps in memory: the results of the discrete run and each of ``n_models``
    SDE models, twice (the copy that joins them into one dataset)."""
    return (
        2
        * (1 + n_models)
        * output_bytes(
            n_records(n_steps, record_every),
            n_runs,
            values_per_record,
            torch.finfo(dtype).bits // 8,
        )
    )


class ZarrSink:
    """Writes a study's results into a new zarr store at ``path``, chunk by chunk.

    Args:
        path: the store to create (a ``.zarr`` path that does not exist yet).
        models: the model names of the store's ``model`` dim, in order (default: the one model
            of the first chunk written).
        attrs: the store's attributes (default: those of the first chunk's dataset).
    """

    def __init__(self, path, *, models: list[str] | None = None, attrs: dict | None = None) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"Invalid out: {path!r} (a path to a new .zarr store)")
        self.path = Path(path)
        if self.path.suffix != ".zarr":
            raise ValueError(f"Invalid out: {str(path)!r} (a zarr store path ending in .zarr)")
        if self.path.exists():
            raise ValueError(
                f"Invalid out: {str(path)!r} exists (a new store is written; nothing is overwritten)"
            )
        if not self.path.parent.is_dir():
            raise ValueError(
                f"Invalid out: {str(path)!r} (its folder {str(self.path.parent)!r} does not exist)"
            )
        self.models = models
        self.attrs = attrs
        self._created = False

    def write(self, ds, start: int, n_runs: int) -> None:
        """Write ``ds`` (one chunk: dims (model=1, step, run[, coord])) at runs start.. of n_runs."""
        if not self._created:
            self._create(ds, n_runs)
        model = str(ds["model"].values[0])
        assert self.models is not None  # set by _create
        i = self.models.index(model)
        part = ds.drop_vars([name for name in ds.variables if name not in ds.data_vars])
        part.attrs = {}
        region = {"model": slice(i, i + 1), "run": slice(start, start + ds.sizes["run"])}
        # One writer, chunks written one after another: regions need not align with zarr chunks.
        part.to_zarr(self.path, region=region, consolidated=False, safe_chunks=False)

    def finish(self):
        """Mark the store complete and open it (lazily, dask-backed)."""
        import zarr

        zarr.open_group(str(self.path), mode="r+").attrs[COMPLETE] = 1
        return open_stream(self.path)

    def _create(self, ds, n_runs: int) -> None:
        import dask.array as da
        import xarray as xr

        models = self.models or [str(ds["model"].values[0])]
        self.models = models
        sizes = dict(ds.sizes, model=len(models), run=n_runs)
        chunks = {"model": 1, "run": ds.sizes["run"]}
        data = {}
        for name, var in ds.data_vars.items():
            fill = False if var.dtype == bool else (-1 if var.dtype.kind == "i" else np.nan)
            shape = tuple(sizes[d] for d in var.dims)
            data[name] = (
                var.dims,
                da.full(
                    shape,
                    fill,
                    dtype=var.dtype,
                    chunks=tuple(chunks.get(d, sizes[d]) for d in var.dims),
                ),
                var.attrs,
            )
        coords = {
            name: c
            for name, c in ds.coords.items()
            if "run" not in c.dims and "model" not in c.dims
        }
        coords.update(
            model=np.array(models, dtype=object), run=np.arange(n_runs)
        )  # variable-length strings
        attrs = dict(self.attrs if self.attrs is not None else ds.attrs, **{COMPLETE: 0})
        template = xr.Dataset(data, coords=coords, attrs=attrs)
        tmp = self.path.with_name(f".{self.path.name}.creating-{os.getpid()}")
        try:
            template.to_zarr(
                tmp, mode="w-", compute=False, consolidated=False, encoding=zarr_encoding(template)
            )
            os.rename(tmp, self.path)  # atomic: a kill during creation leaves no store at path
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._created = True
