"""EchoSafe's ``staleness: 1`` pipeline: a micro-batch's reflections decode in the same batch as the next
micro-batch's answers, so the bank lags one micro-batch. ``staleness: 0`` is the exact sequential algorithm;
whoever drives the stream calls :meth:`EchoSafePipeline.flush` at a dataset's end (the one loop does). Mixed into
:class:`~.method.EchoSafe`."""

from __future__ import annotations

from typing import Any

from ..core.item import Response
from .records import Pending, StreamItem


class EchoSafePipeline:
    """The pipelined step (its state, ``_pending``, lives on the defense object)."""

    _pending: Pending | None

    def _respond_pipelined(self: Any, items: list[StreamItem], dataset: str) -> list[Response]:
        """Answer ``items`` while the pending batch's reflections decode; store the pending batch; keep these."""
        earlier, self._pending = self._pending, None
        try:
            answered = self._answer_all(items, dataset, earlier)
        except Exception as err:  # the earlier batch's answers are in the caller's hands: record its loss
            if earlier is not None:
                self._fail_reflections(earlier.items, f"pipelined reflection failed: {type(err).__name__}: {err}")
                self._commit(earlier.items, earlier.dataset)
            raise
        self._pending = Pending(items, answered, dataset)
        if earlier is not None:
            self._commit(earlier.items, earlier.dataset)
        return [self._response(item) for item in items]

    def flush(self: Any) -> None:
        """Reflect on and store the micro-batch still pending, on its own; otherwise nothing."""
        earlier, self._pending = self._pending, None
        if earlier is not None:
            self._reflect_all(earlier.items, earlier.answered, earlier.dataset)
            self._commit(earlier.items, earlier.dataset)
