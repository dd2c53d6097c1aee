"""The bank's append-only log: one checksummed binary record per insight, made durable once per batch.

A record is a 20-byte header, ``magic | batch_start (u64) | payload length (u32) | crc32 (u32)``, then the
payload: the key as ``dim`` little-endian float32, then UTF-8 JSON ``{"id", "insight", "meta"}``. The CRC covers
``batch_start``, the length and the payload. ``batch_start`` is the offset at which the record's batch (one
:func:`append`: one write, one fsync) began; it is how a reader tells a torn tail from damage in the middle.

Only the last batch can be torn by a crash: it is the only one not yet fsynced, and a crash may leave any of its
bytes missing or garbled, in any order. So when the record at offset ``o`` is damaged, the reader looks at every
valid record after it: if one belongs to a batch that began after ``o``, a later batch was written past the
damage, which therefore is not a torn tail, and :class:`LogError` is raised. Otherwise everything from ``o`` on is
the torn tail and is dropped with a :class:`TornTailWarning` naming the file and offset. A record whose checksum
holds but whose content is wrong (not JSON, an id out of sequence) was written that way: always an error.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"ESLR"
HEADER = struct.Struct("<4sQII")  # magic, batch_start, payload length, crc32
_CRC_FIELDS = slice(4, 16)  # batch_start and length, as packed in the header
_KEY = np.dtype("<f4")


class LogError(ValueError):
    """The log is damaged somewhere other than its last batch, or holds a record that was written wrong."""


class TornTailWarning(UserWarning):
    """A damaged last batch was dropped; the records before it were loaded."""


@dataclass
class LogContents:
    keys: np.ndarray  # (n, dim) float32, in id order
    records: list[tuple[dict, dict]]  # (insight, meta) in id order
    end: int  # offset just past the last good record: where the next batch goes


def encode(entry_id: int, key: np.ndarray, insight: dict, meta: dict, batch_start: int) -> bytes:
    """One record, header included; ``batch_start`` is the offset where the batch it belongs to begins."""
    body = json.dumps({"id": entry_id, "insight": insight, "meta": meta}, ensure_ascii=False).encode("utf-8")
    payload = np.ascontiguousarray(key, dtype=_KEY).tobytes() + body
    head = HEADER.pack(MAGIC, batch_start, len(payload), 0)
    crc = zlib.crc32(payload, zlib.crc32(head[_CRC_FIELDS]))
    return HEADER.pack(MAGIC, batch_start, len(payload), crc) + payload


def append(path: Path, end: int, entries: list[tuple[int, np.ndarray, dict, dict]]) -> int:
    """Write ``entries`` (id, key, insight, meta) as one batch at offset ``end``, fsync; return the new end.

    Whatever lies past ``end`` (a torn tail the reader dropped) is cut off first, so damage never ends up in
    the middle. With nothing to write and nothing to cut, the file is not touched.
    """
    with path.open("r+b") as fh:
        if not entries and os.fstat(fh.fileno()).st_size == end:
            return end
        blob = b"".join(encode(i, key, insight, meta, end) for i, key, insight, meta in entries)
        fh.seek(end)
        fh.truncate()
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    return end + len(blob)


def read(path: Path, dim: int, first_id: int) -> LogContents:
    """Every good record of the log at ``path``, whose first record must have id ``first_id``."""
    size = path.stat().st_size
    if size == 0:
        return LogContents(np.zeros((0, dim), dtype=np.float32), [], 0)
    keys = np.empty((size // (HEADER.size + _KEY.itemsize * dim), dim), dtype=np.float32)
    records: list[tuple[dict, dict]] = []
    off = 0
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        while off < size:
            frame = _frame(buf, off, size, dim)
            if isinstance(frame, str):
                _check_tail(path, buf, off, size, dim, frame, len(records))
                break
            batch_start, payload = frame
            if batch_start > off:
                raise LogError(f"{path}: record at offset {off} says its batch starts later, at {batch_start}")
            keys[len(records)] = np.frombuffer(payload, dtype=_KEY, count=dim)
            records.append(_decode(path, off, payload[_KEY.itemsize * dim :], first_id + len(records)))
            off += HEADER.size + len(payload)
    return LogContents(keys[: len(records)], records, off)


def _frame(buf: mmap.mmap, off: int, size: int, dim: int) -> tuple[int, bytes] | str:
    """``(batch_start, payload)`` of an intact record at ``off``, or what is wrong there."""
    if size - off < HEADER.size:
        return f"{size - off} bytes, shorter than a record header"
    magic, batch_start, length, crc = HEADER.unpack_from(buf, off)
    if magic != MAGIC:
        return "no record header"
    if length < _KEY.itemsize * dim or off + HEADER.size + length > size:
        return f"payload length {length} does not fit"
    payload = buf[off + HEADER.size : off + HEADER.size + length]
    if zlib.crc32(payload, zlib.crc32(buf[off + _CRC_FIELDS.start : off + _CRC_FIELDS.stop])) != crc:
        return "checksum mismatch"
    return batch_start, payload


def _check_tail(path: Path, buf: mmap.mmap, off: int, size: int, dim: int, reason: str, kept: int) -> None:
    """Damage at ``off``: a torn last batch (warn, it is dropped) unless a later batch follows (error)."""
    at = buf.find(MAGIC, off + 1)
    while at != -1:
        frame = _frame(buf, at, size, dim)
        if isinstance(frame, str):
            at = buf.find(MAGIC, at + 1)
            continue
        batch_start, payload = frame
        if batch_start > off:
            raise LogError(
                f"{path}: record at offset {off} is damaged ({reason}), but a batch written after it follows "
                f"(record at offset {at}): the log is corrupt in the middle, not torn at its end"
            )
        at = buf.find(MAGIC, at + HEADER.size + len(payload))
    warnings.warn(
        f"{path}: dropped a torn last batch at offset {off} ({size - off} bytes; {reason}); "
        f"the {kept} records before it are kept",
        TornTailWarning,
        stacklevel=4,
    )


def _decode(path: Path, off: int, body: bytes, want_id: int) -> tuple[dict, dict]:
    """(insight, meta) of an intact record; its content must be what the writer puts there."""
    try:
        row = json.loads(body)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise LogError(f"{path}: record at offset {off} is not valid JSON ({e})") from e
    if not isinstance(row, dict) or type(row.get("id")) is not int or row["id"] != want_id:
        found = row.get("id") if isinstance(row, dict) else row
        raise LogError(f"{path}: record at offset {off} must have id {want_id}, found {found!r}")
    if not (isinstance(row.get("insight"), dict) and isinstance(row.get("meta"), dict)):
        raise LogError(f"{path}: record at offset {off}: insight and meta must be JSON objects")
    return row["insight"], row["meta"]
