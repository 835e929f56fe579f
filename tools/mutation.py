"""Mutation testing of sdeopt/dynamics/ with mutmut (issue 11: the tests must catch a wrong model).

Usage (from anywhere; the repository is found from this file):

    python tools/mutation.py                  # the working tree as it is, in ./mutants/
    python tools/mutation.py --ref HEAD       # a committed tree, exported to .mutation/tree/
    python tools/mutation.py --report-only    # re-read the last run's results, no testing

mutmut's configuration is ``[tool.mutmut]`` in pyproject.toml: the whole package is copied
into ``mutants/`` (so ``import sdeopt`` finds the copy), only ``sdeopt/dynamics/*`` is mutated,
and the tests are tests/test_dynamics.py, tests/test_models.py (dropped here while it does not
exist) and tests/test_chains.py, without the slow ones (addopts: -m 'not slow'). mutmut maps
every test to the dynamics functions it calls and runs, per mutant, only the tests that reach
the mutated function (with -x), so the Markov-chain/MLMC tests of test_chains.py, which never
call a dynamics function, are never run against a mutant. The tests of a mutant run fastest
first (a killed mutant stops at its cheapest failing test). Error messages (the expressions of
``raise`` lines) are not mutated: a mutated message survives every test and costs a full run of
the tests covering its function.

Parallelism: ``--max-children`` workers (default 2, this project's CI size); every worker is a
fork of a process whose torch uses one intra-op thread (tests/conftest.py), and OMP/MKL/BLAS
threads are pinned to 1 in the environment, so N children use N cores.

A run starts from scratch by default (mutmut's cache keeps old verdicts when tests change, so a
kill rate from a cached run can be stale); ``--keep-cache`` reuses it. The summary (per-file
killed/survived/timeout/no-tests counts, kill rates of the model files and of the solver
files, every surviving mutant with its diff) is printed and written to tools/mutation.json.
Look at a mutant with ``cd <workdir> && mutmut show <name>`` (workdir is printed).

Kill rate = (killed + timeout) / mutants, the share of mutants some test detects (a timeout is
a mutant that made the tests hang, which counts as detected; "no tests" mutants count as
undetected).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DYNAMICS = "sdeopt/dynamics"
#: The continuous models: what a wrong model would get wrong.
MODEL_FILES = ("dcsgd.py", "dsignsgd.py", "markov_sgd.py", "ito_chain.py", "recipe.py", "sde.py")
#: The integrators and the package entry point (sde_of), counted apart.
SOLVER_FILES = ("solvers.py", "__init__.py")
STATUSES = (
    "killed",
    "survived",
    "timeout",
    "no tests",
    "suspicious",
    "segfault",
    "skipped",
    "caught by type check",
    "check was interrupted by user",
    "not checked",
)
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


# ---------------------------------------------------------------------------------------------
# Inner mode: runs inside the work directory, imports mutmut there.


def _inner(argv: list[str]) -> int:
    """``--inner run [--max-children N] [names...]`` or ``--inner report OUT.json``."""
    import mutmut.__main__ as mm  # loads [tool.mutmut] from ./pyproject.toml
    from mutmut.configuration import config

    cfg = config()
    # Keep the test selection's options, drop test files that do not exist (yet).
    cfg.pytest_add_cli_args_test_selection = [
        a
        for a in cfg.pytest_add_cli_args_test_selection
        if a.startswith("-")
        or (
            Path(a.split("::")[0]).exists()
            and a.split("::")[0] not in os.environ.get("MUTATION_WITHOUT", "").split(os.pathsep)
        )
    ]
    if argv[0] == "run":
        print("test selection:", " ".join(cfg.pytest_add_cli_args_test_selection), flush=True)
        _fast_tests_first()
        try:
            mm.cli(argv, standalone_mode=False)
        except SystemExit as err:
            return int(err.code or 0)
        return 0
    if argv[0] == "report":
        return _inner_report(Path(argv[1]), cfg)
    raise SystemExit(f"unknown inner command {argv[0]!r}")


def _fast_tests_first() -> None:
    """Run each mutant's tests fastest first (durations from mutmut's stats run).

    mutmut runs a mutant's tests with -x in set order; sorted by duration, a killed mutant
    stops at its cheapest failing test. Verdicts do not change, only the time to reach them.
    """
    from mutmut.runners.harness import PytestRunner
    from mutmut.state import state

    regular = PytestRunner._pytest_args_regular_run

    def fast_first(self, tests):
        durations = state().duration_by_test
        return regular(self, sorted(tests, key=lambda t: (durations.get(t, 0.0), t)))

    PytestRunner._pytest_args_regular_run = fast_first


def _inner_report(out: Path, cfg) -> int:
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    files = {}
    for path in sorted(walk_mutatable_files()):
        m = SourceFileMutationData(path=path)
        m.load()
        mutants = {}
        for name, code in sorted(
            m.exit_code_by_key.items(), key=lambda kv: _mutant_sort_key(kv[0])
        ):
            status = status_by_exit_code[code]
            entry = {"status": status}
            if status not in ("killed", "not checked"):
                try:
                    entry["diff"] = get_diff_for_mutant(name, path=path)
                except Exception as err:  # a diff is a convenience; never fail the report on it
                    entry["diff"] = f"<no diff: {err}>"
            if name in m.durations_by_key:
                entry["duration_s"] = round(float(m.durations_by_key[name]), 3)
            mutants[name] = entry
        files[str(path)] = mutants
    out.write_text(
        json.dumps(
            {"files": files, "test_selection": cfg.pytest_add_cli_args_test_selection}, indent=1
        )
    )
    return 0


def _mutant_sort_key(name: str):
    head, _, number = name.rpartition("__mutmut_")
    return (head, int(number) if number.isdigit() else 0)


# ---------------------------------------------------------------------------------------------
# Outer mode: prepares the work directory, runs mutmut, summarises.


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def _export(ref: str, workdir: Path, keep: bool) -> None:
    """The tree of ``ref`` in ``workdir`` (its mutants/ kept with ``keep``), files touched now.

    Touching matters for --keep-cache: mutmut regenerates a file's mutants only when the source
    is newer than the mutated copy (results of unchanged functions survive by their hashes).
    """
    if workdir.exists():
        for child in workdir.iterdir():
            if keep and child.name == "mutants":
                continue
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=REPO, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-m", "-C", str(workdir)], input=archive, check=True)


def summarise(report: dict) -> dict:
    """Per-file counts and the kill rates of the model files and of the solver files."""
    per_file = {}
    for path, mutants in report["files"].items():
        counts = dict.fromkeys(STATUSES, 0)
        for entry in mutants.values():
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        counts["total"] = len(mutants)
        per_file[path] = counts

    def group(names):
        paths = [f"{DYNAMICS}/{n}" for n in names if f"{DYNAMICS}/{n}" in per_file]
        total = {k: sum(per_file[p][k] for p in paths) for k in (*STATUSES, "total")}
        detected = total["killed"] + total["timeout"]
        total["kill_rate"] = round(detected / total["total"], 4) if total["total"] else None
        total["files"] = paths
        return total

    return {
        "per_file": per_file,
        "model_files": group(MODEL_FILES),
        "solver_files": group(SOLVER_FILES),
        "all": group(MODEL_FILES + SOLVER_FILES),
    }


def print_table(summary: dict) -> None:
    cols = ("killed", "survived", "timeout", "no tests", "suspicious", "segfault", "total")
    print(f"{'file':34s}" + "".join(f"{c:>11s}" for c in cols) + f"{'kill rate':>11s}")
    for path, c in summary["per_file"].items():
        rate = (c["killed"] + c["timeout"]) / c["total"] if c["total"] else float("nan")
        print(f"{path:34s}" + "".join(f"{c[k]:>11d}" for k in cols) + f"{rate:>11.1%}")
    for label, key in (
        ("model files", "model_files"),
        ("solvers.py + __init__.py", "solver_files"),
        ("all of sdeopt/dynamics", "all"),
    ):
        g = summary[key]
        rate = "n/a" if g["kill_rate"] is None else f"{g['kill_rate']:.1%}"
        print(f"{label:34s}" + "".join(f"{g[k]:>11d}" for k in cols) + f"{rate:>11s}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        return _inner(sys.argv[2:])
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--ref",
        help="test this committed tree (git archive into .mutation/tree) "
        "instead of the working tree",
    )
    ap.add_argument(
        "--max-children", type=int, default=2, help="parallel mutmut workers (default 2)"
    )
    ap.add_argument(
        "--keep-cache",
        action="store_true",
        help="reuse mutants/ and its verdicts (default: start from scratch)",
    )
    ap.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="TEST_FILE",
        help="drop this test file from the selection (e.g. to measure what it adds)",
    )
    ap.add_argument(
        "--workdir",
        help="where --ref exports its tree (default .mutation/tree); "
        "another one keeps the results of several refs apart",
    )
    ap.add_argument(
        "--report-only", action="store_true", help="summarise the last run, test nothing"
    )
    ap.add_argument(
        "--output",
        default=str(REPO / "tools" / "mutation.json"),
        help="summary JSON (default tools/mutation.json)",
    )
    ap.add_argument(
        "mutants",
        nargs="*",
        help="mutant names or globs to (re)test only these (implies --keep-cache)",
    )
    args = ap.parse_args()

    if args.workdir and not args.ref:
        ap.error("--workdir needs --ref (the working tree is tested in place)")
    workdir = (REPO / (args.workdir or ".mutation/tree")).resolve() if args.ref else REPO
    source = {"ref": args.ref, "commit": _git("rev-parse", args.ref or "HEAD")}
    if not args.ref:
        source["dirty_files"] = [
            line[3:]
            for line in _git("status", "--porcelain").splitlines()
            if line[3:].startswith(("sdeopt/", "tests/", "pyproject.toml"))
        ]
    keep = args.keep_cache or bool(args.mutants) or args.report_only
    env = dict(os.environ, **THREAD_ENV, MUTATION_WITHOUT=os.pathsep.join(args.without))
    inner = [sys.executable, str(Path(__file__).resolve()), "--inner"]

    wall = None
    if not args.report_only:
        if args.ref:
            _export(args.ref, workdir, keep)
        elif not keep and (workdir / "mutants").exists():
            shutil.rmtree(workdir / "mutants")
        cmd = [*inner, "run", "--max-children", str(args.max_children), *args.mutants]
        print(f"workdir: {workdir}\n$ {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        rc = subprocess.run(cmd, cwd=workdir, env=env).returncode
        wall = time.perf_counter() - start
        print(f"mutmut finished with exit code {rc} in {wall / 60:.1f} min", flush=True)
        if rc != 0:
            return rc

    raw = workdir / "mutants" / "mutation-report.json"
    subprocess.run([*inner, "report", str(raw)], cwd=workdir, env=env, check=True)
    report = json.loads(raw.read_text())
    summary = summarise(report)
    print()
    print_table(summary)

    survivors = {}
    for path, mutants in report["files"].items():
        for name, entry in mutants.items():
            if entry["status"] not in ("killed", "not checked"):
                survivors[name] = dict(entry, file=path)
    model_paths = {f"{DYNAMICS}/{n}" for n in MODEL_FILES}
    print(
        f"\n{sum(1 for s in survivors.values() if s['file'] in model_paths)} undetected mutants in "
        f"the model files; `cd {workdir} && mutmut show <name>` shows one:"
    )
    for name, s in survivors.items():
        if s["file"] in model_paths:
            print(f"  {s['status']:9s} {name}")

    import mutmut
    import torch

    out = {
        "issue": 11,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": "python tools/mutation.py"
        + (f" --ref {args.ref}" if args.ref else "")
        + (f" --workdir {args.workdir}" if args.workdir else "")
        + (f" --max-children {args.max_children}" if args.max_children != 2 else "")
        + "".join(f" --without {w}" for w in args.without)
        + "".join(f" '{m}'" for m in args.mutants),
        "source": source,
        "test_selection": report["test_selection"],
        "max_children": args.max_children,
        "cpu_count": os.cpu_count(),
        "wall_s": None if wall is None else round(wall, 1),
        "versions": {
            "mutmut": getattr(mutmut, "__version__", "?"),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "kill_rate_definition": "(killed + timeout) / mutants",
        "model_files": summary["model_files"],
        "solver_files": summary["solver_files"],
        "all": summary["all"],
        "per_file": summary["per_file"],
        "undetected": survivors,
    }
    if (
        wall is None and Path(args.output).exists()
    ):  # --report-only keeps the last run's time and command
        last = json.loads(Path(args.output).read_text())
        out.update(
            {k: last[k] for k in ("wall_s", "command", "date", "test_selection") if k in last}
        )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
