"""Record what every registered row writes on the 12-item demo, through both harnesses, to compare code versions.

``python tests/golden.py OUT.json`` runs ``run.py`` (every defense row at batch 1, EchoSafe and its pipelined form
at batch 4) and lmms-eval (EchoSafe and a baseline) on ``MMSafetyBenchPP_DemoMini`` with the tiny Qwen2-VL, and
writes each row's predictions, bank entries (in order) and trace lines (timings and temporary paths removed).
``tests/test_golden.py`` compares a fresh recording with ``tests/data/golden_demomini.json``, so a refactor that
changes any output fails; an intended change re-records the file with this command and says why in its commit.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from runs import lmms_eval_cmd, run_env  # noqa: E402

DATA, TASK = "MMSafetyBenchPP_DemoMini", "mmsafetybenchpp_demo_mini"
INNER = "TinyQwen2VL"
ROWS_B1 = [
    "Base",
    "EchoSafe",
    "EchoSafe-NoRetrieval",
    "EchoSafe-NoReflection",
    "EchoSafe-RandomMemory",
    "EchoSafe-Paper",
    "EchoSafe-NoSafetyInstruction",
    "EchoSafe-k1",
    "EchoSafe-k3",
    "EchoSafe-k10",
    "SafetyPrompt",
    "FigStep",
    "AdaShield-S",
    "AdaShield-A",
    "ECSO",
]
ROWS_B4 = ["Base", "EchoSafe", "EchoSafe-RandomMemory"]
LMMS_ROWS = [("EchoSafe", 4), ("ECSO", 1)]
VOLATILE = ("timings", "seconds")


def _clean(value: Any, tmp: str) -> Any:
    """A trace value with the run's temporary folder replaced and timings dropped."""
    if isinstance(value, dict):
        return {k: _clean(v, tmp) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_clean(v, tmp) for v in value]
    if isinstance(value, str):
        return re.sub(r"/[^\s'\"]*?/(LMUData|lmms_img)/", r"<tmp>/\1/", value.replace(tmp, "<tmp>"))
    return value


def collect(run_dir: Path, model: str, tmp: str, predictions: Path | None) -> dict[str, Any]:
    """Predictions (by row index), bank entries in order, and trace lines of one row's run folder."""
    from vlmeval_echosafe.memory import MemoryBank

    out: dict[str, Any] = {}
    if predictions is not None:
        pred = pd.read_csv(predictions, sep="\t", keep_default_na=False, dtype={"index": str})
        out["predictions"] = dict(zip(pred["index"], pred["prediction"], strict=True))
    bank = run_dir / "echosafe_bank" / DATA
    if MemoryBank.exists(bank):
        out["bank"] = [[_clean(i, tmp), _clean(m, tmp)] for i, m in MemoryBank.load(bank).entries()]
    for trace in sorted(run_dir.glob(f"{model}_{DATA}_*_trace.jsonl")):
        kind = trace.name[len(f"{model}_{DATA}_") : -len("_trace.jsonl")]
        out[f"trace_{kind}"] = [_clean(json.loads(x), tmp) for x in trace.read_text().splitlines() if x.strip()]
    return out


def _run(cmd: list[str], tmp: Path) -> None:
    env = run_env(tmp, tmp / "cache", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp / "hf"), MMSBPP_JUDGE="rule")
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=3000)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Error during evaluation" in log:
        raise RuntimeError(f"{cmd[:4]} failed:\n{log[-5000:]}")


def record(tmp: Path, rows_b1: list[str] = ROWS_B1, rows_b4: list[str] = ROWS_B4, lmms: bool = True) -> dict:
    """Run the harnesses in ``tmp`` and return every row's outputs, keyed ``<harness>/<row>@B<n>``."""
    out: dict[str, Any] = {}
    for batch, rows in ((1, rows_b1), (4, rows_b4)):
        if not rows:
            continue
        work = tmp / f"vlmeval_b{batch}"
        models = [f"{r}_{INNER}" for r in rows]
        _run(
            [
                sys.executable,
                str(REPO / "run.py"),
                "--work-dir",
                str(work),
                "--data",
                DATA,
                "--model",
                *models,
                "--judge",
                "rule",
                "--batch-size",
                str(batch),
                "--mode",
                "infer",
            ],
            tmp,
        )
        for row, model in zip(rows, models, strict=True):
            out[f"vlmeval/{row}@B{batch}"] = collect(
                work / model, model, str(tmp), work / model / f"{model}_{DATA}.tsv"
            )
    for row, batch in lmms_rows(lmms):
        model, work = f"{row}_{INNER}", tmp / f"lmms_{row}_b{batch}"
        args = f"name={model},work_dir={work / 'work'},image_dir={tmp / 'lmms_img'}"
        _run(lmms_eval_cmd(TASK, args, work, batch), tmp)
        items = pd.read_csv(
            work / "mmsafetybenchpp" / f"{DATA}_rule_items.csv", dtype={"index": str}, keep_default_na=False
        )
        got = collect(work / "work" / model, model, str(tmp), None)
        got["predictions"] = dict(zip(items["index"], items["prediction"], strict=True))
        out[f"lmms/{row}@B{batch}"] = got
    return out


def lmms_rows(on: bool) -> list[tuple[str, int]]:
    return LMMS_ROWS if on else []


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="golden_") as tmp:
        result = record(Path(tmp))
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {sys.argv[1]}: {len(result)} runs")
