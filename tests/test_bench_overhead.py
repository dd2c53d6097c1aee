"""The overhead bench runs at a tiny size and writes its JSON (not a timed test)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_overhead_tiny(tmp_path, tiny_cache):
    out = tmp_path / "overhead.json"
    env = dict(os.environ, LMUData=str(tmp_path), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks/bench_overhead.py"),
            "--items",
            "3",
            "--block",
            "2",
            "--defenses",
            "EchoSafe",
            "ECSO",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    models = result["models"]
    assert result["items"] == 2 and set(models) == {"Base", "EchoSafe", "ECSO", "Base@B2", "EchoSafe@B2"}
    assert models["Base"]["inner_calls_per_item"] == {"generate": 1.0}
    echo = models["EchoSafe"]
    assert echo["inner_calls_per_item"]["start_batch"] == 1.0 and "generate" not in echo["inner_calls_per_item"]
    assert echo["inner_calls_per_item"]["extend_batch"] == 1.0  # the whole reflection form in one call
    assert set(echo["parts_median_s"]) == {"embed", "retrieve", "answer", "reflect", "store"}
    # micro-batched: one call per batch of two, so half a call per item
    assert models["EchoSafe@B2"]["inner_calls_per_item"]["start_batch"] == 0.5
    assert models["Base@B2"]["inner_calls_per_item"] == {"start_batch": 0.5}
    assert all(m["generated_tokens_per_item"] > 0 for m in models.values())
