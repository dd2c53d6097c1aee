"""What a runner tells a defense before a dataset's first item (:class:`DatasetRun`).

A harness knows which rows it already finished (its checkpoint files) and the order it runs them in; a defense
that keeps state across items needs both to resume exactly. The runner says so once per dataset; the rows
themselves travel with each :class:`~.item.Item`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..datasets.order import StreamOrder

ROW_METADATA = ("pairs", "index", "given", "none")


class RowNotFoundError(LookupError):
    """A message whose row nobody registered: the defense cannot tell which row it is."""


class ResumeUnknownError(RuntimeError):
    """Earlier state of a stream exists, but the runner did not say which rows the host has finished."""


@dataclass(frozen=True)
class DatasetRun:
    """``row_metadata``: what the items' rows carry: ``pairs`` (pair id, category, mode, label: MM-SafetyBench++),
    ``index`` (the row index alone: any other dataset a runner registers), ``given`` (rows the caller of the
    Python API passes with its items) or ``none`` (no runner). ``done``: the row indices the host finished in an
    earlier run and will skip, None when the runner did not say (a fresh object with no earlier state is then
    fine; continuing earlier state is refused). ``checkpoint``: the files ``done`` was read from, named in
    messages. ``table``: every row's metadata in the order the host runs them, to account for finished rows that
    left no trace (``staleness: 1``); empty when the runner has none.
    """

    name: str
    row_metadata: str = "none"
    order: StreamOrder = field(default_factory=StreamOrder)
    done: frozenset[str] | None = frozenset()
    checkpoint: tuple[str, ...] = ()
    table: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.row_metadata not in ROW_METADATA:
            raise ValueError(f"DatasetRun.row_metadata={self.row_metadata!r}; expected one of {ROW_METADATA}")
