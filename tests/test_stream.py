"""Results beyond memory: the up-front memory check and ``out=`` streaming to zarr (issue 12, item 6)."""

from __future__ import annotations

import pytest
import torch
import xarray as xr

import sdeopt as so
import sdeopt._stream as stream
from sdeopt.experiments.config import build

OPT = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian())
PROB = so.problems.Quadratic(diag=[1.0, 2.0])
KW = dict(n_steps=10, n_runs=100, seed=3, record_x=True, dtype=torch.float64, chunk_size=16)


@pytest.fixture
def little_memory(monkeypatch):
    """A machine with 8 KiB available: the studies below need more in memory, 36 KiB a model,
    but a chunk of 16 runs needs 5.8 KiB."""
    monkeypatch.setattr(stream, "available_memory", lambda: 2**13)


def test_simulate_streams_the_same_dataset_it_returns_in_memory(
    tmp_path, little_memory, monkeypatch
):
    with pytest.raises(ValueError, match=r"n_runs: 100 .*GiB.*out="):
        so.discrete.simulate(OPT, PROB, [1.0, 1.0], **KW)
    streamed = so.discrete.simulate(OPT, PROB, [1.0, 1.0], out=tmp_path / "s.zarr", **KW)
    assert streamed.x.chunks is not None  # lazy: dask-backed, read from disk
    monkeypatch.setattr(stream, "available_memory", lambda: None)  # unknown: nothing refused
    memory = so.discrete.simulate(OPT, PROB, [1.0, 1.0], **KW).to_dataset()
    streamed = streamed.load()
    assert streamed.attrs.pop(so.io.COMPLETE) == 1
    xr.testing.assert_identical(streamed, memory)


def test_solve_and_compare_stream_every_model_into_one_store(tmp_path, little_memory, monkeypatch):
    kw = dict(
        KW, models=["first_order", "curvature"], max_memory=2**13, block_size=8
    )  # chunks of 8
    kw.pop("chunk_size")
    with pytest.raises(ValueError, match="n_runs"):
        so.analysis.compare(OPT, PROB, [1.0, 1.0], **kw)
    streamed = so.analysis.compare(OPT, PROB, [1.0, 1.0], out=tmp_path / "c.zarr", **kw).load()
    sde = so.dynamics.sde_of(OPT, PROB, "first_order")
    solved = so.dynamics.solve(sde, [1.0, 1.0], out=tmp_path / "f.zarr", **KW).load()
    monkeypatch.setattr(stream, "available_memory", lambda: None)
    memory = so.analysis.compare(OPT, PROB, [1.0, 1.0], **kw)
    assert streamed.attrs.pop(so.io.COMPLETE) == 1
    xr.testing.assert_identical(streamed, memory)
    xr.testing.assert_equal(
        solved.drop_attrs(), so.dynamics.solve(sde, [1.0, 1.0], **KW).to_dataset().drop_attrs()
    )


def test_the_torchsde_backend_streams_through_the_same_loop(tmp_path, little_memory, monkeypatch):
    """One run loop for every model: the torchsde backend streams chunk by chunk like the native
    schemes (it used to keep everything in memory and refuse out=)."""
    sde = so.dynamics.sde_of(OPT, PROB, "first_order")
    kw = dict(KW, backend="torchsde", substeps=2)
    streamed = so.dynamics.solve(sde, [1.0, 1.0], out=tmp_path / "t.zarr", **kw).load()
    monkeypatch.setattr(stream, "available_memory", lambda: None)
    memory = so.dynamics.solve(sde, [1.0, 1.0], **kw).to_dataset()
    assert streamed.attrs.pop(so.io.COMPLETE) == 1
    xr.testing.assert_identical(streamed, memory)


def test_an_interrupted_stream_leaves_a_store_that_is_refused(tmp_path, monkeypatch):
    calls = []
    write = stream.ZarrSink.write

    def dying(self, ds, start, n_runs):
        if calls:
            raise KeyboardInterrupt
        calls.append(start)
        write(self, ds, start, n_runs)

    monkeypatch.setattr(stream.ZarrSink, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        so.discrete.simulate(OPT, PROB, [1.0, 1.0], out=tmp_path / "i.zarr", **KW)
    with pytest.raises(ValueError, match="incomplete"):
        so.io.open_stream(tmp_path / "i.zarr")


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda p: so.discrete.simulate(OPT, PROB, [1.0, 1.0], out=p / "s.nc", **KW), "out.*zarr"),
        (
            lambda p: so.discrete.simulate(
                OPT, PROB, [1.0, 1.0], out=p / "missing" / "s.zarr", **KW
            ),
            "out.*folder",
        ),
        (lambda p: so.discrete.simulate(OPT, PROB, [1.0, 1.0], out=p, **KW), "out"),
        (
            lambda p: so.discrete.simulate(
                OPT, PROB, [1.0, 1.0], out=p / "s.zarr", keep_increments=True, **KW
            ),
            "out.*coupling",
        ),
        (
            lambda p: so.analysis.compare(
                OPT, PROB, [1.0, 1.0], out=p / "c.zarr", coupled=True, n_steps=5, n_runs=8
            ),
            "out.*coupling",
        ),
    ],
)
def test_bad_out_is_refused_before_work(tmp_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tmp_path)
    assert not (tmp_path / "c.zarr").exists() and not (tmp_path / "t.zarr").exists()


