"""Per-item JSONL trace of a stateful defense, kept consistent with the host's resume.

When a run resumes, lines of rows the host will redo are dropped (the file is rewritten once, atomically), so the
trace holds exactly one line per finished row, in stream order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class TraceWriter:
    """``write=False``: the records are read and kept in memory only (a torchrun rank that does not persist)."""

    def __init__(self, path: Path, keep: Callable[[dict[str, Any]], bool], write: bool = True) -> None:
        self.path, self.writes = path, write
        self.records: list[dict[str, Any]] = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a crash
                    continue
                if keep(rec):
                    self.records.append(rec)
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
