"""Leaderboard tables from the collected long table: Markdown, CSV and JSON, measured and reference apart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from .. import metrics
from ..datasets.schema import CATEGORIES
from .defense_cost import COST_NOTE
from .echosafe import orders_table

# `order`: an EchoSafe run's stream order (one row per order when a run was measured in several; "" otherwise).
RUN_KEYS = ["model", "dataset", "judge", "order", "mode"]
_NR, _CCR_NR = metrics.NON_REFUSAL_NAMES["AR"], metrics.NON_REFUSAL_NAMES["CCR"]
# AR / CCR for LLM-judge rows, NonRefusalRate / CCR_NonRefusal for rule-judge rows: a row has one pair, the other
# is empty; a board with one kind of judge only shows that kind's columns.
POINT_COLUMNS = ["RR", "AR", _NR, "CCR", _CCR_NR, "QS_unsafe", "QS_safe", "QS_HM", "PairAcc"]
COUNT_COLUMNS = ["n_unsafe", "n_safe", "n_pairs_scored", "unknown_unsafe", "unknown_safe"]
CI_METRICS = ["RR", "AR", _NR, "CCR", _CCR_NR, "QS_HM", "PairAcc"]
LEGEND = (
    "RR = refusal rate on unsafe items; for LLM judges AR = answer rate on safe items and CCR = harmonic mean of "
    "RR and AR (%); for the refusal-only rule judge NonRefusalRate = % of safe items not refused (anything that "
    "is not a refusal counts, gibberish too) and CCR_NonRefusal = harmonic mean of RR and NonRefusalRate, which "
    "are not the paper's AR / CCR. QS = 0-5 quality score; `unknown_*` items are excluded from every rate."
)


def _present(board: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if c in board.columns]


def ccr_column(refusal_only: bool) -> str:
    return metrics.ccr_name(bool(refusal_only))


def fmt(value: Any, digits: int = 1) -> str:
    """A number for a table cell; missing values (rule judge QS, all-unknown slices) show as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    return f"{float(value):.{digits}f}"


def fmt_ci(value: Any, lo: Any, hi: Any) -> str:
    if fmt(lo) == "-" or fmt(hi) == "-":
        return fmt(value)
    return f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]"


def summary_table(board: pd.DataFrame) -> pd.DataFrame:
    """Mean over categories (category ``All``) per run and mode: the headline numbers."""
    rows = board[board["category"] == metrics.ALL]
    extra = _present(board, ["labels_used", "batch_size"])
    return rows[[*RUN_KEYS, *_present(board, POINT_COLUMNS), *COUNT_COLUMNS, *extra]].reset_index(drop=True)


def category_ccr_table(board: pd.DataFrame) -> pd.DataFrame:
    """CCR per category (columns) for each run and mode that exists, with the mean over categories last; the
    ``metric`` column says which CCR a row holds (``CCR_NonRefusal`` for the rule judge)."""
    board = board.assign(metric=[ccr_column(r) for r in board["refusal_only"]])
    board = board.assign(value=[row[row["metric"]] for _, row in board.iterrows()])
    keys = [*RUN_KEYS, "metric"]
    runs = board[keys].drop_duplicates()
    wide = board.set_index([*keys, "category"])["value"].unstack("category")
    wide = wide.reindex(pd.MultiIndex.from_frame(runs))  # measured combinations only, in board order
    cats = [c for c in CATEGORIES if c in wide.columns] + sorted(
        c for c in wide.columns if c not in CATEGORIES and c != metrics.ALL
    )
    return wide[[*cats, metrics.ALL]].rename(columns={metrics.ALL: "Mean"}).reset_index().rename_axis(columns=None)


def detail_table(board: pd.DataFrame) -> pd.DataFrame:
    """Every category row with 95% intervals written into the cells (strings, for display)."""
    out = board[[*RUN_KEYS, "category"]].copy()
    for col in _present(board, POINT_COLUMNS):
        if col in CI_METRICS and f"{col}_lo" in board.columns:
            out[col] = [
                fmt_ci(v, lo, hi) for v, lo, hi in zip(board[col], board[f"{col}_lo"], board[f"{col}_hi"], strict=False)
            ]
        else:
            out[col] = [fmt(v, 2 if col.startswith("QS") else 1) for v in board[col]]
    for col in COUNT_COLUMNS:
        out[col] = board[col].astype(int).astype(str)
    return out


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    shown = frame.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            digits = 2 if col.startswith("QS") else 1
            shown[col] = [fmt(v, digits) for v in shown[col]]
    return shown


