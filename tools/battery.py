#!/usr/bin/env python
"""The bad-input battery of issue 12: feed ~300 bad (and a few tricky-but-valid) inputs to sdeopt.

    python tools/battery.py [--only CATEGORY[,CATEGORY]] [--json tools/battery.json] [--list]

Categories: ctor (Python API constructors), args (simulate/solve/compare/metrics arguments),
toml (configs through ``sdeopt run``), sweep (``sdeopt sweep`` and ``run_sweep``), cli (command
line arguments and paths), faults (scalars, prefix stability, seed aliasing, precision, divergence).

Every case runs in a child process forked from this one (``os.fork``: the imports are paid once),
in its own new temporary folder as working directory, with stdout and stderr redirected at the
file-descriptor level (so that logging, warnings and C libraries are captured too), an address
space limit (``RLIMIT_AS``: a case that tries to allocate tens of GiB fails instead of taking the
machine down), and a wall-clock limit (the parent kills the child's process group: ``hang``; an
in-process ``signal.alarm`` could not interrupt a long C call, nor stop a dask cluster's workers).

Outcomes:

- ``refused``: a ValueError whose message starts with "Invalid" and names (as a whole word) one of
  the names the case expects; for CLI cases, exit code 2 and exactly one line on stderr,
  "sdeopt: Invalid ... <name> ..." (argparse's own errors: its usage lines then one
  "sdeopt ...: error: ..." line naming the argument), and, where the case says so, nothing
  written (the --out folder absent or empty, a store left untouched);
- ``ok``: a valid-but-tricky input accepted, and its result passed the case's check;
- ``unclear``: a ValueError (or one CLI line) that does not start with "Invalid" or does not name
  the parameter, or that the case marks as misleading (``unclear_if``);
- ``silent``: no error for an input that must be refused; a wrong result for a valid input; a
  refusal that came after something was written;
- ``crash``: any other exception, or a refusal of a valid input; for CLI cases a traceback, more
  than one line of error, or an unexpected exit code;
- ``hang``: no answer within the case's timeout (60 s unless said), or a refusal that was due
  "quickly" and came too late.

The case list is fixed and every random input is seeded: the outcomes are deterministic (the
timings are not). Temporary paths are written as ``<tmp>`` in the report, object addresses as
``0x...`` and the free memory quoted by memory refusals as ``<free>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATEGORIES = {
    "ctor": "1. Python API: constructors",
    "args": "2. Python API: simulate/solve/compare arguments",
    "toml": "3. TOML configs (sdeopt run)",
    "sweep": "4. Sweeps (sdeopt sweep, run_sweep)",
    "cli": "5. CLI arguments and paths",
    "faults": "6. Faults (scalars, seeding, precision, divergence)",
}
OUTCOMES = ("refused", "ok", "unclear", "silent", "crash", "hang")
#: Extra address space a case may map beyond what the parent already has.
MEMORY_HEADROOM = 8 * 2**30
DEFAULT_TIMEOUT = 60.0

# Imported once in the parent so that every forked child starts warm.
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")
import xarray as xr  # noqa: E402

import sdeopt as so  # noqa: E402
import sdeopt.analysis  # noqa: E402
import sdeopt.cli  # noqa: E402
import sdeopt.experiments.config  # noqa: E402
import sdeopt.experiments.runner  # noqa: E402
import sdeopt.experiments.sweep  # noqa: E402
import sdeopt.io  # noqa: E402
from sdeopt.cli import main as cli_main  # noqa: E402

try:  # the sweep machinery; imported here so that sweep children start warm
    import distributed  # noqa: F401
except ImportError:  # pragma: no cover
    pass


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One input.

    ``fn(tmp)`` is run in the child: for an API case it makes the call and returns its result;
    for a CLI case (``cli=True``) it prepares files in ``tmp`` and returns the argv given to
    ``sdeopt.cli.main``. ``mode`` is "refuse" (the input must be refused), "valid" (it must be
    accepted and pass ``check``) or "either" (a clear refusal, or acceptance passing ``check``).
    ``check(result, tmp)`` returns None when the result is right, else what is wrong (for CLI
    cases the result is ``(rc, stdout, stderr)``). ``post(tmp)``, for CLI refusals, returns None
    when nothing was written that should not have been, else what was.
    """

    cat: str
    name: str
    what: str
    fn: Callable[[Path], Any]
    expect: tuple[str, ...] = ()
    mode: str = "refuse"
    check: Callable[[Any, Path], str | None] | None = None
    cli: bool = False
    post: Callable[[Path], str | None] | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_seconds: float | None = None
    skip: str | None = None
    #: (regex, why): a refusal whose message matches is misleading, hence ``unclear``.
    unclear_if: tuple[str, str] | None = None

    @property
    def id(self) -> str:
        return f"{self.cat}.{self.name}"


CASES: list[Case] = []


def case(cat: str, name: str, what: str, fn, expect=(), **kw) -> None:
    if isinstance(expect, str):
        expect = (expect,)
    CASES.append(Case(cat, name, what, fn, tuple(expect), **kw))


# ---------------------------------------------------------------------------------------------
# Helpers used by the cases (run in the children)
# ---------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
_UNSET = object()


def Q(d: int = 2):
    return so.problems.Quadratic(diag=[1.0, 2.0] if d == 2 else [1.0] * d)


def gauss(scale=1.0):
    return so.noise.Gaussian(scale)


def dsgd(**kw):
    return so.discrete.DSGD(**{"lr": 0.1, "n_workers": 2, "noise": gauss(), **kw})


def dsign(**kw):
    return so.discrete.DSignSGD(
        **{"lr": 0.1, "n_workers": 4, "noise": so.noise.StudentT(nu=1.5), **kw}
    )


def dcsgd(**kw):
    return so.discrete.DCSGD(**{"lr": 0.1, "n_workers": 2, "noise": gauss(), **kw})


def sim(method=None, problem=None, x0=_UNSET, n_steps=5, n_runs=8, **kw):
    problem = Q() if problem is None else problem
    if x0 is _UNSET:
        x0 = [1.0] * problem.dim
    kw.setdefault("dtype", torch.float64)
    return so.discrete.simulate(
        dsgd() if method is None else method, problem, x0, n_steps, n_runs, **kw
    )


def sde(method=None, problem=None, model="first_order"):
    return so.dynamics.sde_of(
        dsgd() if method is None else method, Q() if problem is None else problem, model
    )


def solve(s=None, x0=_UNSET, n_steps=5, n_runs=8, **kw):
    s = sde() if s is None else s
    if x0 is _UNSET:
        x0 = [1.0] * s.dim
    kw.setdefault("dtype", torch.float64)
    return so.dynamics.solve(s, x0, n_steps, n_runs, **kw)


def cmp(method=None, problem=None, x0=_UNSET, n_steps=5, n_runs=8, **kw):
    problem = Q() if problem is None else problem
    if x0 is _UNSET:
        x0 = [1.0] * problem.dim
    kw.setdefault("dtype", torch.float64)
    return so.analysis.compare(
        dsgd() if method is None else method, problem, x0, n_steps, n_runs, **kw
    )


def as_ds(t):
    return t.to_dataset() if hasattr(t, "to_dataset") else t


def arrays(t) -> dict:
    ds = as_ds(t)
    return {
        v: np.asarray(ds[v].values)
        for v in ("loss", "grad_norm", "dist", "x", "diverged", "blowup_step")
        if v in ds
    }


def same(a, b, *, rtol: float = 0.0, what: str = "") -> str | None:
    """None if the trajectories (or datasets) a and b hold the same values (bitwise if rtol is 0)."""
    xa, xb = arrays(a), arrays(b)
    if set(xa) != set(xb):
        return f"{what}variables differ: {sorted(xa)} vs {sorted(xb)}"
    for name in xa:
        u, v = xa[name], xb[name]
        if u.shape != v.shape:
            return f"{what}{name} shapes differ: {u.shape} vs {v.shape}"
        ok = (
            np.array_equal(u, v, equal_nan=u.dtype.kind == "f")
            if rtol == 0
            else np.allclose(u, v, rtol=rtol, atol=0, equal_nan=True)
        )
        if not ok:
            diff = np.nanmax(np.abs(u.astype(float) - v.astype(float)))
            return f"{what}{name} differs (max |diff| = {diff:.3g}{', bitwise check' if rtol == 0 else ''})"
    return None


def all_finite(t) -> str | None:
    for name, a in arrays(t).items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return f"{name} has non-finite values"
    return None


def check_same_as(reference: Callable[[], Any], *, rtol: float = 0.0):
    """A check: the result equals ``reference()`` (computed in the same child)."""

    def check(result, tmp):
        return same(result, reference(), rtol=rtol)

    return check


def check_type(attr: str, kind, value=None):
    def check(result, tmp):
        got = getattr(result, attr)
        if type(got) is not kind:
            return f"{attr} stored as {type(got).__name__} {got!r}, not {kind.__name__}"
        if value is not None and got != value:
            return f"{attr} = {got!r}, expected {value!r}"
        return None

    return check


def then(*checks):
    def check(result, tmp):
        for c in checks:
            msg = c(result, tmp)
            if msg:
                return msg
        return None

    return check


