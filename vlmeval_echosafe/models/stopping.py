"""Per-row stopping and minimum lengths for batched greedy decoding (each row of a micro-batch ends on its own)."""

from __future__ import annotations

from typing import Any

from transformers import LogitsProcessor, StoppingCriteria


class RowEnds(StoppingCriteria):
    """A stopping criterion that ends a row on an end-of-turn token, a stop string or its own token cap, and records
    after how many new tokens each row ended (`generate` pads a finished row with the pad id, which can equal an
    eos id). ``caps``: each row's cap on this call's new tokens; 0 marks a row that ended before the call (the token
    `generate` gives it in the first step is padding)."""

    def __init__(self, start: int, eos_ids: list[int], stop: Any = None, caps: list[int] | None = None) -> None:
        import torch

        self.start, self.stop = start, stop
        self.eos_ids: Any = eos_ids
        self.caps = None if caps is None else torch.tensor(caps, dtype=torch.long)
        self.ended: Any = None if caps is None else torch.tensor([0 if c == 0 else -1 for c in caps], dtype=torch.long)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if not torch.is_tensor(self.eos_ids):
            self.eos_ids = torch.tensor(self.eos_ids, device=input_ids.device)
        written = input_ids.shape[1] - self.start
        done = torch.isin(input_ids[:, -1], self.eos_ids)
        if self.stop is not None:
            done |= self.stop(input_ids, scores).to(done.device)
        if self.caps is not None:
            done |= (written >= self.caps).to(done.device)
        if self.ended is None:
            self.ended = torch.full((input_ids.shape[0],), -1, dtype=torch.long)
        first = done.cpu() & (self.ended < 0)
        self.ended[first] = written
        return done

    def is_ended(self, row: int) -> bool:
        return self.ended is not None and bool(self.ended[row] >= 0)

    def lengths(self, rows: int, generated: int) -> Any:
        """New real tokens per row (rows that never ended ran to the token cap)."""
        import torch

        if self.ended is None:
            return torch.full((rows,), generated, dtype=torch.long)
        return torch.where(self.ended < 0, generated, self.ended)


class NoEndBefore(LogitsProcessor):
    """``min_new_tokens`` for some rows of a batch: end-of-turn suppressed on ``rows`` for the call's first
    ``steps`` tokens (transformers' own processor applies to every row)."""

    def __init__(self, rows: list[int], eos_ids: list[int], steps: int) -> None:
        self.rows, self.eos_ids, self.steps, self.calls = rows, eos_ids, steps, 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.calls < self.steps:
            for row in self.rows:
                scores[row, self.eos_ids] = -float("inf")
        self.calls += 1
        return scores


class Until(StoppingCriteria):
    """Stops the whole call once every row in ``rows`` has ended; the other rows pause there (they have not ended,
    and a later call continues them)."""

    def __init__(self, ends: RowEnds, rows: list[int]) -> None:
        self.ends, self.rows = ends, rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        stop = all(self.ends.is_ended(row) for row in self.rows)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
