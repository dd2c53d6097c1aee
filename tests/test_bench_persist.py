"""The persistence benchmark runs end to end at toy sizes and writes the JSON the docs' table is built from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_persist_tiny(tmp_path) -> None:
    out = tmp_path / "persist.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_persist.py"),
            *("--sizes", "200", "800", "--dim", "64", "--inserts", "5", "--old-inserts", "3", "--grow", "40"),
            *("--tmp", str(tmp_path), "--out", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    small, large = report["results"]
    assert (small["n"], large["n"]) == (200, 800)
    assert small["old"]["saves"] == 3 and small["new"]["saves"] == 5 and report["grow"]["n"] == 40
    # A full snapshot per save grows with the bank; an append does not.
    assert large["old"]["bytes_per_insight"] > 3 * small["old"]["bytes_per_insight"]
    assert large["new"]["bytes_per_insight"] < 1.1 * small["new"]["bytes_per_insight"]
    assert large["old_over_new_bytes"] > 100
    assert list(tmp_path.iterdir()) == [out]  # the banks are cleaned up
