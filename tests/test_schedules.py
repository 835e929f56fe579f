"""Learning-rate schedules: values, eta_0 = 1, scalar/tensor agreement, configs."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from sdeopt import schedules as S
from sdeopt.schedules import REGISTRY, Constant, Cosine, PolyDecay, StepDecay, from_config

SCHEDULES = [
    Constant(),
    PolyDecay(),
    PolyDecay(power=1.0, offset=10.0),
    PolyDecay(power=0.0),
    Cosine(n_steps=7),
    Cosine(n_steps=50, min_factor=0.1),
    Cosine(n_steps=1, min_factor=1.0),
    StepDecay(every=3, factor=0.5),
    StepDecay(every=1, factor=1.0),
]


def _id(s) -> str:
    return json.dumps(s.config(), sort_keys=True)


@pytest.mark.parametrize("sched", SCHEDULES, ids=_id)
def test_eta0_is_one_and_types(sched):
    assert sched(0) == 1.0 and isinstance(sched(0), float)
    assert sched.factors(1).tolist() == [1.0]
    out = sched(torch.tensor([0, 5]))
    assert out.dtype == torch.float64 and out.shape == (2,) and out[0] == 1.0


def _step_decay_by_hand(s: StepDecay, k: int) -> float:
    """eta starts at 1 and is multiplied by ``factor`` at every k that ``every`` divides."""
    eta = 1.0
    for j in range(1, k + 1):
        if j % s.every == 0:
            eta *= s.factor
    return eta


# eta_k from each schedule's textbook definition, in plain Python floats (not the library's form).
REFERENCE = {
    Constant: lambda s, k: 1.0,
    PolyDecay: lambda s, k: (1.0 + k / s.offset) ** -s.power,
    # SGDR (Loshchilov & Hutter 2017, Eq. 5) without restarts, held at min_factor after n_steps.
    Cosine: lambda s, k: (
        s.min_factor
        + 0.5 * (1.0 - s.min_factor) * (1.0 + math.cos(math.pi * min(k, s.n_steps) / s.n_steps))
    ),
    StepDecay: _step_decay_by_hand,
}


@pytest.mark.parametrize("sched", SCHEDULES, ids=_id)
def test_factors_and_pointwise_calls_match_the_definition(sched):
    n = 120
    f = sched.factors(n)
    assert f.shape == (n,) and f.dtype == torch.float64
    reference = torch.tensor(
        [REFERENCE[type(sched)](sched, k) for k in range(n)], dtype=torch.float64
    )
    pointwise = torch.tensor([sched(k) for k in range(n)], dtype=torch.float64)
    # Rounding of the two forms differs by a few ulps; atol covers the cosine's zero at k = n.
    torch.testing.assert_close(f, reference, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(pointwise, reference, rtol=1e-13, atol=1e-15)
    assert torch.all(f > 0) or isinstance(sched, Cosine)
    assert torch.all(f <= 1.0) and torch.all(f >= 0.0)
    assert torch.all(f[1:] <= f[:-1])  # every schedule here is non-increasing
    assert sched.factors(0).shape == (0,)


@pytest.mark.parametrize("sched", SCHEDULES, ids=_id)
def test_tensor_input_any_shape_and_integer_dtype(sched):
    k = torch.arange(24).reshape(2, 3, 4)
    out = sched(k)
    assert out.shape == (2, 3, 4) and out.dtype == torch.float64
    torch.testing.assert_close(out.flatten(), sched.factors(24), rtol=1e-14, atol=0.0)
    torch.testing.assert_close(sched(k.to(torch.int32)), out, rtol=0.0, atol=0.0)
    assert sched(torch.tensor(3)).shape == ()
    assert sched(k.new_zeros((0,))).shape == (0,)


def test_tensor_input_on_device(device):
    k = torch.arange(5, device=device)
    out = Cosine(n_steps=4)(k)
    assert out.device == k.device and out.dtype == torch.float64


def test_constant_values():
    assert Constant().factors(5).tolist() == [1.0] * 5
    assert Constant()(10**12) == 1.0


def test_poly_values():
    s = PolyDecay(power=0.5)
    assert s(3) == 0.5 and s(8) == pytest.approx(1 / 3)
    for p in (0.3, 1.0, 2.0):
        torch.testing.assert_close(
            PolyDecay(power=p).factors(30), 1.0 / (torch.arange(30.0) + 1.0) ** p
        )
    assert PolyDecay(power=1.0, offset=10.0)(10) == pytest.approx(0.5)
    assert PolyDecay(power=0.0)(1000) == 1.0


def test_cosine_values():
    s = Cosine(n_steps=4, min_factor=0.2)
    expected = [0.2 + 0.8 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(5)] + [0.2] * 3
    torch.testing.assert_close(s.factors(8), torch.tensor(expected), rtol=1e-15, atol=1e-15)
    assert s(4) == 0.2 and s(10**9) == 0.2  # exactly min_factor from n_steps on
    assert Cosine(n_steps=10)(5) == pytest.approx(0.5)


def test_step_values():
    s = StepDecay(every=3, factor=0.5)
    assert s.factors(10).tolist() == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    assert StepDecay(every=2, factor=0.1)(5) == pytest.approx(0.01)


# ---------------------------------------------------------------- configs and registry


@pytest.mark.parametrize("sched", SCHEDULES, ids=_id)
def test_config_round_trip(sched):
    cfg = sched.config()
    assert cfg["type"] in REGISTRY and REGISTRY[cfg["type"]] is type(sched)
    assert json.loads(json.dumps(cfg)) == cfg
    rebuilt = from_config(json.loads(json.dumps(cfg)))
    assert rebuilt == sched
    torch.testing.assert_close(rebuilt.factors(20), sched.factors(20), rtol=0.0, atol=0.0)


def test_registry_names():
    """One naming convention for every registry: class names; the short names still build."""
    assert set(REGISTRY) == {"Constant", "PolyDecay", "Cosine", "StepDecay"}
    for short, cls in [("constant", Constant), ("poly", PolyDecay), ("step", StepDecay)]:
        assert short in REGISTRY and REGISTRY[short] is cls
    assert all(issubclass(cls, S.Schedule) for cls in REGISTRY.values())


def test_from_config_uses_defaults():
    assert from_config({"type": "poly"}) == PolyDecay()
    assert from_config({"type": "cosine", "n_steps": 3}) == Cosine(n_steps=3, min_factor=0.0)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"type": "linear"}, r"schedule\.type = 'linear'"),
        ({"type": 3}, r"schedule\.type = 3"),
        ({"power": 1.0}, "'type'"),
        ({"type": "poly", "powr": 1.0}, r"schedule\.powr = 1.0"),
        ({"type": "poly", "power": -1}, "Invalid power: -1"),
        ({"type": "cosine"}, "missing.*n_steps"),
        ({"type": "step", "every": 2}, "missing.*factor"),
        ("constant", "mapping"),
    ],
)
def test_from_config_bad_input(cfg, match):
    with pytest.raises(ValueError, match=match):
        from_config(cfg)


def _inverse_sqrt(k):
    return 1.0 / (k + 1.0).sqrt()


@dataclasses.dataclass(frozen=True, kw_only=True)
class _UserSchedule(S.Schedule):
    """A user's schedule: outside REGISTRY, without a ``name``, with a callable hyperparameter."""

    fn: object = _inverse_sqrt

    def _factor(self, k):
        return self.fn(k.to(torch.float64))


