"""The records an item and a stream carry through EchoSafe's steps (embed -> retrieve -> answer -> reflect -> store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.inner import Answered
from ..memory import MemoryBank


@dataclass
class Stream:
    """One bank and its position in the item stream."""

    id: str
    bank: MemoryBank
    path: Path | None  # None: never saved (read-only)
    pos: int = 0


@dataclass
class StreamItem:
    """One item on its way through a micro-batch."""

    images: list[str]
    question: str
    row: dict[str, Any]
    key: np.ndarray | None
    dataset: str
    times: dict[str, float]
    stream: Stream | None = None
    bank_size: int | None = 0  # None: not known (a row whose pipelined reflection was lost in a stop)
    hits: list = field(default_factory=list)
    answer: str = ""
    insight: dict | None = None
    decision: str | None = None  # the reflection's decision, also when the insight was rejected
    reason: str | None = None
    code: str | None = None
    written: int | None = None
    stream_pos: int = 0


@dataclass(frozen=True)
class Embedded:
    """An item once its key is computed: what every rank of a shared stream needs to retrieve for it."""

    images: list[str]
    question: str
    row: dict[str, Any]
    key: np.ndarray | None
    embed_s: float
    dataset: str


# What the rank that answers an item tells the others about it (the fields its answer and reflection set).
OUTCOME = ("answer", "insight", "decision", "reason", "code", "times")


@dataclass
class Pending:
    """A micro-batch answered but not yet reflected on (``staleness: 1``)."""

    items: list[StreamItem]
    answered: Answered
    dataset: str
