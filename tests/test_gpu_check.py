"""benchmarks/gpu_check.sh: its dry run executes every command at a toy size on whatever device there is (here the
CPU), so the script is known to work the day a GPU machine runs it for real."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks/gpu_check.sh"


def test_script_parses_and_refuses_unknown_arguments():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    proc = subprocess.run(["bash", str(SCRIPT), "--now"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


@pytest.mark.slow
def test_dry_run_writes_every_result(tmp_path, tiny_cache):
    out = tmp_path / "results"
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out), LMUData=str(tmp_path), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == [
        "batching_dry_tiny.json",
        "gpu_ratio_dry.json",
        "overhead_dry_8.json",
        "reflection_dry_8.json",
        "retrieval_dry.json",
        "roofline_dry.json",
    ]
    ratio = json.loads((out / "gpu_ratio_dry.json").read_text())
    assert ratio["comparable"] is False  # a tiny model on no GPU: the estimate is not checked by it
    assert ratio["measured"]["ratios"]["staleness_0"] > 0 and ratio["estimate"]["ratios"]["staleness_0"] > 1
    overhead = json.loads((out / "overhead_dry_8.json").read_text())
    assert overhead["answer_tokens"] == 8 and "EchoSafe@B2" in overhead["models"]
    assert json.loads((out / "retrieval_dry.json").read_text())["config"]["gpu_requested"] is True
