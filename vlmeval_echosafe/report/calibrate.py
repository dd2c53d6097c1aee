"""Calibrate a judge against a person: ``vlmeval-echosafe judge-sheet`` samples items to label by hand,
``vlmeval-echosafe agree ITEMS --human SHEET`` compares the judge with the filled sheet.

The sheet is a stratified, seeded sample of one judged run (an ``_items.csv``): strata are category x benchmark
label x judge decision, every non-empty stratum gets at least one row (when N allows) and the rest is shared in
proportion to stratum size. Rows are shuffled and the judge's decision is *not* on the sheet, so the person labels
blind; each row carries its stratum weight (stratum size / rows drawn from it), so the comparison can be given
for the sample as drawn and re-weighted to the whole run. The person writes ``refuse``, ``answer`` or ``unclear``
in ``human_decision``; ``unclear`` rows and rows the judge left ``unknown`` are excluded from agreement and
counted. With the person as reference and ``refuse`` as the positive class: agreement, Cohen's kappa, and the
judge's precision and recall, overall and per benchmark label.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .agree import DECIDED

HUMAN_LABELS = (*DECIDED, "unclear")
STRATA = ("category", "label", "decision")
SHEET_COLUMNS = ("sheet_row", "index", "category", "mode", "label", "weight", "question", "prediction")


class SheetError(ValueError):
    """An items file or a filled sheet that cannot be used (names the file and row)."""


def allocate(sizes: dict[tuple, int], n: int) -> dict[tuple, int]:
    """Rows per stratum: one each (largest strata first) while N lasts, the rest by largest remainder of the
    proportional share, never more than a stratum holds."""
    order = sorted(sizes, key=lambda s: (-sizes[s], s))
    take = {s: 0 for s in sizes}
    for s in order[: min(n, len(order))]:
        take[s] = 1
    left = min(n, sum(sizes.values())) - sum(take.values())
    while left > 0:
        room = {s: sizes[s] - take[s] for s in order if sizes[s] > take[s]}
        total = sum(room.values())
        shares = {s: left * room[s] / total for s in room}
        extra = {s: min(room[s], int(shares[s])) for s in room}
        for s in sorted(room, key=lambda s: -(shares[s] - int(shares[s])))[: left - sum(extra.values())]:
            extra[s] = min(room[s], extra[s] + 1)
        if not any(extra.values()):
            break
        for s, k in extra.items():
            take[s] += k
        left -= sum(extra.values())
    return take


def _questions(items_path: Path, predictions: Path | None) -> pd.Series | None:
    """Questions by row index from the run's prediction file (beside the items file unless given)."""
    if predictions is None:
        from .collect import ITEMS_SUFFIX, parse_name

        parsed = parse_name(items_path, ITEMS_SUFFIX)
        if not parsed:
            return None
        found = [items_path.with_name(f"{parsed[0]}_{parsed[1]}{ext}") for ext in (".tsv", ".xlsx", ".csv")]
        predictions = next((p for p in found if p.is_file()), None)
        if predictions is None:
            return None
    if predictions.suffix == ".xlsx":
        table = pd.read_excel(predictions, dtype={"index": str})
    else:
        table = pd.read_csv(predictions, sep="\t" if predictions.suffix == ".tsv" else ",", dtype={"index": str})
    if "question" not in table.columns:
        raise SheetError(f"{predictions}: no question column")
    return table.set_index("index")["question"]


def make_sheet(items_path: Path, n: int, seed: int, predictions: Path | None = None) -> pd.DataFrame:
    """The blind labelling sheet for ``n`` items of one judged run."""
    items = pd.read_csv(items_path, dtype={"index": str})
    missing = [c for c in ("index", "mode", *STRATA, "prediction") if c not in items.columns]
    if missing:
        raise SheetError(f"{items_path}: not an items file (lacks {missing})")
    rng = np.random.default_rng(seed)
    items = items.iloc[rng.permutation(len(items))].reset_index(drop=True)
    groups = {key: g for key, g in items.groupby(list(STRATA), sort=True)}
    take = allocate({key: len(g) for key, g in groups.items()}, n)
    parts = []
    for key, group in groups.items():
        if take[key]:
            part = group.head(take[key]).copy()
            part["weight"] = len(group) / take[key]
            parts.append(part)
    sheet = pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    questions = _questions(items_path, predictions)
    if questions is None:
        print(f"judge-sheet: warning: no prediction file beside {items_path}; the question column is empty "
              "(pass --predictions)", file=sys.stderr)  # fmt: skip
        sheet["question"] = ""
    else:
        sheet["question"] = sheet["index"].map(questions).fillna("")
    sheet.insert(0, "sheet_row", range(1, len(sheet) + 1))
    out = sheet[list(SHEET_COLUMNS)].copy()
    out["human_decision"], out["human_note"] = "", ""
    return out


def _pairs(items_path: Path, sheet_path: Path) -> pd.DataFrame:
    """Judge decisions joined to the filled sheet; every sheet row must be labelled and be one of the items."""
    items = pd.read_csv(items_path, dtype={"index": str}).set_index("index")
    sheet = pd.read_csv(sheet_path, dtype={"index": str}, keep_default_na=False)
    for col in ("index", "label", "weight", "human_decision"):
        if col not in sheet.columns:
            raise SheetError(f"{sheet_path}: not a judge sheet (lacks {col!r})")
    sheet["human_decision"] = sheet["human_decision"].astype(str).str.strip().str.lower()
    bad = sheet[~sheet["human_decision"].isin(HUMAN_LABELS)]
    if len(bad):
        row = bad.iloc[0]
        raise SheetError(
            f"{sheet_path}: row {row.get('sheet_row', '?')} (index {row['index']}): human_decision "
            f"{row['human_decision']!r}; write one of {', '.join(HUMAN_LABELS)} ({len(bad)} rows to fix)"
        )
    unknown = sorted(set(sheet["index"]) - set(items.index))
    if unknown:
        raise SheetError(f"{sheet_path}: rows not in {items_path}: {unknown[:3]} (a sheet of another run?)")
    sheet["judge_decision"] = sheet["index"].map(items["decision"])
    sheet["weight"] = pd.to_numeric(sheet["weight"])
    return sheet


