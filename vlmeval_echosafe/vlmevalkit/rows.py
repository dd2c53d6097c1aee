"""Which dataset row a host message is: the edge where VLMEvalKit's row-less calls get their rows back.

The host calls a model with ``generate(message, dataset=<name>)``: no row index, no dataset object. So whoever
builds a prompt registers the row it built it from, keyed by what the prompt carries (its image paths and its
text): MM-SafetyBench++ in its own ``build_prompt``, and the runner for the host's own datasets (whose rows carry
no pair ids). The host-model wrapper (:mod:`.model`) looks each message up here and hands the core an
:class:`~..core.item.Item` that carries its row; nothing past this module recovers a row from text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.item import ROW_FIELDS
from ..core.run import RowNotFoundError

META = ROW_FIELDS  # what an MM-SafetyBench++ row tells a defense
INDEX_ONLY = ("index",)  # what any other dataset's row tells it

Key = tuple[tuple[str, ...], str]


def split_message(message: list[dict[str, str]]) -> tuple[list[str], str]:
    """(image paths, question text) of a VLMEvalKit message."""
    images = [m["value"] for m in message if m["type"] == "image"]
    text = "\n".join(m["value"] for m in message if m["type"] == "text")
    return images, text


def prompt_key(message: Any) -> Key:
    """The key a prompt is registered under: what the model receives of it (a plain string is one text part, as
    the host's ``preproc_content`` makes it)."""
    if isinstance(message, str):
        return (), message
    images, text = split_message([message] if isinstance(message, dict) else message)
    return tuple(images), text


class PromptRows:
    """The rows of the prompts a dataset built, by prompt. ``fields``: the row's columns a defense gets."""

    def __init__(self, dataset: str, fields: tuple[str, ...] = META) -> None:
        self.dataset = dataset
        self.fields = fields
        self._rows: dict[Key, dict[str, Any]] = {}
        self._clashes: dict[Key, list[str]] = {}

    @property
    def kind(self) -> str:
        """``pairs``: pair id, category, mode and label; ``index``: the row index alone."""
        return "pairs" if "pair_id" in self.fields else "index"

    def meta(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """What a defense gets of ``row`` (a frame row or a dict): the registry's fields, the index as a string."""
        return {k: (str(row[k]) if k == "index" else row[k]) for k in self.fields if k in row}

    def register(self, message: Any, row: Mapping[str, Any]) -> None:
        """Record that ``message`` was built from ``row`` (a frame row or a dict)."""
        meta = self.meta(row)
        key = prompt_key(message)
        known = self._rows.get(key)
        if known is not None and known != meta:  # two rows, one prompt: an item of it cannot be told apart
            self._clashes.setdefault(key, [str(known.get("index"))]).append(str(meta.get("index")))
        self._rows[key] = meta

    def find(self, images: list[str], question: str) -> dict[str, Any]:
        """The row of a message; raises :class:`RowNotFoundError` naming the image and question."""
        key = (tuple(images), question)
        if key in self._clashes:
            raise RowNotFoundError(
                f"{self.dataset}: rows {self._clashes[key]} build the same prompt (image(s) {list(images)}, "
                f"question {question!r}), so its row cannot be told"
            )
        meta = self._rows.get(key)
        if meta is None:
            raise RowNotFoundError(
                f"{self.dataset}: no row was registered for the prompt with image(s) {list(images)} and question "
                f"{question!r} ({len(self._rows)} prompts registered); a defense gets the row of each prompt the "
                "dataset built, so this message did not come from the dataset's own prompts"
            )
        return dict(meta)
