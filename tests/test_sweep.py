"""Sweeps on a real dask LocalCluster (2 workers, loopback): resume after SIGKILL, worker death, safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import xarray as xr

from sdeopt.cli import main
from sdeopt.experiments.sweep import load_sweep, run_sweep

CONFIG = """
claim = "tiny sweep"
[defaults]
problem = {{ type = "Quadratic", diag = [1.0, 2.0] }}
noise = {{ type = "Gaussian", scale = 1.0 }}
method = {{ type = "DSGD", lr = 0.1, n_workers = 2 }}
x0 = [1.0, -1.0]
n_steps = {n_steps}
n_runs = 64
record_every = 5
models = ["first_order"]
[sweep]
"method.lr" = [0.05, 0.1]
"noise.scale" = [0.5, 1.0, 2.0]
seed = [0, 1]
"""


def _open(store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(store, consolidated=False).load()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted sweep, the standard every other store must equal."""
    root = tmp_path_factory.mktemp("ref")
    cfg = root / "cfg.toml"
    cfg.write_text(CONFIG.format(n_steps=20))
    summary = run_sweep(load_sweep(cfg), root / "ref.zarr", progress=None)
    assert summary["done"] == 12 and summary["failed"] == 0
    return cfg, _open(root / "ref.zarr")


def test_cells_equal_direct_runs(reference):
    from sdeopt.experiments.config import build
    from sdeopt.experiments.sweep import run_cell

    cfg, ref = reference
    sweep = load_sweep(cfg)
    run, index = sweep["cells"][7]
    direct = run_cell(run)
    cell = ref.isel(dict(zip(sweep["dims"], index)))
    np.testing.assert_array_equal(cell["loss"].values, direct["loss"].values)
    assert int(cell["cell_done"]) == 1 and build(run)["seed"] == int(cell["seed"])


def test_sigkilled_sweep_resumes_to_the_same_store(reference, tmp_path):
    _cfg, ref = reference
    slow_cfg = tmp_path / "cfg.toml"
    slow_cfg.write_text(CONFIG.format(n_steps=20))
    store = tmp_path / "s.zarr"
    cmd = [sys.executable, "-m", "sdeopt.cli", "sweep", str(slow_cfg), "--out", str(store)]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline:
        if store.exists():
            try:  # only the done flags: loading the whole store per poll let a loaded machine
                # miss the window between the 2nd and the 12th finished cell
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    done = int(xr.open_zarr(store, consolidated=False)["cell_done"].values.sum())
            except Exception:  # the store is being created
                done = 0
            if done >= 2:
                break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local cluster, mid-sweep
    proc.wait()
    assert 2 <= done < 12, done
    assert main(["sweep", str(slow_cfg), "--out", str(store)]) == 0
    resumed = _open(store)
    assert int(resumed["cell_done"].sum()) == 12
    xr.testing.assert_identical(resumed, ref)


def test_a_worker_killed_mid_sweep_does_not_fail_it(reference, tmp_path):
    from distributed import Client, LocalCluster

    cfg, ref = reference
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    try:
        pids = list(client.run(os.getpid).values())
        killer_done = []

        def progress(done, total, label):
            if not killer_done:  # after the first finished cell, kill one worker process
                os.kill(pids[0], signal.SIGKILL)
                killer_done.append(label)

        summary = run_sweep(
            load_sweep(cfg),
            tmp_path / "w.zarr",
            scheduler=cluster.scheduler_address,
            progress=progress,
        )
    finally:
        client.close()
        cluster.close()
    assert killer_done and summary["done"] == 12 and summary["failed"] == 0
    xr.testing.assert_identical(_open(tmp_path / "w.zarr"), ref)


def test_foreign_and_other_config_stores_are_refused_untouched(reference, tmp_path, capsys):
    cfg, _ = reference
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"t": ("x", np.arange(3.0))}).to_zarr(foreign, consolidated=False)
    before = sorted((p.relative_to(foreign), p.stat().st_mtime_ns) for p in foreign.rglob("*"))
    assert main(["sweep", str(cfg), "--out", str(foreign)]) == 2
    assert "not written by an sdeopt sweep" in capsys.readouterr().err
    assert (
        sorted((p.relative_to(foreign), p.stat().st_mtime_ns) for p in foreign.rglob("*")) == before
    )
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    assert main(["sweep", str(cfg), "--out", str(junk)]) == 2
    assert (junk / "notes.txt").read_text() == "mine" and len(list(junk.iterdir())) == 1
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.format(n_steps=10))
    store = tmp_path / "mine.zarr"
    assert run_sweep(load_sweep(other), store, progress=None)["done"] == 12
    assert main(["sweep", str(cfg), "--out", str(store)]) == 2
    assert "another configuration" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[defaults]\nn_runs = 4\n[sweep]\nn_steps = [1, 2]", "n_steps"),
        ('[defaults]\nn_runs = 4\n[sweep]\n"method.lr" = []', "method.lr"),
        ("[defaults]\nn_runs = 4\n[sweep]\nwarp = [1]", "warp"),
        ("[defaults]\nn_runs = 4", "sweep"),
    ],
)
def test_bad_sweep_configs(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "s.zarr")]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "s.zarr").exists()