def tree_digest(path: Path) -> str:
    """A digest of a file or folder tree (names and bytes), to check it was left untouched."""
    h = hashlib.sha256()
    path = Path(path)
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def quiet(fn, *args, **kwargs):
    """Run ``fn`` with Python warnings silenced (setup steps)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# --- TOML configs ----------------------------------------------------------------------------

BASE = {
    "problem": '{ type = "Quadratic", diag = [1.0, 2.0] }',
    "noise": '{ type = "Gaussian", scale = 1.0 }',
    "method": '{ type = "DSGD", lr = 0.1, n_workers = 2 }',
    "x0": "[1.0, -1.0]",
    "n_steps": "10",
    "n_runs": "20",
    "record_every": "5",
    "models": '["first_order"]',
}


def toml(
    defaults: dict | None = None,
    runs: list[dict] | None = None,
    top: str = "",
    sweep: dict | None = None,
) -> str:
    """A config: BASE (updated by ``defaults``; a None value drops the key) and ``runs``
    (default: one run named "a"); values are TOML literals."""
    d = dict(BASE)
    for k, v in (defaults or {}).items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    lines = ['claim = "battery"'] + ([top] if top else []) + ["", "[defaults]"]
    lines += [f"{k} = {v}" for k, v in d.items()]
    if sweep is not None:
        lines += ["", "[sweep]"] + [f"{k} = {v}" for k, v in sweep.items()]
    else:
        for run in runs if runs is not None else [{}]:
            run = {"name": '"a"', **run}
            lines += ["", "[[runs]]"] + [f"{k} = {v}" for k, v in run.items()]
    return "\n".join(lines) + "\n"


def write(tmp: Path, name: str, content: str | bytes) -> Path:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


def nothing_written(folder: str = "out"):
    def post(tmp: Path) -> str | None:
        out = tmp / folder
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            files = (
                sorted(str(p.relative_to(out)) for p in out.iterdir())
                if out.is_dir()
                else [out.name]
            )
            return f"refused only after writing into {folder}/: {files[:6]}"
        return None

    return post


def untouched(rel: str):
    """A post-check: tmp/rel has the digest recorded at setup in tmp/<rel>.digest."""

    def post(tmp: Path) -> str | None:
        before = (tmp / f"{rel}.digest").read_text()
        p = tmp / rel
        if not p.exists():
            return f"{rel} was deleted"
        if tree_digest(p) != before:
            return f"{rel} was modified"
        return None

    return post


def record_digest(tmp: Path, rel: str) -> None:
    (tmp / f"{rel}.digest").write_text(tree_digest(tmp / rel))


def toml_case(name: str, what: str, text_or_fn, expect, **kw) -> None:
    """A ``sdeopt run CONFIG --out <tmp>/out`` case; refused configs must write nothing."""

    def fn(tmp):
        text = text_or_fn(tmp) if callable(text_or_fn) else text_or_fn
        cfg = write(tmp, "config.toml", text) if isinstance(text, (str, bytes)) else text
        return ["run", str(cfg), "--out", str(tmp / "out")]

    kw.setdefault("post", nothing_written())
    case("toml", name, what, fn, expect, cli=True, **kw)


def cli_valid(result, tmp) -> str | None:
    rc, _out, err = result
    if rc != 0:
        return f"exit code {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    return None


def out_files(*names):
    def check(result, tmp):
        msg = cli_valid(result, tmp)
        if msg:
            return msg
        have = sorted(p.name for p in (tmp / "out").iterdir())
        missing = [n for n in names if n not in have]
        return f"missing output files {missing} (have {have})" if missing else None

    return check


# --- fixtures shared by several cases (built once, on disk, by the first child needing them) --

FIXTURES: Path | None = None


def fixture(name: str, build: Callable[[Path], None]) -> Path:
    """FIXTURES/name, built by ``build(path)`` into a temporary path then renamed."""
    path = FIXTURES / name
    if not path.exists():
        tmp = FIXTURES / f".{name}.building-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(tmp)
        try:
            os.rename(tmp, path)
        except OSError:  # a concurrent child built it first (--jobs): use that one
            if not path.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _silently(argv: list[str]) -> int:
    """Run the CLI with its output thrown away (setup steps): the exit code."""
    import contextlib
    import io

    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        return cli_main(argv)


def dataset_fixture() -> Path:
    """A folder holding a.nc and a.png from a tiny ``sdeopt run``."""

    def build(path: Path) -> None:
        cfg = write(path, "a.toml", toml())
        rc = _silently(["run", str(cfg), "--out", str(path / "run")])
        if rc != 0:
            raise RuntimeError(f"fixture: sdeopt run failed with exit code {rc}")

    return fixture("dataset", build) / "run"


SWEEP_TEXT = toml({"models": "[]"}, sweep={'"method.lr"': "[0.05, 0.1]"})


def sweep_fixture() -> Path:
    """A finished sweep store of SWEEP_TEXT (2 cells), from the real command on 1 worker."""

    def build(path: Path) -> None:
        cfg = write(path, "sweep.toml", SWEEP_TEXT)
        rc = _silently(["sweep", str(cfg), "--out", str(path / "s.zarr"), "--workers", "1"])
        if rc != 0:
            raise RuntimeError(f"fixture: sdeopt sweep failed with exit code {rc}")

    return fixture("sweep", build) / "s.zarr"


# ---------------------------------------------------------------------------------------------
# 1. Python API, constructors
# ---------------------------------------------------------------------------------------------


def _ctor_cases() -> None:
    P, N, C, S, D = so.problems, so.noise, so.compressors, so.schedules, so.discrete

    def c(name, what, fn, expect, **kw):
        return case("ctor", name, what, lambda tmp: fn(), expect, **kw)

    # problems
    c("quadratic-diag-empty", "Quadratic(diag=[])", lambda: P.Quadratic(diag=[]), "diag")
    c(
        "quadratic-diag-negative",
        "Quadratic(diag=[1.0, -1.0])",
        lambda: P.Quadratic(diag=[1.0, -1.0]),
        "diag",
    )
    c(
        "quadratic-diag-nan",
        "Quadratic(diag=[1.0, nan])",
        lambda: P.Quadratic(diag=[1.0, NAN]),
        "diag",
    )
    c(
        "quadratic-diag-strings",
        "Quadratic(diag=['a', 'b'])",
        lambda: P.Quadratic(diag=["a", "b"]),
        "diag",
    )
    c(
        "quadratic-diag-2d",
        "Quadratic(diag=[[1.0, 2.0], [3.0, 4.0]])",
        lambda: P.Quadratic(diag=[[1.0, 2.0], [3.0, 4.0]]),
        "diag",
    )
    c(
        "quadratic-diag-bools",
        "Quadratic(diag=[True, True])",
        lambda: P.Quadratic(diag=[True, True]),
        "diag",
    )
    c(
        "quadratic-diag-requires-grad",
        "Quadratic(diag=torch.tensor([1., 2.], requires_grad=True)), simulated",
        lambda: sim(problem=P.Quadratic(diag=torch.tensor([1.0, 2.0], requires_grad=True))),
        (),
        mode="valid",
        check=check_same_as(lambda: sim()),
    )
    for dim, label in ((0, "0"), (-1, "-1"), (1.5, "1.5"), (True, "True")):
        c(
            f"quartic-dim-{label.strip(chr(39))}",
            f"Quartic(dim={label})",
            lambda dim=dim: P.Quartic(dim=dim),
            "dim",
        )
    c(
        "quartic-dim-np-int64",
        "Quartic(dim=np.int64(3))",
        lambda: P.Quartic(dim=np.int64(3)),
        (),
        mode="valid",
        check=check_type("dim", int, 3),
    )
    c(
        "logreg-workers-0",
        "LogisticRegression(n_workers=0)",
        lambda: P.LogisticRegression(n_workers=0),
        "n_workers",
    )
    c(
        "logreg-workers-huge",
        "LogisticRegression(n_workers=10**6)",
        lambda: P.LogisticRegression(n_workers=10**6),
        "n_workers",
    )
    c(
        "logreg-split",
        "LogisticRegression(n_workers=4, split='bogus')",
        lambda: P.LogisticRegression(n_workers=4, split="bogus"),
        "split",
    )
    c(
        "logreg-dataset",
        "LogisticRegression(dataset='mnist')",
        lambda: P.LogisticRegression(dataset="mnist"),
        "dataset",
    )
    c("logreg-reg-0", "LogisticRegression(reg=0)", lambda: P.LogisticRegression(reg=0), "reg")
    c(
        "logreg-intercept-str",
        "LogisticRegression(fit_intercept='no')",
        lambda: P.LogisticRegression(fit_intercept="no"),
        "fit_intercept",
    )
    c(
        "function-not-callable",
        "FunctionProblem('x**2', dim=2)",
        lambda: P.FunctionProblem("x**2", dim=2),
        "fn",
    )
    c(
        "function-vector-output",
        "FunctionProblem(lambda x: x**2, dim=2)",
        lambda: P.FunctionProblem(lambda x: x**2, dim=2),
        "fn",
    )
    c(
        "function-dim-mismatch",
        "FunctionProblem(lambda x: x[5], dim=2)",
        lambda: P.FunctionProblem(lambda x: x[5], dim=2),
        "fn",
    )
    c(
        "function-item-not-vmappable",
        "simulate(dsgd, FunctionProblem(lambda x: torch.tensor((x**2).sum().item()), dim=2), ...)",
        lambda: sim(problem=P.FunctionProblem(lambda x: torch.tensor((x**2).sum().item()), dim=2)),
        "fn",
    )

    # noise laws
    c("gauss-scale-neg", "Gaussian(-1.0)", lambda: N.Gaussian(-1.0), "scale")
    c("gauss-scale-nan", "Gaussian(nan)", lambda: N.Gaussian(NAN), "scale")
    c("gauss-scale-inf", "Gaussian(inf)", lambda: N.Gaussian(INF), "scale")
    c("gauss-scale-str", "Gaussian('1.0')", lambda: N.Gaussian("1.0"), "scale")
    c(
        "gauss-scale-list-len",
        "DSGD(n_workers=3, noise=Gaussian([1.0, 2.0]))",
        lambda: dsgd(n_workers=3, noise=N.Gaussian([1.0, 2.0])),
        "scale",
    )
    c(
        "gauss-scale-ndarray",
        "DSGD(n_workers=2, noise=Gaussian(np.array([1.0, 2.0]))), simulated",
        lambda: sim(method=dsgd(noise=N.Gaussian(np.array([1.0, 2.0])))),
        "scale",
        mode="either",
        check=check_same_as(lambda: sim(method=dsgd(noise=N.Gaussian([1.0, 2.0])))),
    )
    c(
        "gauss-scale-tensor",
        "DSGD(n_workers=2, noise=Gaussian(torch.tensor([1.0, 2.0]))), simulated",
        lambda: sim(method=dsgd(noise=N.Gaussian(torch.tensor([1.0, 2.0])))),
        "scale",
        mode="either",
        check=check_same_as(lambda: sim(method=dsgd(noise=N.Gaussian([1.0, 2.0])))),
    )
    for nu, label in ((0, "0"), (-1, "-1"), (NAN, "nan"), ("1.5", "'1.5'")):
        c(
            f"studentt-nu-{label.strip(chr(39))}",
            f"StudentT(nu={label})",
            lambda nu=nu: N.StudentT(nu=nu),
            "nu",
        )
    c("stable-alpha-0", "SymmetricStable(alpha=0)", lambda: N.SymmetricStable(alpha=0), "alpha")
    c(
        "stable-alpha-2.5",
        "SymmetricStable(alpha=2.5)",
        lambda: N.SymmetricStable(alpha=2.5),
        "alpha",
    )
    c(
        "affine-workers",
        "DSGD(n_workers=3, noise=AffineVariance(sigma0=[1, 1]))",
        lambda: dsgd(n_workers=3, noise=N.AffineVariance(sigma0=[1.0, 1.0])),
        "sigma0",
    )
    c("minibatch-0", "Minibatch(batch_size=0)", lambda: N.Minibatch(batch_size=0), "batch_size")
    c(
        "minibatch-too-large",
        "simulate(DSGD(noise=Minibatch(10**6)), LogisticRegression(n_workers=2), ...)",
        lambda: sim(
            method=dsgd(noise=N.Minibatch(10**6)), problem=P.LogisticRegression(n_workers=2)
        ),
        "batch_size",
    )
    c(
        "minibatch-quadratic",
        "simulate(DSGD(noise=Minibatch(4)), Quadratic(...), ...)",
        lambda: sim(method=dsgd(noise=N.Minibatch(4))),
        ("problem", "Minibatch"),
    )
    c("twostate-p", "TwoStateMarkov(p=1.5)", lambda: N.TwoStateMarkov(p=1.5), "p")
    c("ar1-rho-1", "GaussianAR1(rho=1.0)", lambda: N.GaussianAR1(rho=1.0), "rho")
    c(
        "finite-markov-rows",
        "FiniteMarkov(matrix=[[0.5, 0.6], [0.5, 0.5]])",
        lambda: N.FiniteMarkov(matrix=[[0.5, 0.6], [0.5, 0.5]]),
        "matrix",
    )
    c(
        "markov-sgd-gaussian",
        "MarkovSGD(lr=0.1, noise=Gaussian(1.0))",
        lambda: D.MarkovSGD(lr=0.1, noise=N.Gaussian(1.0)),
        "noise",
    )

    # compressors
    c("randk-0", "RandK(k=0)", lambda: C.RandK(k=0), "k")
    c(
        "randk-gt-d",
        "simulate(DCSGD(compressor=RandK(k=5)), Quadratic(d=2), ...)",
        lambda: sim(method=dcsgd(compressor=C.RandK(k=5))),
        "k",
    )
    c(
        "topk-gt-d",
        "simulate(DCSGD(compressor=TopK(k=3)), Quadratic(d=2), ...)",
        lambda: sim(method=dcsgd(compressor=C.TopK(k=3))),
        "k",
    )
    c("qsgd-0", "QSGD(s=0)", lambda: C.QSGD(s=0), "s")
    c(
        "dcsgd-compressor-class",
        "DCSGD(compressor=RandK)",
        lambda: dcsgd(compressor=C.RandK),
        "compressor",
    )

    # schedules
    c("poly-power", "PolyDecay(power=-1)", lambda: S.PolyDecay(power=-1), "power")
    c("cosine-steps", "Cosine(n_steps=0)", lambda: S.Cosine(n_steps=0), "n_steps")
    c(
        "step-factor",
        "StepDecay(every=10, factor=0)",
        lambda: S.StepDecay(every=10, factor=0),
        "factor",
    )

    # methods
    for lr, label in (
        (0, "0"),
        (-0.1, "-0.1"),
        (NAN, "nan"),
        (INF, "inf"),
        ("0.1", "'0.1'"),
        ([0.1], "[0.1]"),
        (None, "None"),
        (True, "True"),
    ):
        c(f"dsgd-lr-{label.strip(chr(39))}", f"DSGD(lr={label})", lambda lr=lr: dsgd(lr=lr), "lr")
    c(
        "dsgd-lr-np-float32",
        "DSGD(lr=np.float32(0.1)), simulated vs lr=0.1",
        lambda: sim(method=dsgd(lr=np.float32(0.1))),
        (),
        mode="valid",
        check=check_same_as(lambda: sim(method=dsgd(lr=0.1)), rtol=1e-6),
    )
    c(
        "dsgd-lr-np-int64",
        "DSGD(lr=np.int64(1)), simulated vs lr=1.0",
        lambda: sim(method=dsgd(lr=np.int64(1))),
        (),
        mode="valid",
        check=check_same_as(lambda: sim(method=dsgd(lr=1.0))),
    )
    c(
        "dsgd-lr-tensor-0d",
        "DSGD(lr=torch.tensor(0.1)), simulated vs lr=0.1",
        lambda: sim(method=dsgd(lr=torch.tensor(0.1))),
        (),
        mode="valid",
        check=check_same_as(lambda: sim(method=dsgd(lr=0.1)), rtol=1e-6),
    )
    c(
        "dsgd-lr-tensor-1",
        "DSGD(lr=torch.tensor([0.1])), simulated vs lr=0.1",
        lambda: sim(method=dsgd(lr=torch.tensor([0.1]))),
        "lr",
        mode="either",
        check=check_same_as(lambda: sim(method=dsgd(lr=0.1)), rtol=1e-6),
    )
    for n, label in ((0, "0"), (-1, "-1"), (2.5, "2.5"), ("2", "'2'"), (True, "True")):
        c(
            f"dsgd-workers-{label.strip(chr(39))}",
            f"DSGD(n_workers={label})",
            lambda n=n: dsgd(n_workers=n),
            "n_workers",
        )
    c(
        "dsgd-workers-np-int64",
        "DSGD(n_workers=np.int64(2)), simulated vs n_workers=2",
        lambda: sim(method=dsgd(n_workers=np.int64(2))),
        (),
        mode="valid",
        check=check_same_as(lambda: sim(method=dsgd(n_workers=2))),
    )
    c(
        "dsgd-scale-tuple-len",
        "DSGD(n_workers=2, noise=Gaussian((1.0, 2.0, 3.0)))",
        lambda: dsgd(n_workers=2, noise=N.Gaussian((1.0, 2.0, 3.0))),
        "scale",
    )
    c("dsgd-shortcuts-str", "DSGD(shortcuts='no')", lambda: dsgd(shortcuts="no"), "shortcuts")
    c("dsign-workers-0", "DSignSGD(n_workers=0)", lambda: dsign(n_workers=0), "n_workers")
    c(
        "dcsgd-normalize-zero",
        "DCSGD(normalize=(0, 0))",
        lambda: dcsgd(normalize=(0.0, 0.0)),
        "normalize",
    )
    c(
        "dcsgd-normalize-neg",
        "DCSGD(normalize=(-1, 1))",
        lambda: dcsgd(normalize=(-1.0, 1.0)),
        "normalize",
    )
    c(
        "ito-drift-str",
        "ItoChain(lr=0.1, drift='-x')",
        lambda: D.ItoChain(lr=0.1, drift="-x"),
        "drift",
    )
    c("ito-gamma", "ItoChain(lr=0.1, gamma=2)", lambda: D.ItoChain(lr=0.1, gamma=2), "gamma")
    c(
        "ito-eps",
        "ItoChain(lr=0.1, eps=Gaussian(1.0))",
        lambda: D.ItoChain(lr=0.1, eps=N.Gaussian(1.0)),
        "eps",
    )


# ---------------------------------------------------------------------------------------------
# 2. Python API, simulate / solve / compare / metrics arguments
# ---------------------------------------------------------------------------------------------


def _all_diverged(**kw):
    """compare() of DSGD lr = 3 on f = x²/2 (|1 - lr| = 2: every run blows up past 1e3 within ~10 steps)."""
    return cmp(
        method=dsgd(lr=3.0, noise=gauss(0.1)),
        problem=so.problems.Quadratic(diag=[1.0]),
        x0=[1.0],
        n_steps=20,
        n_runs=50,
        blowup_threshold=1e3,
        record_x=True,
        **kw,
    )


def _check_weak_error_alive(we, tmp) -> str | None:
    """Wherever runs are used (n_used >= 2) error and se are finite; NaN only where none is left."""
    n = we["n_used"].values
    err, se = we["error"].values, we["se"].values
    if np.isnan(err[n >= 1]).any():
        return "NaN error where runs were alive"
    if np.isnan(se[n >= 2]).any():
        return "NaN se where >= 2 runs were alive"
    if not np.isnan(err[n == 0]).all():
        return "a finite error where no run was alive"
    return None


def _args_cases() -> None:
    P, N = so.problems, so.noise

    def c(name, what, fn, expect, **kw):
        return case("args", name, what, lambda tmp: fn(), expect, **kw)

    # x0
    for x0, label in (
        ([1.0], "[1.0]"),
        ([[1.0, 2.0], [3.0, 4.0]], "[[1, 2], [3, 4]] with n_runs=8"),
        ([NAN, 0.0], "[nan, 0.0]"),
        ([INF, 0.0], "[inf, 0.0]"),
        (["a", "b"], "['a', 'b']"),
        (None, "None"),
        (1.0, "1.0 (d = 2)"),
    ):
        c(
            f"x0-{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}",
            f"simulate(..., x0={label})",
            lambda x0=x0: sim(x0=x0),
            "x0",
        )
    c(
        "x0-overflows-float32",
        "simulate(..., x0=[1e200, 1e200], dtype=torch.float32)",
        lambda: sim(x0=[1e200, 1e200], dtype=torch.float32),
        ("x0", "dtype", "blowup_threshold"),
    )
    c(
        "x0-per-run",
        "simulate(..., x0=np.ones((8, 2)), n_runs=8) vs x0=[1.0, 1.0]",
        lambda: sim(x0=np.ones((8, 2))),
        (),
        mode="valid",
        check=check_same_as(lambda: sim(x0=[1.0, 1.0])),
    )
    # n_steps, n_runs, seed
    for key, bad in (
        ("n_steps", (-1, 2.5, True, "10")),
        ("n_runs", (0, -5, 2.0, True)),
        ("seed", (-1, 1.5, True, None, 2**128)),
    ):
        for v in bad:
            label = "2**128" if v == 2**128 else repr(v)
            c(
                f"{key}-{re.sub(r'[^a-z0-9.*-]+', '', label.lower())}{'-str' if isinstance(v, str) else ''}",
                f"simulate(..., {key}={label})",
                lambda key=key, v=v: sim(**{key: v}),
                key,
            )
    c(
        "n_steps-0",
        "simulate(..., n_steps=0): one record, at step 0",
        lambda: sim(n_steps=0),
        (),
        mode="valid",
        check=lambda t, tmp: (
            None if list(as_ds(t)["step"].values) == [0] else f"steps {as_ds(t)['step'].values}"
        ),
    )
    c(
        "seed-2**127",
        "compare(..., seed=2**127): accepted, seed kept losslessly",
        lambda: cmp(seed=2**127),
        (),
        mode="valid",
        check=lambda ds, tmp: (
            None if int(ds.attrs["seed"]) == 2**127 else f"seed attr {ds.attrs['seed']!r}"
        ),
    )
    c(
        "seed-np-uint64",
        "simulate(..., seed=np.uint64(2**64 - 1)) vs seed=2**64 - 1",
        lambda: sim(seed=np.uint64(2**64 - 1)),
        (),
        mode="valid",
        check=check_same_as(lambda: sim(seed=2**64 - 1)),
    )
    c(
        "n_runs-memory-record_x",
        "simulate(DSGD, Quadratic(d=100), n_runs=10**7, n_steps=10, record_every=1, "
        "record_x=True): refused up front (< 10 s)",
        lambda: sim(problem=Q(100), n_runs=10**7, n_steps=10, record_every=1, record_x=True),
        "n_runs",
        max_seconds=10,
    )
    c(
        "n_runs-memory-compare",
        "compare(DSGD, Quadratic(d=100), n_runs=10**7, n_steps=10, record_every=1, "
        "record_x=True): refused up front (< 10 s)",
        lambda: cmp(problem=Q(100), n_runs=10**7, n_steps=10, record_every=1, record_x=True),
        "n_runs",
        max_seconds=10,
    )
    c(
        "n_runs-10**12",
        "simulate(..., n_runs=10**12): refused up front (< 10 s)",
        lambda: sim(n_runs=10**12),
        "n_runs",
        max_seconds=10,
    )
    c(
        "n_steps-10**12",
        "simulate(..., n_steps=10**12, n_runs=8): refused up front (< 10 s)",
        lambda: sim(n_steps=10**12),
        ("n_steps", "record_every"),
        max_seconds=10,
    )
    # record
    c(
        "record-unknown",
        "simulate(..., record=['loss', 'bogus'])",
        lambda: sim(record=["loss", "bogus"]),
        "record",
    )
    c(
        "record-dist-no-minimizer",
        "simulate(..., ExpSum(dim=2), record=['dist'])",
        lambda: sim(problem=P.ExpSum(dim=2), record=["dist"]),
        ("record", "dist"),
    )
    c("record-int", "simulate(..., record=5)", lambda: sim(record=5), "record")
    c(
        "record_every-0",
        "simulate(..., record_every=0)",
        lambda: sim(record_every=0),
        "record_every",
    )
    c(
        "record_every-float",
        "simulate(..., record_every=2.5)",
        lambda: sim(record_every=2.5),
        "record_every",
    )
    c(
        "record_every-large",
        "simulate(..., n_steps=5, record_every=1000): steps [0, 5]",
        lambda: sim(record_every=1000),
        (),
        mode="valid",
        check=lambda t, tmp: (
            None if list(as_ds(t)["step"].values) == [0, 5] else f"steps {as_ds(t)['step'].values}"
        ),
    )
    # dtype, device
    for dt, name, label in ((torch.int32, "int32", "torch.int32"), ("float64", "str", "'float64'")):
        c(f"dtype-{name}", f"simulate(..., dtype={label})", lambda dt=dt: sim(dtype=dt), "dtype")
    for dev, label in (("tpu", "'tpu'"), ("cuda", "'cuda'"), ("cuda:7", "'cuda:7'")):
        c(
            f"device-{str(dev).lower()}",
            f"simulate(..., device={label})",
            lambda dev=dev: sim(device=dev),
            "device",
        )
    # blowup_threshold, chunk_size, max_memory, block_size, first_run
    for v, label in ((0, "0"), (NAN, "nan"), ("1e10", "'1e10'")):
        c(
            f"blowup-{label.strip(chr(39))}",
            f"simulate(..., blowup_threshold={label})",
            lambda v=v: sim(blowup_threshold=v),
            "blowup_threshold",
        )
    c(
        "blowup-inf",
        "simulate(..., blowup_threshold=inf)",
        lambda: sim(blowup_threshold=INF),
        "blowup_threshold",
        mode="either",
        check=check_same_as(lambda: sim()),
    )
    c(
        "blowup-1e200",
        "simulate(..., blowup_threshold=1e200) vs 1e10 (nothing diverges), float32 and float64",
        lambda: (sim(blowup_threshold=1e200), sim(blowup_threshold=1e200, dtype=torch.float32)),
        (),
        mode="valid",
        check=lambda r, tmp: same(r[0], sim()) or same(r[1], sim(dtype=torch.float32)),
    )
    c(
        "blowup-1e200-diverging",
        "simulate(DSGD(lr=3), f = x²/2, n_steps=2000, blowup_threshold=1e200): "
        "runs that overflow are frozen and flagged",
        lambda: sim(
            method=dsgd(lr=3.0),
            problem=P.Quadratic(diag=[1.0]),
            n_steps=2000,
            blowup_threshold=1e200,
        ),
        (),
        mode="valid",
        check=lambda t, tmp: (
            all_finite(t) or (None if as_ds(t)["diverged"].values.all() else "not all diverged")
        ),
    )
    for key, vals in (
        ("chunk_size", (0,)),
        ("max_memory", (0, -1)),
        ("block_size", (0,)),
        ("first_run", (-1,)),
    ):
        for v in vals:
            c(
                f"{key}-{v}",
                f"simulate(..., {key}={v!r})",
                lambda key=key, v=v: sim(**{key: v}),
                key,
            )
    c(
        "chunk_size-3",
        "simulate(..., chunk_size=3) vs the default chunking",
        lambda: sim(chunk_size=3),
        (),
        mode="valid",
        check=check_same_as(lambda: sim()),
    )
    # out=
    c("out-not-zarr", "simulate(..., out='study.nc')", lambda: sim(out="study.nc"), "out")
    c(
        "out-exists",
        "simulate(..., out='study.zarr') where study.zarr exists",
        lambda: (os.mkdir("study.zarr"), sim(out="study.zarr")),
        "out",
    )
    c(
        "out-missing-folder",
        "simulate(..., out='missing/study.zarr')",
        lambda: sim(out="missing/study.zarr"),
        "out",
    )
    c("out-int", "simulate(..., out=123)", lambda: sim(out=123), "out")
    c(
        "out-coupled",
        "compare(..., coupled=True, out='c.zarr')",
        lambda: cmp(coupled=True, out="c.zarr"),
        ("out", "coupled"),
    )
    # models, sde_of
    c(
        "models-unknown",
        "compare(..., models=['bogus'])",
        lambda: cmp(models=["bogus"]),
        ("models", "model"),
    )
    c(
        "models-duplicated",
        "compare(..., models=['first_order', 'first_order'])",
        lambda: cmp(models=["first_order", "first_order"]),
        "models",
    )
    c(
        "models-string",
        "compare(..., models='first_order'): one model name, as record='loss' is one observable",
        lambda: cmp(models="first_order"),
        (),
        mode="valid",
        check=check_same_as(lambda: cmp(models=["first_order"])),
    )
    c(
        "models-curvature-dsign",
        "compare(DSignSGD, ..., models=['curvature'])",
        lambda: cmp(method=dsign(), models=["curvature"]),
        ("curvature", "model", "models"),
    )
    c(
        "sde-studentt-1.5",
        "sde_of(DSGD(noise=StudentT(nu=1.5)), Quadratic, 'first_order')",
        lambda: sde(method=dsgd(noise=N.StudentT(nu=1.5))),
        ("noise", "nu"),
    )
    c(
        "sde-stable",
        "sde_of(DSGD(noise=SymmetricStable(alpha=1.5)), Quadratic)",
        lambda: sde(method=dsgd(noise=N.SymmetricStable(alpha=1.5))),
        ("noise", "alpha", "SymmetricStable"),
    )
    c(
        "levy-gaussian",
        "sde_of(DSGD(noise=Gaussian(1)), Quadratic, 'levy'): finite variance",
        lambda: sde(model="levy"),
        ("noise", "finite variance"),
    )
    c(
        "levy-t3",
        "sde_of(DSGD(noise=StudentT(nu=3)), Quadratic, 'levy'): the Gaussian domain",
        lambda: sde(method=dsgd(noise=N.StudentT(nu=3.0)), model="levy"),
        ("noise", "nu"),
    )
    c(
        "levy-t2",
        "sde_of(DSGD(noise=StudentT(nu=2)), Quadratic, 'levy'): nu = 2 needs a log correction",
        lambda: sde(method=dsgd(noise=N.StudentT(nu=2.0)), model="levy"),
        ("noise", "nu"),
    )
    c(
        "levy-dsign",
        "sde_of(DSignSGD(noise=SymmetricStable(1.5)), Quadratic, 'levy')",
        lambda: sde(method=dsign(noise=N.SymmetricStable(alpha=1.5)), model="levy"),
        ("model", "levy"),
    )
    c(
        "levy-milstein",
        "solve(levy SDE, scheme='milstein')",
        lambda: solve(
            sde(method=dsgd(noise=N.SymmetricStable(alpha=1.5)), model="levy"), scheme="milstein"
        ),
        ("scheme", "milstein"),
    )
    c(
        "levy-exact-randk",
        "solve(levy SDE of DCSGD + RandK, scheme='exact'): multiplicative Brownian part",
        lambda: solve(
            sde(
                method=dcsgd(
                    compressor=so.compressors.RandK(k=1), noise=N.SymmetricStable(alpha=1.5)
                ),
                model="levy",
            ),
            scheme="exact",
        ),
        ("scheme", "exact"),
    )
    c(
        "exact-on-nonlinear-drift",
        "solve(first-order SDE on the quartic, scheme='exact'): the OU step needs a linear drift",
        lambda: solve(sde(problem=so.problems.Quartic(2)), scheme="exact"),
        ("scheme", "exact"),
    )
    c(
        "sde-natural-t22",
        "sde_of(DCSGD(compressor=Natural(), noise=StudentT(nu=2.2)), Quadratic): tails too heavy",
        lambda: sde(
            method=dcsgd(compressor=so.compressors.Natural(), noise=so.noise.StudentT(nu=2.2))
        ),
        ("compressor", "Natural"),
    )
    c(
        "sde-qsgd-noisy",
        "sde_of(DCSGD(compressor=QSGD(s=2)), Quadratic) under Gaussian noise",
        lambda: sde(method=dcsgd(compressor=so.compressors.QSGD(s=2))),
        ("compressor", "QSGD"),
    )
    c(
        "sde-normalized",
        "sde_of(DCSGD(normalize=(1, 1)), Quadratic)",
        lambda: sde(method=dcsgd(normalize=(1.0, 1.0))),
        ("normalize", "normalised"),
    )
    c(
        "sde-markov-second",
        "sde_of(MarkovSGD(noise=GaussianAR1(0.5)), Quadratic, 'second_order')",
        lambda: sde(
            method=so.discrete.MarkovSGD(lr=0.1, noise=N.GaussianAR1(0.5)), model="second_order"
        ),
        ("second_order", "model"),
    )
    # solve
    randk = lambda: sde(method=dcsgd(compressor=so.compressors.RandK(k=2)), problem=Q(4))  # noqa: E731
    c(
        "solve-milstein-noncommutative",
        "solve(sde_of(DCSGD(compressor=RandK(2)), Quadratic(d=4)), method='milstein')",
        lambda: solve(randk(), scheme="milstein"),
        ("method", "milstein"),
    )
    c(
        "solve-milstein-affine",
        "solve(sde_of(DSGD(noise=AffineVariance(sigma0=0.1, sigma1=0.5)), Quadratic(d=2)), "
        "method='milstein') (diagonal, not commutative)",
        lambda: solve(
            sde(method=dsgd(noise=N.AffineVariance(sigma0=0.1, sigma1=0.5))), scheme="milstein"
        ),
        ("method", "milstein"),
    )
    c(
        "solve-torchsde-milstein",
        "solve(sde_of(DCSGD(compressor=RandK(2)), Quadratic(d=4)), backend='torchsde', "
        "torchsde_method='milstein')",
        lambda: solve(randk(), backend="torchsde", torchsde_method="milstein"),
        ("method", "milstein", "torchsde_method"),
    )
    c("solve-backend", "solve(..., backend='jax')", lambda: solve(backend="jax"), "backend")
    c("solve-substeps-0", "solve(..., substeps=0)", lambda: solve(substeps=0), "substeps")
    c(
        "solve-coupled-no-increments",
        "solve(..., coupled=simulate(...)) without keep_increments",
        lambda: solve(coupled=sim()),
        "coupled",
    )
    c(
        "solve-coupled-other-lr",
        "solve(sde_of(DSGD(lr=0.1)), coupled=simulate(DSGD(lr=0.2), keep_increments=True))",
        lambda: solve(coupled=sim(method=dsgd(lr=0.2), keep_increments=True)),
        "coupled",
    )
    c(
        "solve-coupled-fewer-runs",
        "solve(..., n_runs=8, coupled=simulate(..., n_runs=4, keep_increments=True))",
        lambda: solve(coupled=sim(n_runs=4, keep_increments=True)),
        "coupled",
    )
    c(
        "compare-coupled-dsign",
        "compare(DSignSGD(...), ..., coupled=True)",
        lambda: cmp(method=dsign(), coupled=True),
        ("coupled", "keep_increments"),
    )
    c(
        "simulate-keep-increments-dsign",
        "simulate(DSignSGD(...), ..., keep_increments=True)",
        lambda: sim(method=dsign(), keep_increments=True),
        "keep_increments",
    )
    c(
        "simulate-problem-none",
        "simulate(DSGD, None, ...)",
        lambda: so.discrete.simulate(dsgd(), None, [1.0, 1.0], 5, 8),
        "problem",
    )
    c(
        "simulate-workers-mismatch",
        "simulate(DSGD(n_workers=4), LogisticRegression(n_workers=2), ...)",
        lambda: sim(method=dsgd(n_workers=4), problem=P.LogisticRegression(n_workers=2)),
        "n_workers",
    )
    # metrics
    c(
        "weak-error-all-diverged",
        "weak_error(compare(DSGD(lr=3), f = x²/2, blowup_threshold=1e3), 'loss'): "
        "every run diverges",
        lambda: so.analysis.weak_error(_all_diverged(), "loss"),
        ("ds", "runs"),
        mode="either",
        check=_check_weak_error_alive,
    )
    c(
        "w2-all-diverged",
        "wasserstein2 of the final x of the runs alive in a dataset where all diverged",
        lambda: (
            lambda ds: so.analysis.wasserstein2(
                ds["x"]
                .sel(model="discrete")
                .isel(step=-1)
                .where(~ds["diverged"].sel(model="discrete"))
                .values,
                ds["x"]
                .sel(model="first_order")
                .isel(step=-1)
                .where(~ds["diverged"].sel(model="first_order"))
                .values,
            )
        )(_all_diverged()),
        ("a", "b", "samples"),
    )
    c(
        "w2-dims",
        "wasserstein2(a (10, 2), b (10, 3))",
        lambda: so.analysis.wasserstein2(np.zeros((10, 2)), np.ones((10, 3))),
        "b",
    )
    c(
        "order-fit-zero-error",
        "order_fit(4 lrs, errors with a 0)",
        lambda: so.analysis.order_fit([0.2, 0.1, 0.05, 0.025], [1.0, 0.5, 0.0, 0.1]),
        "errors",
    )
    c(
        "order-fit-same-lrs",
        "order_fit([0.1] * 4, [1.0, 0.9, 1.1, 1.0])",
        lambda: so.analysis.order_fit([0.1] * 4, [1.0, 0.9, 1.1, 1.0]),
        "lrs",
    )


# ---------------------------------------------------------------------------------------------
# 3. TOML configs through `sdeopt run CONFIG --out DIR`
# ---------------------------------------------------------------------------------------------


def _toml_cases() -> None:
    t = toml_case
    run2 = lambda **bad: toml(runs=[{}, {"name": '"b"', **bad}])  # noqa: E731  a bad second run

    # type confusion
    t("coupled-str", 'coupled = "false"', toml({"coupled": '"false"'}), "coupled")
    t("record_x-str", 'record_x = "no"', toml({"record_x": '"no"'}), "record_x")
    t("richardson-str", 'richardson = "0"', toml({"richardson": '"0"'}), "richardson")
    t("models-str", 'models = "first_order"', toml({"models": '"first_order"'}), "models")
    t("n_runs-str", 'n_runs = "1000"', toml({"n_runs": '"1000"'}), "n_runs")
    t("n_runs-float", "n_runs = 1.5", toml({"n_runs": "1.5"}), "n_runs")
    t("n_runs-0", "n_runs = 0", toml({"n_runs": "0"}), "n_runs")
    t(
        "n_runs-1e9",
        "n_runs = 1000000000: refused before any run (< 10 s)",
        toml({"n_runs": "1000000000"}),
        "n_runs",
        max_seconds=10,
    )
    t("n_steps-neg", "n_steps = -1", toml({"n_steps": "-1"}), "n_steps")
    t(
        "n_steps-huge",
        "n_steps = 1000000000000 (record_every = 5): refused up front (< 10 s)",
        toml({"n_steps": "1000000000000"}),
        ("n_steps", "record_every"),
        max_seconds=10,
    )
    t("seed-neg", "seed = -1", toml({"seed": "-1"}), "seed")
    t("seed-bool", "seed = true", toml({"seed": "true"}), "seed")
    t(
        "seed-2**128",
        "seed = 340282366920938463463374607431768211456 (2**128)",
        toml({"seed": str(2**128)}),
        "seed",
    )
    t(
        "lr-str",
        'method.lr = "0.1"',
        toml({"method": '{ type = "DSGD", lr = "0.1", n_workers = 2 }'}),
        "lr",
    )
    t(
        "lr-nan",
        "method.lr = nan",
        toml({"method": '{ type = "DSGD", lr = nan, n_workers = 2 }'}),
        "lr",
    )
    t(
        "workers-str",
        'method.n_workers = "2"',
        toml({"method": '{ type = "DSGD", lr = 0.1, n_workers = "2" }'}),
        "n_workers",
    )
    t(
        "shortcuts-str",
        'method.shortcuts = "no"',
        toml({"method": '{ type = "DSGD", lr = 0.1, n_workers = 2, shortcuts = "no" }'}),
        "shortcuts",
    )
    t("record_every-0", "record_every = 0", toml({"record_every": "0"}), "record_every")
    t("substeps-0", "substeps = 0", toml({"substeps": "0"}), "substeps")
    t("blowup-nan", "blowup_threshold = nan", toml({"blowup_threshold": "nan"}), "blowup_threshold")
    t(
        "blowup-str",
        'blowup_threshold = "1e10"',
        toml({"blowup_threshold": '"1e10"'}),
        "blowup_threshold",
    )
    t("dtype-float16", 'dtype = "float16"', toml({"dtype": '"float16"'}), "dtype")
    t("device-cuda", 'device = "cuda"', toml({"device": '"cuda"'}), "device")
    t(
        "record-unknown",
        'record = ["loss", "bogus"]',
        toml({"record": '["loss", "bogus"]'}),
        "record",
    )
    t(
        "record-empty",
        "record = []",
        toml({"record": "[]"}),
        "record",
        mode="either",
        check=out_files("a.nc"),
    )
    t(
        "record-grad-norm",
        'record = ["grad_norm"] (no loss)',
        toml({"record": '["grad_norm"]'}),
        (),
        mode="valid",
        check=out_files("a.nc", "a.png"),
    )
    t("models-unknown", 'models = ["third_order"]', toml({"models": '["third_order"]'}), "models")
    t(
        "models-studentt",
        'DSGD, noise StudentT(nu = 1.5), models = ["first_order"]',
        toml({"noise": '{ type = "StudentT", nu = 1.5 }'}),
        ("models", "noise", "nu"),
    )
    t(
        "models-curvature-dsign",
        'DSignSGD, models = ["curvature"]',
        toml(
            {"method": '{ type = "DSignSGD", lr = 0.1, n_workers = 2 }', "models": '["curvature"]'}
        ),
        ("models", "curvature"),
    )
    # unknown keys, tables, structure
    t("unknown-run-key", "speed = 3 in a run", toml(runs=[{"speed": "3"}]), "speed")
    t("unknown-top-key", "bogus = 1 at the top", toml(top="bogus = 1"), "bogus")
    t("unknown-table", "an [extra] table", toml() + "\n[extra]\nx = 1\n", "extra")
    t(
        "unknown-part-key",
        "problem.diagonal = [...] (misspelt)",
        toml({"problem": '{ type = "Quadratic", diagonal = [1.0, 2.0] }'}),
        "diagonal",
    )
    t("problem-missing", "no problem", toml({"problem": None}), "problem")
    t("method-missing", "no method", toml({"method": None}), "method")
    t("noise-missing", "no noise for DSGD", toml({"noise": None}), "noise")
    t("x0-missing", "no x0 nor x0_fill", toml({"x0": None}), ("x0", "x0_fill"))
    t("x0-length", "x0 = [1.0] for d = 2", toml({"x0": "[1.0]"}), "x0")
    t("x0-nan", "x0 = [nan, 1.0]", toml({"x0": "[nan, 1.0]"}), "x0")
    t("x0-and-fill", "x0 and x0_fill = 1.0", toml({"x0_fill": "1.0"}), ("x0", "x0_fill"))
    t("x0_fill-str", 'x0_fill = "1"', toml({"x0": None, "x0_fill": '"1"'}), "x0_fill")
    t(
        "x0_fill-beyond-blowup",
        "x0_fill = 1e300 (beyond blowup_threshold = 1e10)",
        toml({"x0": None, "x0_fill": "1e300"}),
        ("x0_fill", "blowup_threshold"),
    )
    t("problem-str", 'problem = "Quadratic"', toml({"problem": '"Quadratic"'}), "problem")
    t(
        "problem-type-unknown",
        'problem.type = "Rosenbrock"',
        toml({"problem": '{ type = "Rosenbrock", dim = 2 }'}),
        ("problem", "type"),
    )
    t(
        "problem-function",
        'problem = { type = "FunctionProblem", fn = "lambda x: x" } (code in a config)',
        toml({"problem": '{ type = "FunctionProblem", fn = "lambda x: x", dim = 2 }'}),
        ("problem", "type"),
    )
    t(
        "diag-neg",
        "problem.diag = [-1.0, 2.0]",
        toml({"problem": '{ type = "Quadratic", diag = [-1.0, 2.0] }'}),
        "diag",
    )
    t(
        "quartic-dim-0",
        "problem = Quartic(dim = 0), x0_fill",
        toml({"problem": '{ type = "Quartic", dim = 0 }', "x0": None, "x0_fill": "1.0"}),
        "dim",
    )
    t(
        "logreg-split",
        'LogisticRegression split = "bogus"',
        toml(
            {
                "problem": '{ type = "LogisticRegression", n_workers = 2, split = "bogus" }',
                "x0": None,
                "x0_fill": "0.0",
            }
        ),
        "split",
    )
    t(
        "logreg-intercept-str",
        'LogisticRegression fit_intercept = "yes"',
        toml(
            {
                "problem": '{ type = "LogisticRegression", fit_intercept = "yes" }',
                "x0": None,
                "x0_fill": "0.0",
            }
        ),
        "fit_intercept",
    )
    t(
        "noise-type-unknown",
        'noise.type = "Laplace"',
        toml({"noise": '{ type = "Laplace" }'}),
        ("noise", "type"),
    )
    t(
        "scale-neg",
        "noise.scale = -1",
        toml({"noise": '{ type = "Gaussian", scale = -1.0 }'}),
        "scale",
    )
    t(
        "scale-per-worker-len",
        "noise.scale = [1.0, 1.0, 1.0] with n_workers = 2",
        toml({"noise": '{ type = "Gaussian", scale = [1.0, 1.0, 1.0] }'}),
        "scale",
    )
    t(
        "alpha-2.5",
        "noise = SymmetricStable(alpha = 2.5)",
        toml({"noise": '{ type = "SymmetricStable", alpha = 2.5 }', "models": "[]"}),
        "alpha",
    )
    t(
        "randk-k-gt-d",
        "DCSGD, compressor = RandK(k = 5), d = 2",
        toml(
            {
                "method": '{ type = "DCSGD", lr = 0.1, n_workers = 2 }',
                "compressor": '{ type = "RandK", k = 5 }',
            }
        ),
        "k",
    )
    t(
        "qsgd-s-0",
        "DCSGD, compressor = QSGD(s = 0)",
        toml(
            {
                "method": '{ type = "DCSGD", lr = 0.1, n_workers = 2 }',
                "compressor": '{ type = "QSGD", s = 0 }',
                "models": "[]",
            }
        ),
        "s",
    )
    t(
        "compressor-dsgd",
        "DSGD with a compressor table",
        toml({"compressor": '{ type = "RandK", k = 1 }'}),
        "compressor",
    )
    t("eps-dsgd", "DSGD with an eps table", toml({"eps": '{ type = "Rademacher" }'}), "eps")
    t(
        "ito-drift-code",
        'method = ItoChain(drift = "-x") (code in a config)',
        toml({"method": '{ type = "ItoChain", lr = 0.1, drift = "-x" }', "noise": None}),
        "drift",
    )
    t("method-str", 'method = "DSGD"', toml({"method": '"DSGD"'}), "method")
    t(
        "method-type-list",
        'method.type = ["DSGD"]',
        toml({"method": '{ type = ["DSGD"], lr = 0.1 }'}),
        ("method", "type"),
    )
    t(
        "schedule-type-unknown",
        'schedule = { type = "exp" }',
        toml({"schedule": '{ type = "exp" }'}),
        ("schedule", "type"),
    )
    t(
        "schedule-power-neg",
        'schedule = { type = "poly", power = -1 }',
        toml({"schedule": '{ type = "poly", power = -1 }'}),
        "power",
    )
    t(
        "schedule-cosine-missing",
        'schedule = { type = "cosine" } (no n_steps)',
        toml({"schedule": '{ type = "cosine" }'}),
        ("n_steps", "cosine"),
    )
    t("study-unknown", 'study = "strong_order"', toml({"study": '"strong_order"'}), "study")

    def wo(**kw):
        return toml(
            {
                "study": '"weak_order"',
                "horizon": "0.4",
                "lrs": "[0.2, 0.1, 0.05, 0.025]",
                **kw,
            }
        )

    t(
        "weak-lrs-few",
        "study = weak_order, lrs = [0.2, 0.1, 0.05]",
        wo(lrs="[0.2, 0.1, 0.05]"),
        "lrs",
    )
    t(
        "weak-lrs-neg",
        "study = weak_order, lrs = [0.2, 0.1, 0.05, -0.025]",
        wo(lrs="[0.2, 0.1, 0.05, -0.025]"),
        "lrs",
    )
    t(
        "weak-lrs-equal",
        "study = weak_order, lrs = [0.1, 0.1, 0.1, 0.1]",
        wo(lrs="[0.1, 0.1, 0.1, 0.1]"),
        "lrs",
    )
    t(
        "weak-lrs-divide",
        "study = weak_order, horizon = 0.3, lrs = [0.2, 0.1, 0.05, 0.025]",
        wo(horizon="0.3"),
        ("lrs", "horizon"),
    )
    t("weak-horizon-0", "study = weak_order, horizon = 0", wo(horizon="0"), "horizon")
    t(
        "weak-horizon-huge",
        "study = weak_order, horizon = 1e9: refused up front (< 10 s)",
        wo(horizon="1e9"),
        ("horizon", "lrs"),
        max_seconds=10,
    )
    t("weak-no-models", "study = weak_order, models = []", wo(models="[]"), "models")
    t(
        "weak-observable",
        'study = weak_order, observable = "bogus"',
        wo(observable='"bogus"'),
        "observable",
    )
    t(
        "weak-average_from",
        "study = weak_order, average_from = 2",
        wo(average_from="2"),
        "average_from",
    )
    t(
        "average_from-big",
        "average_from = 11 (n_steps = 10)",
        toml({"average_from": "11"}),
        "average_from",
    )
    t("average_from-bool", "average_from = true", toml({"average_from": "true"}), "average_from")
    t("names-duplicated", 'two runs named "a"', toml(runs=[{}, {}]), "name")
    t(
        "names-same-file",
        'runs named "a b" and "a_b" (the same file name a_b.nc)',
        toml({"models": "[]"}, runs=[{"name": '"a b"'}, {"name": '"a_b"'}]),
        "name",
        mode="either",
        check=lambda r, tmp: (
            cli_valid(r, tmp)
            or (
                None
                if len(list((tmp / "out").glob("*.png"))) == 2
                else f"one run's files overwrote the other's: {sorted(p.name for p in (tmp / 'out').iterdir())}"
            )
        ),
    )
    t("name-int", "name = 5", toml(runs=[{"name": "5"}]), "name")
    t(
        "name-traversal",
        'name = "../../escape": nothing written outside --out',
        toml(runs=[{"name": '"../../escape"'}]),
        (),
        mode="valid",
        check=lambda r, tmp: (
            cli_valid(r, tmp)
            or (
                f"wrote outside --out: {sorted(p.name for p in tmp.iterdir())}"
                if set(p.name for p in tmp.iterdir())
                - {"config.toml", "out", "setup.out", "setup.err", "main.out", "main.err"}
                else None
            )
        ),
    )
    t(
        "claim-list",
        'claim = ["a", "b"]',
        toml().replace('claim = "battery"', 'claim = ["a", "b"]'),
        "claim",
    )
    t(
        "runs-empty",
        "runs = []",
        toml().split("[[runs]]")[0].replace('claim = "battery"', 'claim = "battery"\nruns = []'),
        "runs",
    )
    t("defaults-int", "defaults = 3", 'defaults = 3\n[[runs]]\nname = "a"\n', "defaults")
    # the second of two runs is bad: refused before the first writes anything
    t(
        "run2-lr",
        "runs[1].method.lr = -1.0",
        run2(method='{ type = "DSGD", lr = -1.0, n_workers = 2 }'),
        "lr",
    )
    t(
        "run2-models-dup",
        'runs[1].models = ["first_order", "first_order"]',
        run2(models='["first_order", "first_order"]'),
        "models",
    )
    t(
        "run2-coupled-dsign",
        "runs[1]: DSignSGD with coupled = true",
        run2(method='{ type = "DSignSGD", lr = 0.1, n_workers = 2 }', coupled="true"),
        ("coupled", "keep_increments"),
    )
    t(
        "run2-dist-expsum",
        'runs[1]: ExpSum with record = ["dist"] (no known minimiser)',
        run2(problem='{ type = "ExpSum", dim = 2 }', record='["dist"]'),
        ("record", "dist"),
    )
    # files
    t("malformed", "malformed TOML", "[defaults\nn_runs = \n", "config")
    t("empty-file", "an empty file", "", ("runs", "config"))
    t(
        "folder",
        "a folder as CONFIG",
        lambda tmp: (tmp / "cfgdir").mkdir() or tmp / "cfgdir",
        "config",
    )
    t("missing-file", "a CONFIG that does not exist", lambda tmp: tmp / "nope.toml", "config")
    t(
        "non-utf8",
        "non-UTF-8 bytes",
        b'claim = "\xff\xfe"\n' + toml().split("\n", 1)[1].encode(),
        "config",
    )
    # valid-but-tricky
    t(
        "seed-2**64",
        "seed = 18446744073709551616 (2**64): runs, seed stored losslessly",
        toml({"seed": str(2**64)}),
        (),
        mode="valid",
        check=lambda r, tmp: (
            cli_valid(r, tmp)
            or (
                None
                if int(so.io.load(tmp / "out" / "a.nc").attrs["seed"]) == 2**64
                else "seed attr lost"
            )
        ),
    )
    t(
        "n_steps-0",
        "n_steps = 0",
        toml({"n_steps": "0"}),
        "n_steps",
        mode="either",
        check=out_files("a.nc"),
    )


# ---------------------------------------------------------------------------------------------
# 4. Sweeps
# ---------------------------------------------------------------------------------------------


def _sweep_cases() -> None:
    def s(name, what, text_or_fn, expect, extra=(), store="s.zarr", **kw):
        def fn(tmp):
            text = text_or_fn(tmp) if callable(text_or_fn) else text_or_fn
            cfg = write(tmp, "sweep.toml", text)
            return ["sweep", str(cfg), "--out", str(tmp / store), *extra]

        kw.setdefault(
            "post", lambda tmp: f"{store} was created" if (tmp / store).exists() else None
        )
        case("sweep", name, what, fn, expect, cli=True, **kw)

    sw = lambda grid, **d: toml({"models": "[]", **d}, sweep=grid)  # noqa: E731
    s(
        "workers-0",
        "--workers 0",
        SWEEP_TEXT,
        ("n_workers", "workers", "--workers"),
        extra=("--workers", "0"),
    )
    s(
        "workers-neg",
        "--workers -1",
        SWEEP_TEXT,
        ("n_workers", "workers", "--workers"),
        extra=("--workers", "-1"),
    )
    s(
        "scheduler-unreachable",
        "--scheduler tcp://127.0.0.1:1 (nothing listens)",
        SWEEP_TEXT,
        ("scheduler", "--scheduler"),
        extra=("--scheduler", "tcp://127.0.0.1:1"),
    )
    s(
        "scheduler-garbage",
        "--scheduler 'not a url'",
        SWEEP_TEXT,
        ("scheduler", "--scheduler"),
        extra=("--scheduler", "not a url"),
    )
    s(
        "scheduler-empty",
        "--scheduler '' (empty address)",
        SWEEP_TEXT,
        ("scheduler", "--scheduler"),
        extra=("--scheduler", ""),
        timeout=90,
    )
    for key in ("n_runs", "problem.diag", "x0", "record_x"):
        s(f"unsweepable-{key}", f'sweeping "{key}"', sw({f'"{key}"': "[1, 2]"}), key)
    s("unknown-key", 'sweeping "bogus"', sw({'"bogus"': "[1, 2]"}), "bogus")
    s("unknown-part-key", 'sweeping "method.bogus"', sw({'"method.bogus"': "[1, 2]"}), "bogus")
    s(
        "part-missing",
        'sweeping "compressor.k" without a compressor table',
        sw({'"compressor.k"': "[1, 2]"}),
        ("compressor", "compressor.k"),
    )
    s("non-list", '"method.lr" = 0.1', sw({'"method.lr"': "0.1"}), ("method.lr", "lr"))
    s("empty-list", '"method.lr" = []', sw({'"method.lr"': "[]"}), ("method.lr", "lr"))
    s(
        "duplicated",
        '"method.lr" = [0.1, 0.1]',
        sw({'"method.lr"': "[0.1, 0.1]"}),
        ("method.lr", "lr"),
    )
    s("coupled-str", 'coupled = ["false", "true"]', sw({"coupled": '["false", "true"]'}), "coupled")
    s("seed-neg", "seed = [-1, 0]", sw({"seed": "[-1, 0]"}), "seed")
    s("lr-bad-cell", '"method.lr" = [0.1, -0.1]', sw({'"method.lr"': "[0.1, -0.1]"}), "lr")
    s("device-cell", 'device = ["cpu", "cuda"]', sw({"device": '["cpu", "cuda"]'}), "device")
    s(
        "dataset-record_x",
        'LogisticRegression, "problem.dataset" = ["breast_cancer", "digits"], record_x = true',
        sw(
            {'"problem.dataset"': '["breast_cancer", "digits"]'},
            problem='{ type = "LogisticRegression", n_workers = 2 }',
            x0=None,
            x0_fill="0.0",
            record_x="true",
        ),
        ("problem.dataset", "record_x", "dataset"),
    )
    s("no-sweep-table", "no [sweep] table", toml({"models": "[]"}).split("[[runs]]")[0], "sweep")
    s("runs-table", "a run config (with [[runs]]) given to sweep", toml(), "runs")
    s(
        "no-defaults",
        "a [sweep] table and no [defaults]",
        '[sweep]\n"method.lr" = [0.1, 0.2]\n',
        ("defaults", "method", "problem"),
    )

    def foreign(tmp):
        (tmp / "s.zarr").mkdir()
        write(tmp, "s.zarr/notes.txt", "not a store")
        record_digest(tmp, "s.zarr")
        return SWEEP_TEXT

    s(
        "foreign-store",
        "--out an existing folder that is not an sdeopt store",
        foreign,
        "--out",
        post=untouched("s.zarr"),
    )

    def other(tmp):
        shutil.copytree(sweep_fixture(), tmp / "s.zarr")
        record_digest(tmp, "s.zarr")
        return SWEEP_TEXT.replace("[0.05, 0.1]", "[0.05, 0.2]")

    s(
        "other-config-store",
        "--out the finished store of another sweep config",
        other,
        "--out",
        post=untouched("s.zarr"),
        timeout=120,
    )

    def file_out(tmp):
        write(tmp, "s.zarr", "a file")
        record_digest(tmp, "s.zarr")
        return SWEEP_TEXT

    s("out-file", "--out an existing regular file", file_out, "--out", post=untouched("s.zarr"))

    def resume(tmp):
        shutil.copytree(sweep_fixture(), tmp / "s.zarr")
        return SWEEP_TEXT

    s(
        "resume-done",
        "the same sweep again on its finished store: nothing recomputed",
        resume,
        (),
        mode="valid",
        check=lambda r, tmp: (
            cli_valid(r, tmp)
            or (
                None
                if re.search(r"^\s*2\s+0\s+2\s+0\s", r[1], re.M)
                else f"summary: {r[1].strip()[:200]!r}"
            )
        ),
        timeout=120,
    )
    # the API
    a = lambda name, what, fn, expect, **kw: case("sweep", name, what, fn, expect, **kw)  # noqa: E731
    load = lambda tmp: so.experiments.sweep.validate_sweep(__import__("tomllib").loads(SWEEP_TEXT))  # noqa: E731
    a(
        "api-workers-0",
        "run_sweep(sweep, 's.zarr', n_workers=0)",
        lambda tmp: so.experiments.sweep.run_sweep(load(tmp), tmp / "s.zarr", n_workers=0),
        "n_workers",
    )
    a(
        "api-workers-bool",
        "run_sweep(sweep, 's.zarr', n_workers=True)",
        lambda tmp: so.experiments.sweep.run_sweep(load(tmp), tmp / "s.zarr", n_workers=True),
        "n_workers",
    )
    a(
        "api-scheduler-int",
        "run_sweep(sweep, 's.zarr', scheduler=8786)",
        lambda tmp: so.experiments.sweep.run_sweep(load(tmp), tmp / "s.zarr", scheduler=8786),
        "scheduler",
    )


# ---------------------------------------------------------------------------------------------
# 5. CLI arguments and paths
# ---------------------------------------------------------------------------------------------


def _cli_cases() -> None:
    def k(name, what, fn, expect, **kw):
        case("cli", name, what, fn, expect, cli=True, **kw)

    cfg = lambda tmp: str(write(tmp, "config.toml", toml()))  # noqa: E731
    k("unknown-command", "sdeopt frobnicate", lambda tmp: ["frobnicate"], ("command", "frobnicate"))
    k("no-args", "sdeopt", lambda tmp: [], "command")
    k("run-no-config", "sdeopt run", lambda tmp: ["run"], ("config", "--out"))
    k("run-no-out", "sdeopt run CONFIG", lambda tmp: ["run", cfg(tmp)], "--out")
    k(
        "workers-abc",
        "sdeopt sweep CONFIG --out s.zarr --workers abc",
        lambda tmp: ["sweep", cfg(tmp), "--out", str(tmp / "s.zarr"), "--workers", "abc"],
        "--workers",
    )
    k(
        "runs-abc",
        "sdeopt demo --runs abc",
        lambda tmp: ["demo", "--runs", "abc", "--out", str(tmp / "out")],
        "--runs",
        post=nothing_written(),
    )
    k(
        "demo-runs-0",
        "sdeopt demo --runs 0 --out DIR",
        lambda tmp: ["demo", "--runs", "0", "--out", str(tmp / "out")],
        ("--runs", "n_runs", "runs"),
        post=nothing_written(),
    )
    k(
        "demo-runs-neg",
        "sdeopt demo --runs -5 --out DIR",
        lambda tmp: ["demo", "--runs", "-5", "--out", str(tmp / "out")],
        ("--runs", "n_runs", "runs"),
        post=nothing_written(),
    )
    k(
        "demo-runs-huge",
        "sdeopt demo --runs 1000000000000 --out DIR: refused up front (< 10 s)",
        lambda tmp: ["demo", "--runs", str(10**12), "--out", str(tmp / "out")],
        ("--runs", "n_runs", "runs"),
        post=nothing_written(),
        max_seconds=10,
    )

    def out_under_file(tmp):
        write(tmp, "file", "x")
        return ["run", cfg(tmp), "--out", str(tmp / "file" / "sub")]

    k(
        "out-under-file",
        "sdeopt run CONFIG --out file/sub (file a regular file)",
        out_under_file,
        "--out",
    )

    def out_is_file(tmp):
        write(tmp, "file", "x")
        record_digest(tmp, "file")
        return ["run", cfg(tmp), "--out", str(tmp / "file")]

    k(
        "out-is-file",
        "sdeopt run CONFIG --out file (a regular file)",
        out_is_file,
        "--out",
        post=untouched("file"),
    )

    def out_nonempty(tmp):
        write(tmp, "out/keep.txt", "mine")
        record_digest(tmp, "out")
        return ["run", cfg(tmp), "--out", str(tmp / "out")]

    k(
        "out-nonempty",
        "sdeopt run CONFIG --out DIR (DIR not empty, no --force)",
        out_nonempty,
        ("--out", "--force"),
        post=untouched("out"),
    )

    def demo_nonempty(tmp):
        write(tmp, "out/keep.txt", "mine")
        record_digest(tmp, "out")
        return ["demo", "--out", str(tmp / "out"), "--runs", "8"]

    k(
        "demo-out-nonempty",
        "sdeopt demo --out DIR (DIR not empty, no --force)",
        demo_nonempty,
        ("--out", "--force"),
        post=untouched("out"),
    )
    k(
        "out-proc",
        "sdeopt run CONFIG --out /proc/sdeopt-battery (cannot be created)",
        lambda tmp: ["run", cfg(tmp), "--out", "/proc/sdeopt-battery"],
        "--out",
    )
    k(
        "config-dash",
        "sdeopt run - --out DIR (stdin is not supported)",
        lambda tmp: ["run", "-", "--out", str(tmp / "out")],
        "config",
        post=nothing_written(),
    )

    def unreadable(tmp):
        p = write(tmp, "config.toml", toml())
        p.chmod(0)
        return ["run", str(p), "--out", str(tmp / "out")]

    k(
        "config-unreadable",
        "sdeopt run CONFIG (chmod 000) --out DIR",
        unreadable,
        "config",
        post=nothing_written(),
        skip="running as root: chmod 000 does not stop root" if os.geteuid() == 0 else None,
    )
    # plot
    k(
        "plot-missing",
        "sdeopt plot missing.nc",
        lambda tmp: ["plot", str(tmp / "missing.nc")],
        ("DATASET", "dataset"),
    )
    k(
        "plot-folder",
        "sdeopt plot FOLDER",
        lambda tmp: (tmp / "d").mkdir() or ["plot", str(tmp / "d")],
        ("DATASET", "dataset"),
    )
    k(
        "plot-text",
        "sdeopt plot notes.txt (a text file)",
        lambda tmp: ["plot", str(write(tmp, "notes.txt", "hello\n"))],
        ("DATASET", "dataset"),
    )
    k(
        "plot-empty",
        "sdeopt plot empty.nc (0 bytes)",
        lambda tmp: ["plot", str(write(tmp, "empty.nc", b""))],
        ("DATASET", "dataset"),
    )

    def foreign_nc(tmp):
        rng = np.random.default_rng(0)
        ds = xr.Dataset(
            {
                "loss": (("model", "step", "run"), rng.random((2, 3, 4))),
                "grad_norm": (("model", "step", "run"), rng.random((2, 3, 4))),
                "diverged": (("model", "run"), np.zeros((2, 4), dtype=bool)),
                "blowup_step": (("model", "run"), -np.ones((2, 4), dtype=np.int64)),
            },
            coords={"model": ["discrete", "first_order"], "step": [0, 5, 10], "run": np.arange(4)},
        )
        ds.to_netcdf(tmp / "foreign.nc")
        return ["plot", str(tmp / "foreign.nc")]

    k(
        "plot-foreign-nc",
        "sdeopt plot foreign.nc (written by xarray, sdeopt's variable names)",
        foreign_nc,
        ("DATASET", "dataset"),
        post=lambda tmp: (
            f"wrote {sorted(p.name for p in tmp.glob('*.png'))}"
            if list(tmp.glob("*.png"))
            else None
        ),
    )

    def corrupted(tmp):
        src = dataset_fixture() / "a.nc"
        dst = tmp / "a.nc"
        data = bytearray(src.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 64] = bytes(64)
        dst.write_bytes(bytes(data))
        return ["plot", str(dst)]

    k(
        "plot-corrupted-nc",
        "sdeopt plot a.nc (a dataset from sdeopt run, 64 bytes zeroed in the middle)",
        corrupted,
        ("DATASET", "dataset"),
        post=lambda tmp: (
            f"wrote {sorted(p.name for p in tmp.glob('*.png'))}"
            if list(tmp.glob("*.png"))
            else None
        ),
        timeout=60,
    )

    def plot_png_exists(tmp):
        shutil.copy(dataset_fixture() / "a.nc", tmp / "a.nc")
        write(tmp, "a_trajectories.png", b"mine")
        record_digest(tmp, "a_trajectories.png")
        return ["plot", str(tmp / "a.nc")]

    k(
        "plot-png-exists",
        "sdeopt plot a.nc where a_trajectories.png exists (no --force)",
        plot_png_exists,
        ("--out", "--force"),
        post=untouched("a_trajectories.png"),
    )

    def plot_out_file(tmp):
        shutil.copy(dataset_fixture() / "a.nc", tmp / "a.nc")
        write(tmp, "file", "x")
        return ["plot", str(tmp / "a.nc"), "--out", str(tmp / "file")]

    k("plot-out-file", "sdeopt plot a.nc --out file (a regular file)", plot_out_file, "--out")

    def plot_ok(tmp):
        shutil.copy(dataset_fixture() / "a.nc", tmp / "a.nc")
        return ["plot", str(tmp / "a.nc"), "--out", str(tmp / "figs" / "sub")]

    k(
        "plot-valid",
        "sdeopt plot a.nc --out figs/sub (a new nested folder)",
        plot_ok,
        (),
        mode="valid",
        check=lambda r, tmp: (
            cli_valid(r, tmp)
            or (None if list((tmp / "figs" / "sub").glob("*.png")) else "no figure written")
        ),
    )
    k(
        "plot-sweep-store",
        "sdeopt plot s.zarr (a sweep store)",
        lambda tmp: (
            shutil.copytree(sweep_fixture(), tmp / "s.zarr"),
            ["plot", str(tmp / "s.zarr")],
        )[1],
        ("DATASET", "dataset"),
        timeout=120,
    )

    def subprocess_case(argv):
        def fn(tmp):
            import subprocess

            proc = subprocess.run(
                [sys.executable, "-m", "sdeopt.cli", *argv],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp,
            )
            return proc.returncode, proc.stdout, proc.stderr

        return fn

    case(
        "cli",
        "fresh-process-bad-config",
        "python -m sdeopt.cli run bad.toml --out out (fresh process)",
        lambda tmp: (
            write(tmp, "bad.toml", toml({"n_runs": "0"})),
            subprocess_case(["run", "bad.toml", "--out", "out"])(tmp),
        )[1],
        "n_runs",
        cli=True,
        post=nothing_written(),
    )


# ---------------------------------------------------------------------------------------------
# 6. Faults
# ---------------------------------------------------------------------------------------------


def _check_law(a, b, var="loss", sigmas=4.0):
    """Final-step means of ``var`` in a and b agree within ``sigmas`` combined standard errors."""
    u = as_ds(a)[var].isel(step=-1).values.astype(float).ravel()
    v = as_ds(b)[var].isel(step=-1).values.astype(float).ravel()
    se = math.sqrt(u.var(ddof=1) / len(u) + v.var(ddof=1) / len(v))
    z = abs(u.mean() - v.mean()) / se
    return None if z < sigmas else f"means {u.mean():.5g} vs {v.mean():.5g} differ by {z:.1f} se"


def _weak_error_partly_diverged(paired: bool):
    """DSGD on f = x²/2 with lr = 0.5, noise 1 and blowup_threshold 1.5: some runs cross 1.5 (frozen)."""
    method = dsgd(lr=0.5, n_workers=1, noise=gauss(1.0))
    ds = cmp(
        method=method,
        problem=so.problems.Quadratic(diag=[1.0]),
        x0=[0.0],
        n_steps=40,
        n_runs=400,
        blowup_threshold=1.5,
        coupled=paired,
        record_x=True,
        seed=3,
    )
    return ds, so.analysis.weak_error(ds, "loss")


def _check_weak_error_manual(result, tmp) -> str | None:
    ds, we = result
    blow = ds["blowup_step"].values  # (model, run)
    if not (blow >= 0).any() or (blow >= 0).all():
        return "setup: expected some (not all) runs to diverge"
    msg = _check_weak_error_alive(we, tmp)
    if msg:
        return msg
    steps = ds["step"].values
    loss = ds["loss"].values  # (model, step, run)
    ok = (blow[:, None, :] < 0) | (steps[None, :, None] < blow[:, None, :])
    paired = bool(ds.attrs.get("coupled", 0))
    for i, s in enumerate(steps):
        if paired:
            keep = ok[0, i] & ok[1, i]
            expected = (loss[1, i, keep] - loss[0, i, keep]).mean()
        else:
            expected = loss[1, i, ok[1, i]].mean() - loss[0, i, ok[0, i]].mean()
        got = float(we["signed"].sel(model="first_order").values[i])
        if not np.isclose(got, expected, rtol=1e-9, atol=1e-12):
            return (
                f"step {s}: weak error {got:.6g}, over the runs alive at that step {expected:.6g}"
            )
    return None


def _faults_cases() -> None:
    N = so.noise

    def c(name, what, fn, check, **kw):
        return case(
            "faults",
            name,
            what,
            lambda tmp: fn(),
            (),
            mode="valid",
            check=check,
            **kw,
        )

    ref = lambda **kw: sim(n_steps=20, n_runs=50, **kw)  # noqa: E731
    c(
        "lr-np-float64",
        "DSGD(lr=np.float64(0.1)) vs 0.1, bitwise",
        lambda: ref(method=dsgd(lr=np.float64(0.1))),
        check_same_as(lambda: ref(method=dsgd(lr=0.1))),
    )
    c(
        "lr-tensor-float64",
        "DSGD(lr=torch.tensor(0.1, dtype=torch.float64)) vs 0.1, bitwise",
        lambda: ref(method=dsgd(lr=torch.tensor(0.1, dtype=torch.float64))),
        check_same_as(lambda: ref(method=dsgd(lr=0.1))),
    )
    c(
        "workers-np-int64",
        "DSGD(n_workers=np.int64(4)) vs 4, bitwise",
        lambda: ref(method=dsgd(n_workers=np.int64(4))),
        check_same_as(lambda: ref(method=dsgd(n_workers=4))),
    )
    c(
        "seed-np-int64",
        "simulate(..., seed=np.int64(7)) vs 7, bitwise",
        lambda: ref(seed=np.int64(7)),
        check_same_as(lambda: ref(seed=7)),
    )
    c(
        "seed-tensor",
        "simulate(..., seed=torch.tensor(7)) vs 7, bitwise",
        lambda: ref(seed=torch.tensor(7)),
        check_same_as(lambda: ref(seed=7)),
    )
    c(
        "runs-steps-np-int64",
        "simulate(..., n_steps=np.int64(20), n_runs=np.int64(50), record_every=np.int64(5)) "
        "vs Python ints",
        lambda: sim(n_steps=np.int64(20), n_runs=np.int64(50), record_every=np.int64(5)),
        check_same_as(lambda: sim(n_steps=20, n_runs=50, record_every=5)),
    )
    c(
        "nu-np-float64",
        "DSignSGD(noise=StudentT(nu=np.float64(1.5), scale=np.float32(1.0))) vs Python floats",
        lambda: ref(method=dsign(noise=N.StudentT(nu=np.float64(1.5), scale=np.float32(1.0)))),
        check_same_as(lambda: ref(method=dsign(noise=N.StudentT(nu=1.5, scale=1.0)))),
    )
    c(
        "compare-np-scalars-netcdf",
        "compare(..., seed=np.int64(3), n_runs=np.int64(10), n_steps=np.int64(5)), "
        "then io.save/io.load: equal to Python ints",
        lambda: (lambda ds: (ds, so.io.save(ds, "np.nc"), so.io.load("np.nc"))[2])(
            cmp(seed=np.int64(3), n_runs=np.int64(10), n_steps=np.int64(5))
        ),
        check_same_as(lambda: cmp(seed=3, n_runs=10, n_steps=5)),
    )
    # prefix stability and chunk invariance
    two = lambda f, **kw: (f(n_runs=2000, **kw), f(n_runs=1000, **kw))  # noqa: E731
    prefix = lambda r, tmp: same(as_ds(r[0]).isel(run=slice(0, 1000)), r[1])  # noqa: E731
    c(
        "prefix-dsgd",
        "DSGD: the first 1000 runs of a 2000-run study equal the 1000-run study",
        lambda: two(lambda **kw: sim(n_steps=10, **kw)),
        prefix,
    )
    c(
        "prefix-small-blocks",
        "DSGD, block_size=256, chunk_size=300: first 1000 of 2000 runs equal 1000 runs",
        lambda: two(lambda **kw: sim(n_steps=10, block_size=256, chunk_size=300, **kw)),
        prefix,
    )
    c(
        "prefix-dsign-per-worker",
        "DSignSGD, per-worker Student-t scales (drawn noise): first 1000 of 2000 runs",
        lambda: two(
            lambda **kw: sim(
                method=dsign(n_workers=2, noise=N.StudentT(nu=1.5, scale=[1.0, 2.0])),
                n_steps=10,
                **kw,
            )
        ),
        prefix,
    )
    c(
        "prefix-randk",
        "DCSGD + RandK(1): first 1000 of 2000 runs",
        lambda: two(
            lambda **kw: sim(method=dcsgd(compressor=so.compressors.RandK(k=1)), n_steps=10, **kw)
        ),
        prefix,
    )
    c(
        "prefix-sde",
        "solve(first-order SDE): first 1000 of 2000 paths",
        lambda: two(lambda **kw: solve(n_steps=10, **kw)),
        prefix,
    )
    c(
        "first-run",
        "simulate(first_run=1000, n_runs=1000) equals runs 1000..1999 of the 2000-run study",
        lambda: (
            sim(n_steps=10, n_runs=2000, block_size=512),
            sim(n_steps=10, n_runs=1000, first_run=1000, block_size=512),
        ),
        lambda r, tmp: same(
            as_ds(r[0]).isel(run=slice(1000, 2000)).assign_coords(run=np.arange(1000, 2000)), r[1]
        ),
    )
    c(
        "chunk-invariance",
        "DSignSGD, chunk_size=37 vs the default chunking, bitwise",
        lambda: sim(method=dsign(), n_steps=10, n_runs=200, chunk_size=37),
        check_same_as(lambda: sim(method=dsign(), n_steps=10, n_runs=200)),
    )

    def aliasing():
        seeds = [(0, 0), (0, 4096), (1, 0), (2**32, 0), (2**64, 0), (2**96, 0), (2**32, 4096)]
        return {
            s: as_ds(sim(seed=s[0], first_run=s[1], n_runs=64, n_steps=3))["loss"].values
            for s in seeds
        }

    def check_alias(r, tmp):
        keys = list(r)
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                if np.array_equal(
                    r[a][:, 1:], r[b][:, 1:]
                ):  # (model, step, run): the steps after x0
                    return f"(seed, first_run) {a} and {b} draw the same runs"
        return None

    c(
        "seed-aliasing",
        "seeds 0, 1, 2**32, 2**64, 2**96 at runs 0.. and 4096..: no two reproduce each other",
        aliasing,
        check_alias,
    )
    c(
        "seed-max",
        "simulate(..., seed=2**128 - 1): runs, stored losslessly",
        lambda: cmp(seed=2**128 - 1),
        lambda ds, tmp: (
            all_finite(ds) or (None if int(ds.attrs["seed"]) == 2**128 - 1 else "seed attr lost")
        ),
    )
    c(
        "seed-2**127-netcdf",
        "compare(..., seed=2**127) through io.save/io.load: the seed comes back",
        lambda: (lambda ds: (so.io.save(ds, "s.nc"), so.io.load("s.nc"))[1])(cmp(seed=2**127)),
        lambda ds, tmp: (
            None if int(ds.attrs["seed"]) == 2**127 else f"seed attr {ds.attrs['seed']!r}"
        ),
    )
    # precision
    c(
        "float32-vs-float64-dsgd",
        "DSGD, 4000 runs, 50 steps: final mean loss in float32 and float64 agree (4 se)",
        lambda: (
            sim(n_steps=50, n_runs=4000, dtype=torch.float32),
            sim(n_steps=50, n_runs=4000, dtype=torch.float64, seed=1),
        ),
        lambda r, tmp: _check_law(*r),
    )
    c(
        "float32-vs-float64-dsign",
        "DSignSGD + Student-t(1.5), 4000 runs: float32 and float64 agree in law (4 se)",
        lambda: (
            sim(method=dsign(), n_steps=50, n_runs=4000, dtype=torch.float32),
            sim(method=dsign(), n_steps=50, n_runs=4000, dtype=torch.float64, seed=1),
        ),
        lambda r, tmp: _check_law(*r),
    )
    c(
        "float32-vs-float64-sde",
        "first-order SDE, 4000 paths: float32 and float64 agree in law (4 se)",
        lambda: (
            solve(n_steps=50, n_runs=4000, dtype=torch.float32),
            solve(n_steps=50, n_runs=4000, dtype=torch.float64, seed=1),
        ),
        lambda r, tmp: _check_law(*r),
    )
    # divergence
    c(
        "weak-error-partly-diverged",
        "weak_error on a compare() where some runs diverge: at each step, the runs "
        "alive then; never NaN while runs are alive",
        lambda: _weak_error_partly_diverged(False),
        _check_weak_error_manual,
    )
    c(
        "weak-error-partly-diverged-paired",
        "the same, coupled (paired)",
        lambda: _weak_error_partly_diverged(True),
        _check_weak_error_manual,
    )
    c(
        "streamed-equals-memory",
        "compare(..., out='c.zarr') equals compare(...) in memory",
        lambda: quiet(
            cmp, n_runs=300, n_steps=10, out="c.zarr", models=["first_order", "curvature"]
        ),
        check_same_as(lambda: cmp(n_runs=300, n_steps=10, models=["first_order", "curvature"])),
    )


_ctor_cases()
_args_cases()
_toml_cases()
_sweep_cases()
_cli_cases()
_faults_cases()


# ---------------------------------------------------------------------------------------------
# Running a case in a child process
# ---------------------------------------------------------------------------------------------


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def _redirect(path: Path) -> None:
    """Send fds 1 and 2 (and Python's sys.stdout/stderr) to ``path``'s two files."""
    sys.stdout.flush()
    sys.stderr.flush()
    out = os.open(path.with_suffix(".out"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    err = os.open(path.with_suffix(".err"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)


def _child(c: Case, tmp: Path) -> dict:
    os.chdir(tmp)
    limit = _vm_size() + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _redirect(tmp / "setup")
    if not c.cli:
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = c.fn(tmp)
                out = {"raised": None}
            except Exception as exc:
                out = {
                    "raised": type(exc).__name__,
                    "value_error": isinstance(exc, ValueError),
                    "message": str(exc),
                    "traceback": traceback.format_exc(limit=-4),
                }
        out["seconds"] = time.perf_counter() - start
        out["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})[:5]
        if out["raised"] is None and c.check is not None:
            try:
                out["check"] = c.check(result, tmp)
            except Exception as exc:
                out["check"] = f"checking the result raised {type(exc).__name__}: {exc}"
        return out
    # a CLI case: set up (its output goes to setup.*), then main(argv) with fds 1 and 2 captured
    argv = c.fn(tmp)
    out = {}
    if isinstance(argv, tuple):  # a subprocess case returned (rc, stdout, stderr) itself
        rc, stdout, stderr = argv
        out["seconds"] = 0.0
    else:
        argv = [str(a) for a in argv]
        out["argv"] = argv
        _redirect(tmp / "main")
        start = time.perf_counter()
        try:
            rc = cli_main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            rc = 1
        out["seconds"] = time.perf_counter() - start
        _redirect(tmp / "setup")
        stdout = (tmp / "main.out").read_text(errors="replace")
        stderr = (tmp / "main.err").read_text(errors="replace")
    out.update(rc=rc, stdout=stdout[-4000:], stderr=stderr[-4000:])
    if c.post is not None:
        try:
            out["post"] = c.post(tmp)
        except Exception as exc:
            out["post"] = f"post-check raised {type(exc).__name__}: {exc}"
    if c.check is not None and rc == 0:
        try:
            out["check"] = c.check((rc, stdout, stderr), tmp)
        except Exception as exc:
            out["check"] = f"checking the result raised {type(exc).__name__}: {exc}"
    return out


def _spawn(c: Case, root: Path) -> tuple[int, float, Path]:
    """Fork the child that runs case c: (its pid, its start time, its folder)."""
    tmp = root / re.sub(r"[^A-Za-z0-9_.-]+", "_", c.id)
    tmp.mkdir(parents=True)
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.setpgid(0, 0)
            result = _child(c, tmp)
        except BaseException:
            result = {"harness_error": traceback.format_exc(limit=-6)}
        try:
            (tmp / "result.json").write_text(json.dumps(result, default=str))
        except BaseException:
            code = 3
        os._exit(code)
    return pid, start, tmp


def _finish(pid: int, start: float, tmp: Path, status: int | None) -> dict:
    """The result of a child that exited with ``status``, or hung (None; it is then killed)."""
    try:  # the child's whole process group (dask workers included), whatever happened
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if status is None:
        os.waitpid(pid, 0)
        return {"hang": True, "wall": time.monotonic() - start}
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status), "wall": time.monotonic() - start}
    try:
        result = json.loads((tmp / "result.json").read_text())
    except (OSError, ValueError):
        result = {"harness_error": f"no result (exit status {status})"}
    result["wall"] = time.monotonic() - start
    return result


def run_cases(cases: list[Case], root: Path, jobs: int):
    """Run the cases, up to ``jobs`` children at a time; yield (index, case, result) in the
    cases' order. Each child has its own folder, process group and wall-clock limit."""
    pending = {}  # index -> (case, pid, start, folder)
    done: dict[int, dict] = {}
    following, upcoming = 0, iter(enumerate(cases))
    exhausted = False
    while following < len(cases):
        while not exhausted and len(pending) < jobs:
            nxt = next(upcoming, None)
            if nxt is None:
                exhausted = True
                break
            i, c = nxt
            if c.skip:
                done[i] = {}
            else:
                pending[i] = (c, *_spawn(c, root))
        for i, (c, pid, start, tmp) in list(pending.items()):
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                done[i] = _finish(pid, start, tmp, status)
            elif time.monotonic() - start >= c.timeout:
                done[i] = _finish(pid, start, tmp, None)
            else:
                continue
            del pending[i]
        while following in done:
            yield following, cases[following], done.pop(following)
            following += 1
        if pending:
            time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# Classifying
# ---------------------------------------------------------------------------------------------


def names_in(message: str, names) -> bool:
    return any(
        re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message) for n in names
    )


