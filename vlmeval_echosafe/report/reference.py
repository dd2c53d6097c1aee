"""The EchoSafe paper's published rows (average CCR over the six categories, judge gpt-5-mini).

They live in ``paper_reference.csv`` beside this file and are only ever shown in their own table, labelled
``paper, gpt-5-mini``: they were not measured by this plugin and are never mixed with measured rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REFERENCE_FILE = Path(__file__).with_name("paper_reference.csv")
REFERENCE_LABEL = "paper, gpt-5-mini"


def load_reference(path: Path = REFERENCE_FILE) -> pd.DataFrame:
    """Long table: source, inner_model, defense, mode, CCR (mean over categories, %)."""
    table = pd.read_csv(path, comment="#")
    table.insert(0, "source", REFERENCE_LABEL)
    return table


def reference_wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (mode, inner model), one column per defense, in the paper's column order."""
    order = list(dict.fromkeys(table["defense"]))
    wide = table.pivot_table(index=["source", "mode", "inner_model"], columns="defense", values="CCR", sort=False)
    return wide[order].reset_index()
