"""Text and image embedders behind one small `Encoder` interface, built from a wrapper's YAML spec.

A spec names one text and one image encoder, e.g. ``{"text": "minilm", "image": "inner"}``,
``{"text": "minilm", "image": "clip", "clip_path": "openai/clip-vit-base-patch32"}`` or
``{"image": "none"}`` (text-only keys). Building is cheap: weights load on the first `encode`.
"""

from __future__ import annotations

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

    def __init__(self, spec: dict[str, Any], inner: object | None = None) -> None:
        self.text, self.image = build_encoders(spec, inner=inner)
        self.ids = {"text": self.text.name, "image": self.image.name if self.image else "none"}

    def key(self, images: list[str], question: str) -> np.ndarray:
        """Key of (first image, question); an item without an image gets a zero image part."""
        return self.keys([(images, question)])[0]

    def keys(self, items: list[tuple[list[str], str]]) -> list[np.ndarray]:
        """`key` for several items, the texts encoded in one batch."""
        text_vecs = self.text.encode([question for _, question in items])
        if self.image is None:
            return [contextual_key(vec, None) for vec in text_vecs]
        firsts = [images[0] for images, _ in items if images]
        image_vecs = iter(self.image.encode(firsts))
        zero = np.zeros(self.image.dim, dtype=np.float32)
        return [
            contextual_key(vec, next(image_vecs) if images else zero)
            for vec, (images, _) in zip(text_vecs, items, strict=True)
        ]
