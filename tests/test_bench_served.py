"""The served / torchrun bench runs at a tiny size and writes its JSON (not a timed test)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_served_tiny(tmp_path, tiny_cache):
    out = tmp_path / "served.json"
    env = dict(os.environ, LMUData=str(tmp_path), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(REPO / "benchmarks/bench_served.py"), "--items", "2", "--sizes", "1", "2"]
    cmd += ["--repeats", "1", "--torchrun-items", "2", "--torchrun-batch", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for endpoint in ("transformers_serve", "fixed_latency_endpoint"):
        runs = result[endpoint]["runs"]
        assert set(runs) == {f"{k} B={b}" for k in ("Base", "EchoSafe") for b in (1, 2)}
        assert all(r["items_per_s"] > 0 and r["failed_calls_last_run"] == 0 for r in runs.values())
    assert result["transformers_serve"]["decoding"] == "free"  # it accepts response_format and ignores it
    assert set(result["torchrun"]["runs"]) == {"W=1 B=1", "W=2 B=1", "W=1 B=2"}