def test_user_schedule_config_names_it_and_runs_record_it(tmp_path):
    import xarray as xr

    import sdeopt as so

    sched = _UserSchedule()
    cfg = sched.config()
    assert cfg == {
        "type": f"{__name__}._UserSchedule",
        "reproducible": False,
        "fn": {"callable": f"{__name__}._inverse_sqrt", "reproducible": False},
    }
    with pytest.raises(ValueError, match="unknown schedule"):
        from_config(cfg)
    opt = so.discrete.DSGD(lr=0.1, noise=so.noise.Gaussian(scale=0.0), schedule=sched)
    ds = so.discrete.simulate(
        opt, so.problems.Quadratic(diag=[1.0]), [1.0], n_steps=3, n_runs=2
    ).to_dataset()
    method = json.loads(ds.attrs["config"])["method"]
    assert (
        method["schedule"] == cfg
        and method["reproducible"] is False
        and ds.attrs["reproducible"] == 0
    )
    np.testing.assert_allclose(
        ds["lr_sum"].values, [0.0, 0.1, 0.1 + 0.1 / 2**0.5, 0.1 + 0.1 / 2**0.5 + 0.1 / 3**0.5]
    )
    ds.to_netcdf(tmp_path / "user.nc")
    xr.testing.assert_identical(ds, xr.load_dataset(tmp_path / "user.nc"))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PolyDecay(power=-0.5), "Invalid power: -0.5"),
        (lambda: PolyDecay(power=math.nan), "Invalid power: nan"),
        (lambda: PolyDecay(offset=0), "Invalid offset: 0"),
        (lambda: PolyDecay(offset=-1.0), "Invalid offset: -1.0"),
        (lambda: Cosine(n_steps=0), "Invalid n_steps: 0"),
        (lambda: Cosine(n_steps=2.5), "Invalid n_steps: 2.5"),
        (lambda: Cosine(n_steps=5, min_factor=1.5), "Invalid min_factor: 1.5"),
        (lambda: Cosine(n_steps=5, min_factor=-0.1), "Invalid min_factor: -0.1"),
        (lambda: StepDecay(every=0, factor=0.5), "Invalid every: 0"),
        (lambda: StepDecay(every=2, factor=0.0), "Invalid factor: 0.0"),
        (lambda: StepDecay(every=2, factor=1.5), "Invalid factor: 1.5"),
        (lambda: StepDecay(every=2, factor="half"), "Invalid factor: 'half'"),
    ],
)
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "k, match",
    [
        (-1, "Invalid k: -1"),
        (1.5, "Invalid k: 1.5"),
        (True, "Invalid k: True"),
        (torch.tensor([0.0, 1.0], dtype=torch.float64), "Invalid k: tensor of dtype torch.float64"),
        (torch.tensor([2, -3]), "Invalid k: tensor with minimum -3"),
    ],
)
def test_bad_k(k, match):
    with pytest.raises(ValueError, match=match):
        PolyDecay()(k)


def test_bad_n_steps():
    with pytest.raises(ValueError, match="Invalid n_steps: -1"):
        Constant().factors(-1)


def test_frozen_keyword_only_and_hyperparameters_normalised():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PolyDecay().power = 1.0
    with pytest.raises(TypeError):
        StepDecay(2, 0.5)
    s = PolyDecay(power=1, offset=2)
    assert isinstance(s.power, float) and isinstance(s.offset, float)