def first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def classify(c: Case, r: dict) -> tuple[str, str]:
    """(outcome, message) of case c from its child's result r."""
    if "harness_error" in r:
        return "crash", "HARNESS: " + r["harness_error"].strip().splitlines()[-1]
    if r.get("hang"):
        return "hang", f"no answer within {c.timeout:.0f} s"
    if "signal" in r:
        return "crash", f"killed by signal {r['signal']}"
    outcome, msg = (_classify_cli if c.cli else _classify_api)(c, r)
    if outcome == "refused" and c.unclear_if and re.search(c.unclear_if[0], msg):
        return "unclear", f"{msg} [{c.unclear_if[1]}]"
    if outcome == "refused" and c.max_seconds is not None and r.get("seconds", 0) > c.max_seconds:
        return (
            "hang",
            f"refused only after {r['seconds']:.1f} s (due within {c.max_seconds:.0f} s): {msg}",
        )
    return outcome, msg


def _refusal(c: Case, message: str) -> tuple[str, str]:
    if message.startswith("Invalid") and (names_in(message, c.expect) or not c.expect):
        return "refused", message
    return "unclear", message


def _classify_api(c: Case, r: dict) -> tuple[str, str]:
    raised = r.get("raised")
    if raised is None:
        if c.mode == "refuse":
            return "silent", "accepted"
        if r.get("check"):
            return "silent", f"wrong result: {r['check']}"
        return "ok", "accepted, result checked"
    message = r.get("message", "")
    if c.mode == "valid":
        return "crash", f"refused a valid input: {raised}: {message}"
    if r.get("value_error"):
        return _refusal(c, message)
    return "crash", f"{raised}: {message}"


