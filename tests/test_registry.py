"""The registries are the one source of a family's classes (issue 13): every public concrete class
of a family is registered, every registered class is in its family's contract tests, and every
registered class is usable from a TOML config (its ``config()`` builds it back through the same
parser ``sdeopt run`` uses). A class added to a family without a registry line, without a
contract-test case, or that a config cannot build makes one of these tests fail."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

import sdeopt as so
from sdeopt.compressors import COMPRESSORS, Compressor
from sdeopt.discrete import MARKOV_ESTIMATORS, METHODS, MarkovEstimator, Method
from sdeopt.experiments.config import build
from sdeopt.noise import NOISES, UNIT_LAWS, MarkovNoise, Noise, UnitLaw
from sdeopt.problems import PROBLEMS, Problem
from sdeopt.registry import Registry
from sdeopt.schedules import SCHEDULES, Schedule
from tests import (
    test_chains,
    test_compressors,
    test_discrete,
    test_noise,
    test_problems,
    test_schedules,
)

#: family registry -> the base classes whose concrete subclasses belong to it.
FAMILIES = {
    "problem": (PROBLEMS, (Problem,)),
    "noise": (NOISES, (Noise, MarkovNoise)),
    "unit law": (UNIT_LAWS, (UnitLaw,)),
    "compressor": (COMPRESSORS, (Compressor,)),
    "schedule": (SCHEDULES, (Schedule,)),
    "method": (METHODS, (Method,)),
    "estimator": (MARKOV_ESTIMATORS, (MarkovEstimator,)),
}
#: Public concrete classes deliberately outside a registry, and why.
NOT_CONFIGURABLE = {
    so.problems.FunctionProblem: "its objective is user code (a callable), not data a config holds",
    so.discrete.SVAG: "wraps another method object (the validity ladder's rungs); a config would "
    "need a nested method table",
}


def _subclasses(base: type) -> set[type]:
    out = set()
    for cls in base.__subclasses__():
        out |= {cls} | _subclasses(cls)
    return out


def _public_concrete(bases) -> set[type]:
    return {
        cls
        for base in bases
        for cls in _subclasses(base)
        if cls.__module__.startswith("sdeopt.")
        and not cls.__name__.startswith("_")
        and not inspect.isabstract(cls)
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_every_public_class_of_a_family_is_registered(family):
    registry, bases = FAMILIES[family]
    assert isinstance(registry, Registry)
    missing = {
        c.__name__
        for c in _public_concrete(bases)
        if c not in NOT_CONFIGURABLE and registry.get(c.__name__) is not c
    }
    assert not missing, f"{family} classes without a registry line: {sorted(missing)}"
    assert all(issubclass(cls, bases) for cls in registry.values())


#: family -> the instances its contract tests run on (each test module's own table).
CONTRACT_CASES = {
    "problem": lambda: [factory() for factory, _ in test_problems.PROBLEMS.values()],
    "noise": lambda: (
        [law() for law in test_noise.LAWS.values()]
        + [chain for chain, _, _ in test_chains.CHAINS]
        + [so.noise.Minibatch(batch_size=4)]
        + [so.noise.Streaming(2, label=so.noise.StudentT(nu=1.5, scale=0.3))]
    ),  # their contracts: tests/test_problems.py (finite sums), tests/test_equivalents.py
    "unit law": lambda: [law for law, _ in test_chains.UNIT_LAW_CASES],
    "compressor": lambda: list(test_compressors.ALL),
    "schedule": lambda: list(test_schedules.SCHEDULES),
    "method": lambda: [factory() for factory in test_discrete.CASES.values()],
    "estimator": lambda: [
        m.estimator for m in (f() for f in test_discrete.CASES.values()) if hasattr(m, "estimator")
    ],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_registered_class_is_in_its_contract_tests(family):
    registry, _ = FAMILIES[family]
    covered = {type(obj).__name__ for obj in CONTRACT_CASES[family]()}
    missing = set(registry) - covered
    assert not missing, f"registered {family} classes without a contract-test case: {missing}"


def _roundtrip(registry: Registry, obj, where: str):
    """The object's config through JSON (what a dataset stores, what TOML holds) and back, to an
    object that behaves the same (a config missing a parameter would rebuild the default)."""
    spec = json.loads(json.dumps(obj.config()))
    rebuilt = registry.build(spec, where=where)
    assert type(rebuilt) is type(obj)
    assert json.loads(json.dumps(rebuilt.config())) == spec
    for a, b in zip(_behaviour(obj), _behaviour(rebuilt), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    return rebuilt


def _behaviour(obj) -> list[torch.Tensor]:
    """What the object computes on fixed inputs and a fixed random stream."""
    rng = so.random.RandomSource(5, 4)
    if isinstance(obj, Problem):
        x = torch.linspace(-0.3, 0.4, obj.dim, dtype=torch.float64).expand(2, -1)
        return [obj.loss(x), obj.grad(x)]
    if isinstance(obj, Compressor):
        return [
            obj.compress(torch.linspace(-1.0, 2.0, 6, dtype=torch.float64).expand(4, 2, 6), rng)
        ]
    if isinstance(obj, Schedule):
        return [obj.factors(30)]
    if isinstance(obj, MarkovNoise):
        return [obj.init(rng, 3), torch.tensor(obj.asymptotic_variance)]
    if isinstance(obj, UnitLaw):
        return [obj.sample(rng, 3)]
    if isinstance(obj, MarkovEstimator):
        return [torch.tensor(obj.expected_calls())]
    if isinstance(obj, so.noise.Streaming):
        prob = so.problems.StreamingLeastSquares([1.0, 2.0, 0.5])
        return [obj.oracle(prob, torch.ones(4, 3, dtype=torch.float64), 2, rng)]
    if isinstance(obj, Noise) and not isinstance(obj, so.noise.Minibatch):
        n_workers = len(obj.scale) if isinstance(getattr(obj, "scale", None), tuple) else 3
        return [obj.sample(rng, torch.ones(4, 1, 5, dtype=torch.float64), n_workers)]
    return []


@pytest.mark.parametrize(
    "family", ["problem", "noise", "unit law", "compressor", "schedule", "estimator"]
)
def test_every_registered_part_builds_back_from_its_config(family):
    registry, _ = FAMILIES[family]
    for obj in CONTRACT_CASES[family]():
        if type(obj) not in NOT_CONFIGURABLE:
            _roundtrip(registry, obj, family)


#: A run each part can sit in, completed by the part under test.
RUN = {
    "problem": {"type": "Quadratic", "diag": [1.0, 2.0]},
    "noise": {"type": "Gaussian"},
    "method": {"type": "DSGD", "lr": 0.1, "n_workers": 2},
    "x0_fill": 0.1,
    "n_steps": 2,
    "n_runs": 4,
}
MARKOV_RUN = dict(
    RUN, noise={"type": "TwoStateMarkov", "p": 0.2}, method={"type": "MarkovSGD", "lr": 0.1}
)
#: Where a part goes in a run table.
KEY = {"problem": "problem", "noise": "noise", "unit law": "eps", "compressor": "compressor"}


def _run_with(family: str, spec: dict) -> dict:
    if family == "method":  # its parts are the run's own tables
        method = dict(spec)
        run = {k: v for k, v in RUN.items() if k not in ("noise", "method")}
        for key in ("noise", "compressor", "eps", "schedule"):
            if isinstance(method.get(key), dict):
                run[key] = method.pop(key)
        return dict(run, method=method)
    if family == "estimator":
        return dict(MARKOV_RUN, method=dict(MARKOV_RUN["method"], estimator=spec))
    if family == "noise" and spec["type"] in ("TwoStateMarkov", "GaussianAR1", "FiniteMarkov"):
        return dict(MARKOV_RUN, noise=spec)
    if family == "noise" and spec["type"] == "Streaming":
        return dict(
            RUN, problem={"type": "StreamingLeastSquares", "spectrum": [1.0, 2.0]}, noise=spec
        )
    if family == "noise" and spec["type"] == "Minibatch":
        return dict(RUN, problem={"type": "LogisticRegression", "n_workers": 2}, noise=spec)
    if family == "unit law":
        run = {k: v for k, v in RUN.items() if k != "noise"}
        return dict(run, method={"type": "ItoChain", "lr": 0.1}, eps=spec)
    if family == "compressor":  # on the dimension of the compressor tests
        problem = {"type": "Quadratic", "diag": [1.0] * test_compressors.D}
        return dict(RUN, problem=problem, method=dict(RUN["method"], type="DCSGD"), compressor=spec)
    if family == "problem" and "n_workers" in spec:  # a split problem fixes N
        n_workers = spec["n_workers"] or 2  # a homogeneous problem serves any number
        return dict(RUN, problem=spec, method=dict(RUN["method"], n_workers=n_workers))
    return dict(RUN, **{KEY.get(family, family): spec})


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_registered_class_runs_from_a_toml_config(family):
    """The config() of each contract case, placed in a run, passes ``build`` (the parser and dry
    run of ``sdeopt run``) and rebuilds the same part."""
    for obj in CONTRACT_CASES[family]():
        spec = json.loads(json.dumps(obj.config()))
        if spec.get("reproducible") is False:
            continue  # user code inside (a callable): recorded by name, not rebuildable
        built = build(_run_with(family, spec), where="run")
        method = built["method"]
        part = {
            "problem": built["problem"],
            "method": method,
            "noise": getattr(method, "noise", None),
            "unit law": getattr(method, "eps", None),
            "compressor": getattr(method, "compressor", None),
            "schedule": method.schedule,
            "estimator": getattr(method, "estimator", None),
        }[family]
        assert json.loads(json.dumps(part.config())) == spec, (family, spec)


def test_registries_refuse_unknown_names_and_keys_with_the_name():
    with pytest.raises(ValueError, match=r"compressor\.type = 'Top' \(unknown compressor"):
        COMPRESSORS.build({"type": "Top", "k": 1}, where="compressor")
    with pytest.raises(ValueError, match=r"compressor\.kk = 1 \(not a parameter of RandK"):
        COMPRESSORS.build({"type": "RandK", "kk": 1}, where="compressor")
    with pytest.raises(ValueError, match=r"compressor\.k is missing"):
        COMPRESSORS.build({"type": "RandK"}, where="compressor")
    with pytest.raises(ValueError, match=r"method\.shortcuts = 1 \(true or false\)"):
        METHODS.build(
            {"type": "DSGD", "lr": 0.1, "shortcuts": 1},
            where="method",
            extra={"noise": so.noise.Gaussian()},
        )
    things = Registry("thing")
    things.register(type("Thing", (), {}))
    with pytest.raises(ValueError, match="registered twice"):
        things.register(type("Thing", (), {}))


def test_the_command_line_lists_every_registered_type(capsys):
    from sdeopt.cli import main
    from sdeopt.experiments.config import REGISTRIES

    assert main(["types"]) == 0
    out = capsys.readouterr().out
    for key, registry in REGISTRIES.items():
        assert f"{key} = {{ type = ... }}" in out
        for name in registry:
            assert f"    {name}(" in out
