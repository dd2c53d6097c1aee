"""Text and image embedders behind one small `Encoder` interface, built from a wrapper's YAML spec.

A spec names one text and one image encoder, e.g. ``{"text": "minilm", "image": "inner"}``,
``{"text": "minilm", "image": "clip", "clip_path": "openai/clip-vit-base-patch32"}`` or
``{"image": "none"}`` (text-only keys). Building is cheap: weights load on the first `encode`.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .base import Encoder, contextual_key, l2_normalize
from .image import ClipImageEncoder, InnerVisionEncoder
from .text import MiniLMTextEncoder

__all__ = [
    "Encoder",
    "MiniLMTextEncoder",
    "ClipImageEncoder",
    "InnerVisionEncoder",
    "KeyEncoder",
    "build_encoders",
    "contextual_key",
    "l2_normalize",
]

TEXT_ENCODERS = ("minilm",)
IMAGE_ENCODERS = ("inner", "clip", "none")
_SPEC_KEYS = {"text", "image", "clip_path", "device"}


def _choice(spec: dict[str, Any], key: str, default: str, valid: tuple[str, ...]) -> str:
    value = str(spec.get(key, default)).lower()
    if value not in valid:
        raise ValueError(f"vlmeval-echosafe: unknown {key} encoder {spec[key]!r}; valid: {', '.join(valid)}.")
    return value


def build_encoders(spec: dict[str, Any], inner: object | None = None) -> tuple[Encoder, Encoder | None]:
    """Build (text encoder, image encoder or None) from a spec; `inner` is the wrapped model.

    Defaults: text "minilm", image "inner" (the paper keys on text and image). "inner" needs an inner model
    the plugin runs itself (a `TransformersVLM`); "device" applies to MiniLM and CLIP.
    """
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"vlmeval-echosafe: unknown encoder settings {sorted(unknown)}; valid: {sorted(_SPEC_KEYS)}.")
    device = spec.get("device")
    _choice(spec, "text", "minilm", TEXT_ENCODERS)
    text = MiniLMTextEncoder(device=device)
    image = _choice(spec, "image", "inner", IMAGE_ENCODERS)
    if image == "none":
        return text, None
    if image == "clip":
        if not spec.get("clip_path"):
            raise ValueError(
                "vlmeval-echosafe: `image: clip` needs `clip_path:` (a local CLIP folder or a cached "
                "repo id, e.g. openai/clip-vit-base-patch32)."
            )
        return text, ClipImageEncoder(str(spec["clip_path"]), device=device)
    from ..models.transformers_vlm import TransformersVLM

    if not isinstance(inner, TransformersVLM):
        raise ValueError(
            f"vlmeval-echosafe: `image: inner` embeds images with the inner model's own vision tower, which "
            f"needs an inner model the plugin runs itself (TransformersVLM), not {type(inner).__name__}. "
            "Use `image: clip` with a `clip_path:` for models the plugin does not run itself, or "
            "`image: none`."
        )
    return text, InnerVisionEncoder(inner)


class KeyEncoder:
    """A message's memory key: the L2-normalised concatenation of its text and image embeddings (EchoSafe's
    insight memory and AdaShield-A's prompt pool use the same keys). ``ids`` go into a bank's manifest."""

    AHEAD = 2

    def __init__(self, spec: dict[str, Any], inner: object | None = None) -> None:
        self.text, self.image = build_encoders(spec, inner=inner)
        self.ids = {"text": self.text.name, "image": self.image.name if self.image else "none"}
        self._worker: ThreadPoolExecutor | None = None
        # announced texts, oldest first: None until their pass starts, then its Future
        self._ahead: dict[tuple[str, ...], Future | None] = {}

    def prefetch(self, texts: list[str]) -> None:
        """Announce the texts of a later ``keys`` call (the next micro-batch's questions). Their pass starts on a
        background thread as soon as the keys being asked for now are done, so it overlaps the answer the caller
        decodes next instead of competing with the text pass it needs first. The text embedder is a pure function
        of its texts and gives a text the same bits whatever shares its pass, so a key computed ahead is the key
        computed on demand. Only the text part: the image part may run on the inner model, which the caller is
        using. At most ``AHEAD`` announcements are kept: the batch being answered and the next."""
        self._ahead.setdefault(tuple(texts), None)
        while len(self._ahead) > self.AHEAD:
            self._drop(self._ahead.pop(next(iter(self._ahead))))

    def text_vectors(self, texts: list[str]) -> np.ndarray:
        """The text embeddings of ``texts``: from the pass started ahead for exactly these texts (waiting for it if
        still running), else encoded now; then the announced passes start."""
        ahead = self._ahead.pop(tuple(texts), None)
        vectors = ahead.result() if ahead is not None else self.text.encode(texts)
        for key, started in self._ahead.items():
            if started is None:
                if self._worker is None:
                    self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="key-prefetch")
                self._ahead[key] = self._worker.submit(self.text.encode, list(key))
        return vectors

    @staticmethod
    def _drop(ahead: Future | None) -> None:
        """Forget an announcement nobody asked for; a pass already running finishes first (one pass at a time),
        and its error, if any, is not the caller's."""
        if ahead is not None and not ahead.cancel():
            ahead.exception()

    def close(self) -> None:
        """Stop the prefetch thread (after a running pass)."""
        while self._ahead:
            self._drop(self._ahead.pop(next(iter(self._ahead))))
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    def key(self, images: list[str], question: str) -> np.ndarray:
        """Key of (first image, question); an item without an image gets a zero image part."""
        return self.keys([(images, question)])[0]

    def keys(self, items: list[tuple[list[str], str]]) -> list[np.ndarray]:
        """`key` for several items, the texts encoded in one batch."""
        text_vecs = self.text_vectors([question for _, question in items])
        if self.image is None:
            return [contextual_key(vec, None) for vec in text_vecs]
        firsts = [images[0] for images, _ in items if images]
        image_vecs = iter(self.image.encode(firsts))
        zero = np.zeros(self.image.dim, dtype=np.float32)
        return [
            contextual_key(vec, next(image_vecs) if images else zero)
            for vec, (images, _) in zip(text_vecs, items, strict=True)
        ]
