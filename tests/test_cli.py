"""The sdeopt command: demo, run, plot, and the validation of configurations."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sdeopt.cli import main
from sdeopt.experiments.config import validate

TINY = """
claim = "a tiny test"
[defaults]
problem = { type = "Quadratic", diag = [1.0, 2.0] }
noise = { type = "Gaussian", scale = 1.0 }
x0 = [1.0, -1.0]
n_steps = 20
n_runs = 50
record_every = 5

[[runs]]
name = "dsgd"
method = { type = "DSGD", lr = 0.1, n_workers = 2 }
models = ["first_order", "curvature"]

[[runs]]
name = "sign decaying"
method = { type = "DSignSGD", lr = 0.1, n_workers = 2 }
schedule = { type = "poly", power = 0.5 }
noise = { type = "StudentT", nu = 1.5 }

[[runs]]
name = "order"
method = { type = "DSGD", lr = 0.1 }
study = "weak_order"
lrs = [0.2, 0.1, 0.05, 0.025]
horizon = 0.4
models = ["first_order"]
coupled = true
observable = "grad_norm"
"""


def test_demo_writes_dataset_figures_and_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--runs", "64"]) == 0
    text = capsys.readouterr().out
    assert "closed form" in text and "curvature" in text and "DSignSGD" in text
    files = sorted(p.name for p in out.iterdir())
    assert any(f.endswith(".nc") for f in files) and any(f.endswith(".png") for f in files)
    # DSignSGD beside its first- and second-order models (it has no curvature model), DCSGD beside its
    # first-order and curvature models.
    models = {tuple(xr.load_dataset(p)["model"].values) for p in out.glob("*.nc")}
    assert models == {
        ("discrete", "first_order", "second_order"),
        ("discrete", "first_order", "curvature"),
    }
    # Never overwritten without --force.
    assert main(["demo", "--out", str(out), "--runs", "64"]) == 2
    assert "--force" in capsys.readouterr().err


def test_run_a_config(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "Claim: a tiny test" in text and "order" in text
    assert "1/3 runs" in captured.err and "3/3 runs" in captured.err  # the progress bar
    for name in ("dsgd", "sign_decaying", "order"):
        assert (out / f"{name}.nc").exists() and (out / f"{name}.png").stat().st_size > 1000
    err = xr.load_dataset(out / "order.nc")
    assert set(err.data_vars) >= {"error", "se"} and err.sizes["lr"] == 4
    assert np.isfinite(err["error"]).all()


@pytest.mark.parametrize(
    "text,needle",
    [
        (
            "[[runs]]\nname='a'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\n"
            "noise={type='Gaussian'}\nspeed=3",
            "speed",
        ),
        ("bogus = 1\n[[runs]]\nname='a'", "bogus"),
        (
            "[[runs]]\nmethod={type='Adam', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]",
            "Adam",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=-0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\n"
            "noise={type='Gaussian'}",
            "lr",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0, 1.0]\n"
            "noise={type='Gaussian'}",
            "x0",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\n"
            "noise={type='StudentT', nu=1.5, colour='red'}",
            "colour",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\n"
            "noise={type='Gaussian'}\nn_steps='many'",
            "n_steps",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\n"
            "noise={type='Gaussian'}\nschedule={type='exp'}",
            "schedule",
        ),
        ("[[runs]]\nmethod = {type = 'DSGD'", "TOML"),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\n"
            "noise={type='Gaussian'}\nmodels=['third_order']",
            "third_order",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\n"
            "noise={type='Gaussian'}\nrecord=['energy']",
            "energy",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\n"
            "noise={type='Gaussian'}\nmodels=['first_order']\nstudy='weak_order'\nhorizon=1.0\n"
            "lrs=[0.1, 0.05, 0.3, 0.025]",
            "0.3",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\n"
            "noise={type='Gaussian'}\nmodels=['first_order']\nstudy='weak_order'\nhorizon=1.0\n"
            "lrs=[0.1, 0.05, 0.2, 0.025]\nobservable='energy'",
            "energy",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\ncoupled = 'false'",
            "coupled = 'false'",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nrecord_x = 'no'",
            "record_x = 'no'",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nrichardson = '0'",
            "richardson = '0'",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nrecord_x = 1",
            "record_x = 1",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nmodels = 'first_order'",
            "models = 'first_order'",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nrecord = 'loss'",
            "record = 'loss'",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nblowup_threshold = '1e6'",
            "blowup_threshold",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nname = 3",
            "name = 3",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1, shortcuts='false'}\nproblem={type='Quadratic', diag=[1.0]}\n"
            "x0=[0.0]\nnoise={type='Gaussian'}",
            "method.shortcuts = 'false'",
        ),
        (
            "[[runs]]\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\n"
            "noise={type='Gaussian'}\nmodels=['first_order']\nstudy='weak_order'\nhorizon=1.0\n"
            "lrs=[0.1, 0.05, true, 0.025]",
            "lrs",
        ),
        # A later run's error is found before the first run starts (nothing is written).
        (
            "[[runs]]\nname='good'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nn_steps=5\nn_runs=8\n[[runs]]\nname='late'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nnoise={type='Gaussian'}\nx0=[0.0]\nseed=-1",
            "seed",
        ),
        (
            "[[runs]]\nname='good'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nn_steps=5\nn_runs=8\n[[runs]]\nname='late'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nnoise={type='Gaussian'}\nx0=[0.0]\nn_runs=0",
            "n_runs",
        ),
        (
            "[[runs]]\nname='good'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nn_steps=5\nn_runs=8\n[[runs]]\nname='late'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nnoise={type='Gaussian'}\nx0=[nan]",
            "x0",
        ),
        (
            "[[runs]]\nname='good'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nn_steps=5\nn_runs=8\n[[runs]]\nname='late'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nnoise={type='Gaussian'}\nx0_fill=inf",
            "x0_fill",
        ),
        (
            "[[runs]]\nname='good'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nn_steps=5\nn_runs=8\n[[runs]]\nname='late'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nnoise={type='Gaussian'}\nx0=[0.0]\nrecord_every=0",
            "record_every",
        ),
        (
            "[[runs]]\nname='good'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nn_steps=5\nn_runs=8\n[[runs]]\nname='late'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nnoise={type='StudentT', nu=1.5}\nx0=[0.0]\nmodels=['first_order']",
            "infinite variance",
        ),
        (
            "[[runs]]\nname='good'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nx0=[0.0]\nnoise={type='Gaussian'}\nn_steps=5\nn_runs=8\n[[runs]]\nname='late'\nmethod={type='DSGD', lr=0.1}\nproblem={type='Quadratic', diag=[1.0]}\nnoise={type='Gaussian'}\nx0=[0.0]\ndevice='tpu'",
            "device",
        ),
    ],
)
def test_bad_configs_get_clear_messages(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists()  # nothing written for an invalid config


def test_nothing_in_a_config_is_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.toml"
    cfg.write_text(
        f"[[runs]]\nmethod={{type=\"__import__('pathlib').Path('{marker}').touch()\", lr=0.1}}\n"
        "problem={type='Quadratic', diag=[1.0]}\nx0=[0.0]"
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert not marker.exists()


def test_plot_figures_from_a_dataset_and_refusals(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    capsys.readouterr()
    figs = tmp_path / "figs"
    assert main(["plot", str(out / "dsgd.nc"), "--out", str(figs)]) == 0
    assert (figs / "dsgd_trajectories.png").stat().st_size > 1000
    assert main(["plot", str(out / "order.nc"), "--out", str(figs)]) == 0
    assert (figs / "order_weak_error.png").exists()
    before = (figs / "dsgd_trajectories.png").read_bytes()
    assert main(["plot", str(out / "dsgd.nc"), "--out", str(figs)]) == 2  # no overwrite
    assert (figs / "dsgd_trajectories.png").read_bytes() == before
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"temperature": ("t", np.arange(3.0))}).to_netcdf(foreign)
    assert main(["plot", str(foreign)]) == 2
    assert "not written by sdeopt" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(b"\x00garbage" * 100)
    assert main(["plot", str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert "not a readable netCDF" in err and "Traceback" not in err
    assert main(["plot", str(tmp_path / "missing.nc")]) == 2


def test_presets_are_valid():
    import tomllib
    from pathlib import Path

    presets = sorted((Path(__file__).parent.parent / "experiments").glob("*.toml"))
    assert len(presets) >= 5
    for path in presets:
        config = validate(tomllib.loads(path.read_text()))
        assert config["claim"].strip()


def test_progress_bar_writes_a_line_per_update_off_a_terminal():
    import io

    from sdeopt.cli import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(4, "runs", stream=out, width=8)
    for done, label in ((0, "running a"), (2, "running c"), (4, "done")):
        bar.update(done, label)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[--------] 0/4 runs") and lines[0].endswith("running a")
    assert lines[1].startswith("[####----] 2/4 runs") and "s left" in lines[1]
    assert lines[2].startswith("[########] 4/4 runs") and "left" not in lines[2]


@pytest.mark.parametrize("command", [["run", "CONFIG"], ["demo", "--runs", "8"]])
def test_an_out_folder_below_a_file_is_one_line(tmp_path, capsys, command):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    argv = [str(cfg) if a == "CONFIG" else a for a in command] + ["--out", str(blocker / "sub")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Invalid --out" in err and "Traceback" not in err


def test_paths_the_cli_cannot_use_are_one_line(tmp_path, capsys):
    """A folder given as the config, a file given as the plots' folder: no traceback."""
    folder, blocker = tmp_path / "folder", tmp_path / "a_file"
    folder.mkdir()
    blocker.write_text("")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    dataset = next((tmp_path / "out").glob("*.nc"))
    capsys.readouterr()
    for argv in (
        ["run", str(folder), "--out", str(tmp_path / "o")],
        ["sweep", str(folder), "--out", str(tmp_path / "s")],
        ["plot", str(dataset), "--out", str(blocker)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert (
            err.startswith("sdeopt: ")
            and len(err.strip().splitlines()) == 1
            and "Traceback" not in err
        ), err
