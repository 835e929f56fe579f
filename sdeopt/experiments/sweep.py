"""Monte Carlo sweeps on dask.distributed into a resumable zarr store.

A sweep configuration is a run configuration's ``[defaults]`` (one base run) plus a ``[sweep]``
table mapping parameters to lists of values, e.g.

    [sweep]
    "method.lr" = [0.01, 0.02, 0.05]
    "noise.nu" = [3.0, 5.0]
    seed = [0, 1]

Dotted keys reach into a part's table; plain keys are run parameters. The grid's cells (the
Cartesian product) run as dask tasks — on an in-process LocalCluster by default, on any
scheduler by address — and each finished cell is written into the zarr store as one region, its
``cell_done`` flag last, so a half-written cell is never taken for a finished one. Re-running
the same command resumes: only cells not marked done are computed, and since every cell's
randomness is fixed by its own configuration the final store equals an uninterrupted run's.
A store written by another configuration, or not by sdeopt, is refused and left untouched.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from sdeopt._validation import check_int
from sdeopt.engine import record_steps
from sdeopt.experiments.config import (
    RUN_KEYS,
    _check_keys,
    build,
    check_text,
    compare_spec,
    read_toml,
)
from sdeopt.io import zarr_encoding

#: Run parameters that change array shapes, so cannot be swept within one store.
UNSWEEPABLE = {
    "n_steps",
    "n_runs",
    "record_every",
    "record",
    "record_x",
    "models",
    "x0",
    "x0_fill",
    "name",
    "study",
    "lrs",
    "horizon",
    "observable",
    "richardson",
    "problem.dim",
    "problem.diag",
}
MARKER = "sdeopt_sweep"


def load_sweep(path: str | Path) -> dict:
    """Read and validate a sweep configuration; every cell is built once to check it."""
    return validate_sweep(read_toml(path))


def validate_sweep(raw: dict) -> dict:
    allowed = {"claim", "description", "defaults", "sweep"}
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(
            f"Invalid config key: {sorted(unknown)[0]!r} (a sweep has {', '.join(sorted(allowed))})"
        )
    check_text(raw)
    base = raw.get("defaults")
    _check_keys("defaults", base if base is not None else [])
    grid = raw.get("sweep")
    if not isinstance(grid, dict) or not grid:
        raise ValueError("Invalid config key: 'sweep' (a table of parameter = [values])")
    dims = {}
    for key, values in grid.items():
        head = key.split(".")[0]
        if head not in RUN_KEYS or key in UNSWEEPABLE or head in UNSWEEPABLE:
            raise ValueError(
                f"Invalid config key: sweep.{key} (cannot be swept: it is unknown or changes "
                "the shape of the results)"
            )
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, (int, float, str, bool)) for v in values)
            or len(set(values)) != len(values)
        ):
            raise ValueError(
                f"Invalid config value: sweep.{key} = {values!r} (a non-empty list of distinct numbers "
                "or strings)"
            )
        dims[key.replace(".", "_")] = (key, values)
    assert isinstance(base, dict)  # _check_keys refused anything else
    base = dict(base, name="cell")
    cells = [
        cell_run(base, dims, index)
        for index in itertools.product(*(range(len(v)) for _, v in dims.values()))
    ]
    # Every cell is built before any runs, and all must share one array layout: a swept value
    # that changes the dimension (problem.type, problem.dataset ...) with record_x used to be
    # found only when its cell's results reached the store, after the other cells had run.
    layouts: dict[tuple, str] = {}
    for run, index in cells:
        where = (
            "cell ["
            + ", ".join(f"{key} = {values[i]!r}" for (key, values), i in zip(dims.values(), index))
            + "]"
        )
        spec = build(run, where=where)
        layouts.setdefault(_layout(spec), where)
        if len(layouts) > 1:
            first, (layout, other) = next(iter(layouts.items())), next(reversed(layouts.items()))
            raise ValueError(
                f"Invalid sweep: {other} has results of layout {_describe(layout)} but "
                f"{first[1]} has {_describe(first[0])} (one store holds one layout: "
                "sweep parameters that keep the dimension, or drop record_x)"
            )
    config = {"claim": raw.get("claim", ""), "base": base, "grid": {k: v for k, v in grid.items()}}
    return {
        "config": config,
        "dims": dims,
        "cells": cells,
        "hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
    }


def _layout(spec: dict) -> tuple:
    """What fixes the shapes of a cell's results in the store."""
    return (
        spec["n_runs"],
        len(record_steps(spec["n_steps"], spec["record_every"])),
        tuple(spec["models"]),
        tuple(spec["record"]),
        spec["problem"].dim if spec["record_x"] else None,
    )


