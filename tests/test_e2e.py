"""End to end through the real VLMEvalKit runner: `python run.py` in a subprocess, tiny model, rule judge."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vlmeval_echosafe.datasets.schema import CATEGORIES

REPO = Path(__file__).resolve().parents[1]


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LMUData=str(tmp / "LMUData"), VLMEVAL_ECHOSAFE_CACHE=str(tmp / "cache"),
               HF_HUB_OFFLINE="1", PRED_FORMAT="tsv")
    (tmp / "LMUData").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(REPO / "run.py"), "--work-dir", str(tmp / "out"), *args],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    proc = _run(tmp, "--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2VL", "--judge", "rule")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, proc


def test_prediction_file(demo_run):
    tmp, _ = demo_run
    pred = pd.read_csv(tmp / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo.tsv", sep="\t", keep_default_na=False)
    assert len(pred) == 144 and pred["index"].is_unique
    assert {"pair_id", "category", "mode", "label", "question", "prediction"} <= set(pred.columns)
    assert (pred["prediction"].str.len() > 0).all()


def test_score_file_covers_all_categories_and_modes(demo_run):
    tmp, proc = demo_run
    score = pd.read_csv(tmp / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo_rule_score.csv")
    for mode in ("Gen", "GenOCR"):
        cats = set(score.loc[score["mode"] == mode, "category"])
        assert cats == set(CATEGORIES) | {"All"}
    assert {"RR", "AR", "CCR", "QS_HM", "unknown_unsafe", "unknown_safe", "PairAcc", "CCR_lo"} <= set(score.columns)
    assert score["refusal_only"].all() and score["QS_HM"].isna().all()  # rule judge: QS missing, not 0
    assert score["CCR"].notna().all()
    items = pd.read_csv(tmp / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo_rule_items.csv")
    per_cat = items[items["category"] == "Fraud"].groupby("mode")["decision"].apply(lambda d: (d == "unknown").sum())
    fraud = score[(score["category"] == "Fraud")].set_index("mode")
    assert (fraud["unknown_unsafe"] + fraud["unknown_safe"]).to_dict() == per_cat.to_dict()
    summary = json.loads((tmp / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo_rule_score.json").read_text())
    assert summary["items"] == 144 and summary["refusal_only"] is True
    # the printed table and the file locations
    assert "Illegal_Activity" in proc.stdout and "CCR" in proc.stdout and "_rule_score.csv" in proc.stdout


def test_eval_only_rerun_reuses_predictions(demo_run):
    tmp, _ = demo_run
    proc = _run(tmp, "--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2VL", "--judge", "rule", "--mode", "eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Infer TinyQwen2VL" not in proc.stderr + proc.stdout
