"""What the bank stores beside its index: JSON-plain records and the keys in one growing array."""

from __future__ import annotations

import json

import numpy as np


def plain(value: dict, what: str) -> dict:
    """A JSON round-tripped copy, so the bank holds exactly what a save/load gives back."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable: {e}") from e


class Vectors:
    """The keys in id order as one float32 array that grows by doubling (amortised O(1) appends).

    Kept beside the index because an IVF index cannot give its vectors back (nor a GPU one cheaply):
    ``random``, ``truncate``, the switch to the approximate index and its snapshot all read them from here.
    """

    def __init__(self, dim: int, rows: np.ndarray | None = None) -> None:
        """``rows`` is taken over, not copied (callers hand in an array of their own)."""
        rows = np.zeros((0, dim), dtype=np.float32) if rows is None else rows
        self._buf = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, dim)
        self._n = len(self._buf)

    def append(self, row: np.ndarray) -> None:
        if self._n == len(self._buf):
            grown = np.empty((max(16, 2 * len(self._buf)), self._buf.shape[1]), dtype=np.float32)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n] = row
        self._n += 1

    def view(self) -> np.ndarray:
        return self._buf[: self._n]
