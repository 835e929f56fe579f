"""The house rules of the layout (issue 13): imports flow one way, core <- discrete <- dynamics <-
analysis <- experiments <- cli, no module imports a private name of another layer, and no module
imports the package face (``sdeopt/__init__.py`` imports everything)."""

from __future__ import annotations

import ast
import importlib
import inspect
import warnings
from pathlib import Path

import pytest
import torch

import sdeopt as so

PACKAGE = Path(__file__).resolve().parents[1] / "sdeopt"
LAYERS = ["core", "discrete", "dynamics", "analysis", "experiments", "cli"]
#: Deprecated aliases kept for one version (they import their new home, a higher layer).
ALIASES = {"analysis/config.py", "analysis/experiments.py", "analysis/sweep.py"}


def layer(module: str) -> str:
    """The layer of a dotted module name inside sdeopt."""
    parts = module.split(".")
    if len(parts) < 2:
        return "face"
    return parts[1] if parts[1] in LAYERS else "core"


def imports(path: Path):
    """(imported module, imported names) of every ``from sdeopt... import`` in ``path``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "sdeopt"
        ):
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "sdeopt":
                    yield a.name, []


FILES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way_and_keep_private_names_private(path):
    rel = path.relative_to(PACKAGE)
    own = layer("sdeopt." + ".".join(rel.with_suffix("").parts))
    for module, names in imports(path):
        if (
            module == "sdeopt"
        ):  # `from sdeopt import noise` names a module; `__version__` is the face
            assert "__version__" not in names, f"{rel} imports the package face for __version__"
            targets = [(f"sdeopt.{n}", []) for n in names]
        else:
            targets = [(module, names)]
        for target, imported in targets:
            other = layer(target)
            if str(rel) not in ALIASES:
                assert LAYERS.index(other) <= LAYERS.index(own), (
                    f"{rel} ({own}) imports {target} ({other})"
                )
            if other != own:
                private = [n for n in imported if n.startswith("_") and not n.endswith("__")]
                assert not private, f"{rel} imports private {private} from {target}"


@pytest.mark.parametrize(
    "old,new", [("config", "config"), ("experiments", "runner"), ("sweep", "sweep")]
)
def test_moved_modules_keep_a_deprecated_alias(old, new):
    import sys

    sys.modules.pop(f"sdeopt.analysis.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alias = importlib.import_module(f"sdeopt.analysis.{old}")
    assert any(
        issubclass(w.category, DeprecationWarning) and f"sdeopt.experiments.{new}" in str(w.message)
        for w in caught
    )
    home = importlib.import_module(f"sdeopt.experiments.{new}")
    public = [
        n
        for n in dir(home)
        if not n.startswith("_")
        and callable(getattr(home, n))
        and getattr(getattr(home, n), "__module__", "") == home.__name__
    ]
    assert public and all(getattr(alias, n) is getattr(home, n) for n in public)


@pytest.mark.parametrize(
    "positional,keyword",
    [
        (
            lambda: so.problems.FunctionProblem(_square, 3),
            lambda: so.problems.FunctionProblem(_square, dim=3),
        ),
        (
            lambda: so.noise.TwoStateMarkov(0.2, 0.5),
            lambda: so.noise.TwoStateMarkov(0.2, scale=0.5),
        ),
        (lambda: so.noise.GaussianAR1(0.3, 2.0), lambda: so.noise.GaussianAR1(0.3, scale=2.0)),
        (
            lambda: so.noise.FiniteMarkov([[0.9, 0.1], [0.2, 0.8]], [-1.0, 2.0], 0.5),
            lambda: so.noise.FiniteMarkov([[0.9, 0.1], [0.2, 0.8]], values=[-1.0, 2.0], scale=0.5),
        ),
        (
            lambda: so.dynamics.SDE(1, _drift, _diffusion, "diagonal", 1),
            lambda: so.dynamics.SDE(
                1, drift_fn=_drift, diffusion_fn=_diffusion, noise_type="diagonal", brownian_dim=1
            ),
        ),
    ],
    ids=["FunctionProblem", "TwoStateMarkov", "GaussianAR1", "FiniteMarkov", "SDE"],
)
def test_constructors_are_keyword_only_after_the_first_argument(positional, keyword):
    """Parameters after the first obvious one are keywords; the positional form of the previous
    version still builds the same object, with a DeprecationWarning, for one version."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = keyword()
    with pytest.warns(DeprecationWarning, match="by keyword"):
        old = positional()
    assert _described(old) == _described(new)


def _square(x):
    return (x**2).sum()


def _drift(x, eta):
    return -x


def _diffusion(x, eta):
    return so.dynamics.Diagonal(torch.ones_like(x))


def _described(obj):
    if isinstance(obj, so.dynamics.SDE):
        return (obj.dim, obj.drift_fn, obj.diffusion_fn, obj.noise_type, obj.brownian_dim)
    return (obj.dim, obj.fn) if hasattr(obj, "fn") else obj.config()


def test_dataclass_constructors_are_keyword_only():
    """Every registered dataclass (methods, compressors, schedules, estimators) is kw_only."""
    import dataclasses

    from sdeopt.compressors import COMPRESSORS
    from sdeopt.discrete import MARKOV_ESTIMATORS, METHODS
    from sdeopt.schedules import SCHEDULES

    for registry in (METHODS, COMPRESSORS, SCHEDULES, MARKOV_ESTIMATORS):
        for cls in registry.values():
            assert dataclasses.is_dataclass(cls)
            kinds = {p.kind for n, p in inspect.signature(cls).parameters.items()}
            assert kinds <= {inspect.Parameter.KEYWORD_ONLY}, cls
