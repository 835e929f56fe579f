"""The house rules of the layout (issue 13): imports flow one way, core <- discrete <- dynamics <-
analysis <- experiments <- cli, no module imports a private name of another layer, and no module
imports the package face (``sdeopt/__init__.py`` imports everything)."""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

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
