"""The batching bench runs at a tiny size and writes its JSON (not a timed test)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_batching_tiny(tmp_path, tiny_cache):
    out = tmp_path / "batching.json"
    env = dict(os.environ, LMUData=str(tmp_path), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(REPO / "benchmarks/bench_batching.py"), "--items", "4", "--sizes", "1", "2"]
    proc = subprocess.run(
        [*cmd, "--repeats", "1", "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {f"{k} {c}" for k in ("Base", "EchoSafe") for c in ("host loop", "B=1", "B=2")}
    # batched decoding of the bare model changes no prediction; B = 1 EchoSafe is the sequential algorithm
    assert all(runs[f"Base {c}"]["predictions_equal_to_host_loop"] == "4/4" for c in ("B=1", "B=2"))
    assert runs["EchoSafe B=1"]["predictions_equal_to_host_loop"] == "4/4"
    assert all(r["items_per_s"] > 0 and r["generated_tokens_per_item"] > 0 for r in runs.values())
