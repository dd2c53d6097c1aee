"""Reflection off the request path: a bounded queue, a few reflecting threads, one writer.

A request is answered first; its pending work (``Pending``) is then offered to the queue without waiting. A full
queue drops that request's reflection (counted in ``guard_reflections_dropped`` and in the request log): the user
still gets the answer, and nothing already stored is touched. Reflecting calls the upstream, so several workers
do it at once; storing goes through one writer thread, which holds the bank lock while it appends and fsyncs, so
retrieval never sees a half-written bank and an insight is visible to the next request as soon as it is durable.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from ..echosafe.records import Pending
from .metrics import GuardMetrics

log = logging.getLogger(__name__)

_STOP = None


class Reflector:
    def __init__(
        self,
        defense: Any,
        lock: threading.Lock,
        metrics: GuardMetrics,
        size: int,
        workers: int,
    ) -> None:
        if size < 1 or workers < 1:
            raise ValueError(f"reflection queue size and workers must be >= 1, got {size} and {workers}")
        self.defense, self.lock, self.metrics = defense, lock, metrics
        self._todo: queue.Queue[Pending | None] = queue.Queue(maxsize=size)
        # Reflected, waiting for the writer; when it is full the workers wait, the first queue fills, and new
        # reflections are dropped: what is held in memory stays bounded by 2 x size + workers.
        self._done: queue.Queue[Pending | None] = queue.Queue(maxsize=size)
        self._workers = [
            threading.Thread(target=self._reflect, daemon=True, name=f"reflect-{i}") for i in range(workers)
        ]
        self._writer = threading.Thread(target=self._write, daemon=True, name="bank-writer")
        for t in [*self._workers, self._writer]:
            t.start()

    def submit(self, pending: Pending) -> bool:
        """Queue ``pending`` without waiting; False (and counted) when the queue is full."""
        try:
            self._todo.put_nowait(pending)
        except queue.Full:
            self.metrics.dropped.labels(pending.dataset).inc()
            return False
        self.metrics.queue_depth.set(self._todo.qsize())
        return True

    def depth(self) -> int:
        return self._todo.qsize()

    def _reflect(self) -> None:
        while (pending := self._todo.get()) is not _STOP:
            self.metrics.queue_depth.set(self._todo.qsize())
            self.defense.reflect(pending)  # records a failure on the items instead of raising
            self._done.put(pending)

    def _write(self) -> None:
        while (pending := self._done.get()) is not _STOP:
            try:
                with self.lock:
                    self.defense.store(pending)
            except Exception:  # a disk error: the insight was never acknowledged
                log.exception("storing an insight failed")
                self._count(pending, failed=True)
                continue
            self._count(pending)

    def _count(self, pending: Pending, failed: bool = False) -> None:
        for item in pending.items:
            if failed:
                outcome, reason = "rejected", "store_failed"
            elif item.written is not None:
                outcome, reason = "stored", ""
            else:
                outcome, reason = "rejected", item.code or "unknown"
            self.metrics.insights.labels(pending.dataset, outcome, reason).inc()

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued (within ``timeout`` per thread), then stop the threads."""
        for _ in self._workers:
            self._todo.put(_STOP)
        for t in self._workers:
            t.join(timeout)
        self._done.put(_STOP)
        self._writer.join(timeout)
