"""Crash-safe bank files, without pickle: a snapshot plus an append-only log.

A bank path is a folder with ``CURRENT`` (the name of the live snapshot) and ``snap-<counter>/`` folders. A
snapshot holds ``index.faiss``, ``insights.jsonl``, ``manifest.json`` (which records the index type and its
parameters, and ``count``, the entries in the snapshot), ``vectors.npy`` (the keys in id order, no pickle) when
the index is the approximate ``IndexIVFFlat``, which does not give its vectors back, and ``log.bin``: the
entries added after the snapshot, one checksummed record each, ids ``count``, ``count + 1``, ... (:mod:`.log`).

A save appends the new entries to the log and fsyncs it once, so its cost does not grow with the bank.
Compaction writes and fsyncs a whole new snapshot (with an empty log), swaps ``CURRENT`` atomically, then deletes
older snapshots: a crash at any point leaves the previous snapshot and its log loadable. Loading replays the
snapshot, then the log; it cross-checks the files, as a silently short or misaligned bank would feed wrong
insights. Banks written before the log existed (manifest version 1: no ``log.bin``) still load.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import faiss
import numpy as np

from . import log
from .index import APPROX_NAME, INDEX_NAMES, index_name, index_params, is_expected_index

FORMAT = "echosafe-bank"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: snapshot only, no log
CURRENT = "CURRENT"
INDEX_FILE = "index.faiss"
INSIGHTS_FILE = "insights.jsonl"
MANIFEST_FILE = "manifest.json"
VECTORS_FILE = "vectors.npy"
LOG_FILE = "log.bin"
_SNAP = re.compile(r"snap-(\d+)")


class BankError(ValueError):
    """A bank folder is missing, corrupt or inconsistent; the message names the file."""


class EncoderMismatchError(BankError):
    """The bank's keys were computed by other encoders, so similarities against new keys are meaningless."""


@dataclass(frozen=True)
class CompactionPolicy:
    """When a save also writes a new snapshot: once the log holds at least ``ratio`` times the snapshot's bytes
    and at least ``min_bytes``.

    Growing the snapshot geometrically keeps the bytes written per durable insight bounded, whatever the bank's
    size: a record of ``r`` bytes is written once to the log and, amortised, at most ``1 + 1/ratio`` more
    times by compactions, so at most ``(2 + 1/ratio)·r`` in all. ``min_bytes`` spares small banks frequent
    compactions; ``ratio`` also bounds the log a load has to replay.
    """

    ratio: float = 1.0
    min_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if not self.ratio > 0 or type(self.min_bytes) is not int or self.min_bytes < 0:
            raise ValueError(f"compaction needs ratio > 0 and min_bytes >= 0, got {self}")

    def due(self, log_bytes: int, snapshot_bytes: int) -> bool:
        return log_bytes >= max(self.min_bytes, self.ratio * snapshot_bytes)


DEFAULT_COMPACTION = CompactionPolicy()


@dataclass(frozen=True)
class Position:
    """Where a bank's durable copy is: its folder, the live snapshot, and how far the log goes."""

    root: Path  # resolved
    snapshot: str  # the folder name CURRENT holds
    count: int  # durable entries: the snapshot's plus the log's
    log_end: int  # log offset after the last good record
    snapshot_bytes: int  # size of the snapshot's files, for the compaction policy

    @property
    def log(self) -> Path:
        return self.root / self.snapshot / LOG_FILE


@dataclass
class Snapshot:
    """A loaded bank: the snapshot's index, and the entries of snapshot and log together."""

    dim: int
    encoders: dict[str, str]
    index: faiss.Index  # the snapshot's entries only; ``log_keys`` are still to be added
    records: list[tuple[dict, dict]]
    manifest_path: Path
    vectors: np.ndarray  # (count, dim) float32, the keys in id order, snapshot then log
    log_keys: np.ndarray  # (n_log, dim) float32, the log's keys
    index_params: dict
    position: Position | None  # None for a version-1 bank, which has no log: the next save rewrites it


def exists(root: str | Path) -> bool:
    return (Path(root) / CURRENT).is_file()


@contextmanager
def _durable(path: Path) -> Iterator[IO[str]]:
    """A text file that is flushed and fsynced before the block is left."""
    with path.open("w", encoding="utf-8") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def fsync_path(path: Path) -> None:
    """fsync a written file or a directory (so a rename or new entry in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _next_counter(root: Path) -> int:
    """One past every snapshot folder present, so a crashed save's half-written leftover is never reused."""
    found = [int(m.group(1)) for p in root.iterdir() if (m := _SNAP.fullmatch(p.name))]
    return max(found, default=0) + 1


