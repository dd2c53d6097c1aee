"""The inner model with no defense: the ``Base_<model>`` row of every leaderboard, through the same loop."""

from __future__ import annotations

from ..core.defense import Defense
from ..core.item import Item, Response


class Undefended(Defense):
    """Each item as the model answers it alone; a micro-batch of several decoded together where the model can."""

    @classmethod
    def planned_batched(cls, inner_batched: bool, settings: dict) -> bool:
        return inner_batched

    def respond(self, items: list[Item]) -> list[Response]:
        if len(items) == 1:
            return [Response(self.ask(items[0].message(), items[0].dataset))]
        answered = self.model.answer([item.message() for item in items], items[0].dataset if items else None, False)
        return [Response(text) for text in answered.answers]
