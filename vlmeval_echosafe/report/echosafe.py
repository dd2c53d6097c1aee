"""What a report needs to know about EchoSafe runs beyond their scores: the stream order a run used and the
benchmark labels it read (from ``<model>_echosafe_config.json``), what its memory kept and refused (from the
trace), and how much CCR moves across stream orders (the spread the pair bootstrap of one run does not show).
"""

from __future__ import annotations

import pandas as pd

from .. import metrics
from .runinfo import backend, batch_size, config_for, labels_used
from .traces import Trace, insight_counts


def memory_table(traces: list[Trace]) -> pd.DataFrame:
    """One row per EchoSafe trace: insights stored by decision and rejected by reason, so a drift (say towards
    refusal) shows at a glance."""
    rows = []
    for tr in traces:
        counts = insight_counts(tr.path)
        config = config_for(tr.path, tr.model)
        row = {
            "model": tr.model,
            "dataset": tr.dataset,
            "order": tr.order,
            "labels_used": labels_used(config),
            "backend": backend(config),
            "batch_size": batch_size(tr.path, tr.model, tr.dataset),
            "stored": sum(counts["stored"].values()),
            **{f"stored_{k}": counts["stored"].get(k, 0) for k in ("unsafe", "safe", "exchange")},
            "rejected": sum(counts["rejected"].values()),
            "rejected_by_reason": ", ".join(f"{k} {v}" for k, v in sorted(counts["rejected"].items())),
            "rejected_by_decision": ", ".join(f"{k} {v}" for k, v in sorted(counts["rejected_by_decision"].items())),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def orders_table(board: pd.DataFrame) -> pd.DataFrame:
    """Runs measured in several stream orders (same model, dataset, judge): per mode and category, the mean and
    sample sd of CCR across the orders, next to the mean of the runs' own 95% pair-bootstrap intervals (per
    category; the category mean has none). Empty when no run was measured in more than one order."""
    if "order" not in board.columns:
        return pd.DataFrame()
    keys = ["model", "dataset", "judge", "mode", "category"]
    rows = []
    for key, group in board[board["order"] != ""].groupby(keys, sort=False):
        if group["order"].nunique() < 2:
            continue
        ccr = metrics.ccr_name(bool(group["refusal_only"].iloc[0]))
        values = group[ccr].astype(float)
        lo, hi = f"{ccr}_lo", f"{ccr}_hi"
        ci = (
            [float(group[lo].mean()), float(group[hi].mean())]
            if lo in group.columns and group[lo].notna().all()
            else [float("nan"), float("nan")]
        )
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "metric": ccr,
                "orders": int(group["order"].nunique()),
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)),
                "min": float(values.min()),
                "max": float(values.max()),
                "bootstrap_lo": ci[0],
                "bootstrap_hi": ci[1],
            }
        )
    return pd.DataFrame(rows)
