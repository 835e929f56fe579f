"""Sphinx configuration of the sdeopt documentation site.

Build: ``python -m sphinx -W -b html docs docs/_build/html`` (warnings are errors).

The notebooks in ``notebooks/`` are executed by myst-nb and cached (``docs/_build/.jupyter_cache``):
a rebuild re-runs only a notebook whose code changed. ``SDEOPT_DOCS_EXECUTE=off`` turns execution
off (the pages then show the code without outputs), which is what the test suite's build does.

The API reference is generated at build time by autosummary from each module's ``__all__`` (see
``public_names``), so that a name added to a module appears without anyone regenerating files.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import shutil
import sys
import types
import typing
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer

import sdeopt

project = "sdeopt"
author = "the sdeopt authors"
copyright = "the sdeopt authors"
release = sdeopt.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "jupyter_execute", ".jupyter_cache", "**.ipynb_checkpoints"]

html_theme = "pydata_sphinx_theme"
html_title = f"sdeopt {release}"
html_theme_options = {
    "navigation_depth": 3,
    "show_toc_level": 2,
}
html_sidebars = {"index": []}

# --- Markdown and notebooks (myst-nb) -----------------------------------------------------------

# $...$ and $$...$$ in Markdown (dollarmath), \begin{align} blocks (amsmath).
myst_enable_extensions = ["dollarmath", "amsmath"]
# Links such as [schema](schema.md#files-and-checksums) resolve to the heading's anchor.
myst_heading_anchors = 3


def _execution_mode() -> str:
    value = os.environ.get("SDEOPT_DOCS_EXECUTE", "cache").strip().lower()
    if value in {"off", "0", "false", "no"}:
        return "off"
    if value in {"cache", "on", "1", "true", "yes", ""}:
        return "cache"
    if value in {"force", "auto"}:
        return value
    raise ValueError(
        f"Invalid SDEOPT_DOCS_EXECUTE: {value!r} (must be 'cache' (the default), 'off' or 'force')"
    )


nb_execution_mode = _execution_mode()
# Each notebook runs in well under two minutes on 2 CPU cores; a cell that hangs fails the build.
nb_execution_timeout = 600
# A cell that raises fails the build (with -W the warning would too; this says which cell).
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# The notebooks live in notebooks/ (outside this source directory), where the tests execute them
# and where their links (../docs/models.md) are right on a repository host. Sphinx reads sources
# only inside docs/, so every build copies them into docs/notebooks/ (ignored by git) first, with
# their links to the docs rewritten to be relative to the copy (see setup below).


def copy_notebooks(src: Path, dst: Path) -> list[str]:
    """Copy ``src/*.ipynb`` into ``dst``, rewriting ``../docs/X`` links to ``../X``.

    A copy whose content would not change is left untouched (its modification time too), so
    that an incremental build does not re-read it; copies of deleted notebooks are removed.

    Returns:
        The copied notebooks' names, sorted.
    """
    dst.mkdir(exist_ok=True)
    names = sorted(p.name for p in src.glob("*.ipynb"))
    for name in names:
        text = (src / name).read_text(encoding="utf-8")
        text = re.sub(r"\]\(\.\./docs/", "](../", text)
        target = dst / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    for stale in dst.glob("*.ipynb"):
        if stale.name not in names:
            stale.unlink()
    checkpoints = dst / ".ipynb_checkpoints"
    if checkpoints.exists():
        shutil.rmtree(checkpoints)
    return names


# --- API reference (autodoc, autosummary, napoleon) ---------------------------------------------

# The packages whose public names the API reference covers; each module's __all__ decides.
API_MODULES = [
    "sdeopt",
    "sdeopt.problems",
    "sdeopt.noise",
    "sdeopt.compressors",
    "sdeopt.schedules",
    "sdeopt.discrete",
    "sdeopt.dynamics",
    "sdeopt.analysis",
    "sdeopt.experiments",
    "sdeopt.io",
]


def _defined_names(module: types.ModuleType) -> list[str]:
    """Public names a module without ``__all__`` defines itself: its classes and functions, and
    the names its own top-level assignments bind (constants, registries); no imports, no
    type variables."""
    names = {
        name
        for name, obj in vars(module).items()
        if (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    }
    source = inspect.getsource(module)
    for node in ast.parse(source).body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return sorted(
        name
        for name in names
        if not name.startswith("_")
        and hasattr(module, name)
        and not isinstance(getattr(module, name), typing.TypeVar)
    )


def public_names(modules=API_MODULES) -> dict[str, list[str]]:
    """Module name -> its public names, for every module the reference documents.

    A module's public names are its ``__all__``, or, without one, what it defines itself
    (``_defined_names``). Modules named in an ``__all__`` are documented too, recursively.
    """
    out: dict[str, list[str]] = {}
    todo = list(modules)
    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        module = importlib.import_module(name)
        members = getattr(module, "__all__", None)
        members = list(members) if members is not None else _defined_names(module)
        out[name] = members
        todo.extend(
            obj.__name__
            for obj in (getattr(module, member) for member in members)
            if isinstance(obj, types.ModuleType)
        )
    return out


autosummary_generate = True
autosummary_context = {"sdeopt_public": public_names()}
autosummary_ignore_module_all = False
autodoc_member_order = "bysource"
# Constructor arguments are documented in the class docstring (Google style "Args:").
autoclass_content = "class"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"show-inheritance": True}

napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" as :ivar: fields, not attribute directives that would duplicate the attributes
# autodoc documents from their "#:" comments.
napoleon_use_ivar = True
napoleon_custom_sections = ["Shapes", "Update", "Designs"]


_MISSING = object()


def _comment_doc(module_name: str, name: str) -> list[str] | None:
    """The ``#:`` comment above ``name``'s assignment in a module's source, if any."""
    try:
        docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
    except Exception:  # no source (a compiled or built-in module)
        return None
    lines = docs.get(("", name))
    return list(lines) if lines else None


def data_docstring(app, what, name, obj, options, lines) -> None:
    """Give a re-exported constant (``sdeopt.dynamics.MODELS``, ``sdeopt.noise.NOISES``) the
    ``#:`` comment of the module that defines it.

    autodoc reads a constant's ``#:`` comment only in the module it documents it in; for a name
    that module imports, it falls back to the docstring of the value's type (``dict``, ``tuple``,
    ``Registry``), which describes the type, not the constant.
    """
    if what != "data":
        return
    module_name, _, short = name.rpartition(".")
    if _comment_doc(module_name, short) is not None:
        return
    for other in sorted(sys.modules):
        module = sys.modules[other]
        if other.split(".")[0] != "sdeopt" or other == module_name or module is None:
            continue
        if getattr(module, short, _MISSING) is obj and (doc := _comment_doc(other, short)):
            lines[:] = [*doc, "", f"Defined in ``{other}``."]
            return
    lines[:] = []


def _copy_notebooks(app, config) -> None:
    srcdir = Path(app.srcdir)
    copy_notebooks(srcdir.parent / "notebooks", srcdir / "notebooks")


# napoleon reads the first line of an attribute's, a constant's or a property's docstring as
# "type: description" and renders the part before the first colon as its type; this package writes
# types as annotations and uses colons in sentences ("Compressors by class name: ``compressor =
# {type = ...}`` in configs."), so those docstrings are kept as written. napoleon parses no section
# in them, so nothing else is lost.
_ATTRIBUTE_KINDS = ("attribute", "data", "property")
_before_napoleon: dict[int, list[str]] = {}


def _keep_attribute_docstring(app, what, name, obj, options, lines) -> None:
    if what in _ATTRIBUTE_KINDS:
        _before_napoleon[id(lines)] = list(lines)


def _restore_attribute_docstring(app, what, name, obj, options, lines) -> None:
    kept = _before_napoleon.pop(id(lines), None)
    if kept is not None:
        lines[:] = kept


def setup(app) -> None:
    # Before Sphinx lists the source files.
    app.connect("config-inited", _copy_notebooks)
    # napoleon turns Google-style sections into reST at priority 500.
    app.connect("autodoc-process-docstring", _keep_attribute_docstring, priority=450)
    app.connect("autodoc-process-docstring", _restore_attribute_docstring, priority=550)
    app.connect("autodoc-process-docstring", data_docstring, priority=600)
