"""The guard bench runs at a tiny size and writes its JSON (not a timed test)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_guard_tiny(tmp_path):
    out = tmp_path / "guard.json"
    cmd = [sys.executable, str(REPO / "benchmarks/bench_guard.py"), "--levels", "1", "4", "--rounds", "2"]
    cmd += ["--per-round", "1", "--latency", "0.01", "--out", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, cwd=REPO / "benchmarks", env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["levels"]) == {"concurrency_1", "concurrency_4"}
    for c, row in ((1, result["levels"]["concurrency_1"]), (4, result["levels"]["concurrency_4"])):
        assert row["requests_each"] == 2 * c  # rounds x per-round x concurrency, each side
        assert row["added_p50_ms"] == pytest.approx(row["guard_p50_ms"] - row["direct_p50_ms"], abs=0.01)
        assert 0 < row["retrieval_p50_ms"] <= row["guard_p50_ms"]