def _describe(layout: tuple) -> str:
    runs, records, models, record, dim = layout
    text = f"(runs {runs}, records {records}, models {list(models)}, record {list(record)}"
    return text + (f", x of dimension {dim})" if dim is not None else ")")


def cell_run(base: dict, dims: dict, index: tuple[int, ...]) -> tuple[dict, tuple[int, ...]]:
    """The run of the cell at ``index`` (one position per swept dim)."""
    run = copy.deepcopy(base)
    for (key, values), i in zip(dims.values(), index):
        parts = key.split(".")
        target = run
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                raise ValueError(
                    f"Invalid config key: sweep.{key} (defaults.{part} is not a table)"
                )
            target = target[part]
        target[parts[-1]] = values[i]
    return run, index


def run_cell(run: dict):
    """Compute one cell (on a dask worker): the compare() Dataset with time as a variable."""
    from sdeopt._cpu import configure_torch

    configure_torch(threads=1)
    ds = compare_spec(build(run))
    return ds.reset_coords(["time", "lr_sum"])  # they depend on lr, which may be swept


def _template(sweep: dict):
    """A lazy (dask) Dataset of the store's full shape, from the first cell's layout."""
    import dask.array as da
    import xarray as xr

    spec = build(sweep["cells"][0][0])
    dims = sweep["dims"]
    steps = record_steps(spec["n_steps"], spec["record_every"])
    models = ["discrete", *spec["models"]]
    sizes = {
        "model": len(models),
        "step": len(steps),
        "run": spec["n_runs"],
        "coord": spec["problem"].dim,
    }
    grid_shape = tuple(len(v) for _, v in dims.values())
    grid_dims = tuple(dims)

    def var(cell_dims, dtype, fill):
        shape = grid_shape + tuple(sizes[d] for d in cell_dims)
        chunks = (1,) * len(grid_shape) + shape[len(grid_shape) :]
        return (grid_dims + cell_dims, da.full(shape, fill, dtype=dtype, chunks=chunks))

    data = {name: var(("model", "step", "run"), np.float64, np.nan) for name in spec["record"]}
    if spec["record_x"]:
        data["x"] = var(("model", "step", "run", "coord"), np.float64, np.nan)
    data["diverged"] = var(("model", "run"), bool, False)
    data["blowup_step"] = var(("model", "run"), np.int64, -1)
    data["time"] = var(("step",), np.float64, np.nan)
    data["lr_sum"] = var(("step",), np.float64, np.nan)
    data["cell_done"] = (
        grid_dims,
        da.zeros(grid_shape, dtype=np.int8, chunks=(1,) * len(grid_shape)),
    )
    coords = {d: values for d, (_, values) in dims.items()}
    coords.update(model=models, step=steps, run=np.arange(spec["n_runs"]))
    if spec["record_x"]:
        coords["coord"] = np.arange(spec["problem"].dim)
    from sdeopt._version import __version__

    attrs = {
        MARKER: json.dumps(sweep["config"], sort_keys=True),
        "sdeopt_sweep_hash": sweep["hash"],
        "sdeopt_version": __version__,
        "sweep_dims": json.dumps({d: k for d, (k, _) in dims.items()}),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _open_existing(store: Path, sweep: dict):
    """The done flags of an existing store written by this config; ValueError otherwise."""
    import xarray as xr

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            existing = xr.open_zarr(store, consolidated=False)
    except Exception as exc:  # anything a foreign folder or file makes the reader raise
        raise ValueError(
            f"Invalid --out: {str(store)!r} exists and is not a zarr store written by sdeopt "
            f"({type(exc).__name__}); it was left untouched"
        ) from None
    if MARKER not in existing.attrs:
        raise ValueError(
            f"Invalid --out: {str(store)!r} was not written by an sdeopt sweep; it was left untouched"
        )
    if existing.attrs.get("sdeopt_sweep_hash") != sweep["hash"]:
        raise ValueError(
            f"Invalid --out: {str(store)!r} holds a sweep of another configuration; it was left "
            "untouched (choose another --out)"
        )
    if "cell_done" not in existing:  # only a store from before creation was made atomic
        raise ValueError(
            f"Invalid --out: {str(store)!r} is an incomplete sdeopt store (its creation was "
            "interrupted); it was left untouched: delete it and run again"
        )
    return existing["cell_done"].values


def _create(store: Path, sweep: dict) -> None:
    """Write the empty store atomically: built beside ``store``, then renamed into place.

    A process killed while writing the metadata used to leave a store without its done flags,
    which every resume refused; now a store exists whole or not at all (a killed creation leaves
    only a hidden ``.<name>.creating-<pid>`` folder, never read).
    """
    tmp = store.with_name(f".{store.name}.creating-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # zarr v3 notes on string dtypes and consolidated metadata
            template = _template(sweep)
            template.to_zarr(
                tmp, mode="w-", compute=False, consolidated=False, encoding=zarr_encoding(template)
            )
        os.rename(tmp, store)  # atomic on one file system; fails if store appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_sweep(
    sweep: dict,
    store: str | Path,
    *,
    scheduler: str | None = None,
    n_workers: int = 2,
    retries: int = 2,
    progress=None,
) -> dict:
    """Run the missing cells of ``sweep`` into ``store``; returns the summary counts.

    ``progress(done, total, label)``, if given, is called after each cell that finished or failed.
    """
    from distributed import Client, LocalCluster, as_completed

    # Checked before the store is touched: 0 or -1 workers made a local cluster that never ran
    # a cell (a silent hang), and an unreachable scheduler printed a traceback.
    n_workers = check_int("n_workers", n_workers, minimum=1)
    remote = _connect(scheduler) if scheduler is not None else None
    store = Path(store)
    start = time.perf_counter()
    if store.exists():
        done = _open_existing(store, sweep)
    else:
        _create(store, sweep)
        done = np.zeros(tuple(len(v) for _, v in sweep["dims"].values()), dtype=np.int8)
    todo = [(run, index) for run, index in sweep["cells"] if not done[index]]
    summary: dict[str, int | float] = {
        "cells": len(sweep["cells"]),
        "resumed": len(sweep["cells"]) - len(todo),
        "done": 0,
        "failed": 0,
    }
    if not todo and remote is not None:
        remote.close()
    if todo:
        if remote is not None:
            client, cluster = remote, None
        else:
            cluster = LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = Client(cluster)
        try:
            futures = {
                client.submit(run_cell, run, retries=retries, pure=False): index
                for run, index in todo
            }
            for future in as_completed(futures):
                index = futures[future]
                try:
                    ds = future.result()
                except Exception as exc:  # the cell failed on every retry: report, keep going
                    summary["failed"] += 1
                    print(
                        f"sdeopt: cell {index} failed: {type(exc).__name__}: {exc}", file=sys.stderr
                    )
                    continue
                _write_cell(store, sweep, ds, index)
                summary["done"] += 1
                if progress is not None:
                    progress(
                        summary["done"] + summary["failed"],
                        len(todo),
                        f"cell {dict(zip(sweep['dims'], index))}",
                    )
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    summary["seconds"] = time.perf_counter() - start
    return summary


#: How long to try to reach a ``--scheduler`` before giving up.
CONNECT_TIMEOUT = "10s"


def _connect(scheduler: str):
    """A client of the dask scheduler at ``scheduler``; ValueError naming it when it cannot be reached."""
    from distributed import Client

    if not isinstance(scheduler, str) or not scheduler.strip():  # "$ADDR" with ADDR unset
        raise ValueError(f"Invalid scheduler: {scheduler!r} (an address such as tcp://host:8786)")
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise ValueError(
            f"Invalid scheduler: {scheduler!r} (cannot connect: {type(exc).__name__}: {exc})"
        ) from None


def _write_cell(store: Path, sweep: dict, ds, index: tuple[int, ...]) -> None:
    """The cell's data as one region, then its done flag: a crash in between leaves it undone."""
    import xarray as xr

    region = {d: slice(i, i + 1) for d, i in zip(sweep["dims"], index)}
    cell = ds.expand_dims({d: 1 for d in sweep["dims"]}).drop_vars(
        [c for c in ds.coords], errors="ignore"
    )
    cell.attrs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell.to_zarr(store, region=region, consolidated=False)
        flag = xr.Dataset(
            {"cell_done": (tuple(sweep["dims"]), np.ones((1,) * len(region), dtype=np.int8))}
        )
        flag.to_zarr(store, region=region, consolidated=False)
