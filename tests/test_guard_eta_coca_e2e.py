"""GuardFilter, ETA and CoCA around the tiny Qwen2-VL through both harnesses on the 12-item demo, micro-batched:
``run.py`` writes a score file per row, the report lists them with their cost per item, and lmms-eval runs the same
rows (its answers are the run.py answers: both harnesses drive one core loop)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from runs import NEEDS_LMMS_EVAL, lmms_eval_cmd, run_env

pytestmark = [pytest.mark.slow, NEEDS_LMMS_EVAL]

REPO = Path(__file__).resolve().parents[1]
DATA, TASK = "MMSafetyBenchPP_DemoMini", "mmsafetybenchpp_demo_mini"
ROWS = ["GuardFilter_TinyQwen2VL", "ETA_TinyQwen2VL", "CoCA_TinyQwen2VL"]
BATCH = "2"


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Error during evaluation" not in log, log[-5000:]


def _trace(folder: Path, model: str) -> list[dict]:
    path = folder / model / f"{model}_{DATA}_defense_trace.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_the_new_rows_run_in_both_harnesses_and_reach_the_report(tmp_path: Path, tiny_cache: Path) -> None:
    env = run_env(tmp_path, tiny_cache, HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "hf"))
    work = tmp_path / "vlmeval"
    run = [sys.executable, str(REPO / "run.py"), "--work-dir", str(work), "--data", DATA, "--model", *ROWS]
    _run([*run, "--judge", "rule", "--batch-size", BATCH], tmp_path, env)
    for model in ROWS:
        score = pd.read_csv(work / model / f"{model}_{DATA}_rule_score.csv")
        assert (score["category"] == "All").any() and score["n_unsafe"].sum() > 0
        trace = _trace(work, model)
        assert len(trace) == 12 and all(t["cost"] for t in trace)
    guard = _trace(work, "GuardFilter_TinyQwen2VL")
    assert {t["blocked"] for t in guard} >= {"input", None}  # the smoke thresholds let both outcomes happen
    assert {t["branch"] for t in _trace(work, "ETA_TinyQwen2VL")} == {"vanilla", "aligned"}

    _run([sys.executable, "-m", "vlmeval_echosafe.report", "--work-dir", str(work)], tmp_path, env)
    cost = pd.read_csv(work / "report" / "defense_cost.csv").set_index("model")
    assert set(ROWS) <= set(cost.index) and cost.loc[ROWS, "calls_per_item"].notna().all()
    assert cost.loc["GuardFilter_TinyQwen2VL", "blocked_input"] == sum(t["blocked"] == "input" for t in guard)
    assert "## Defense cost" in (work / "report" / "leaderboard.md").read_text()

    for model in ROWS:
        out = tmp_path / f"lmms_{model}"
        args = f"name={model},work_dir={out / 'work'},image_dir={tmp_path / 'lmms_img'}"
        _run(lmms_eval_cmd(TASK, args, out, BATCH), tmp_path, env)
        items = pd.read_csv(
            out / "mmsafetybenchpp" / f"{DATA}_rule_items.csv", dtype={"index": str}, keep_default_na=False
        )
        assert len(items) == 12 and len(_trace(out / "work", model)) == 12
        if model.startswith("CoCA"):  # deterministic greedy decoding: the same answers in both harnesses
            pred = pd.read_csv(
                work / model / f"{model}_{DATA}.tsv", sep="\t", dtype={"index": str}, keep_default_na=False
            )
            by_index = dict(zip(pred["index"], pred["prediction"], strict=True))
            assert all(by_index[i] == p for i, p in zip(items["index"], items["prediction"], strict=True))
