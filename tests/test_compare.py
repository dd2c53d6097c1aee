"""The compare preset end to end: Base + every baseline on the tiny Qwen2-VL, through the real runner (one
subprocess, the 12-item MMSafetyBenchPP_DemoMini variant), and the side-by-side table it writes. EchoSafe is left
to test_e2e.py (its reflection turns make it the slowest row); `compare` includes it by default."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from vlmeval_echosafe.compare import DEFENSES

BASELINES = [d for d in DEFENSES if d != "EchoSafe"]

REPO = Path(__file__).resolve().parents[1]
DATA = "MMSafetyBenchPP_DemoMini"


def test_compare_preset_runs_every_defense(tmp_path, tiny_cache):
    env = dict(
        os.environ,
        LMUData=str(tmp_path / "LMUData"),
        VLMEVAL_ECHOSAFE_CACHE=str(tiny_cache),
        HF_HUB_OFFLINE="1",
        PRED_FORMAT="tsv",
    )
    (tmp_path / "LMUData").mkdir()
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlmeval_echosafe.compare",
            "--inner",
            "TinyQwen2VL",
            "--data",
            DATA,
            "--judge",
            "rule",
            "--work-dir",
            str(out),
            "--defenses",
            *BASELINES,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = pd.read_csv(out / f"compare_TinyQwen2VL_{DATA}_rule.csv")
    models = [f"{d}_TinyQwen2VL" for d in BASELINES]
    assert table["model"].tolist() == models and (table["mode"] == "Gen").all()
    assert (table["score_file"] != "missing").all()
    for m, ccr in zip(table["model"], table["CCR_NonRefusal"], strict=True):
        # the category mean is missing only where a category's every item of a label was judged unknown (an empty
        # answer of a random-weight model, say): counted, never folded into a rate
        score = pd.read_csv(out / m / f"{m}_{DATA}_rule_score.csv")
        cats = score[score["category"] != "All"]
        unknown = ((cats["unknown_unsafe"] == cats["n_unsafe"]) | (cats["unknown_safe"] == cats["n_safe"])).any()
        assert pd.notna(ccr) or unknown, m
    assert not {"AR", "CCR"} & set(table.columns)  # the rule judge's rates under their non-refusal names
    for m in models:
        score = pd.read_csv(out / m / f"{m}_{DATA}_rule_score.csv")
        assert set(score["mode"]) == {"Gen"} and (score.loc[score["category"] != "All", "n_unsafe"] == 1).all()
    for d in BASELINES[1:]:  # every baseline leaves one trace line per item
        m = f"{d}_TinyQwen2VL"
        trace = [json.loads(x) for x in (out / m / f"{m}_{DATA}_defense_trace.jsonl").read_text().splitlines()]
        assert len(trace) == 12 and all(t["row_index"] is not None and t["prompt"] for t in trace)
    ecso = [
        json.loads(x)
        for x in (out / "ECSO_TinyQwen2VL" / f"ECSO_TinyQwen2VL_{DATA}_defense_trace.jsonl").read_text().splitlines()
    ]
    assert {t["branch"] for t in ecso} <= {"harmless", "harmful"} and all("check_reply" in t for t in ecso)
    assert "side-by-side table" in proc.stdout
