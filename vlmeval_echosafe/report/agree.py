"""``python -m vlmeval_echosafe.report.agree A B``: how far two judges agree on the same predictions.

A and B are two ``_items.csv`` files of the same prediction file judged by two judges. Reported: Cohen's kappa
on the refuse/answer decision (items either judge left unknown are excluded and counted), Spearman's rho on
the 0-5 quality score (items both judges scored), the decision confusion matrix (unknown included), and a
CSV of the items where the decisions differ. Agreement and kappa are also given per label (unsafe items, safe
items): refusals of unsafe requests are easy to agree on, and an overall figure can hide a judge that
disagrees on the safe items, where over-refusal is decided.
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

DECIDED = ("refuse", "answer")
KEYS = ("pair_id", "category", "mode", "label")


class AgreementError(ValueError):
    """The two files cannot be compared (different items, missing columns)."""


def cohen_kappa(a: pd.Series, b: pd.Series) -> float:
    """Cohen's kappa of two label sequences; NaN when chance agreement is 1 (both constant, same value)."""
    if len(a) == 0:
        return float("nan")
    labels = sorted(set(a) | set(b))
    observed = float((a.to_numpy() == b.to_numpy()).mean())
    pa = a.value_counts(normalize=True).reindex(labels, fill_value=0.0).to_numpy()
    pb = b.value_counts(normalize=True).reindex(labels, fill_value=0.0).to_numpy()
    expected = float((pa * pb).sum())
    return float("nan") if math.isclose(expected, 1.0) else (observed - expected) / (1.0 - expected)


