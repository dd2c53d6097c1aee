"""One memory stream across torchrun ranks.

Under ``torchrun --nproc_per_node W`` with ``--batch-size B``, one global step is W·B consecutive items of the
stream. Rank r answers the step's items r, r + W, r + 2W, … (`owned`): for steps that start at a multiple of W this
is exactly the host's row split (rank r takes rows r::W), so rank r's j-th item is the step's item j·W + r and
`interleave` puts the ranks' lists back in stream order. Every rank then sees the whole step: it retrieves for all
W·B items from its copy of the bank (the copies are equal, so the retrievals are), answers and reflects on its own
items, and after the step's outcomes are all-gathered it appends all W·B insights in stream order, like one process
at batch size W·B. One rank (rank 0) writes the bank and the trace.

An exchange is collective: every rank must enter it once per step, also with no items of its own (the last step
may be short). A rank whose local work fails still enters it, with the error, so that every rank raises together
instead of waiting on the others until the process group times out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def owned(n: int, rank: int, world: int) -> list[int]:
    """Positions, within a step of ``n`` items, that ``rank`` answers."""
    return list(range(rank, n, world))


def interleave(per_rank: list[list[T]]) -> list[T]:
    """The step in stream order from each rank's items (the inverse of `owned`)."""
    out: list[T] = []
    for j in range(max((len(items) for items in per_rank), default=0)):
        out += [items[j] for items in per_rank if j < len(items)]
    return out


class StepError(RuntimeError):
    """A rank's part of a step failed; raised on every rank."""


class StreamSync:
    """The ranks of one stream. With one process every method is the identity (no collective call is made)."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world

    @classmethod
    def from_process_group(cls) -> StreamSync:
        """The default process group if one is running with more than one rank (the launcher starts it), else one
        process."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def multi(self) -> bool:
        return self.world > 1

    @property
    def persists(self) -> bool:
        """Whether this rank writes the shared files (bank, trace, config)."""
        return self.rank == 0

    def owned(self, n: int) -> list[int]:
        return owned(n, self.rank, self.world)

    def exchange(self, work: Callable[[], list[T]]) -> list[T]:
        """Run ``work`` (this rank's items of the step) and return every rank's results in stream order."""
        if not self.multi:
            return work()
        import torch.distributed as dist

        try:
            mine: list[Any] = work()
            error = None
        except Exception as err:  # re-raised below, after the other ranks know
            mine, error = [], err
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, (None if error is None else f"{type(error).__name__}: {error}", mine))
        failed = [(rank, why) for rank, (why, _) in enumerate(gathered) if why is not None]
        if failed:
            detail = "; ".join(f"rank {rank}: {why}" for rank, why in failed)
            raise StepError(f"a step of the shared EchoSafe stream failed ({detail})") from error
        return interleave([items for _, items in gathered])

    def barrier(self) -> None:
        if self.multi:
            import torch.distributed as dist

            dist.barrier()
