"""How release rows find their questions: by an id column, by position within (category, mode, label), or by a
question column named in the config (``release.linking``, ``release.columns``); chosen from the columns the rows
have, with the reason recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from .config import CONFIG_FILE
from .validate import DatasetError

CFG = CONFIG_FILE
LINKINGS = ("auto", "id", "position")


def column(rows: pd.DataFrame, cfg: dict[str, Any], name: str, source: str) -> str | None:
    column = cfg["columns"].get(name)
    if column is not None and column not in rows.columns:
        raise DatasetError(
            f"{source}: column {column!r} (for {name}) not found; columns found: {list(rows.columns)}. "
            f"Set release.columns.{name} in {CFG}"
        )
    return column


@dataclass(frozen=True)
class Linking:
    """How rows find their question: ``how`` is "id", "position" or "question column"; ``id_column`` gives the
    question id (else the position within (category, mode, label)), which is also the pair id's number."""

    how: str
    id_column: str | None
    question_column: str | None
    reason: str


def linking(rows: pd.DataFrame, cfg: dict[str, Any], source: str) -> Linking:
    cols, how = cfg["columns"], cfg.get("linking", "auto")
    if how not in LINKINGS:
        raise DatasetError(f"{CFG}: release.linking is {how!r}; expected one of {list(LINKINGS)}")
    id_col = cols.get("question_id")
    if how == "id" and not id_col:
        raise DatasetError(f"{CFG}: release.linking is 'id' but release.columns.question_id is not set")
    by_id = how == "id" or (how == "auto" and id_col in rows.columns)
    if by_id:
        column(rows, cfg, "question_id", source)
    ids = f"ids from column {id_col!r}" if by_id else "ids by position within (category, mode, label)"
    if cols.get("question"):
        named = column(rows, cfg, "question", source)
        return Linking(
            "question column", id_col if by_id else None, named, f"release.columns.question names {named!r}; {ids}"
        )
    if by_id:
        return Linking(
            "id", id_col, None, f"{'release.linking: id' if how == 'id' else 'auto'}: the rows have {id_col!r}"
        )
    if how == "position":
        return Linking("position", None, None, "release.linking: position")
    return Linking(
        "position", None, None, f"auto: the rows have no id column {id_col!r} (columns: {list(rows.columns)})"
    )