def spearman_rho(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rho: Pearson correlation of average ranks (ties share their mean rank); NaN if constant."""
    if len(a) < 2:
        return float("nan")
    ra, rb = a.rank(method="average").to_numpy(), b.rank(method="average").to_numpy()
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def load_pair(path_a: Path, path_b: Path) -> pd.DataFrame:
    """The two items files joined on the row index; they must describe the same items."""
    frames = []
    for path in (path_a, path_b):
        frame = pd.read_csv(path, dtype={"index": str})
        missing = [c for c in ("index", *KEYS, "decision", "score") if c not in frame.columns]
        if missing:
            raise AgreementError(f"{path}: not an items file (lacks {missing}; has {list(frame.columns)})")
        if frame["index"].duplicated().any():
            raise AgreementError(f"{path}: duplicate row index {frame['index'][frame['index'].duplicated()].iloc[0]}")
        frames.append(frame.set_index("index"))
    a, b = frames
    if set(a.index) != set(b.index):
        only_a, only_b = sorted(set(a.index) - set(b.index)), sorted(set(b.index) - set(a.index))
        raise AgreementError(
            f"the files judge different items: {len(only_a)} only in A (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in B "
            f"(e.g. {only_b[:3]}); compare two judgements of the same prediction file"
        )
    b = b.loc[a.index]
    for key in KEYS:
        if not (a[key].astype(str) == b[key].astype(str)).all():
            raise AgreementError(f"the files disagree on column {key!r} for the same row index: not the same items")
    joined = a[list(KEYS)].copy()
    joined["decision_a"], joined["decision_b"] = a["decision"], b["decision"]
    joined["score_a"] = pd.to_numeric(a["score"], errors="coerce")
    joined["score_b"] = pd.to_numeric(b["score"], errors="coerce")
    return joined.reset_index()


def _decision_agreement(joined: pd.DataFrame) -> dict[str, Any]:
    """Counts, % agreement and kappa on the items both judges decided."""
    both = joined["decision_a"].isin(DECIDED) & joined["decision_b"].isin(DECIDED)
    decided = joined[both]
    return {
        "items": int(len(joined)),
        "decided_by_both": int(both.sum()),
        "decision_agreement_pct": float("nan")
        if decided.empty
        else 100.0 * float((decided["decision_a"] == decided["decision_b"]).mean()),
        "cohen_kappa": cohen_kappa(decided["decision_a"], decided["decision_b"]),
    }


def agreement(joined: pd.DataFrame) -> dict[str, Any]:
    """Kappa, rho, confusion matrix and counts for a joined pair (see ``load_pair``), overall and per label."""
    both = joined["decision_a"].isin(DECIDED) & joined["decision_b"].isin(DECIDED)
    decided = joined[both]
    scored = joined[both & joined["score_a"].notna() & joined["score_b"].notna()]
    order = ["refuse", "answer", "unknown"]
    confusion = pd.crosstab(joined["decision_a"], joined["decision_b"]).reindex(
        index=order, columns=order, fill_value=0
    )
    return {
        "items": int(len(joined)),
        "decided_by_both": int(both.sum()),
        "unknown_a": int((joined["decision_a"] == "unknown").sum()),
        "unknown_b": int((joined["decision_b"] == "unknown").sum()),
        "excluded_unknown": int((~both).sum()),
        "decision_agreement_pct": float("nan")
        if decided.empty
        else 100.0 * float((decided["decision_a"] == decided["decision_b"]).mean()),
        "cohen_kappa": cohen_kappa(decided["decision_a"], decided["decision_b"]),
        "scored_by_both": int(len(scored)),
        "spearman_rho": spearman_rho(scored["score_a"], scored["score_b"]),
        "confusion": {"rows_A_cols_B": order, "counts": confusion.astype(int).to_numpy().tolist()},
        "per_label": {lab: _decision_agreement(joined[joined["label"] == lab]) for lab in ("unsafe", "safe")},
    }


def disagreements(joined: pd.DataFrame) -> pd.DataFrame:
    """Items whose decisions differ (unknown on one side counts as a difference)."""
    return joined[joined["decision_a"] != joined["decision_b"]]


def _same_predictions(a: Path, b: Path) -> str | None:
    """A warning when the file names say the two files judge different prediction files (model or dataset)."""
    from .collect import ITEMS_SUFFIX, parse_name

    pa, pb = parse_name(a, ITEMS_SUFFIX), parse_name(b, ITEMS_SUFFIX)
    if pa and pb and pa[:2] != pb[:2]:
        return (
            f"A judges {pa[0]} on {pa[1]} but B judges {pb[0]} on {pb[1]}: agreement of two judges needs the "
            "same predictions"
        )
    return None


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render(stats: dict[str, Any], name_a: str, name_b: str) -> str:
    counts = stats["confusion"]["counts"]
    order = stats["confusion"]["rows_A_cols_B"]
    width = max(8, *(len(o) for o in order))
    lines = [
        f"A: {name_a}",
        f"B: {name_b}",
        f"items {stats['items']}; decided by both {stats['decided_by_both']} "
        f"(excluded: {stats['excluded_unknown']}; "
        f"unknown in A {stats['unknown_a']}, in B {stats['unknown_b']})",
        f"decision agreement: {_fmt(stats['decision_agreement_pct'], 1)} %",
        f"Cohen's kappa (decision, unknown excluded): {_fmt(stats['cohen_kappa'])}"
        + (
            "  -- undefined: chance agreement is 1 (both judges gave one and the same decision throughout)"
            if stats["decided_by_both"] and math.isnan(stats["cohen_kappa"])
            else ""
        ),
        f"Spearman rho (QS, {stats['scored_by_both']} items scored by both): {_fmt(stats['spearman_rho'])}"
        + ("  -- a refusal-only judge gives no scores" if stats["scored_by_both"] == 0 else ""),
        *(
            f"  {lab} items: {st['items']}, decided by both {st['decided_by_both']}; agreement "
            f"{_fmt(st['decision_agreement_pct'], 1)} %, kappa {_fmt(st['cohen_kappa'])}"
            for lab, st in stats["per_label"].items()
        ),
        "",
        "confusion (rows: A, columns: B)",
        " " * width + "".join(f"{o:>{width + 2}}" for o in order),
        *(f"{o:<{width}}" + "".join(f"{c:>{width + 2}}" for c in row) for o, row in zip(order, counts, strict=False)),
    ]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """NaN (undefined kappa, no decided items) as null, at any depth."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlmeval_echosafe.report.agree",
        description="Agreement of two judges on the same predictions (two _items.csv files).",
    )
    parser.add_argument("a", type=Path, help="items file of judge A (<model>_<dataset>_<judgeA>_items.csv)")
    parser.add_argument("b", type=Path, help="items file of judge B, same predictions")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="CSV of disagreeing items (default: <A stem>_vs_<B stem>_disagreements.csv beside A)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the statistics as JSON here")
    args = parser.parse_args(argv)
    try:
        for path in (args.a, args.b):
            if not path.is_file():
                raise AgreementError(f"{path}: no such file")
        joined = load_pair(args.a, args.b)
    except AgreementError as err:
        print(f"agree: error: {err}", file=sys.stderr)
        return 2
    same = _same_predictions(args.a, args.b)
    if same:
        print(f"agree: warning: {same}", file=sys.stderr)
    stats = agreement(joined)
    out = args.out or args.a.with_name(f"{args.a.stem}_vs_{args.b.stem}_disagreements.csv")
    diff = disagreements(joined)
    diff.to_csv(out, index=False)
    stats["disagreements_file"] = str(out)
    stats["disagreements"] = int(len(diff))
    print(render(stats, str(args.a), str(args.b)))
    print(f"\n{len(diff)} disagreeing items -> {out}")
    if args.json:
        args.json.write_text(json.dumps(_json_safe(stats), indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
