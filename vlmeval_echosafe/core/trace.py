"""Per-item JSONL trace of a stateful defense, kept consistent with the host's resume.

When a run resumes, lines of rows the host will redo are dropped (the file is rewritten once, atomically), so the
trace holds exactly one line per finished row, in stream order. Lines are appended one write each, so a crash can
tear only the last line: :func:`read_trace` drops a torn last line with a warning and refuses any other bad line.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


class TraceError(ValueError):
    """A trace line other than the last is not a JSON object: the file was damaged, not torn by a crash."""


class TornLineWarning(UserWarning):
    """A trace's unreadable last line (torn by a crash) was dropped."""


def read_trace(path: Path) -> list[dict[str, Any]]:
    """The records of a trace file; a torn last line is dropped with a :class:`TornLineWarning`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for lineno, line in enumerate(lines, start=1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                warnings.warn(f"{path}: dropped line {lineno}, torn by a crash ({e})", TornLineWarning, stacklevel=2)
                break
            raise TraceError(f"{path}: line {lineno} is not valid JSON ({e}), and only a torn last line may be") from e
        if not isinstance(rec, dict):
            raise TraceError(f"{path}: line {lineno} must be a JSON object, found {type(rec).__name__}")
        records.append(rec)
    return records


class TraceWriter:
    """``write=False``: the records are read and kept in memory only (a torchrun rank that does not persist)."""

    def __init__(self, path: Path, keep: Callable[[dict[str, Any]], bool], write: bool = True) -> None:
        self.path, self.writes = path, write
        self.records: list[dict[str, Any]] = [r for r in read_trace(path) if keep(r)] if path.exists() else []
        if not write:
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")
        os.replace(tmp, path)

    def count(self, stream: str) -> int:
        return sum(1 for r in self.records if r.get("stream") == stream)

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if not self.writes:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