def compare(pairs: pd.DataFrame, weighted: bool) -> dict[str, Any]:
    """Agreement, kappa and the judge's P/R (positive: refuse) on rows both decided."""
    both = pairs[pairs["human_decision"].isin(DECIDED) & pairs["judge_decision"].isin(DECIDED)]
    w = both["weight"].to_numpy() if weighted else np.ones(len(both))
    cells = {
        (h, j): float(w[(both["human_decision"] == h).to_numpy() & (both["judge_decision"] == j).to_numpy()].sum())
        for h in DECIDED
        for j in DECIDED
    }
    total = sum(cells.values())
    nan = float("nan")
    if not total:
        return {"rows": int(len(both)), "agreement_pct": nan, "cohen_kappa": nan, "precision": nan, "recall": nan}
    observed = (cells[("refuse", "refuse")] + cells[("answer", "answer")]) / total
    p_h = {d: sum(cells[(d, j)] for j in DECIDED) / total for d in DECIDED}
    p_j = {d: sum(cells[(h, d)] for h in DECIDED) / total for d in DECIDED}
    expected = sum(p_h[d] * p_j[d] for d in DECIDED)
    tp, fp, fn = cells[("refuse", "refuse")], cells[("answer", "refuse")], cells[("refuse", "answer")]
    return {
        "rows": int(len(both)),
        "agreement_pct": 100.0 * observed,
        "cohen_kappa": nan if math.isclose(expected, 1.0) else (observed - expected) / (1.0 - expected),
        "precision": tp / (tp + fp) if tp + fp else nan,
        "recall": tp / (tp + fn) if tp + fn else nan,
    }


def calibration(pairs: pd.DataFrame) -> dict[str, Any]:
    """The sheet as drawn and re-weighted to the run, overall and per benchmark label, with exclusions counted."""
    stats: dict[str, Any] = {
        "rows": int(len(pairs)),
        "human_unclear": int((pairs["human_decision"] == "unclear").sum()),
        "judge_unknown": int((~pairs["judge_decision"].isin(DECIDED)).sum()),
    }
    for view, weighted in (("sample", False), ("run_weighted", True)):
        stats[view] = {"overall": compare(pairs, weighted)}
        for label in ("unsafe", "safe"):
            stats[view][label] = compare(pairs[pairs["label"] == label], weighted)
    return stats


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render(stats: dict[str, Any], judge: str) -> str:
    lines = [
        f"judge {judge} vs person: {stats['rows']} sheet rows; excluded: {stats['human_unclear']} marked unclear, "
        f"{stats['judge_unknown']} the judge left unknown",
        f"  {'view':14s} {'subset':8s} {'rows':>5s} {'agree %':>8s} {'kappa':>7s} {'P':>7s} {'R':>7s}",
    ]
    for view in ("sample", "run_weighted"):
        for subset, st in stats[view].items():
            lines.append(
                f"  {view:14s} {subset:8s} {st['rows']:5d} {_fmt(st['agreement_pct'], 1):>8s} "
                f"{_fmt(st['cohen_kappa']):>7s} {_fmt(st['precision']):>7s} {_fmt(st['recall']):>7s}"
            )
    lines.append("  (P/R: the judge's refusals against the person's; run_weighted re-weights strata to the run)")
    return "\n".join(lines)


def sheet_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmeval-echosafe judge-sheet", description=__doc__)
    parser.add_argument("items", type=Path, help="a judged run: <model>_<dataset>_<judge>_items.csv")
    parser.add_argument("-n", "--n", type=int, default=100, help="rows to sample (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predictions", type=Path, default=None, help="prediction file with the questions")
    parser.add_argument("--out", type=Path, default=None, help="default: <items stem>_sheet.csv beside it")
    args = parser.parse_args(argv)
    try:
        sheet = make_sheet(args.items, args.n, args.seed, args.predictions)
    except (SheetError, FileNotFoundError) as err:
        print(f"judge-sheet: error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.items.with_name(f"{args.items.stem}_sheet.csv")
    sheet.to_csv(out, index=False)
    print(f"{len(sheet)} rows -> {out}; fill human_decision with refuse, answer or unclear")
    return 0


def agree_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmeval-echosafe agree ITEMS --human SHEET", description=__doc__)
    parser.add_argument("items", type=Path, help="the judged run the sheet was drawn from (_items.csv)")
    parser.add_argument("--human", type=Path, required=True, help="the filled judge sheet")
    parser.add_argument("--json", type=Path, default=None, help="also write the statistics as JSON here")
    args = parser.parse_args(argv)
    try:
        stats = calibration(_pairs(args.items, args.human))
    except (SheetError, FileNotFoundError) as err:
        print(f"agree: error: {err}", file=sys.stderr)
        return 2
    print(render(stats, args.items.stem))
    if args.json:
        safe = json.loads(json.dumps(stats).replace("NaN", "null"))
        args.json.write_text(json.dumps(safe, indent=2), encoding="utf-8")
    return 0
