"""EchoSafe's steps for a server: answer now, reflect and store later (off the request path).

The batch path (:meth:`~.method.EchoSafe.respond`) runs embed -> retrieve -> answer -> reflect -> store in one
call. A server answers a request as soon as it can and lets a background queue do the rest, so the same steps are
offered in three calls, in this order per request: :meth:`EchoSafeDeferred.prepare` (embed, retrieve, the answer
turn to send), :meth:`~EchoSafeDeferred.deliver` (the answer, however the caller obtained it) and
:meth:`~EchoSafeDeferred.settle` (reflect, then store and trace; also :meth:`~EchoSafeDeferred.reflect` and
:meth:`~EchoSafeDeferred.store` separately, so that a pool of threads can reflect while one thread writes). The
steps are the method's own (no second copy of the algorithm); only their scheduling differs: an insight is stored
when its reflection is done, and a later request sees it from then on. Mixed into :class:`~.method.EchoSafe`.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from ..core.inner import Answered, Content
from ..core.item import Item, Response
from ..memory import MemoryBank
from .records import Pending, StreamItem


@dataclass
class Prepared:
    """Items embedded and retrieved for, with the answer turn each one is to be answered with."""

    items: list[StreamItem]
    turns: list[Content]
    dataset: str


class EchoSafeDeferred:
    """The deferred steps (state: ``_withheld``, the ids each dataset's retrieval must skip)."""

    _withheld: dict[str, frozenset[int]]

    def _check_deferred(self: Any) -> None:
        if self.settings.staleness or self.sync.multi:
            raise RuntimeError(
                f"{self.name}: the deferred steps run one process with staleness 0 (the caller schedules the "
                "reflections itself)"
            )

    def prepare(self: Any, items: list[Item], lock: AbstractContextManager | None = None) -> Prepared:
        """Embed ``items`` (one dataset) and retrieve for each from its bank as it stands; ``lock`` is held while
        the banks are read (a writer thread may be storing at the same time)."""
        self._check_deferred()
        datasets = {i.dataset for i in items}
        if len(datasets) != 1:
            raise ValueError(f"{self.name}: prepare takes items of one dataset, got {sorted(datasets)}")
        embedded = self._embed(items)
        with lock or nullcontext():
            step = [self._retrieve(e) for e in embedded]
        turns = [self.answer_message(i.images, i.question, [h.insight for h in i.hits]) for i in step]
        return Prepared(step, turns, items[0].dataset)

    def deliver(self: Any, prepared: Prepared, answered: Answered) -> tuple[list[Response], Pending]:
        """The answers to ``prepared`` (``answered``: as the inner model's adapter would have returned them, so the
        reflection continues the same conversation), and what :meth:`settle` finishes later."""
        for item, answer in zip(prepared.items, answered.answers, strict=True):
            item.answer = answer
        return [self._response(i) for i in prepared.items], Pending(prepared.items, answered, prepared.dataset)

    def reflect(self: Any, pending: Pending) -> None:
        """The self-reflection (or, for the NoReflection ablation, the exchange) of each answered item; touches
        no bank, so several threads may reflect at once. A step that raises is recorded on every item (its trace
        line says why) rather than raised: the answers went out already."""
        try:
            if self.settings.reflects:
                self._reflect_all(pending.items, pending.answered, pending.dataset)
            elif self.settings.store == "exchange":
                self._exchange_all(pending.items)
        except Exception as err:
            self._fail_reflections(pending.items, f"reflection failed: {type(err).__name__}: {err}")

    def store(self: Any, pending: Pending) -> list[int | None]:
        """Store the reflected items' insights in order, make them durable (the bank's log is fsynced) and write
        their trace lines; one writer at a time. Returns each item's insight id (None: not stored, see its
        trace line for why)."""
        self._commit(pending.items, pending.dataset)
        return [item.written for item in pending.items]

    def settle(self: Any, pending: Pending) -> list[int | None]:
        """:meth:`reflect` then :meth:`store`."""
        self.reflect(pending)
        return self.store(pending)

    def withhold(self: Any, dataset: str, ids: Iterable[int]) -> None:
        """Never retrieve these insights of ``dataset``'s bank again (quarantined or deleted by an operator);
        replaces the earlier set. Needs ``reset: dataset`` (one bank per dataset, so ids name one bank)."""
        if self.settings.reset != "dataset":
            raise ValueError(f"{self.name}: withholding insights needs reset: dataset, not {self.settings.reset!r}")
        self._withheld = {**getattr(self, "_withheld", {}), dataset: frozenset(ids)}

    def withheld(self: Any, dataset: str) -> frozenset[int]:
        return getattr(self, "_withheld", {}).get(dataset, frozenset())

    def bank_of(self: Any, dataset: str) -> MemoryBank | None:
        """``dataset``'s bank, opened (and loaded from disk) if it was not yet; None when memory is off."""
        if not self.keys:
            return None
        if getattr(self, "_key_dim", None) is None:
            self._key_dim = int(self.keys.key([], "").shape[0])
        return self._stream(dataset, {}, self._key_dim).bank