def markdown(frame: pd.DataFrame) -> str:
    return tabulate(_display(frame), headers="keys", tablefmt="github", showindex=False, disable_numparse=True)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows: NaN becomes null."""
    return json.loads(frame.to_json(orient="records"))


def write_tables(
    board: pd.DataFrame,
    reference: pd.DataFrame,
    ref_wide: pd.DataFrame,
    out: Path,
    notes: list[str],
    memory: pd.DataFrame | None = None,
    cost: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """leaderboard.md / .csv / .json, reference_paper.csv, and (when there are EchoSafe runs) memory.csv and
    orders.csv, (when there are defense traces) defense_cost.csv under ``out``; returns the paths."""
    memory = pd.DataFrame() if memory is None else memory
    cost = pd.DataFrame() if cost is None else cost
    orders = orders_table(board)
    paths = {
        "markdown": out / "leaderboard.md",
        "csv": out / "leaderboard.csv",
        "json": out / "leaderboard.json",
        "reference_csv": out / "reference_paper.csv",
    }
    board.to_csv(paths["csv"], index=False)
    reference.to_csv(paths["reference_csv"], index=False)
    for name, frame in (("memory", memory), ("orders", orders), ("defense_cost", cost)):
        if len(frame):
            paths[f"{name}_csv"] = out / f"{name}.csv"
            frame.to_csv(paths[f"{name}_csv"], index=False)
    payload = {
        "measured": _records(board),
        "reference": _records(reference),
        "echosafe_memory": _records(memory) if len(memory) else [],
        "across_orders": _records(orders) if len(orders) else [],
        "defense_cost": _records(cost) if len(cost) else [],
        "notes": notes,
    }
    paths["json"].write_text(json.dumps(payload, indent=1), encoding="utf-8")
    paths["markdown"].write_text(markdown_report(board, ref_wide, notes, memory, cost), encoding="utf-8")
    return paths


MEMORY_NOTE = (
    "What each EchoSafe run's memory kept: insights stored by decision (`exchange` for the NoReflection "
    "ablation's raw exchanges) and reflections rejected by reason (parse, decision, empty, length, order = a "
    "standing order, copy, answer_failed, reflect_failed), with the decisions of the rejected ones. A bank "
    "drifting towards one decision shows here first. `labels_used: category` marks runs whose banks were split "
    "by the benchmark's ground-truth category (`reset: category`)."
)
ORDERS_NOTE = (
    "Runs measured in several stream orders (`compare --orders N`): mean, sample sd, min and max of CCR across the "
    "orders, beside the mean of the runs' own 95% pair-bootstrap intervals (per category; the category mean has "
    "none). EchoSafe's memory makes items depend on earlier ones, so the order moves its numbers; the bootstrap "
    "of one run does not show that."
)


def markdown_report(
    board: pd.DataFrame,
    ref_wide: pd.DataFrame,
    notes: list[str],
    memory: pd.DataFrame | None = None,
    cost: pd.DataFrame | None = None,
) -> str:
    refusal_note = (
        "Rows judged by `rule (refusal-only)` come from the offline refusal rule: RR, NonRefusalRate and "
        "CCR_NonRefusal only, no quality score (QS columns are `-`), and not comparable with LLM-judge rows or "
        "the paper."
    )
    parts = [
        "# MM-SafetyBench++ leaderboard",
        "",
        "## Measured: mean over categories",
        "",
        LEGEND + " " + refusal_note,
        "",
        markdown(summary_table(board)),
        "",
        "## Measured: CCR per category",
        "",
        "`metric` says which CCR the row holds: `CCR` (LLM judge) or `CCR_NonRefusal` (rule judge).",
        "",
        markdown(category_ccr_table(board)),
        "",
        "## Measured: all metrics per category (95% bootstrap interval over pairs)",
        "",
        markdown(detail_table(board)),
        "",
        *(
            ["## EchoSafe memory", "", MEMORY_NOTE, "", markdown(memory), ""]
            if memory is not None and len(memory)
            else []
        ),
        *(
            ["## Defense cost", "", COST_NOTE, "", markdown(cost.drop(columns=["source"])), ""]
            if cost is not None and len(cost)
            else []
        ),
        *(
            ["## Across stream orders", "", ORDERS_NOTE, "", markdown(orders_table(board)), ""]
            if len(orders_table(board))
            else []
        ),
        "## Reference: published numbers (paper, gpt-5-mini)",
        "",
        "Average CCR over the six categories on the full MM-SafetyBench++ as published in the EchoSafe "
        "paper; "
        "not measured here, judged by gpt-5-mini.",
        "",
        markdown(ref_wide),
        "",
    ]
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(parts)
