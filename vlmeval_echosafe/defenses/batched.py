"""What the batched baselines (GuardFilter, ETA, CoCA) share: settings from a frozen dataclass, a config file, one
trace line per item with the row's ids, and the item's cost (calls, forward passes, tokens).

Cost, per item and per model (``inner``, ``guard``, ``reward``, ``clip``):

- ``calls``: requests the item sent to that model;
- ``forward_passes``: forward passes the item's sequences went through (a pass over a batch of rows counts once
  for each row in it, so the number does not depend on the micro-batch);
- ``prompt_tokens`` / ``new_tokens``: tokens prefilled and decoded. Where a micro-batch is decoded together and the
  backend counts only the batch's total, each item carries an equal share of it (``shared: true``).

Counts come from the backends' own counters (``TransformersVLM.decoded``, the guards' and scorers' ``counts``);
a model that keeps none (an endpoint, a host model) reports calls only.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections import Counter
from typing import Any

from ..core.defense import ConfiguredDefense
from ..core.item import Item, Response


def counters(model: Any) -> Counter | None:
    """A copy of a backend's running counts (None for a model that keeps none)."""
    counts = getattr(model, "decoded", None)
    if counts is None:
        counts = getattr(model, "counts", None)
    return Counter(counts) if counts is not None else None


def inner_cost(before: Counter | None, after: Counter | None, rows: int, calls: int) -> dict[str, Any]:
    """The inner model's cost per item for a batch of ``rows`` answered together (TransformersVLM counters:
    ``forwards`` are batch steps, so each row went through all of them; tokens are shared out)."""
    if before is None or after is None:
        return {"calls": calls}
    diff = after - before
    return {
        "calls": calls,
        "forward_passes": diff["forwards"],
        "prompt_tokens": round(diff["answer_prompt_tokens"] / max(rows, 1), 2),
        "new_tokens": round((diff["answer_tokens"] + diff["follow_up_tokens"]) / max(rows, 1), 2),
        "shared": rows > 1,
    }


class BatchedBaseline(ConfiguredDefense):
    """A baseline that answers a micro-batch at once and writes one trace line per item."""

    @property
    def batched(self) -> bool:
        return self.model.batched

    def respond(self, items: list[Item]) -> list[Response]:
        start = time.perf_counter()
        answers, records = self.answer_batch(items)
        seconds = round((time.perf_counter() - start) / max(len(items), 1), 6)
        out = []
        for item, answer, record in zip(items, answers, records, strict=True):
            row = item.row
            line = {
                "row_index": row.get("index"),
                **{k: row.get(k) for k in ("pair_id", "category", "mode", "label")},
                "row_metadata": self.run_for(item.dataset).row_metadata,
                "defense": type(self).__name__,
                **record,
                "seconds": seconds,
            }
            self.trace_for(item.dataset).write(line)
            out.append(Response(answer, line))
        return out

    def answer_plain(self, items: list[Item]) -> list[str]:
        """The inner model's own answers, exactly as the undefended row gets them (one call alone, a micro-batch
        decoded together), so a defense that changes nothing equals ``Base`` token for token."""
        if len(items) == 1:
            return [self.ask(items[0].message(), items[0].dataset)]
        return self.model.answer([i.message() for i in items], items[0].dataset, False).answers

    @abstractmethod
    def answer_batch(self, items: list[Item]) -> tuple[list[str], list[dict[str, Any]]]:
        """(answers, trace records) for one micro-batch; each record holds ``prompt`` and ``cost``."""