def test_a_config_whose_results_cannot_fit_is_refused_before_any_run():
    """The issue's case: n_runs = 1000000000 ended in an allocator traceback."""
    run = {
        "name": "a",
        "problem": {"type": "Quadratic", "diag": [1.0, 2.0]},
        "noise": {"type": "Gaussian"},
        "method": {"type": "DSGD", "lr": 0.1},
        "x0": [1.0, 1.0],
        "n_runs": 10**9,
        "n_steps": 100,
    }
    with pytest.raises(ValueError, match=r"run.n_runs = 1000000000 .*GiB"):
        build(run)


def test_the_estimate_counts_every_value_kept():
    """(S, B) per observable and (S, B, d) iterates at the run's precision, plus 9 bytes a run
    for the divergence flag and step: the bytes of the arrays simulate returns."""
    traj = so.discrete.simulate(
        OPT,
        PROB,
        [1.0, 1.0],
        n_steps=9,
        n_runs=50,
        record_every=3,
        record_x=True,
        dtype=torch.float32,
    )
    kept = sum(
        v.numel() * v.element_size()
        for v in (*traj.observables.values(), traj.x, traj.diverged, traj.blowup_step)
    )
    assert stream.output_bytes(4, 50, 2 + 2, 4) == kept


def test_a_damaged_chunk_of_a_stream_is_an_error_on_read(tmp_path):
    store = tmp_path / "s.zarr"
    so.discrete.simulate(OPT, PROB, [1.0, 1.0], out=store, **KW)
    chunks = sorted(
        p for p in (store / "x").rglob("*") if p.is_file() and not p.name.startswith((".", "zarr"))
    )
    assert len(chunks) == 7  # 100 runs in chunks of 16
    damaged = bytearray(chunks[2].read_bytes())
    damaged[len(damaged) // 2] ^= 1
    chunks[2].write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"s\.zarr' is not a readable zarr store \(.*checksum"):
        so.io.load_zarr(store, consolidated=False)


TOML = """
claim = "streamed"
[defaults]
problem = {{ type = "Quadratic", diag = [1.0, 2.0] }}
noise = {{ type = "Gaussian", scale = 1.0 }}
method = {{ type = "DSGD", lr = 0.1, n_workers = 2 }}
x0 = [1.0, -1.0]
n_steps = 20
n_runs = 300
record_every = 5
record_x = true
models = ["first_order"]
{extra}
[[runs]]
name = "a"
"""


def test_a_toml_run_with_stream_writes_stores_equal_to_the_run_in_memory(tmp_path):
    from sdeopt.cli import main

    euler = 'scheme = "euler"\nsubsteps = 1'  # an inexact scheme: a second, h/2 solve
    (tmp_path / "s.toml").write_text(TOML.format(extra=f"stream = true\n{euler}"))
    (tmp_path / "m.toml").write_text(TOML.format(extra=euler))
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "s")]) == 0
    assert main(["run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "m")]) == 0
    # Quadratic + DSGD has a closed form: the SDE is solved again at h/2, a second store.
    assert sorted(p.name for p in (tmp_path / "s").glob("*.zarr")) == [
        "a_h.zarr",
        "a_h2.zarr",
    ]
    streamed = so.io.open_stream(tmp_path / "s" / "a_h.zarr").load()
    memory = so.io.load(tmp_path / "m" / "a.nc")
    assert streamed.attrs["claim"] == "streamed" and "x" in streamed
    xr.testing.assert_equal(streamed.drop_attrs(), memory.drop_attrs())


@pytest.mark.parametrize(
    "extra,match",
    [
        ('stream = "yes"', "stream"),
        ("stream = true\ncoupled = true", "stream"),
        (
            'stream = true\nstudy = "weak_order"\nlrs = [0.1, 0.05, 0.025, 0.0125]\nhorizon = 1.0',
            "stream",
        ),
    ],
)
def test_bad_stream_settings_are_refused(tmp_path, extra, match):
    import tomllib

    from sdeopt.experiments.config import validate

    with pytest.raises(ValueError, match=match):
        validate(tomllib.loads(TOML.format(extra=extra)))
