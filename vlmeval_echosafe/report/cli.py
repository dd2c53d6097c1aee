"""``python -m vlmeval_echosafe.report --work-dir DIR [--out DIR]``: leaderboard, figures and an HTML page.

Also the dispatcher behind ``vlmeval-echosafe report …``, ``vlmeval-echosafe agree …`` (two judges, or a judge
and a person with ``--human``) and ``vlmeval-echosafe judge-sheet …``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from . import plots
from .collect import ReportError, collect
from .defense_cost import cost_table
from .echosafe import memory_table
from .html import write_html
from .reference import load_reference, reference_wide
from .tables import write_tables
from .traces import find_traces, items_for, join_decisions, load_trace


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def build_report(work_dir: Path, out: Path, n_boot: int = 1000, window: int = 20) -> dict[str, object]:
    """Write everything under ``out``; returns the written paths (tables, figures, html)."""
    board, results, notes = collect(work_dir, n_boot=n_boot)
    out.mkdir(parents=True, exist_ok=True)
    reference = load_reference()
    ref_wide = reference_wide(reference)
    traces = find_traces(work_dir)
    memory = memory_table(traces)
    cost = cost_table(work_dir, board)
    tables = write_tables(board, reference, ref_wide, out, notes, memory, cost)
    fig_dir = out / "plots"
    figures: list[tuple[Path, str]] = [
        (
            plots.ccr_by_category(board, fig_dir)[0],
            "CCR per category (bars) and the mean over categories, per "
            "run (CCR_NonRefusal for rule-judge runs); whiskers: 95% bootstrap interval over pairs.",
        ),
        (
            plots.over_defense_map(board, fig_dir)[0],
            "Refusal rate on unsafe items vs answer rate on safe items (non-refusal rate for rule-judge runs) "
            "(mean over categories); dashed: iso-CCR curves. Top right is best; top left over-defends. "
            "Marker size "
            "only keeps overlapping runs visible.",
        ),
    ]
    for tr in traces:
        trace = load_trace(tr.path)
        if trace.empty:
            notes.append(f"empty EchoSafe trace {tr.path} skipped")
            continue
        joined = {}
        for res in items_for(tr, results):
            rows = board[board["source"].isin([str(res.score), str(res.items)])]
            label = rows["judge"].iloc[0] if len(rows) else res.judge_file_name
            refusal_only = bool(rows["refusal_only"].all()) if len(rows) else res.judge_file_name == "rule"
            joined[label] = (join_decisions(trace, res.items), refusal_only)
        title = f"{tr.model}, {tr.dataset}" + (f", order {tr.order}" if tr.order else "")
        slug = _slug(f"{tr.model}_{tr.dataset}_{tr.order}" if tr.order else f"{tr.model}_{tr.dataset}")
        figures.append(
            (
                plots.memory_growth(trace, joined, title, fig_dir, f"memory_{slug}", window)[0],
                f"{title}: bank size, share of items that retrieved insights, top-1 similarity and rolling "
                f"RR/AR (NonRefusalRate for the rule judge; judged decisions joined by row index) along the stream.",
            )
        )
        figures.append(
            (
                plots.similarity_histogram(trace, title, fig_dir, f"similarity_{slug}")[0],
                f"{title}: top-1 retrieval similarity of unsafe vs safe queries.",
            )
        )
    page = write_html(board, ref_wide, figures, out, notes, work_dir, memory, cost)
    return {
        "tables": tables,
        "figures": [f for f, _ in figures],
        "html": page,
        "notes": notes,
        "rows": len(board),
        "runs": len(board.drop_duplicates(["model", "dataset", "judge", "order"])),
    }


def report_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlmeval_echosafe.report",
        description="Collect every MM-SafetyBench++ result under a VLMEvalKit work dir into a leaderboard "
        "(Markdown, CSV, JSON), figures (PNG, SVG) and a static HTML page.",
    )
    parser.add_argument("--work-dir", required=True, type=Path, help="the --work-dir given to run.py")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <work-dir>/report)")
    parser.add_argument(
        "--n-boot",
        type=int,
        default=1000,
        help="bootstrap draws, only used for results that have an items file but no score file",
    )
    parser.add_argument("--window", type=int, default=20, help="rolling window (items) of the memory plots")
    parser.add_argument(
        "--flops",
        type=Path,
        default=None,
        help="an overhead bench JSON: also write cost_flops.md, FLOPs vs Base per defense row at each real model shape",
    )
    args = parser.parse_args(argv)
    out = args.out or args.work_dir / "report"
    start = time.perf_counter()
    try:
        written = build_report(args.work_dir, out, n_boot=args.n_boot, window=args.window)
    except ReportError as err:
        print(f"vlmeval-echosafe report: error: {err}", file=sys.stderr)
        return 2
    for note in written["notes"]:
        print(f"note: {note}", file=sys.stderr)
    tables = written["tables"]
    runs = written["runs"]
    print(
        f"{written['rows']} leaderboard rows (one per category x image mode, plus each mode's mean, per run) from "
        f"{runs} run{'s' if runs != 1 else ''}; wrote in {time.perf_counter() - start:.1f} s:"
    )
    for path in tables.values():
        print(f"  {path}")
    print(f"  {len(written['figures'])} figures (PNG + SVG) in {out / 'plots'}")
    print(f"  {written['html']}")
    if args.flops is not None:
        from .flops import flops_table, markdown

        path = out / "cost_flops.md"
        path.write_text(markdown(flops_table(json.loads(args.flops.read_text()))) + "\n", encoding="utf-8")
        print(f"  {path}")
    return 0


def dispatch(argv: list[str]) -> int:
    """``vlmeval-echosafe report …`` / ``vlmeval-echosafe agree …`` (argv starts with the sub-command)."""
    command, rest = argv[0], argv[1:]
    if command == "report":
        return report_main(rest)
    if command == "judge-sheet" or (command == "agree" and "--human" in rest):
        from .calibrate import agree_main as human_agree_main
        from .calibrate import sheet_main

        return sheet_main(rest) if command == "judge-sheet" else human_agree_main(rest)
    if command == "agree":
        from .agree import main as agree_main

        return agree_main(rest)
    raise ValueError(f"unknown sub-command {command!r} (report, agree, judge-sheet)")
