"""Per tenant, what operators decided about insights and which request each insight came from.

The bank itself is append-only and never edited here. Two logs sit beside it under ``<work_dir>/guard/<tenant>/``:

- ``governance.jsonl``: one fsynced line per quarantine or deletion. Both withhold the insight from retrieval for
  good (the defense's ``withhold``); a deleted one is also hidden from the admin API. The bytes stay in the bank's
  log (delete is a tombstone, not an erasure).
- ``requests.jsonl``: one line per answered request (id, when, which insights it retrieved, what happened to its
  reflection): the provenance of the insight the request wrote, and each insight's retrieval count.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.trace import read_trace

ACTIONS = ("quarantine", "delete")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class TenantLogs:
    """The two logs of one tenant, loaded on start; appends are serialised by one lock."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.governance_path, self.requests_path = folder / "governance.jsonl", folder / "requests.jsonl"
        self._lock = threading.Lock()
        self.quarantined: set[int] = set()
        self.deleted: set[int] = set()
        self.requests: dict[str, dict[str, Any]] = {}
        self.retrieved: Counter[int] = Counter()
        for rec in _read(self.governance_path):
            (self.quarantined if rec["action"] == "quarantine" else self.deleted).add(int(rec["id"]))
        for rec in _read(self.requests_path):
            self._remember(rec)

    @property
    def withheld(self) -> frozenset[int]:
        return frozenset(self.quarantined | self.deleted)

    def decide(self, action: str, insight_id: int, reason: str = "") -> dict[str, Any]:
        """Record a quarantine or deletion durably (fsync) before it is reported done."""
        if action not in ACTIONS:
            raise ValueError(f"action {action!r}; expected one of {ACTIONS}")
        rec = {"action": action, "id": insight_id, "time": now(), "reason": reason}
        with self._lock:
            with self.governance_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            (self.quarantined if action == "quarantine" else self.deleted).add(insight_id)
        return rec

    def record_request(self, rec: dict[str, Any]) -> None:
        """One answered (or failed) request; appended without fsync (provenance, not an acknowledged insight)."""
        with self._lock:
            with self.requests_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
            self._remember(rec)

    def _remember(self, rec: dict[str, Any]) -> None:
        self.requests[rec["request"]] = rec
        self.retrieved.update(int(i) for i in rec.get("retrieved", ()))


def _read(path: Path) -> list[dict[str, Any]]:
    """A JSONL log; a line torn by a crash at the end is dropped with a warning (the trace reader's rule)."""
    if not path.exists():
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        return read_trace(path)
