"""What travels through a defense: one request in (:class:`Item`), one answer out (:class:`Response`).

The row (dataset, pair id, category, mode, label, index) travels with the item, so a defense never recovers it
from prompt text; harness adapters fill it from their own records (a VLMEvalKit row, an lmms-eval doc).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROW_FIELDS = ("index", "pair_id", "category", "mode", "label")  # what a benchmark row may tell a defense


@dataclass(frozen=True)
class Item:
    """One request: a question, its images (paths, or PIL images that :meth:`materialise` writes to files) and
    the row it came from (``{}`` when the caller has none). ``dataset`` names the stream the item belongs to."""

    question: str
    images: tuple[Any, ...] = ()
    row: dict[str, Any] = field(default_factory=dict)
    dataset: str = "api"

    def __post_init__(self) -> None:
        if not isinstance(self.question, str):
            raise TypeError(f"Item.question must be a string, not {type(self.question).__name__}")
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "row", dict(self.row or {}))

    @property
    def paths(self) -> list[str]:
        """The image paths (every image must be a path by now: see :meth:`materialise`)."""
        bad = [type(i).__name__ for i in self.images if not isinstance(i, (str, Path))]
        if bad:
            raise TypeError(f"Item images must be paths here, found {bad}; call Item.materialise(folder) first")
        return [str(i) for i in self.images]

    def materialise(self, folder: Path) -> Item:
        """The same item with every in-memory (PIL) image saved as a PNG under ``folder`` (named by content)."""
        if all(isinstance(i, (str, Path)) for i in self.images):
            return self
        import hashlib

        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for image in self.images:
            if isinstance(image, (str, Path)):
                paths.append(str(image))
                continue
            rgb = image if image.mode in ("RGB", "L") else image.convert("RGB")
            digest = hashlib.sha1(rgb.tobytes() + repr(rgb.size).encode()).hexdigest()[:16]
            path = folder / f"{digest}.png"
            if not path.exists():
                rgb.save(path)
            paths.append(str(path))
        return Item(self.question, tuple(paths), self.row, self.dataset)

    def message(self) -> list[dict[str, str]]:
        """The request as image parts then one text part (the content form every inner model takes)."""
        return [*(dict(type="image", value=p) for p in self.paths), dict(type="text", value=self.question)]


@dataclass(frozen=True)
class Response:
    """A defense's answer to one item, and what it did to get there (the item's trace record, or a summary)."""

    text: str
    record: dict[str, Any] = field(default_factory=dict)