def _argparse_error(stderr: str) -> str | None:
    """The one error line of an argparse failure (usage lines, then "prog: error: ..."), else None."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("usage:"):
        return None
    rest = [line for line in lines if not line.startswith("usage:") and not line.startswith(" ")]
    if len(rest) == 1 and ": error: " in rest[0]:
        return rest[0]
    return None


def _classify_cli(c: Case, r: dict) -> tuple[str, str]:
    rc, stderr = r.get("rc"), r.get("stderr", "")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in stderr:
        tail = [line for line in lines if line and not line.startswith(" ")]
        return (
            "crash",
            f"traceback (exit {rc}){'; and ' + r['post'] if r.get('post') else ''}: "
            f"{tail[-1] if tail else ''}",
        )
    if rc == 0:
        if c.mode == "refuse":
            return "silent", f"exit code 0: {first_line(r.get('stdout', '')) or 'accepted'}"
        if r.get("check"):
            return "silent", f"wrong result: {r['check']}"
        return "ok", "exit code 0, result checked"
    if c.mode == "valid":
        return "crash", f"refused a valid input (exit {rc}): {lines[-1] if lines else ''}"
    post = f"; and {r['post']}" if r.get("post") else ""
    parsed = _argparse_error(stderr)
    if parsed is not None and rc == 2:
        message = parsed.split(": error: ", 1)[1]
        ok = names_in(message, c.expect) or names_in(message, [n.lstrip("-") for n in c.expect])
        outcome, msg = ("refused" if ok else "unclear"), f"argparse: {parsed}"
    elif len(lines) != 1:
        return "crash", f"{len(lines)} lines of error (exit {rc}){post}: " + " | ".join(lines[:3])[
            :400
        ]
    elif rc != 2:
        return "crash", f"exit code {rc}{post}: {lines[0]}"
    elif not lines[0].startswith("sdeopt: "):
        return "unclear", lines[0]
    else:
        outcome, msg = _refusal(c, lines[0][len("sdeopt: ") :])
        msg = lines[0]
    if r.get("post"):
        return "silent", f"{r['post']} ({msg})"
    return outcome, msg


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    global FIXTURES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated categories: {', '.join(CATEGORIES)}, or case ids / id prefixes",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every case's outcome here")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="cases run at once (default: 2, or 1 on one core)",
    )
    args = parser.parse_args(argv)
    cases = CASES
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        cases = [
            c for c in CASES if any(c.cat == w or c.id == w or c.id.startswith(w) for w in wanted)
        ]
        if not cases:
            parser.error(f"--only {args.only!r} selects no case")
    if args.list:
        for c in cases:
            print(f"{c.id:45s} {c.mode:7s} {c.what}")
        print(f"{len(cases)} cases")
        return 0
    so.configure_torch()
    root = Path(tempfile.mkdtemp(prefix="sdeopt-battery-"))
    FIXTURES = root / "_fixtures"
    FIXTURES.mkdir()
    records = []
    start = time.monotonic()
    try:
        for i, c, r in run_cases(cases, root, max(1, args.jobs)):
            if c.skip:
                outcome, msg = "skipped", c.skip
            else:
                outcome, msg = classify(c, r)
            msg = normalize(msg, root)
            print(
                f"[{i + 1:3d}/{len(cases)}] {outcome:8s} {c.id}  ({r.get('wall', 0):.1f} s)",
                file=sys.stderr,
                flush=True,
            )
            records.append(
                {
                    "id": c.id,
                    "category": c.cat,
                    "what": c.what,
                    "mode": c.mode,
                    "expect": list(c.expect),
                    "outcome": outcome,
                    "message": first_line(msg),
                    "detail": _detail(r, root),
                    "seconds": round(r.get("wall", 0.0), 1),
                }
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = time.monotonic() - start
    report(records, total)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        counts = {
            cat: {
                o: sum(1 for r in records if r["category"] == cat and r["outcome"] == o)
                for o in (*OUTCOMES, "skipped")
            }
            for cat in CATEGORIES
        }
        args.json.write_text(
            json.dumps(
                {
                    "issue": 12,
                    "cases": len(records),
                    "seconds": round(total, 1),
                    "counts": counts,
                    "results": records,
                },
                indent=1,
            )
            + "\n"
        )
        print(f"\nwrote {args.json}")
    return 0


def _detail(r: dict, root: Path) -> str:
    """What the JSON keeps of a case beyond its first line: the full message or stderr, warnings."""
    parts = []
    if r.get("message"):
        parts.append(r["message"])
    if r.get("check"):
        parts.append(f"check: {r['check']}")
    if r.get("traceback") and not r.get("value_error"):
        parts.append(r["traceback"].strip()[-1500:])
    if "rc" in r:
        parts.append(f"exit {r['rc']}; stderr: {r.get('stderr', '').strip()[-1500:]}")
    if r.get("post"):
        parts.append(f"post: {r['post']}")
    if r.get("warnings"):
        parts.append("warnings: " + "; ".join(r["warnings"]))
    if r.get("harness_error"):
        parts.append(r["harness_error"][-1500:])
    return normalize("\n".join(parts), root)


def normalize(text: str, root: Path) -> str:
    """What varies from run to run, made constant: temporary paths, object addresses, free memory."""
    text = text.replace(str(root), "<tmp>")
    text = re.sub(r" at 0x[0-9a-f]+>", " at 0x...>", text)
    return re.sub(r"[0-9.]+ GiB of memory is available", "<free> GiB of memory is available", text)


def report(records: list[dict], seconds: float) -> None:
    cols = (*OUTCOMES, "skipped")
    print(f"\nsdeopt bad-input battery (issue 12): {len(records)} cases in {seconds:.0f} s\n")
    head = f"{'category':52s}" + "".join(f"{o:>9s}" for o in cols) + f"{'total':>8s}"
    print(head)
    print("-" * len(head))
    for cat, title in CATEGORIES.items():
        rows = [r for r in records if r["category"] == cat]
        if not rows:
            continue
        print(
            f"{title:52s}"
            + "".join(f"{sum(r['outcome'] == o for r in rows):9d}" for o in cols)
            + f"{len(rows):8d}"
        )
    print("-" * len(head))
    print(
        f"{'all':52s}"
        + "".join(f"{sum(r['outcome'] == o for r in records):9d}" for o in cols)
        + f"{len(records):8d}"
    )
    bad = [r for r in records if r["outcome"] not in ("refused", "ok")]
    if bad:
        print("\nCases not refused (or not ok):")
        for r in bad:
            print(f"\n  [{r['outcome']}] {r['id']}: {r['what']}\n      {r['message'][:400]}")
    ok = [r["id"] for r in records if r["outcome"] == "ok"]
    if ok:
        print(
            f"\nValid-but-tricky inputs accepted with the right result ({len(ok)}): {', '.join(ok)}"
        )


if __name__ == "__main__":
    sys.exit(main())
