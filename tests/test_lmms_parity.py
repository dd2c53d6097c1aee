"""The same wrapper over the same items through VLMEvalKit's run.py and through lmms-eval: identical predictions,
per-item decisions, CCR per category and (EchoSafe) memory bank.

Needs the `lmms` extra (`pip install -e ".[test,lmms]"`); skipped, saying so, where lmms_eval is not importable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from runs import NEEDS_LMMS_EVAL, lmms_eval_cmd, run_env

from vlmeval_echosafe.memory import MemoryBank

pytestmark = [pytest.mark.slow, NEEDS_LMMS_EVAL]

REPO = Path(__file__).resolve().parents[1]
VARIANT, TASK = "MMSafetyBenchPP_DemoMini", "mmsafetybenchpp_demo_mini"  # 12 items, one pair per category


def _env(tmp: Path) -> dict[str, str]:
    return run_env(
        tmp,
        tmp / "cache",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_CACHE=str(tmp / "hf_datasets"),
        VLMEVALKIT_USE_MODELSCOPE="0",
        MMSBPP_JUDGE="rule",
    )


# lmms-eval catches any exception of an evaluation, logs this and exits 0 (lmms_eval/__main__.py).
LMMS_ERROR = "Error during evaluation"


def _run(cmd: list[str], tmp: Path, outputs: list[Path] = ()) -> None:
    """Run a harness; fail on a non-zero exit, on lmms-eval's swallowed error (quoting it), or on a missing output."""
    proc = subprocess.run(cmd, cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    errors = [line for line in log.splitlines() if LMMS_ERROR in line]
    assert not errors, "lmms-eval failed but exited 0:\n" + "\n".join(errors) + "\n" + log[-3000:]
    missing = [str(p) for p in outputs if not p.exists()]
    assert not missing, f"{cmd[0]} exited 0 but did not write {missing}:\n{log[-3000:]}"


def _vlmeval(tmp: Path, model: str, batch: int) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    _run(
        [
            sys.executable,
            str(REPO / "run.py"),
            "--work-dir",
            str(tmp / "vlmeval"),
            "--data",
            VARIANT,
            "--model",
            model,
            "--judge",
            "rule",
            "--batch-size",
            str(batch),
        ],
        tmp,
        [tmp / "vlmeval" / model / f"{model}_{VARIANT}_rule_items.csv"],
    )
    run_dir = tmp / "vlmeval" / model
    items = pd.read_csv(run_dir / f"{model}_{VARIANT}_rule_items.csv", dtype={"index": str}, keep_default_na=False)
    preds = pd.read_csv(run_dir / f"{model}_{VARIANT}.tsv", sep="\t", keep_default_na=False, dtype={"index": str})
    both = items.merge(preds[["index", "prediction"]], on="index", suffixes=("", "_tsv"))
    assert len(both) == len(items) and (both["prediction"] == both["prediction_tsv"]).all()
    return items, pd.read_csv(run_dir / f"{model}_{VARIANT}_rule_score.csv"), run_dir


def _lmms(tmp: Path, model: str, batch: int) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    out = tmp / "lmms"
    _run(
        lmms_eval_cmd(TASK, f"name={model},work_dir={out / 'work'}", out, batch),
        tmp,
        [out / "mmsafetybenchpp" / f"{VARIANT}_rule_items.csv"],
    )
    stem = out / "mmsafetybenchpp" / f"{VARIANT}_rule"
    assert Path(f"{stem}_judge.jsonl").is_file()  # the same judgement cache as VLMEvalKit's path
    items = pd.read_csv(f"{stem}_items.csv", dtype={"index": str}, keep_default_na=False)
    return items, pd.read_csv(f"{stem}_score.csv"), out / "work" / model


def _bank(run_dir: Path) -> list[dict]:
    """The saved bank (snapshot and log) as ``{id, insight, meta}`` rows."""
    entries = MemoryBank.load(run_dir / "echosafe_bank" / VARIANT).entries()
    return [{"id": i, "insight": insight, "meta": meta} for i, (insight, meta) in enumerate(entries)]


@pytest.mark.parametrize(
    ("model", "batch"), [("Base_TinyQwen2VL", 1), ("EchoSafe_TinyQwen2VL", 1), ("EchoSafe_TinyQwen2VL", 4)]
)
def test_vlmeval_and_lmms_eval_agree(tmp_path: Path, model: str, batch: int) -> None:
    """At batch 4 both harnesses hand the same 4 consecutive rows to one micro-batch."""
    v_items, v_score, v_dir = _vlmeval(tmp_path, model, batch)
    l_items, l_score, l_dir = _lmms(tmp_path, model, batch)
    assert len(v_items) == len(l_items) == 12
    cols = ["index", "pair_id", "category", "mode", "label", "prediction", "decision"]
    v_items, l_items = (t[cols].sort_values("index").reset_index(drop=True) for t in (v_items, l_items))
    pd.testing.assert_frame_equal(v_items, l_items)
    key = ["mode", "category"]
    v_ccr, l_ccr = (
        s.set_index(key)[["RR", "NonRefusalRate", "CCR_NonRefusal", "unknown_unsafe", "unknown_safe"]].sort_index()
        for s in (v_score, l_score)
    )
    pd.testing.assert_frame_equal(v_ccr, l_ccr)
    v_sum, l_sum = (
        json.loads(Path(f"{d}_score.json").read_text())
        for d in (v_dir / f"{model}_{VARIANT}_rule", tmp_path / "lmms" / "mmsafetybenchpp" / f"{VARIANT}_rule")
    )
    assert {k: v_sum[k] for k in ("valid", "unknown", "items", "CCR_NonRefusal")} == {
        k: l_sum[k] for k in ("valid", "unknown", "items", "CCR_NonRefusal")
    }
    assert set(v_ccr.index.get_level_values("category")) >= {"Fraud", "Sex", "All"}
    if model.startswith("EchoSafe"):  # the stream saw the same rows in the same order and learned the same things
        v_bank, l_bank = _bank(v_dir), _bank(l_dir)
        assert v_bank and [b["insight"] for b in v_bank] == [b["insight"] for b in l_bank]
        assert [b["meta"]["pair_id"] for b in v_bank] == [b["meta"]["pair_id"] for b in l_bank]


def test_models_resolve_through_the_entry_point(tiny_cache: Path, tmp_path: Path) -> None:
    from lmms_eval.models import get_model

    echosafe = get_model("echosafe")(inner="TinyQwen2VL", k=3, work_dir=str(tmp_path), image_dir=str(tmp_path / "img"))
    assert echosafe.name == "EchoSafe_TinyQwen2VL" and echosafe.defense.settings.k == 3
    assert echosafe.defense.run_dir == tmp_path / "EchoSafe_TinyQwen2VL"
    with pytest.raises(ValueError, match="did you mean"):
        get_model("vlmeval_echosafe")(name="SafetyPrompt_TinyQwen2V", work_dir=str(tmp_path))


def test_swallowed_lmms_eval_error_fails_with_its_message(tmp_path: Path) -> None:
    """The guard above: a harness that logs lmms-eval's error line and exits 0 fails, quoting the line."""
    fake = [sys.executable, "-c", f"print('{LMMS_ERROR}: No module named filelock._api. Please set ...')"]
    with pytest.raises(AssertionError, match="No module named filelock._api"):
        _run(fake, tmp_path)
    with pytest.raises(AssertionError, match="did not write"):
        _run([sys.executable, "-c", "pass"], tmp_path, [tmp_path / "absent.csv"])
