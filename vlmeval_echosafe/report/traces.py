"""EchoSafe traces (``<model>_<dataset>_echosafe_trace.jsonl``) as tables for the memory plots.

One trace line per item in stream order (docs/echosafe.md). Decisions are not in the trace: they are joined
from an ``_items.csv`` by row index (trace ``row_index`` = items ``index``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.trace import read_trace
from .collect import Result, dataset_names
from .runinfo import config_for, order_label

TRACE_SUFFIX = "_echosafe_trace.jsonl"


@dataclass(frozen=True)
class Trace:
    model: str
    dataset: str
    path: Path
    order: str = ""  # the run's stream order (runinfo.order_label)


def find_traces(work_dir: Path) -> list[Trace]:
    """One trace per model, dataset and stream order (copies in VLMEvalKit's run folders are the same run)."""
    out, seen = [], set()
    for path in sorted(work_dir.rglob(f"*{TRACE_SUFFIX}"), key=lambda p: (len(p.parts), str(p))):
        body = path.name[: -len(TRACE_SUFFIX)]
        ds = next((d for d in dataset_names() if body.endswith(f"_{d}") and len(body) > len(d) + 1), None)
        if ds is None:
            continue
        model = body[: -len(ds) - 1]
        key = (model, ds, order_label(config_for(path, model), ds))
        if key in seen:
            continue
        seen.add(key)
        out.append(Trace(model, ds, path, key[2]))
    return out


def load_trace(path: Path) -> pd.DataFrame:
    """One row per item: order, stream, stream_pos, bank_size, label, n_retrieved, top1 similarity."""
    rows = []
    for rec in read_trace(path):  # a torn last line is dropped with a warning; any other bad line is an error
        hits = rec.get("retrieved") or []
        sims = [h.get("similarity") for h in hits if h.get("similarity") is not None]
        rows.append(
            {
                "row_index": str(rec.get("row_index")),
                "stream": rec.get("stream", ""),
                "stream_pos": rec.get("stream_pos"),
                "bank_size": rec.get("bank_size"),
                "label": rec.get("label"),
                "category": rec.get("category"),
                "n_retrieved": len(hits),
                "top1_similarity": max(sims) if sims else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    table.insert(0, "order", range(len(table)))
    return table


def join_decisions(trace: pd.DataFrame, items_path: Path) -> pd.DataFrame:
    """Add the judge's ``decision`` to each trace row (by row index); rows the items file lacks get NaN."""
    items = pd.read_csv(items_path, dtype={"index": str})[["index", "decision"]]
    return trace.merge(items.rename(columns={"index": "row_index"}), on="row_index", how="left")


def rolling_rates(joined: pd.DataFrame, window: int, refusal_only: bool = False) -> pd.DataFrame:
    """Rolling RR (unsafe refused) and AR (safe answered; ``NonRefusalRate`` under a refusal-only judge) over the
    last ``window`` decided items of each label, indexed by trace order; unknown decisions are left out, as in the
    metrics."""
    from .. import metrics

    out = pd.DataFrame(index=joined["order"])
    safe = metrics.safe_rate_name(refusal_only)
    for label, target, name in (("unsafe", "refuse", "RR"), ("safe", "answer", safe)):
        sub = joined[(joined["label"] == label) & joined["decision"].isin(("refuse", "answer"))]
        hit = (sub["decision"] == target).astype(float) * 100.0
        roll = hit.rolling(window, min_periods=max(1, window // 2)).mean()
        out[name] = pd.Series(roll.to_numpy(), index=sub["order"].to_numpy()).reindex(out.index)
    return out


def items_for(trace: Trace, results: list[Result]) -> list[Result]:
    """The judged results of the same run: model, dataset and stream order (one per judge)."""
    same = (trace.model, trace.dataset, trace.order)
    return [r for r in results if (r.model, r.dataset, r.order) == same and r.items is not None]


def insight_counts(path: Path) -> dict[str, dict[str, int]]:
    """What EchoSafe's memory kept and refused along one trace, so a drift shows at a glance:
    ``stored`` by decision (``exchange`` for the NoReflection ablation), ``rejected`` by reason code (parse,
    order, copy, answer_failed, ...), and ``rejected_by_decision`` for rejections whose reflection had parsed."""
    out: dict[str, dict[str, int]] = {"stored": {}, "rejected": {}, "rejected_by_decision": {}}
    for rec in read_trace(path):
        decision = rec.get("insight_decision") or "none"
        if rec.get("insight_id") is not None:
            key = decision if decision != "none" else "exchange"
            out["stored"][key] = out["stored"].get(key, 0) + 1
        elif rec.get("not_written_code") not in (None, "memory_off", "read_only"):
            code = rec["not_written_code"]
            out["rejected"][code] = out["rejected"].get(code, 0) + 1
            out["rejected_by_decision"][decision] = out["rejected_by_decision"].get(decision, 0) + 1
    return out


def format_insight_counts(counts: dict[str, dict[str, int]]) -> str:
    """One line: ``stored 10 (unsafe 6, safe 4); rejected 2 (order 1, copy 1; of them unsafe 1, none 1)``."""

    def part(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"

    stored, rejected = sum(counts["stored"].values()), sum(counts["rejected"].values())
    text = f"stored {stored} ({part(counts['stored'])}); rejected {rejected} ({part(counts['rejected'])}"
    return text + (f"; of them {part(counts['rejected_by_decision'])})" if rejected else ")")