def test_a_sweep_over_strings_for_a_flag_is_refused(tmp_path):
    """'false' is a truthy string: the two cells would have been the same run labelled differently."""
    cfg = tmp_path / "flags.toml"
    cfg.write_text(
        CONFIG.format(n_steps=5).split("[sweep]")[0] + '[sweep]\ncoupled = ["false", "true"]\n'
    )
    with pytest.raises(ValueError, match=r"coupled = 'false'.*TOML boolean"):
        load_sweep(cfg)


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_no_local_workers_is_refused_before_the_store_is_made(workers, tmp_path, capsys):
    """0 or -1 workers used to make a cluster that never ran a cell: a silent hang."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG.format(n_steps=5))
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "s.zarr"), "--workers", workers]) == 2
    err = capsys.readouterr().err
    assert "n_workers" in err and "Traceback" not in err and not (tmp_path / "s.zarr").exists()


def test_an_unreachable_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    import sdeopt.experiments.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "CONNECT_TIMEOUT", "1s")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG.format(n_steps=5))
    store = tmp_path / "s.zarr"
    assert main(["sweep", str(cfg), "--out", str(store), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "Invalid scheduler" in err and "127.0.0.1:9" in err and "Traceback" not in err
    assert not store.exists()


def test_an_interrupted_store_creation_leaves_no_store(tmp_path, monkeypatch):
    """Creation used to write in place: a kill mid-way left a store without done flags that every
    resume refused (KeyError: 'cell_done')."""
    import sdeopt.experiments.sweep as sweep_module

    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG.format(n_steps=5))
    sweep = load_sweep(cfg)
    store = tmp_path / "s.zarr"
    real = sweep_module._template

    class Interrupted:
        def __init__(self, template):
            self.template = template
            self.variables = template.variables

        def to_zarr(self, path, encoding, **kwargs):
            loss = self.template[["loss"]]  # part of the metadata, then the kill
            loss.to_zarr(
                path, encoding={k: v for k, v in encoding.items() if k in loss.variables}, **kwargs
            )
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "_template", lambda s: Interrupted(real(s)))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, store)
    assert not store.exists() and not list(tmp_path.glob(".s.zarr.creating-*"))
    monkeypatch.setattr(sweep_module, "_template", real)
    assert run_sweep(sweep, store, n_workers=1)["done"] == 12


def test_an_incomplete_store_is_refused_by_name(tmp_path, capsys):
    import sdeopt.experiments.sweep as sweep_module

    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG.format(n_steps=5))
    store = tmp_path / "s.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sweep_module._template(load_sweep(cfg)).drop_vars("cell_done").to_zarr(
            store, compute=False, consolidated=False
        )
    assert main(["sweep", str(cfg), "--out", str(store)]) == 2
    err = capsys.readouterr().err
    assert "incomplete" in err and "Traceback" not in err


def test_a_grid_whose_cells_change_the_dimension_is_refused_before_any_cell(tmp_path):
    """breast cancer (30 features) vs digits (64) with record_x: one store cannot hold both. The
    whole grid is checked at load, before the store exists (it used to fail after every cell ran)."""
    cfg = tmp_path / "dims.toml"
    cfg.write_text("""
[defaults]
problem = { type = "LogisticRegression", n_workers = 2 }
noise = { type = "Gaussian", scale = 1.0 }
method = { type = "DSGD", lr = 0.1, n_workers = 2 }
x0_fill = 0.0
n_steps = 5
n_runs = 8
record_x = true
[sweep]
"problem.dataset" = ["breast_cancer", "digits"]
""")
    with pytest.raises(ValueError, match="layout") as err:
        load_sweep(cfg)
    assert "x of dimension" in str(err.value) and "'digits'" in str(err.value)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "s.zarr")]) == 2
    assert not (tmp_path / "s.zarr").exists()
    cfg.write_text(cfg.read_text().replace("record_x = true", "record_x = false"))
    assert len(load_sweep(cfg)["cells"]) == 2  # without x the layouts agree
