"""Retrieval for concurrent requests in micro-batches: the requests that arrive while one batch is embedded are
embedded together next (one encoder call per tenant per batch instead of one per request).

The encoders are not thread-safe, so one thread embeds and retrieves for every request; batching is what keeps
that thread from becoming a queue under load. A lone request is a batch of one and waits for nothing.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..core.item import Item


class RetrievalBatcher:
    """``work(items)`` (items of one tenant) returns one result per item; it runs on the batcher's one thread."""

    def __init__(self, work: Callable[[list[Item]], list[Any]], max_batch: int = 64) -> None:
        self.work, self.max_batch = work, max_batch
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="retrieve")
        self._waiting: list[tuple[Item, asyncio.Future]] = []
        self._running = False

    async def submit(self, item: Item) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((item, future))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                taken, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                groups: dict[str, list[tuple[Item, asyncio.Future]]] = defaultdict(list)
                for item, future in taken:
                    groups[item.dataset].append((item, future))
                for entries in groups.values():
                    try:
                        results = await loop.run_in_executor(self.executor, self.work, [i for i, _ in entries])
                    except Exception as err:
                        results = [err] * len(entries)
                    for (_, future), result in zip(entries, results, strict=True):
                        if future.done():  # the client went away
                            continue
                        if isinstance(result, Exception):
                            future.set_exception(result)
                        else:
                            future.set_result(result)
        finally:
            self._running = False

    def close(self) -> None:
        self.executor.shutdown(wait=True)
