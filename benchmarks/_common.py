"""Helpers shared by the benchmark scripts: timing, machine description, JSON output."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def sync(device: str) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so that wall-clock times are honest."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str = "cpu"):
    """(seconds, result) of one call."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def interleaved_best(fns: dict, repeats: int, device: str, warmup: bool = True) -> dict:
    """name -> the fastest of ``repeats`` calls, the functions taking turns round by round.

    Taking turns keeps a slow spell of a shared machine from landing on one function only;
    one untimed warm-up call of each comes first.
    """
    if warmup:
        for fn in fns.values():
            fn()
    best = {name: math.inf for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn, device)[0])
    return best


def loglog_slope(xs, ys) -> float:
    """Slope of log y against log x over the larger half of the points (at least two of them):
    1 for a cost linear in x, below 1 while fixed overheads still count, above 1 super-linear."""
    import numpy as np

    xs, ys = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    keep = max(2, -(-len(xs) // 2))
    if len(xs) < 2:
        return math.nan
    return float(np.polyfit(xs[-keep:], ys[-keep:], 1)[0])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    """Where and when a benchmark ran."""
    info = {
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def describe(info: dict) -> str:
    where = (
        info.get("gpu")
        or f"{info['cpu']} ({info['cpu_count']} cores, {info['threads']} torch thread(s))"
    )
    return f"{where}, torch {info['torch']}, {info['date']}, load average {info['load_average'][0]:.2f}"


def write(result: dict, out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {out}")
