"""EchoSafe's insight memory: (contextual key, insight) pairs in stream order, searched by cosine similarity.

Keys are L2-normalised by the caller, so cosine similarity is the inner product an exact faiss index computes.
Only the distilled insight and its metadata are kept (never raw question/answer text); ``meta`` is what
``exclude``/``keep`` filters look at, e.g. to hide an item's own twin or to cut the bank back when resuming.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import index as idx
from . import persist
from .persist import EncoderMismatchError
from .records import Vectors as _Vectors
from .records import plain as _plain

NORM_TOLERANCE = 1e-3

MetaFilter = Callable[[dict], bool]


@dataclass(frozen=True)
class Hit:
    id: int  # position in the bank, 0..n-1, stream order
    similarity: float  # cosine similarity to the query
    insight: dict
    meta: dict


class MemoryBank:
    """Top-k retrieval over a growing bank; ``add`` is amortised O(1) (no rebuild per insert).

    Search is exact (``IndexFlatIP``) until the bank reaches ``approx_threshold`` entries, where the index is
    switched once to an approximate ``IndexIVFFlat`` trained on the keys present (``None``: always exact).
    ``nprobe`` trades the approximate index's speed for recall. ``index_meta`` names meta keys whose values
    are indexed, so :meth:`ids_where` finds e.g. an item's twin without scanning all entries. ``compaction``
    says when :meth:`save` also folds the log into a new snapshot.
    """

    def __init__(
        self,
        dim: int,
        encoders: dict[str, str],
        use_gpu: bool | None = None,
        approx_threshold: int | None = 50_000,
        nprobe: int = idx.DEFAULT_NPROBE,
        index_meta: tuple[str, ...] = (),
        compaction: persist.CompactionPolicy = persist.DEFAULT_COMPACTION,
    ) -> None:
        if type(dim) is not int or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not (isinstance(encoders, dict) and all(isinstance(v, str) for v in encoders.values())):
            raise ValueError(f"encoders must map names to identity strings, got {encoders!r}")
        if approx_threshold is not None and (type(approx_threshold) is not int or approx_threshold < 1):
            raise ValueError(f"approx_threshold must be a positive integer or None, got {approx_threshold!r}")
        if type(nprobe) is not int or nprobe < 1:
            raise ValueError(f"nprobe must be a positive integer, got {nprobe!r}")
        if isinstance(index_meta, str) or not all(isinstance(k, str) for k in index_meta):
            raise ValueError(f"index_meta must be a tuple of meta key names, got {index_meta!r}")
        self.dim = dim
        self.encoders = dict(encoders)
        self.approx_threshold = approx_threshold
        self.nprobe = nprobe
        self.index_meta = tuple(index_meta)
        self.compaction = compaction
        self._on_gpu = idx.resolve_gpu(use_gpu)
        self._index = idx.to_device(idx.new_index(dim), self._on_gpu)
        self._approx = False
        self._vectors = _Vectors(dim)
        self._records: list[tuple[dict, dict]] = []
        self._by_meta: dict[str, dict[str, list[int]]] = {}
        self._reindex_meta()
        # Where the last save went and how much of the bank is there; ``_rewritten`` marks a change to entries
        # already saved (truncate, update_meta, the switch of index), which the log cannot express.
        self._saved: persist.Position | None = None
        self._rewritten = False

    def __len__(self) -> int:
        return len(self._records)

    @property
    def on_gpu(self) -> bool:
        return self._on_gpu

    @property
    def index_kind(self) -> str:
        """``"IndexFlatIP"`` (exact) or ``"IndexIVFFlat"`` (approximate, after the switch)."""
        return idx.APPROX_NAME if self._approx else idx.INDEX_NAME

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

    # ---- meta index ---------------------------------------------------------------------------------------
    @staticmethod
    def _meta_value(value: object) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)

    def _index_meta_of(self, i: int, meta: dict) -> None:
        for name in self.index_meta:
            if name in meta:
                self._by_meta[name].setdefault(self._meta_value(meta[name]), []).append(i)

    def _reindex_meta(self) -> None:
        self._by_meta = {name: {} for name in self.index_meta}
        for i, (_, meta) in enumerate(self._records):
            self._index_meta_of(i, meta)

    def ids_where(self, match: dict[str, object]) -> set[int]:
        """Ids of entries whose meta has every ``key: value`` of ``match`` (JSON equality), e.g.
        ``{"dataset": d, "pair_id": p}`` for the twin guard's ``exclude_ids``.

        At least one key must be in ``index_meta``: the cost is the shortest matching id list among the
        indexed keys, not the bank's size.
        """
        indexed = [k for k in match if k in self._by_meta]
        if not indexed:
            raise KeyError(f"none of {sorted(match)} is an indexed meta key (index_meta={self.index_meta!r})")
        want = {k: self._meta_value(v) for k, v in match.items()}
        shortest = min((self._by_meta[k].get(want[k], []) for k in indexed), key=len)
        return {
            i
            for i in shortest
            if all(k in (meta := self._records[i][1]) and self._meta_value(meta[k]) == v for k, v in want.items())
        }

    # ---- index --------------------------------------------------------------------------------------------
    def _build_approx(self) -> None:
        """Replace the index by an approximate one trained on all keys present (the one-off switch)."""
        cpu = idx.new_approx_index(self._vectors.view(), self.nprobe)
        self._index = idx.to_device(cpu, self._on_gpu)
        self._approx = True
        self._rewritten = True

    def _rebuild(self) -> None:
        """A fresh index over the stored keys, of the kind the bank's size calls for."""
        self._approx = False
        self._rewritten = True
        if self.approx_threshold is not None and len(self._records) >= self.approx_threshold:
            self._build_approx()
        else:
            fresh = idx.new_index(self.dim)
            if len(self._records):
                fresh.add(self._vectors.view())
            self._index = idx.to_device(fresh, self._on_gpu)

    def make_approximate(self) -> bool:
        """Switch to the approximate index now, whatever the size (e.g. for a loaded bank or a benchmark);
        returns False when it already is approximate or the bank is empty."""
        if self._approx or not self._records:
            return False
        self._build_approx()
        return True

    def set_nprobe(self, nprobe: int) -> None:
        """How many inverted lists the approximate index visits per query (more: slower, better recall)."""
        if type(nprobe) is not int or nprobe < 1:
            raise ValueError(f"nprobe must be a positive integer, got {nprobe!r}")
        if self._approx and nprobe != self.nprobe:
            self._rewritten = True  # the saved manifest records nprobe
        self.nprobe = nprobe
        if self._approx:
            idx.set_nprobe(self._index, nprobe)

    def add(self, key: np.ndarray, insight: dict, meta: dict) -> int:
        """Append one entry; returns its id (its position in the bank)."""
        row = self._check_key(key)
        record = (_plain(insight, "insight"), _plain(meta, "meta"))
        i = len(self._records)
        self._vectors.append(row[0])
        self._records.append(record)
        self._index_meta_of(i, record[1])
        if not self._approx and self.approx_threshold is not None and i + 1 >= self.approx_threshold:
            self._build_approx()  # trained on every key so far, this one included
        else:
            self._index.add(row)
        return i

    # ---- queries ------------------------------------------------------------------------------------------
    def _excluded(self, exclude: MetaFilter | None, exclude_ids: Iterable[int] | None = None) -> set[int]:
        n = len(self._records)
        out = set() if exclude_ids is None else {i for i in exclude_ids if 0 <= i < n}
        if exclude is not None:
            out.update(i for i, (_, meta) in enumerate(self._records) if exclude(meta))
        return out

    def _hit(self, i: int, similarity: float) -> Hit:
        insight, meta = self._records[i]
        return Hit(id=i, similarity=similarity, insight=insight, meta=meta)

    def _brute(self, query: np.ndarray, excluded: set[int]) -> list[tuple[float, int]]:
        """Exact (similarity, id) of every non-excluded entry, best first, ties by id."""
        sims = self._vectors.view() @ query[0]
        order = np.lexsort((np.arange(len(sims)), -sims))
        return [(float(sims[i]), int(i)) for i in order if int(i) not in excluded]

    def search(
        self, key: np.ndarray, k: int, exclude: MetaFilter | None = None, exclude_ids: Iterable[int] | None = None
    ) -> list[Hit]:
        """Top-k by cosine among entries neither matched by ``exclude`` (a meta predicate, which scans every
        entry) nor listed in ``exclude_ids`` (e.g. from :meth:`ids_where`); ties by id ascending.

        Exact while the index is exact; after the switch, the approximate index's answer (still always
        ``min(k, entries left)`` hits: if the probed lists hold too few, it falls back to an exact scan).
        """
        query = self._check_key(key)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        n = len(self._records)
        excluded = self._excluded(exclude, exclude_ids)
        wanted = min(k, n - len(excluded))
        if wanted <= 0:
            return []
        # Over-fetch past the excluded entries, plus one so the last fetched can show nothing unfetched ties
        # the k-th; widen while one might, because faiss breaks ties arbitrarily and the contract is by id.
        fetch = min(n, k + len(excluded) + 1)
        while True:
            sims, ids = self._index.search(query, fetch)
            pairs = zip(sims[0].tolist(), ids[0].tolist(), strict=True)
            found = sorted(((s, i) for s, i in pairs if i >= 0 and i not in excluded), key=lambda h: (-h[0], h[1]))
            complete = int(ids[0, -1]) >= 0  # an IVF index returns -1 past what its probed lists hold
            settled = fetch == n or not complete or float(sims[0, -1]) < found[wanted - 1][0]
            if len(found) >= wanted and settled:
                break
            if not complete or fetch == n:
                found = self._brute(query, excluded)
                break
            fetch = min(n, 2 * fetch)
        return [self._hit(i, s) for s, i in found[:wanted]]

    def random(
        self,
        k: int,
        rng: np.random.Generator,
        key: np.ndarray,
        exclude: MetaFilter | None = None,
        exclude_ids: Iterable[int] | None = None,
    ) -> list[Hit]:
        """``k`` entries drawn uniformly without replacement (the "random memory" ablation).

        Similarities are measured against ``key`` and hits are ordered like :meth:`search`, so the prompt
        built from them differs from the retrieval run only in which insights were chosen.
        """
        query = self._check_key(key)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        excluded = self._excluded(exclude, exclude_ids)
        candidates = np.array([i for i in range(len(self._records)) if i not in excluded], dtype=np.int64)
        chosen = rng.choice(candidates, size=min(k, len(candidates)), replace=False)
        vectors = self._vectors.view()
        hits = [self._hit(int(i), float(vectors[int(i)] @ query[0])) for i in chosen]
        return sorted(hits, key=lambda h: (-h.similarity, h.id))

    def entries(self) -> list[tuple[dict, dict]]:
        """(insight, meta) pairs in stream order."""
        return list(self._records)

    def update_meta(self, change: Callable[[dict], dict]) -> None:
        """Replace every entry's metadata by ``change(meta)``, vectors and insights untouched (used to mark
        the entries of a warm-start bank)."""
        self._records = [(insight, _plain(change(dict(meta)), "meta")) for insight, meta in self._records]
        self._reindex_meta()
        self._rewritten = True

    def truncate(self, keep: MetaFilter) -> int:
        """Keep entries whose meta passes ``keep`` (order kept, ids renumbered); returns how many went.

        Used on resume, so the bank equals the rows already done. The index is rebuilt once from the stored
        keys: exact if fewer than ``approx_threshold`` entries remain, else approximate (retrained).
        """
        mask = np.array([bool(keep(meta)) for _, meta in self._records], dtype=bool)
        removed = int((~mask).sum())
        if removed == 0:
            return 0
        self._vectors = _Vectors(self.dim, self._vectors.view()[mask])
        self._records = [r for r, kept in zip(self._records, mask, strict=True) if kept]
        self._reindex_meta()
        self._rebuild()
        return removed

    def save(self, path: str | Path) -> None:
        """Make every entry added so far durable in the folder ``path`` (see :mod:`.persist`).

        The entries added since the last save go to the folder's log as one batch with one fsync, so the cost
        does not grow with the bank. A whole new snapshot is written instead when ``path`` does not hold this
        bank's last save, when saved entries were changed (truncate, update_meta, the switch of index), and,
        after the append, when the log has outgrown the snapshot per ``compaction``.
        """
        saved = self._saved
        if saved is None or self._rewritten or not persist.is_current(path, saved):
            self.compact(path)
            return
        vectors = self._vectors.view()
        batch = [(i, vectors[i], *self._records[i]) for i in range(saved.count, len(self._records))]
        self._saved = persist.append(saved, batch)
        if self.compaction.due(self._saved.log_end, self._saved.snapshot_bytes):
            self.compact(path)

    def compact(self, path: str | Path) -> None:
        """Write the whole bank as a new crash-safe snapshot in ``path``, with an empty log (see :mod:`.persist`).

        :meth:`save` calls it when needed; call it at the end of a run to leave a bank that loads without a log.
        """
        cpu = idx.to_cpu(self._index, self._on_gpu)
        self._saved = persist.write_snapshot(path, cpu, self.encoders, self._records, self._vectors.view())
        self._rewritten = False

    @classmethod
    def load(
        cls,
        path: str | Path,
        encoders: dict[str, str] | None = None,
        use_gpu: bool | None = None,
        approx_threshold: int | None = 50_000,
        nprobe: int | None = None,
        index_meta: tuple[str, ...] = (),
        compaction: persist.CompactionPolicy = persist.DEFAULT_COMPACTION,
    ) -> MemoryBank:
        """The bank saved at ``path`` (snapshot, then log); with ``encoders``, refuse one whose keys came from
        other encoders.

        The saved index is used as is (an approximate one stays approximate, with its saved ``nprobe`` unless
        ``nprobe`` is given), with the log's keys added to it; ``approx_threshold`` governs the switch of a
        still-exact bank as it grows. A torn last batch of the log is dropped with a warning.
        """
        snap = persist.read_bank(path)
        if encoders is not None and dict(encoders) != snap.encoders:
            raise EncoderMismatchError(
                f"{snap.manifest_path}: memory bank was built with encoders {snap.encoders}, "
                f"but this run uses {dict(encoders)}; use a bank built with the same encoders "
                f"or start an empty one"
            )
        saved_nprobe = snap.index_params.get("nprobe")
        if nprobe is None:
            nprobe = saved_nprobe if type(saved_nprobe) is int and saved_nprobe > 0 else idx.DEFAULT_NPROBE
        bank = cls(
            snap.dim,
            snap.encoders,
            use_gpu=use_gpu,
            approx_threshold=approx_threshold,
            nprobe=nprobe,
            index_meta=index_meta,
            compaction=compaction,
        )
        bank._approx = idx.index_name(snap.index) == idx.APPROX_NAME
        if bank._approx:
            idx.set_nprobe(snap.index, nprobe)
        if len(snap.log_keys):
            snap.index.add(snap.log_keys)
        bank._index = idx.to_device(snap.index, bank.on_gpu)
        bank._vectors = _Vectors(snap.dim, snap.vectors)
        bank._records = snap.records
        bank._reindex_meta()
        bank._saved = snap.position
        bank._rewritten = bank._approx and nprobe != saved_nprobe
        return bank

    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether ``path`` holds a saved bank (its ``CURRENT`` pointer exists)."""
        return persist.exists(path)