def is_current(root: str | Path, position: Position) -> bool:
    """Whether ``root`` is the folder of ``position`` and still has its snapshot live (nobody compacted since)."""
    root = Path(root)
    try:
        return root.resolve() == position.root and (root / CURRENT).read_text().strip() == position.snapshot
    except (OSError, UnicodeDecodeError):
        return False


def append(position: Position, entries: list[tuple[int, np.ndarray, dict, dict]]) -> Position:
    """Append ``entries`` (id, key, insight, meta; ids from ``position.count`` on) to the log and fsync once."""
    if entries and entries[0][0] != position.count:
        raise ValueError(f"{position.log}: next id is {position.count}, got entries from id {entries[0][0]}")
    end = log.append(position.log, position.log_end, entries)
    return replace(position, count=position.count + len(entries), log_end=end)


def write_snapshot(
    root: str | Path,
    index: faiss.Index,
    encoders: dict[str, str],
    records: list[tuple[dict, dict]],
    vectors: np.ndarray | None = None,
) -> Position:
    """Write ``index`` (a CPU index) and ``records`` as the new current snapshot of ``root``, with an empty log.

    ``vectors`` (the keys in id order) is required for, and only written with, the approximate index.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    snap = root / f"snap-{_next_counter(root):06d}"
    snap.mkdir()
    faiss.write_index(index, str(snap / INDEX_FILE))
    fsync_path(snap / INDEX_FILE)
    name = index_name(index)
    if name == APPROX_NAME:
        if vectors is None or vectors.shape != (len(records), index.d):
            raise ValueError(f"{APPROX_NAME} snapshots need the ({len(records)}, {index.d}) key vectors")
        with (snap / VECTORS_FILE).open("wb") as fh:
            np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
    with _durable(snap / INSIGHTS_FILE) as fh:
        for i, (insight, meta) in enumerate(records):
            fh.write(json.dumps({"id": i, "insight": insight, "meta": meta}, ensure_ascii=False) + "\n")
    with _durable(snap / LOG_FILE):
        pass
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "dim": index.d,
        "count": len(records),
        "encoders": encoders,
        "index": name,
        "index_params": index_params(index),
        "log": LOG_FILE,
        "faiss_version": faiss.__version__,
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with _durable(snap / MANIFEST_FILE) as fh:
        fh.write(json.dumps(manifest, indent=2) + "\n")
    fsync_path(snap)
    with _durable(root / (CURRENT + ".tmp")) as fh:
        fh.write(snap.name + "\n")
    os.replace(root / (CURRENT + ".tmp"), root / CURRENT)
    fsync_path(root)
    for old in root.iterdir():
        if old != snap and _SNAP.fullmatch(old.name) and old.is_dir():
            # Stale snapshots are garbage; one left behind (e.g. a reader holds it) goes on the next compaction.
            shutil.rmtree(old, ignore_errors=True)
    return Position(root.resolve(), snap.name, len(records), 0, _size(snap))


def _size(snap: Path) -> int:
    """Bytes of a snapshot's files, its log left out."""
    return sum(p.stat().st_size for p in snap.iterdir() if p.is_file() and p.name != LOG_FILE)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise BankError(f"{path}: missing") from e
    except (OSError, UnicodeDecodeError) as e:
        raise BankError(f"{path}: unreadable ({e})") from e


def _is_int(value: object, minimum: int) -> bool:
    return type(value) is int and value >= minimum


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise BankError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise BankError(f"{path}: expected a JSON object, found {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise BankError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") not in READABLE_VERSIONS:
        raise BankError(f"{path}: version is {manifest.get('version')!r}, expected one of {list(READABLE_VERSIONS)}")
    if manifest["version"] >= 2 and manifest.get("log") != LOG_FILE:
        raise BankError(f"{path}: log is {manifest.get('log')!r}, expected {LOG_FILE!r}")
    if manifest.get("index") not in INDEX_NAMES:
        raise BankError(f"{path}: index is {manifest.get('index')!r}, expected one of {list(INDEX_NAMES)}")
    if not isinstance(manifest.setdefault("index_params", {}), dict):
        raise BankError(f"{path}: index_params must be a JSON object, found {manifest['index_params']!r}")
    if not _is_int(manifest.get("dim"), 1):
        raise BankError(f"{path}: dim must be a positive integer, found {manifest.get('dim')!r}")
    if not _is_int(manifest.get("count"), 0):
        raise BankError(f"{path}: count must be a non-negative integer, found {manifest.get('count')!r}")
    encoders = manifest.get("encoders")
    if not (isinstance(encoders, dict) and all(isinstance(v, str) for v in encoders.values())):
        raise BankError(f"{path}: encoders must map names to identity strings, found {encoders!r}")
    return manifest


