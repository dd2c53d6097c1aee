"""Compare preset: Base + every baseline + EchoSafe around one inner model, in one launcher run, side by side.

    python -m vlmeval_echosafe.compare --inner TinyQwen2VL --data MMSafetyBenchPP_Demo --judge rule [--work-dir DIR]

Unknown flags go to ``run.py`` unchanged (e.g. ``--reuse``, ``--judge-base-url``). The table (CCR / RR / AR per
model and image mode, the mean over categories; under the rule judge CCR_NonRefusal / RR / NonRefusalRate, see
docs/metrics.md) is read from the ``*_score.csv`` files the dataset writes and saved as
``<work-dir>/compare_<inner>_<data>_<judge>.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

DEFENSES = ("Base", "SafetyPrompt", "FigStep", "AdaShield-S", "AdaShield-A", "ECSO", "EchoSafe")


def columns(refusal_only: bool) -> tuple[str, str, str]:
    """The headline columns under a judge kind (metrics.py names)."""
    from .metrics import ccr_name, safe_rate_name

    return ccr_name(refusal_only), "RR", safe_rate_name(refusal_only)


def model_names(inner: str, defenses: list[str]) -> list[str]:
    return [f"{d}_{inner}" for d in defenses]


def side_by_side(work_dir: str | Path, models: list[str], data: str, judge: str) -> pd.DataFrame:
    """One row per model × mode with the category-mean CCR / RR / AR (their non-refusal names under the rule
    judge); a model without a score file is a row of NaN (marked ``missing``), never dropped."""
    from vlmeval.smp import get_pred_file_path

    from .datasets.mmsafetybenchpp import output_paths

    cols = columns(judge == "rule")  # the only refusal-only judge (judges/__init__.py)
    rows = []
    for m in models:
        pred = get_pred_file_path(os.path.join(str(work_dir), m), m, data, use_env_format=True)
        score = output_paths(pred, judge)["score"]
        if not score.exists():
            rows.append({"model": m, "mode": None, **{c: float("nan") for c in cols}, "score_file": "missing"})
            continue
        table = pd.read_csv(score)
        for _, r in table[table["category"] == "All"].iterrows():
            rows.append({"model": m, "mode": r["mode"], **{c: r[c] for c in cols}, "score_file": str(score)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inner", required=True, help="inner model name, e.g. TinyQwen2VL or Qwen2.5-VL-7B")
    parser.add_argument("--data", default="MMSafetyBenchPP_Demo")
    parser.add_argument("--judge", default="rule")
    parser.add_argument("--work-dir", default="./outputs")
    parser.add_argument("--defenses", nargs="+", default=list(DEFENSES), help=f"default: {' '.join(DEFENSES)}")
    args, rest = parser.parse_known_args(argv)
    models = model_names(args.inner, args.defenses)
    from . import launcher

    code = launcher.main(
        ["--data", args.data, "--model", *models, "--judge", args.judge, "--work-dir", args.work_dir, *rest]
    )
    table = side_by_side(args.work_dir, models, args.data, args.judge)
    out = Path(args.work_dir) / f"compare_{args.inner}_{args.data}_{args.judge.replace('/', '_')}.csv"
    table.to_csv(out, index=False)
    from tabulate import tabulate

    print(tabulate(table.drop(columns="score_file"), headers="keys", showindex=False, floatfmt=".1f", missingval="-"))
    print(f"side-by-side table: {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
