"""The bad-input battery of issue 12 (tools/battery.py, 342 inputs in about 40 s): every bad input
is refused with a ValueError naming it, every tricky valid one gives the right result; no silent
acceptance, unclear message, traceback or hang."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_battery_finds_nothing(tmp_path):
    out = tmp_path / "battery.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "battery.py"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    bad = {
        cat: {k: v for k, v in counts.items() if k in ("unclear", "silent", "crash", "hang") and v}
        for cat, counts in report["counts"].items()
    }
    assert not any(bad.values()), (bad, proc.stdout[-4000:])
    assert report["cases"] >= 300
