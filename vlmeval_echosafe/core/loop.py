"""The one loop that answers a stream: micro-batches in order -> respond -> hand the answers on -> flush.

Every runner calls it: the VLMEvalKit adapter (per dataset and rank, checkpointing after each micro-batch), the
lmms-eval adapter (per task) and anyone driving a defense from Python. ``close`` is the caller's, once per run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from .defense import Defense
from .item import Item, Response

T = TypeVar("T")


def chunks(rows: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` rows, in order."""
    for start in range(0, len(rows), max(1, size)):
        yield rows[start : start + size]


def micro_batch(defense: Defense, requested: int) -> int:
    """The micro-batch a runner hands ``defense``: ``requested`` where the defense gains from batches, else 1."""
    return requested if defense.batched else 1


def answer_stream(
    defense: Defense,
    batches: Iterable[list[Item]],
    done: Callable[[list[Item], list[Response]], None],
    failed: Callable[[list[Item], Exception], list[Response]] | None = None,
) -> None:
    """Answer each micro-batch in turn and hand (items, responses) to ``done`` (which records them: a checkpoint,
    a result list); then let a pipelined defense store what is pending. ``failed``: what a failed micro-batch
    answers instead of raising (it may re-raise). The next micro-batch is drawn before the current one is
    answered and handed to ``defense.prefetch``, so ``batches`` must not tie its state to the batch last drawn."""
    queue = iter(batches)
    upcoming = next(queue, None)
    while upcoming is not None:
        items, upcoming = upcoming, next(queue, None)
        if upcoming:
            defense.prefetch(upcoming)
        try:
            responses = defense.respond(items)
        except Exception as err:
            if failed is None:
                raise
            responses = failed(items, err)
        if len(responses) != len(items):
            raise RuntimeError(f"{defense.name}: {len(responses)} responses for {len(items)} items")
        done(items, responses)
    defense.flush()
