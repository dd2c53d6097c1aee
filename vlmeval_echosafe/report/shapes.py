"""The registered models' real shapes (``task_configs/model_shapes.yaml``) and the FLOPs of one request or one
continuation at a shape, by the transformer estimate that :mod:`.flops` states (Kaplan et al. 2020, Table 1).
Kept apart from :mod:`.flops`, which turns a bench's token counts into per-row workloads and the table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..paths import config_file

SHAPES_FILE = "task_configs/model_shapes.yaml"


@dataclass(frozen=True)
class Transformer:
    """One transformer stack (decoder or encoder) by its shape."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    mlp: str  # "gated" (gate, up, down) or "plain" (fc1, fc2)

    @property
    def params(self) -> int:
        """Matrix-multiply parameters: q, k, v, o and the MLP of every layer (norms and biases left out)."""
        q = self.heads * self.head_dim
        attention = self.hidden * q + 2 * self.hidden * self.kv_heads * self.head_dim + q * self.hidden
        mlp = (3 if self.mlp == "gated" else 2) * self.hidden * self.intermediate
        return self.layers * (attention + mlp)

    def forward(self, new: float, cached: float = 0.0, causal: bool = True) -> float:
        """FLOPs of one pass over ``new`` tokens after ``cached`` positions (causal), or over ``new`` tokens that all
        see each other (bidirectional)."""
        attended = new * cached + new * (new + 1) / 2 if causal else new * new
        return 2 * self.params * new + 2 * self.layers * attended * self.heads * self.head_dim

    def lm_head(self, generated: float) -> float:
        return 2 * self.hidden * self.vocab * generated


@dataclass(frozen=True)
class Vision:
    """A ViT run once per image over ``patches_per_image`` positions; the LM reads ``tokens_per_image``."""

    layers: int
    hidden: int
    intermediate: int
    mlp: str
    patches_per_image: int
    tokens_per_image: int
    projector_params: int
    tiles: int = 1  # a tiled tower attends within each tile: the patches split into this many sequences

    def per_image(self) -> float:
        per_layer = 4 * self.hidden**2 + (3 if self.mlp == "gated" else 2) * self.hidden * self.intermediate
        n = self.patches_per_image
        tower = 2 * self.layers * per_layer * n + 2 * self.layers * n * n / self.tiles * self.hidden
        return tower + 2 * self.projector_params * self.tokens_per_image


@dataclass(frozen=True)
class CrossAttention:
    """Mllama's image path: in ``layers`` extra layers (attention and MLP) every text token attends to the image's
    ``image_states``, which each layer projects to keys and values after the projector."""

    layers: int
    image_states: int
    projector_params: int

    def per_image(self, text: Transformer) -> float:
        kv = 2 * text.hidden * text.kv_heads * text.head_dim
        return 2 * (self.projector_params + self.layers * kv) * self.image_states

    def per_text_token(self, text: Transformer, images: float) -> float:
        q = text.heads * text.head_dim
        mlp = (3 if text.mlp == "gated" else 2) * text.hidden * text.intermediate
        attended = images * self.image_states
        return 2 * self.layers * (2 * text.hidden * q + mlp) + 2 * self.layers * attended * q


@dataclass(frozen=True)
class Model:
    name: str
    text: Transformer
    vision: Vision | None = None  # None: text only
    cross: CrossAttention | None = None  # the image enters through cross-attention layers (Mllama)

    def prompt_positions(self, images: float, text: float) -> float:
        """Positions a prompt of ``text`` tokens and ``images`` images takes in the language model."""
        if images and self.vision is None:
            raise ValueError(f"{self.name} reads text only; it is shown no image")
        return images * self.vision.tokens_per_image + text if self.vision else text


def _model(name: str, spec: dict[str, Any]) -> Model:
    vision, cross = spec.get("vision"), spec.get("cross_attention")
    return Model(
        name,
        Transformer(**spec["text"]),
        Vision(**vision) if vision else None,
        CrossAttention(**cross) if cross else None,
    )


def _raw_shapes(path: Path | None) -> dict[str, Any]:
    return yaml.safe_load((path or config_file(SHAPES_FILE)).read_text())


def load_shapes(path: Path | None = None) -> tuple[dict[str, Model], Transformer]:
    """(models by name, the key encoder) from the shapes YAML."""
    raw = _raw_shapes(path)
    models = {name: _model(name, spec) for name, spec in raw["models"].items()}
    (encoder,) = raw["key_encoder"].values()
    return models, Transformer(**encoder)


def load_aux(path: Path | None = None) -> dict[str, Model]:
    """The auxiliary models (guards, reward model, CLIP) by the Hugging Face id the defense settings name."""
    return {name: _model(name, spec) for name, spec in (_raw_shapes(path).get("aux_models") or {}).items()}


def request_flops(model: Model, images: float, prompt_text: float, generated: float) -> float:
    """FLOPs of one fresh request: the vision tower over its images, prefill of its prompt, decoding."""
    prompt = model.prompt_positions(images, prompt_text)
    text, vision, cross = model.text, model.vision, model.cross
    return (
        (images * vision.per_image() if vision else 0.0)
        + text.forward(prompt)
        + text.forward(generated, prompt)
        + text.lm_head(generated)
        + (images * cross.per_image(text) + (prompt + generated) * cross.per_text_token(text, images) if cross else 0.0)
    )


def continue_flops(model: Model, images: float, cached: float, read: float, generated: float) -> float:
    """FLOPs of one row continuing a kept KV cache of ``cached`` positions (over ``images``): a pass over ``read``
    new prompt tokens, then decoding ``generated`` tokens; no vision tower, no prefill of the cached part."""
    text, cross = model.text, model.cross
    return (
        text.forward(read, cached)
        + text.forward(generated, cached + read)
        + text.lm_head(generated)
        + ((read + generated) * cross.per_text_token(text, images) if cross else 0.0)
    )
