"""Compare preset: Base + every baseline + EchoSafe around one inner model, in one launcher run, side by side.

    python -m vlmeval_echosafe.compare --inner TinyQwen2VL --data MMSafetyBenchPP_Demo --judge rule [--work-dir DIR]
    python -m vlmeval_echosafe.compare --inner TinyQwen2VL --defenses EchoSafe --ablations --orders 3

``--ablations`` adds every EchoSafe ablation row of ``wrappers/defenses.yaml`` (``EchoSafe-*``). ``--orders N``
runs everything N times, with the items in N seeded shuffles (seeds 0..N-1; each in ``<work-dir>/order-<seed>``),
and adds the mean ± sd of CCR across orders: EchoSafe's memory makes results depend on the stream order, which
the pair-bootstrap interval of one run does not show. Unknown flags go to ``run.py`` unchanged (e.g. ``--reuse``,
``--judge-base-url``, ``--batch-size``). The table (CCR / RR / AR per model, image mode and order, the mean over
categories; under the rule judge CCR_NonRefusal / RR / NonRefusalRate, see docs/metrics.md) is read from the
``*_score.csv`` files the dataset writes and saved as
``<work-dir>/compare_<inner>_<data>_<judge>.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

DEFENSES = (
    "Base",
    "SafetyPrompt",
    "FigStep",
    "AdaShield-S",
    "AdaShield-A",
    "ECSO",
    "GuardFilter",
    "ETA",
    "CoCA",
    "EchoSafe",
)
# ETA and CoCA read next-token logits: only an inner model the plugin runs with transformers has them.
LOGIT_DEFENSES = ("ETA", "CoCA")


def columns(refusal_only: bool) -> tuple[str, str, str]:
    """The headline columns under a judge kind (metrics.py names)."""
    from .metrics import ccr_name, safe_rate_name

    return ccr_name(refusal_only), "RR", safe_rate_name(refusal_only)


def model_names(inner: str, defenses: list[str]) -> list[str]:
    return [f"{d}_{inner}" for d in defenses]


def default_defenses(inner: str) -> list[str]:
    """Every defense of the preset that can run around ``inner``."""
    from .catalog import resolve

    row = resolve(f"Base_{inner}")
    logits = row.inner_spec is not None and row.inner_spec.get("class") == "TransformersVLM"
    return [d for d in DEFENSES if logits or d not in LOGIT_DEFENSES]


def ablation_names() -> list[str]:
    """The EchoSafe ablation rows declared in wrappers/defenses.yaml, in file order."""
    from .catalog import defense_entries

    return [name for name in defense_entries()[0] if name.startswith("EchoSafe-")]


def side_by_side(work_dir: str | Path, models: list[str], data: str, judge: str) -> pd.DataFrame:
    """One row per model × mode with the category-mean CCR / RR / AR (their non-refusal names under the rule
    judge); a model without a score file is a row of NaN (marked ``missing``), never dropped."""
    from vlmeval.smp import get_pred_file_path

    from .datasets.mmsafetybenchpp import output_paths
    from .report.defense_cost import trace_cost

    cols = columns(judge == "rule")  # the only refusal-only judge (judges/__init__.py)
    rows = []
    for m in models:
        pred = get_pred_file_path(os.path.join(str(work_dir), m), m, data, use_env_format=True)
        score = output_paths(pred, judge)["score"]
        trace = Path(work_dir) / m / f"{m}_{data}_defense_trace.jsonl"
        cost = {k: v for k, v in trace_cost(trace).items() if k.endswith("_per_item")} if trace.exists() else {}
        if not score.exists():
            rows.append({"model": m, "mode": None, **{c: float("nan") for c in cols}, **cost, "score_file": "missing"})
            continue
        table = pd.read_csv(score)
        for _, r in table[table["category"] == "All"].iterrows():
            rows.append({"model": m, "mode": r["mode"], **{c: r[c] for c in cols}, **cost, "score_file": str(score)})
    return pd.DataFrame(rows)


def across_orders(table: pd.DataFrame, judge: str) -> pd.DataFrame:
    """Mean and sample sd of the headline columns over the orders, per model × mode (NaN when a run is missing)."""
    grouped = table.groupby(["model", "mode"], sort=False, dropna=False)[list(columns(judge == "rule"))]
    stats = grouped.agg(["mean", "std", "count"])
    stats.columns = [f"{c}_{s}" for c, s in stats.columns]
    return stats.reset_index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inner", required=True, help="inner model name, e.g. TinyQwen2VL or Qwen2.5-VL-7B")
    parser.add_argument("--data", default="MMSafetyBenchPP_Demo")
    parser.add_argument("--judge", default="rule")
    parser.add_argument("--work-dir", default="./outputs")
    parser.add_argument(
        "--defenses",
        nargs="+",
        default=None,
        help=f"default: {' '.join(DEFENSES)} ({', '.join(LOGIT_DEFENSES)}: plugin transformers models only)",
    )
    parser.add_argument("--ablations", action="store_true", help="add every EchoSafe-* row of wrappers/defenses.yaml")
    parser.add_argument("--orders", type=int, default=0, help="N > 0: run N seeded shuffles of the item order")
    args, rest = parser.parse_known_args(argv)
    if args.orders < 0:
        parser.error("--orders must be >= 0")
    defenses = list(args.defenses or default_defenses(args.inner)) + (
        [a for a in ablation_names() if a not in args.defenses] if args.ablations else []
    )
    models = model_names(args.inner, defenses)
    from . import launcher

    runs = [(None, Path(args.work_dir))] if not args.orders else []
    runs += [(seed, Path(args.work_dir) / f"order-{seed}") for seed in range(args.orders)]
    code, tables = 0, []
    for seed, work in runs:
        order = [] if seed is None else ["--order", "shuffle", "--order-seed", str(seed)]
        flags = ["--data", args.data, "--model", *models, "--judge", args.judge, "--work-dir", str(work)]
        code = max(code, launcher.main([*flags, *order, *rest]))
        tables.append(side_by_side(work, models, args.data, args.judge).assign(order="file" if seed is None else seed))
    table = pd.concat(tables, ignore_index=True)
    out = Path(args.work_dir) / f"compare_{args.inner}_{args.data}_{args.judge.replace('/', '_')}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    from tabulate import tabulate

    print(tabulate(table.drop(columns="score_file"), headers="keys", showindex=False, floatfmt=".1f", missingval="-"))
    if args.orders:
        stats = across_orders(table, args.judge)
        stats_out = out.with_name(out.stem + "_orders.csv")
        stats.to_csv(stats_out, index=False)
        print(f"\nacross {args.orders} orders (mean, sd, count):")
        print(tabulate(stats, headers="keys", showindex=False, floatfmt=".1f", missingval="-"))
        print(f"across-order table: {stats_out}")
    print(f"side-by-side table: {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
