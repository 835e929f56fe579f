"""Inputs the bad-input battery (tools/battery.py, issue 12) found accepted, crashing or refused
late; each case failed before its fix."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch

import sdeopt as so
from sdeopt.cli import main
from sdeopt.experiments.config import validate

OPT = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian())
PROB = so.problems.Quadratic(diag=[1.0, 2.0])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(record=5), "record"),  # TypeError: not iterable
        (dict(out=123), "out"),  # TypeError: not a path
        (dict(n_steps=10**12), "n_runs.*GiB"),  # MemoryError building the steps
        (dict(x0=[1e200, 1e200], dtype=torch.float32), "x0.*overflows"),  # runs frozen at inf
        (
            dict(x0=[1e300, 0.0], dtype=torch.float64),
            "x0.*blowup_threshold",
        ),  # every run diverged at step 0
    ],
)
def test_simulate_refuses(kwargs, match):
    args = dict(x0=[1.0, 1.0], n_steps=3, n_runs=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        so.discrete.simulate(OPT, PROB, **args)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: so.problems.Quadratic(diag=[True, True]), "diag.*booleans"),
        (lambda: so.discrete.DSGD(lr=0.1, noise=so.noise.Gaussian(), shortcuts="no"), "shortcuts"),
        (lambda: so.discrete.DSGD(lr=torch.tensor([0.1]), noise=so.noise.Gaussian()), "lr"),
        (
            lambda: so.problems.FunctionProblem(lambda x: torch.tensor((x**2).sum().item()), dim=2),
            "fn.*vmap",
        ),
        (lambda: so.analysis.order_fit([0.1] * 4, [1.0, 0.9, 1.1, 1.0]), "lrs.*distinct"),
    ],
)
def test_constructors_refuse(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_numpy_scales_and_a_model_name_are_accepted():
    assert so.noise.Gaussian(scale=np.array([1.0, 2.0])).scale == (1.0, 2.0)
    ds = so.analysis.compare(OPT, PROB, [1.0, 1.0], n_steps=2, n_runs=3, models="first_order")
    assert list(ds["model"].values) == ["discrete", "first_order"]


CONFIG = """
claim = "c"
[defaults]
problem = {{ type = "Quadratic", diag = [1.0, 2.0] }}
noise = {{ type = "Gaussian", scale = 1.0 }}
method = {{ type = "DSGD", lr = 0.1, n_workers = 2 }}
x0 = [1.0, -1.0]
n_steps = 4
n_runs = 8
[[runs]]
name = "a"
[[runs]]
name = "b"
{second}
"""


@pytest.mark.parametrize(
    "second,match",
    [
        ('models = ["first_order", "first_order"]', "models"),
        ('method = { type = "DSignSGD", lr = 0.1, n_workers = 2 }\ncoupled = true', "coupl"),
        ('problem = { type = "ExpSum", dim = 2 }\nrecord = ["dist"]', "dist"),
        ("record = []", "record"),
        (
            'study = "weak_order"\nmodels = ["first_order"]\nlrs = [0.1, 0.1, 0.1, 0.1]\nhorizon = 1.0',
            "lrs",
        ),
        ('name = "a "', "name"),  # both write a.nc
        ("n_steps = 1000000000000", "n_runs.*GiB"),  # MemoryError building the steps
    ],
)
def test_a_bad_second_run_is_refused_before_the_first_writes(tmp_path, capsys, second, match):
    text = CONFIG.format(second=second)
    if second.startswith("name"):
        text = text.replace('name = "b"\n', "")
    (tmp_path / "c.toml").write_text(text)
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    with pytest.raises(ValueError, match=match):
        validate(tomllib.loads(text))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_claim_must_be_text():
    with pytest.raises(ValueError, match="claim"):
        validate(
            tomllib.loads(CONFIG.format(second="").replace('claim = "c"', 'claim = ["a", "b"]'))
        )


def test_an_empty_scheduler_is_not_a_local_cluster(tmp_path, capsys):
    """--scheduler "$ADDR" with ADDR unset used to run on a local cluster without a word."""
    from sdeopt.experiments.sweep import run_sweep, validate_sweep

    sweep = validate_sweep(
        {
            "defaults": {
                "problem": {"type": "Quadratic", "diag": [1.0, 2.0]},
                "noise": {"type": "Gaussian"},
                "method": {"type": "DSGD", "lr": 0.1},
                "x0": [1.0, 1.0],
                "n_steps": 2,
                "n_runs": 4,
            },
            "sweep": {"seed": [0, 1]},
        }
    )
    with pytest.raises(ValueError, match="scheduler"):
        run_sweep(sweep, tmp_path / "s.zarr", scheduler="")
    assert not (tmp_path / "s.zarr").exists()


def test_plot_out_a_file_names_the_option(tmp_path, capsys):
    ds = so.analysis.compare(OPT, PROB, [1.0, 1.0], n_steps=2, n_runs=3)
    so.io.save(ds, tmp_path / "a.nc")
    (tmp_path / "file").write_text("")
    assert main(["plot", str(tmp_path / "a.nc"), "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0]
