"""Test-only kill points: ``ECHOSAFE_CHAOS_KILL_AT=<site>:<n>`` SIGKILLs the process at the n-th visit of a site.

The sites are found from the outside, so the product code carries no hook: every durable write of the plugin goes
through ``os.fsync`` and ``os.replace``, whose paths say what is being written, and two plugin seams
(``TraceWriter.write``, ``MemoryBank.add``) mark the trace and the in-memory bank. A kill "before" an fsync lands
after the bytes were written (they survive a killed process; only an OS crash could lose them). Two sites also
tear what is being written before the kill, as a crash of the machine could: ``torn-log`` cuts the log batch being
made durable at a random byte, ``trace`` leaves half of the trace line being appended.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ENV, COUNTS_ENV, SEED_ENV = "ECHOSAFE_CHAOS_KILL_AT", "ECHOSAFE_CHAOS_COUNTS", "ECHOSAFE_CHAOS_SEED"

SITES = {
    "insight": "an insight added to the bank in memory, before the batch's save",
    "bank-log": "a batch appended to the bank's log, before its fsync",
    "torn-log": "as bank-log, with the batch cut at a random byte (a torn write)",
    "bank-snapshot": "a file or folder of a snapshot being compacted, before its fsync",
    "bank-swap": "a complete new snapshot, before CURRENT is swapped to it",
    "bank-swapped": "CURRENT swapped, before the old snapshot is removed",
    "checkpoint": "the host's checkpoint (.pkl) written to its temporary file, before fsync and rename",
    "checkpoint-swapped": "the host's checkpoint renamed into place, before the folder's fsync",
    "predictions": "the host's prediction file written to its temporary file, before the rename",
    "trace": "half of a trace line appended (a torn line)",
    "trace-rewrite": "the trace cut back on resume, before its rename",
    "config": "a settings file (EchoSafe config, bank run config) before its rename",
}
_SNAP = re.compile(r"snap-\d+")
_LOG_HEADER = struct.Struct("<4sQII")  # memory/log.py: magic, batch_start, payload length, crc32


class Chaos:
    """Counts visits per site and kills the process at the one asked for."""

    def __init__(self, spec: str | None, seed: int) -> None:
        self.site, self.n = None, 0
        if spec:
            site, _, n = spec.partition(":")
            if site not in SITES or not n.isdigit() or int(n) < 1:
                raise ValueError(f"{ENV}={spec!r}: expected <site>:<n> with site in {sorted(SITES)} and n >= 1")
            self.site, self.n = site, int(n)
        self.counts: Counter = Counter()
        self.rng = random.Random(seed)

    def visit(self, site: str, tear: Callable[[], None] | None = None) -> None:
        self.counts[site] += 1
        if site == self.site and self.counts[site] == self.n:
            if tear is not None:
                tear()
            os.kill(os.getpid(), signal.SIGKILL)


def _path_of(fd: int) -> Path:
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


def _fsync_site(path: Path) -> str | None:
    if path.name == "log.bin" and _SNAP.fullmatch(path.parent.name):
        return "bank-log" if path.stat().st_size else "bank-snapshot"  # a new snapshot's log is created empty
    if _SNAP.fullmatch(path.name) or _SNAP.fullmatch(path.parent.name):
        return "bank-snapshot"
    if path.name.startswith(".") and ".tmp" in path.name:  # checkpoint.atomic_dump's temporary file
        return "checkpoint" if path.suffix == ".pkl" else None
    return None


def _replace_sites(src: Path, dst: Path) -> tuple[str | None, str | None]:
    """(site before the rename, site after it)."""
    if dst.name == "CURRENT":
        return "bank-swap", "bank-swapped"
    if src.name.startswith(".") and ".tmp" in src.name:
        return ("predictions", None) if dst.suffix == ".tsv" else (None, "checkpoint-swapped")
    if dst.name.endswith("_trace.jsonl"):
        return "trace-rewrite", None
    if dst.suffix == ".json" and "echosafe" in dst.name and src.name.endswith(".tmp"):
        return "config", None
    return None, None


def _tear_log(chaos: Chaos, path: Path) -> Callable[[], None]:
    """Cut the log inside the batch being made durable (the last record's ``batch_start`` says where it began)."""

    def tear() -> None:
        data = path.read_bytes()
        off = start = 0
        while off + _LOG_HEADER.size <= len(data):
            _, start, length, _ = _LOG_HEADER.unpack_from(data, off)
            off += _LOG_HEADER.size + length
        cut = chaos.rng.randrange(start + 1, len(data))
        os.truncate(path, cut)

    return tear


def install(spec: str | None, seed: int = 0) -> Chaos:
    """Wrap the write paths of this process; returns the counter (write it with :func:`write_counts`)."""
    from vlmeval_echosafe.core.trace import TraceWriter
    from vlmeval_echosafe.memory.bank import MemoryBank

    chaos = Chaos(spec, seed)
    real_fsync, real_replace = os.fsync, os.replace
    real_trace_write, real_add = TraceWriter.write, MemoryBank.add

    def fsync(fd: int) -> None:
        path = _path_of(fd)
        site = _fsync_site(path)
        if site == "bank-log":
            chaos.visit("bank-log")
            chaos.visit("torn-log", _tear_log(chaos, path))
        elif site is not None:
            chaos.visit(site)
        real_fsync(fd)

    def replace(src, dst, **kwargs) -> None:  # noqa: ANN001 -- os.replace's own signature
        before, after = _replace_sites(Path(os.fspath(src)), Path(os.fspath(dst)))
        if before:
            chaos.visit(before)
        real_replace(src, dst, **kwargs)
        if after:
            chaos.visit(after)

    def trace_write(self: TraceWriter, record: dict) -> None:
        def tear() -> None:
            line = json.dumps(record)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line[: chaos.rng.randrange(1, len(line))])

        chaos.visit("trace", tear)
        real_trace_write(self, record)

    def add(self: MemoryBank, *args, **kwargs) -> int:  # noqa: ANN002, ANN003
        chaos.visit("insight")
        return real_add(self, *args, **kwargs)

    os.fsync, os.replace = fsync, replace
    TraceWriter.write, MemoryBank.add = trace_write, add
    return chaos


def write_counts(chaos: Chaos, path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(dict(chaos.counts)), encoding="utf-8")
