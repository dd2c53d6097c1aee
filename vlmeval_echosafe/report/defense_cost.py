"""What each defense run cost per item, and what its checks decided, read from its defense trace
(``<model>_<dataset>_defense_trace.jsonl``): the columns of the report's "Defense cost" table.

A trace line's ``cost`` holds, per model the item used (``inner``, ``guard_input``, ``guard_output``, ``reward``,
``clip``), its ``calls``, ``forward_passes``, ``prompt_tokens`` and ``new_tokens`` (defenses/batched.py). The table
gives the mean per item of each, summed over the models, and the GuardFilter and ETA decisions: items blocked at
input / output, guard replies in neither format (decided by ``on_unparsed``), items ETA aligned. Runs whose trace
records no cost (the paper's baselines, EchoSafe) are listed with empty cost cells, so every row is visible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.trace import read_trace
from .collect import dataset_names

SUFFIX = "_defense_trace.jsonl"
COST_KEYS = ("calls", "forward_passes", "prompt_tokens", "new_tokens")
COLUMNS = [
    "model",
    "dataset",
    "items",
    *(f"{k}_per_item" for k in COST_KEYS),
    "blocked_input",
    "blocked_output",
    "guard_unparsed",
    "aligned",
    "source",
]


def _split(path: Path) -> tuple[str, str] | None:
    body = path.name[: -len(SUFFIX)]
    ds = next((d for d in dataset_names() if body.endswith(f"_{d}") and len(body) > len(d) + 1), None)
    return None if ds is None else (body[: -len(ds) - 1], ds)


def trace_cost(path: Path) -> dict[str, object]:
    """One run's row: per-item means of the recorded cost and counts of the checks' decisions."""
    records = read_trace(path)
    costed = [r for r in records if isinstance(r.get("cost"), dict)]
    row: dict[str, object] = {"items": len(records), "source": str(path)}
    for key in COST_KEYS:
        per_item = [sum(float(m.get(key) or 0) for m in r["cost"].values() if isinstance(m, dict)) for r in costed]
        known = costed and all(any(key in m for m in r["cost"].values()) for r in costed)
        row[f"{key}_per_item"] = round(float(np.mean(per_item)), 2) if known else np.nan
    guard = [r for r in records if r.get("defense") == "GuardFilter"]
    eta = [r for r in records if r.get("defense") == "ETA"]
    row["blocked_input"] = sum(r.get("blocked") == "input" for r in guard) if guard else np.nan
    row["blocked_output"] = sum(r.get("blocked") == "output" for r in guard) if guard else np.nan
    row["guard_unparsed"] = sum(int(r.get("guard_unparsed") or 0) for r in guard) if guard else np.nan
    row["aligned"] = sum(r.get("branch") == "aligned" for r in eta) if eta else np.nan
    return row


def cost_table(work_dir: Path, board: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, dataset) of the leaderboard, plus any defense trace without a score yet."""
    found: dict[tuple[str, str], dict[str, object]] = {}
    for path in sorted(Path(work_dir).rglob(f"*{SUFFIX}"), key=lambda p: (len(p.parts), str(p))):
        key = _split(path)
        if key is not None and key not in found:  # VLMEvalKit's dated copies: the one nearest the work dir
            found[key] = trace_cost(path)
    keys = list(dict.fromkeys(zip(board.get("model", []), board.get("dataset", []), strict=True)))
    keys += [k for k in found if k not in keys]
    rows = [{"model": m, "dataset": d, **found.get((m, d), {})} for m, d in keys]
    return pd.DataFrame(rows, columns=COLUMNS)


COST_NOTE = (
    "Per item, summed over every model the defense used (inner model, guard, reward model, CLIP): calls, forward "
    "passes (a pass over a batch counts once per row in it) and prompt / new tokens, from the defense trace. "
    "Tokens of a micro-batch decoded together are shared out equally. GuardFilter: items blocked at input / output "
    "and guard replies in neither format (decided by `on_unparsed`); ETA: items aligned. Empty: the run's trace "
    "records no cost (the paper's baselines, EchoSafe) or the row has no trace."
)
