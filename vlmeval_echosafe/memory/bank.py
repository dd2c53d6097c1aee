"""EchoSafe's insight memory: (contextual key, insight) pairs in stream order, searched by cosine similarity.

Keys are L2-normalised by the caller, so cosine similarity is the inner product an exact faiss index computes.
Only the distilled insight and its metadata are kept (never raw question/answer text); ``meta`` is what
``exclude``/``keep`` filters look at, e.g. to hide an item's own twin or to cut the bank back when resuming.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import index as idx
from . import persist
from .persist import EncoderMismatchError

NORM_TOLERANCE = 1e-3

MetaFilter = Callable[[dict], bool]


@dataclass(frozen=True)
class Hit:
    id: int  # position in the bank, 0..n-1, stream order
    similarity: float  # cosine similarity to the query
    insight: dict
    meta: dict


def _plain(value: dict, what: str) -> dict:
    """A JSON round-tripped copy, so the bank holds exactly what a save/load gives back."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable: {e}") from e


class MemoryBank:
    """Exact top-k retrieval over a growing bank; ``add`` is amortised O(1) (the index is never rebuilt)."""

    def __init__(self, dim: int, encoders: dict[str, str], use_gpu: bool | None = None) -> None:
        if type(dim) is not int or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not (isinstance(encoders, dict) and all(isinstance(v, str) for v in encoders.values())):
            raise ValueError(f"encoders must map names to identity strings, got {encoders!r}")
        self.dim = dim
        self.encoders = dict(encoders)
        self._on_gpu = idx.resolve_gpu(use_gpu)
        self._index = idx.to_device(idx.new_index(dim), self._on_gpu)
        self._records: list[tuple[dict, dict]] = []

    def __len__(self) -> int:
        return len(self._records)

    @property
    def on_gpu(self) -> bool:
        return self._on_gpu

    def _check_key(self, key: np.ndarray) -> np.ndarray:
        """``key`` as a (1, dim) float32 row; rejects what would make similarities meaningless."""
        arr = np.asarray(key, dtype=np.float32)
        if arr.shape != (self.dim,):
            raise ValueError(f"key must have shape ({self.dim},), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("key contains NaN or infinite values")
        norm = float(np.linalg.norm(arr))
        if abs(norm - 1.0) > NORM_TOLERANCE:
            raise ValueError(f"key must be L2-normalised (norm 1 ± {NORM_TOLERANCE}), got norm {norm:.6f}")
        return np.ascontiguousarray(arr[None, :])

    def add(self, key: np.ndarray, insight: dict, meta: dict) -> int:
        """Append one entry; returns its id (its position in the bank)."""
        row = self._check_key(key)
        record = (_plain(insight, "insight"), _plain(meta, "meta"))
        self._index.add(row)
        self._records.append(record)
        return len(self._records) - 1

    def _excluded(self, exclude: MetaFilter | None) -> set[int]:
        if exclude is None:
            return set()
        return {i for i, (_, meta) in enumerate(self._records) if exclude(meta)}

    def _hit(self, i: int, similarity: float) -> Hit:
        insight, meta = self._records[i]
        return Hit(id=i, similarity=similarity, insight=insight, meta=meta)

    def search(self, key: np.ndarray, k: int, exclude: MetaFilter | None = None) -> list[Hit]:
        """Exact top-k by cosine among entries whose meta fails ``exclude``; ties by id ascending."""
        query = self._check_key(key)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        n = len(self._records)
        excluded = self._excluded(exclude)
        wanted = min(k, n - len(excluded))
        if wanted <= 0:
            return []
        # Over-fetch past the excluded entries, plus one so the last fetched can show nothing unfetched ties
        # the k-th; widen while one might, because faiss breaks ties arbitrarily and the contract is by id.
        fetch = min(n, k + len(excluded) + 1)
        while True:
            sims, ids = self._index.search(query, fetch)
            pairs = zip(sims[0].tolist(), ids[0].tolist(), strict=True)
            found = sorted(((s, i) for s, i in pairs if i not in excluded), key=lambda h: (-h[0], h[1]))
            if fetch == n or float(sims[0, -1]) < found[wanted - 1][0]:
                break
            fetch = min(n, 2 * fetch)
        return [self._hit(i, s) for s, i in found[:wanted]]

    def random(self, k: int, rng: np.random.Generator, key: np.ndarray,
               exclude: MetaFilter | None = None) -> list[Hit]:
        """``k`` entries drawn uniformly without replacement (the "random memory" ablation).

        Similarities are measured against ``key`` and hits are ordered like :meth:`search`, so the prompt
        built from them differs from the retrieval run only in which insights were chosen.
        """
        query = self._check_key(key)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        excluded = self._excluded(exclude)
        candidates = np.array([i for i in range(len(self._records)) if i not in excluded], dtype=np.int64)
        chosen = rng.choice(candidates, size=min(k, len(candidates)), replace=False)
        hits = [self._hit(int(i), float(self._index.reconstruct(int(i)) @ query[0])) for i in chosen]
        return sorted(hits, key=lambda h: (-h.similarity, h.id))

    def entries(self) -> list[tuple[dict, dict]]:
        """(insight, meta) pairs in stream order."""
        return list(self._records)

    def update_meta(self, change: Callable[[dict], dict]) -> None:
        """Replace every entry's metadata by ``change(meta)``, vectors and insights untouched (used to mark
        the entries of a warm-start bank)."""
        self._records = [(insight, _plain(change(dict(meta)), "meta")) for insight, meta in self._records]

    def truncate(self, keep: MetaFilter) -> int:
        """Keep entries whose meta passes ``keep`` (order kept, ids renumbered); returns how many went.

        Used on resume, so the bank equals the rows already done. The index is rebuilt once.
        """
        mask = np.array([bool(keep(meta)) for _, meta in self._records], dtype=bool)
        removed = int((~mask).sum())
        if removed == 0:
            return 0
        vectors = idx.to_cpu(self._index, self._on_gpu).reconstruct_n(0, len(self._records))[mask]
        fresh = idx.new_index(self.dim)
        fresh.add(np.ascontiguousarray(vectors))
        self._index = idx.to_device(fresh, self._on_gpu)
        self._records = [r for r, kept in zip(self._records, mask, strict=True) if kept]
        return removed

    def save(self, path: str | Path) -> None:
        """Write a new crash-safe snapshot under the folder ``path`` (see :mod:`.persist`)."""
        persist.write_snapshot(path, idx.to_cpu(self._index, self._on_gpu), self.encoders, self._records)

    @classmethod
    def load(cls, path: str | Path, encoders: dict[str, str] | None = None,
             use_gpu: bool | None = None) -> MemoryBank:
        """The bank saved at ``path``; with ``encoders``, refuse one whose keys came from other encoders."""
        snap = persist.read_snapshot(path)
        if encoders is not None and dict(encoders) != snap.encoders:
            raise EncoderMismatchError(
                f"{snap.manifest_path}: memory bank was built with encoders {snap.encoders}, "
                f"but this run uses {dict(encoders)}; use a bank built with the same encoders "
                f"or start an empty one")
        bank = cls(snap.dim, snap.encoders, use_gpu=use_gpu)
        bank._index = idx.to_device(snap.index, bank.on_gpu)
        bank._records = snap.records
        return bank

    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether ``path`` holds a saved bank (its ``CURRENT`` pointer exists)."""
        return persist.exists(path)