def _read_index(path: Path, dim: int, count: int, name: str) -> faiss.Index:
    if not path.is_file():
        raise BankError(f"{path}: missing")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        raise BankError(f"{path}: not a readable faiss index ({str(e).splitlines()[0]})") from e
    if not is_expected_index(index, dim, name):
        raise BankError(
            f"{path}: expected {name} of dim {dim} (per {MANIFEST_FILE}), found {type(index).__name__} of dim {index.d}"
        )
    if index.ntotal != count:
        raise BankError(f"{path}: holds {index.ntotal} vectors but {MANIFEST_FILE} says count {count}")
    return index


def _read_vectors(path: Path, index: faiss.Index, name: str, dim: int, count: int) -> np.ndarray:
    """The keys in id order: from ``vectors.npy`` for the approximate index, else read back from the index."""
    if name != APPROX_NAME:
        return index.reconstruct_n(0, count) if count else np.zeros((0, dim), dtype=np.float32)
    if not path.is_file():
        raise BankError(f"{path}: missing")
    try:
        vectors = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 -- numpy's header parser raises assorted types on garbage
        raise BankError(f"{path}: not a readable .npy array ({e})") from e
    if vectors.dtype != np.float32 or vectors.shape != (count, dim):
        raise BankError(
            f"{path}: expected float32 ({count}, {dim}) per {MANIFEST_FILE}, found {vectors.dtype} {vectors.shape}"
        )
    return vectors


def _read_records(path: Path, count: int) -> list[tuple[dict, dict]]:
    records: list[tuple[dict, dict]] = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BankError(f"{path}: line {lineno} is not valid JSON ({e})") from e
        if not isinstance(row, dict) or row.get("id") != lineno - 1:
            found = row.get("id") if isinstance(row, dict) else row
            raise BankError(f"{path}: line {lineno} must be an object with id {lineno - 1}, found {found!r}")
        if not (isinstance(row.get("insight"), dict) and isinstance(row.get("meta"), dict)):
            raise BankError(f"{path}: line {lineno}: insight and meta must be JSON objects")
        records.append((row["insight"], row["meta"]))
    if len(records) != count:
        raise BankError(f"{path}: holds {len(records)} entries but {MANIFEST_FILE} says count {count}")
    return records


def _read_log(path: Path, dim: int, first_id: int) -> log.LogContents:
    if not path.is_file():
        raise BankError(f"{path}: missing")
    try:
        return log.read(path, dim, first_id)
    except log.LogError as e:
        raise BankError(str(e)) from e
    except OSError as e:
        raise BankError(f"{path}: unreadable ({e})") from e


def read_bank(root: str | Path) -> Snapshot:
    """The bank saved at ``root``: its current snapshot, then its log, fully validated.

    Any inconsistency raises :class:`BankError`; only a torn last batch of the log is dropped, with a
    :class:`~.log.TornTailWarning` naming the file and offset.
    """
    root = Path(root)
    pointer = root / CURRENT
    if not pointer.is_file():
        raise BankError(f"{pointer}: missing, so {root} holds no saved memory bank")
    name = _read_text(pointer).strip()
    if not _SNAP.fullmatch(name) or not (root / name).is_dir():
        raise BankError(f"{pointer}: names {name!r}, which is not a snapshot folder in {root}")
    snap = root / name
    manifest = _read_manifest(snap / MANIFEST_FILE)
    dim, count, name = manifest["dim"], manifest["count"], manifest["index"]
    index = _read_index(snap / INDEX_FILE, dim, count, name)
    vectors = _read_vectors(snap / VECTORS_FILE, index, name, dim, count)
    records = _read_records(snap / INSIGHTS_FILE, count)
    position = None
    log_keys = np.zeros((0, dim), dtype=np.float32)
    if manifest["version"] >= 2:
        tail = _read_log(snap / LOG_FILE, dim, count)
        records += tail.records
        log_keys = tail.keys
        if len(log_keys):
            vectors = np.concatenate([vectors, log_keys])
        position = Position(root.resolve(), snap.name, len(records), tail.end, _size(snap))
    return Snapshot(
        dim=dim,
        encoders=dict(manifest["encoders"]),
        index=index,
        records=records,
        manifest_path=snap / MANIFEST_FILE,
        vectors=vectors,
        log_keys=log_keys,
        index_params=manifest["index_params"],
        position=position,
    )
