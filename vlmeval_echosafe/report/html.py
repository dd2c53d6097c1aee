"""A static HTML page (no server, no scripts): tables inline, figures referenced by relative path."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from .defense_cost import COST_NOTE
from .echosafe import orders_table
from .tables import (
    LEGEND,
    MEMORY_NOTE,
    ORDERS_NOTE,
    _display,
    category_ccr_table,
    detail_table,
    summary_table,
)

# Text columns (left-aligned); everything else is a number.
KEY_COLUMNS = {"model", "dataset", "judge", "mode", "category", "source", "inner_model"}

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1300px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; white-space: normal; vertical-align: bottom; }
th.key, td.key { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
tr.refusal-only td { background: #fff8e6; }
table.reference th { background: #e8eef8; } table.reference td { background: #f6f9fd; }
.note { color: #555; font-size: 0.9em; max-width: 75em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.85em; }
"""


def table_html(frame: pd.DataFrame, css_class: str = "", mark_refusal_only: bool = False) -> str:
    shown = _display(frame)
    key = ["key" if c in KEY_COLUMNS else "" for c in shown.columns]
    head = "".join(
        f'<th class="{k}">{html.escape(str(c).replace("_", " "))}</th>'
        for k, c in zip(key, shown.columns, strict=False)
    )
    body = []
    for _, row in shown.iterrows():
        cls = ' class="refusal-only"' if mark_refusal_only and "refusal-only" in str(row.get("judge", "")) else ""
        cells = "".join(f'<td class="{k}">{html.escape(str(v))}</td>' for k, v in zip(key, row, strict=False))
        body.append(f"<tr{cls}>{cells}</tr>")
    cls_attr = f' class="{css_class}"' if css_class else ""
    return (
        f'<div class="scroll"><table{cls_attr}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def figure_html(path: Path, root: Path, caption: str) -> str:
    rel = path.relative_to(root).as_posix()
    svg = path.with_suffix(".svg")
    link = f' (<a href="{html.escape(svg.relative_to(root).as_posix())}">SVG</a>)' if svg.exists() else ""
    return (
        f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>"
    )


def write_html(
    board: pd.DataFrame,
    ref_wide: pd.DataFrame,
    figures: list[tuple[Path, str]],
    out: Path,
    notes: list[str],
    work_dir: Path,
    memory: pd.DataFrame | None = None,
    cost: pd.DataFrame | None = None,
) -> Path:
    """``index.html`` under ``out``; ``figures`` are (PNG path under ``out``, caption)."""
    sections = [
        "<h1>MM-SafetyBench++ report</h1>",
        f'<p class="note">Work dir: <code>{html.escape(str(work_dir))}</code>. '
        f"{html.escape(LEGEND.replace('`', ''))} Shaded rows come from the <b>rule (refusal-only)</b> judge: "
        "refusal clauses only, no quality score, not comparable with LLM-judge rows or the paper.</p>",
        "<h2>Measured: mean over categories</h2>",
        table_html(summary_table(board), "measured", mark_refusal_only=True),
        "<h2>Measured: CCR per category</h2>",
        table_html(category_ccr_table(board), "measured", mark_refusal_only=True),
        "<h2>Figures</h2>",
        *(figure_html(p, out, c) for p, c in figures),
        "<h2>Measured: all metrics per category (95% bootstrap interval over pairs)</h2>",
        table_html(detail_table(board), "measured detail", mark_refusal_only=True),
        *(
            [
                "<h2>EchoSafe memory</h2>",
                f'<p class="note">{html.escape(MEMORY_NOTE)}</p>',
                table_html(memory, "memory"),
            ]
            if memory is not None and len(memory)
            else []
        ),
        *(
            [
                "<h2>Defense cost</h2>",
                f'<p class="note">{html.escape(COST_NOTE)}</p>',
                table_html(cost.drop(columns=["source"]), "cost"),
            ]
            if cost is not None and len(cost)
            else []
        ),
        *(
            [
                "<h2>Across stream orders</h2>",
                f'<p class="note">{html.escape(ORDERS_NOTE)}</p>',
                table_html(orders_table(board), "orders"),
            ]
            if len(orders_table(board))
            else []
        ),
        "<h2>Reference: published numbers (paper, gpt-5-mini)</h2>",
        '<p class="note">Average CCR over the six categories on the full MM-SafetyBench++, '
        "as published in the "
        "EchoSafe paper (judge gpt-5-mini). Not measured here.</p>",
        table_html(ref_wide, "reference"),
    ]
    if notes:
        sections += ["<h2>Notes</h2>", "<ul>", *(f"<li>{html.escape(n)}</li>" for n in notes), "</ul>"]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>MM-SafetyBench++ report</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
