"""Every example in an sdeopt docstring runs and prints what it shows (doctest).

The examples are documentation: each docstring with ``>>>`` lines in any module of the package
is one test, run by ``doctest`` with ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` under the settings
a user has after ``import sdeopt; sdeopt.configure_torch()``: torch's default dtype (float32) and
one torch thread. An example marked ``# doctest: +SKIP`` is not run, so none is: the test below
checks that.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest
import torch

import sdeopt

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Examples that are wrong in files being edited in parallel: the fix is known, and this entry goes
# once it lands (strict: the test fails as soon as the example passes, as a reminder).
KNOWN_BROKEN: dict[str, str] = {}  # docstring name -> why its example fails (strict xfail)


def _modules() -> list[str]:
    return ["sdeopt", *sorted(m.name for m in pkgutil.walk_packages(sdeopt.__path__, "sdeopt."))]


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    tests = []
    with warnings.catch_warnings():
        # sdeopt.analysis.config and friends are deprecated aliases; importing them warns.
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in _modules():
            module = importlib.import_module(name)
            tests.extend(t for t in finder.find(module, name) if t.examples)
    return sorted(tests, key=lambda t: t.name)


DOCTESTS = _doctests()


def _param(test: doctest.DocTest):
    marks = []
    if test.name in KNOWN_BROKEN:
        marks.append(pytest.mark.xfail(reason=KNOWN_BROKEN[test.name], strict=True))
    return pytest.param(test, id=test.name, marks=marks)


def test_every_example_block_is_collected():
    # About 30 docstrings carry an "Example:" section; a collector that found none would pass
    # every test below vacuously.
    assert len(DOCTESTS) >= 30
    assert not set(KNOWN_BROKEN) - {t.name for t in DOCTESTS}, "stale KNOWN_BROKEN entry"


@pytest.mark.parametrize("test", [pytest.param(t, id=t.name) for t in DOCTESTS])
def test_no_example_is_skipped(test):
    skipped = [e.source.strip() for e in test.examples if e.options.get(doctest.SKIP)]
    assert not skipped, f"{test.name}: examples marked +SKIP are never run: {skipped}"


@pytest.mark.parametrize("test", [_param(t) for t in DOCTESTS])
def test_docstring_example(test):
    torch.set_default_dtype(torch.float32)  # a user's default; conftest restores float64 after
    sdeopt.configure_torch(threads=1)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    # A copy of the globals each run, so that nothing an example binds leaks into the next run.
    test = doctest.DocTest(
        test.examples, dict(test.globs), test.name, test.filename, test.lineno, test.docstring
    )
    result = runner.run(test, out=report.append, clear_globs=True)
    assert result.failed == 0, "".join(report)
