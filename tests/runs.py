"""Helpers for tests that run ``run.py`` (or lmms-eval) as a subprocess and read what it wrote."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from vlmeval_echosafe.memory import MemoryBank

REPO = Path(__file__).resolve().parents[1]


def required_in_ci(missing: bool, reason: str) -> pytest.MarkDecorator:
    """Skip when ``missing``, but never in CI (``CI`` set: .ci/run installs everything the README names, Chromium
    included), where the test runs and fails loudly rather than hiding the path it covers."""
    return pytest.mark.skipif(missing and not os.environ.get("CI"), reason=reason)


NEEDS_LMMS_EVAL = required_in_ci(
    importlib.util.find_spec("lmms_eval") is None,
    "lmms-eval is not installed: pip install -e '.[lmms]' (docs/lmms_eval.md)",
)


def lmms_eval_cmd(task: str, model_args: str, output: Path, batch: int | str) -> list[str]:
    """lmms-eval (this environment's console script) running the plugin's ``vlmeval_echosafe`` model on ``task``
    from the packaged task configs, ``batch`` requests per call."""
    cli = Path(sys.executable).with_name("lmms-eval")
    return [
        str(cli), "eval", "--model", "vlmeval_echosafe", "--model_args", model_args, "--tasks", task,
        "--include_path", str(REPO / "task_configs" / "lmms_eval"), "--output_path", str(output),
        "--batch_size", str(batch),
    ]  # fmt: skip


def run_env(tmp: Path, cache: Path, **extra: str) -> dict[str, str]:
    """Offline environment for a subprocess run with its own LMUData under ``tmp`` and the tiny models' ``cache``."""
    (tmp / "LMUData").mkdir(exist_ok=True)
    return dict(
        os.environ,
        LMUData=str(tmp / "LMUData"),
        VLMEVAL_ECHOSAFE_CACHE=str(cache),
        HF_HUB_OFFLINE="1",
        PRED_FORMAT="tsv",
        **extra,
    )


def run_outputs(run_dir: Path, data: str) -> tuple[list[str], list[list], list[dict]]:
    """An EchoSafe run's predictions, bank entries (in order) and trace lines without their timings; the model
    name is the run folder's."""
    name = run_dir.name
    pred = pd.read_csv(run_dir / f"{name}_{data}.tsv", sep="\t", keep_default_na=False)
    entries = [list(e) for e in MemoryBank.load(run_dir / "echosafe_bank" / data).entries()]
    trace = [json.loads(x) for x in (run_dir / f"{name}_{data}_echosafe_trace.jsonl").read_text().splitlines()]
    for t in trace:
        t.pop("timings")
    return pred["prediction"].tolist(), entries, trace


PATH_LABELS = ("predictions", "scores", "bank", "trace")


def closing_paths(stdout: str, cwd: Path) -> dict[str, Path]:
    """The paths a run ends with, after checking that its console output ends with the per-category table (the
    mean row ``All`` of the last mode) followed by exactly the labelled paths, all in one style (relative to the
    working folder) and all existing."""
    lines = stdout.rstrip().splitlines()
    tail = lines[-len(PATH_LABELS) :]
    labels = [line.split(":", 1)[0] for line in tail]
    assert labels == list(PATH_LABELS), "\n".join(lines[-12:])
    assert lines[-len(PATH_LABELS) - 1].split()[1:2] == ["All"], "\n".join(lines[-12:])  # the table's last row
    paths = {label: line.split(":", 1)[1].strip() for label, line in zip(labels, tail, strict=True)}
    assert not any(p.startswith(("/", "./")) for p in paths.values()), paths
    assert all((cwd / p).exists() for p in paths.values()), paths
    return {label: cwd / p for label, p in paths.items()}


def console_problems(output: str) -> list[str]:
    """Lines a clean run must not print: ERROR records and tracebacks."""
    return [line for line in output.splitlines() if "ERROR" in line or "Traceback" in line]
