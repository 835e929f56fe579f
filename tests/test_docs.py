"""The documentation site builds without a warning, and its API reference covers every public name.

The build is the README's (``python -m sphinx -W -b html docs docs/_build/html``) with notebook
execution off (``SDEOPT_DOCS_EXECUTE=off``: the tests execute the notebooks themselves), run on
a copy of docs/, README.md and notebooks/ in a temporary folder, so that nothing is written into
the working tree. Sphinx and its extensions come with the ``test`` extra; a missing one fails
this test rather than skipping it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _conf():
    """docs/conf.py as a module (importing it has no side effect)."""
    spec = importlib.util.spec_from_file_location("sdeopt_docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The site built from a copy of the sources, and the build's process."""
    for name in ("sphinx", "myst_nb", "pydata_sphinx_theme"):
        assert importlib.util.find_spec(name), (
            f"{name} is not installed: pip install -e '.[test]' (or '.[docs]') installs it"
        )
    tmp = tmp_path_factory.mktemp("docs")
    shutil.copytree(
        DOCS,
        tmp / "docs",
        ignore=shutil.ignore_patterns("_build", "jupyter_execute", "notebooks", "generated"),
    )
    shutil.copytree(ROOT / "notebooks", tmp / "notebooks", ignore=shutil.ignore_patterns(".*"))
    shutil.copy(ROOT / "README.md", tmp / "README.md")
    out = tmp / "html"
    env = {**os.environ, "SDEOPT_DOCS_EXECUTE": "off", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    proc = subprocess.run(
        [*command, "-d", str(tmp / "doctrees"), str(tmp / "docs"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    print(f"docs build: {time.perf_counter() - start:.1f} s")
    return out, proc


@pytest.fixture(scope="module")
def site(build) -> Path:
    return build[0]


def test_the_site_builds_without_warnings(build):
    site, proc = build
    # With --keep-going the build goes on after a warning (and exits with 1): every warning is
    # on stderr (-q prints nothing else there), and the pages are still written.
    assert proc.returncode == 0 and not proc.stderr.strip(), (
        f"the docs build warned (exit status {proc.returncode}):\n{proc.stderr}{proc.stdout}"
    )
    assert (site / "index.html").exists()
    for page in ("installation", "quickstart", "notebooks", "api/index"):
        assert (site / f"{page}.html").exists(), page


def test_every_markdown_page_and_notebook_is_a_page(site):
    pages = {p.stem for p in DOCS.glob("*.md")}
    assert {p for p in pages if not (site / f"{p}.html").exists()} == set()
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks, "no notebooks found"
    assert {n for n in notebooks if not (site / "notebooks" / f"{n}.html").exists()} == set()


def test_every_public_name_has_an_api_page(site):
    public = _conf().public_names()
    for module in ("sdeopt", "sdeopt.problems", "sdeopt.noise", "sdeopt.discrete"):
        assert module in public
    missing = [
        f"{module}.{name}"
        for module, names in public.items()
        for name in names
        if not (site / "api" / "generated" / f"{module}.{name}.html").exists()
    ]
    assert not missing, f"no API page for {missing}"


def test_math_renders_in_docstrings_and_pages(site):
    # A class docstring's :math: roles and .. math:: block, a Markdown page's $...$ and $$...$$.
    for page in ("api/generated/sdeopt.discrete.DSignSGD.html", "methods.html"):
        html = (site / page).read_text(encoding="utf-8")
        assert 'class="math notranslate nohighlight"' in html, page
        assert "mathjax" in html, page
    # No role left as text: a broken one shows up as ":math:`" on the page.
    broken = [
        p.relative_to(site).as_posix()
        for p in site.rglob("*.html")
        if re.search(r":math:`", p.read_text(encoding="utf-8"))
    ]
    assert not broken, f"unrendered :math: roles in {broken}"


def test_notebook_execution_switch(monkeypatch):
    conf = _conf()
    for value, mode in [("off", "off"), ("0", "off"), ("cache", "cache"), ("", "cache")]:
        monkeypatch.setenv("SDEOPT_DOCS_EXECUTE", value)
        assert conf._execution_mode() == mode, value
    monkeypatch.delenv("SDEOPT_DOCS_EXECUTE")
    assert conf._execution_mode() == "cache"
    monkeypatch.setenv("SDEOPT_DOCS_EXECUTE", "sometimes")
    with pytest.raises(ValueError, match="SDEOPT_DOCS_EXECUTE"):
        conf._execution_mode()
