"""Image embedders: a CLIP model from local weights, or the inner VLM's own vision tower.

`InnerVisionEncoder` is the default for inner models the plugin runs itself: it needs no extra weights (none
are downloadable on the test machines) and it embeds images in the space the inner model actually reads them
in. `ClipImageEncoder` is for inner models the plugin does not run (API models, VLMEvalKit's own classes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Encoder, l2_normalize

if TYPE_CHECKING:
    from PIL import Image

    from ..models.transformers_vlm import TransformersVLM


def _open_rgb(path: str) -> Image.Image:
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ClipImageEncoder(Encoder):
    """CLIP image embeddings (`get_image_features`, the projected pooled output) from local weights only.

    `path` is a local folder or a Hugging Face repo id already in the local cache; it is resolved when the
    encoder is built, so a missing model fails before any inference runs. Only the image processor is loaded:
    a folder without a tokenizer is fine.
    """

    def __init__(self, path: str, device: str | None = None, batch_size: int = 16) -> None:
        from transformers import CLIPConfig

        from ..models.loading import resolve_model_path

        try:
            self.path = resolve_model_path(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{err} For EchoSafe's image encoder, set `clip_path:` in the wrapper's encoder settings "
                "to a local CLIP folder or a cached repo id."
            ) from err
        self.name = f"clip:{path}"
        self.dim = CLIPConfig.from_pretrained(self.path).projection_dim
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch
            from transformers import AutoImageProcessor, CLIPModel

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._processor = AutoImageProcessor.from_pretrained(self.path)
            self._model = CLIPModel.from_pretrained(self.path, device_map=device).eval()
        return self._model, self._processor

    def encode(self, items: list[str]) -> np.ndarray:
        import torch

        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        model, processor = self._load()
        rows = []
        for paths in _chunks(list(items), self.batch_size):
            batch = processor(images=[_open_rgb(p) for p in paths], return_tensors="pt")
            batch = batch.to(device=model.device, dtype=model.dtype)
            with torch.inference_mode():
                rows.append(model.get_image_features(**batch).pooler_output.float().cpu().numpy())
        return l2_normalize(np.concatenate(rows))


class InnerVisionEncoder(Encoder):
    """Image embeddings from the inner model's own vision tower and projector, mean-pooled over image tokens.

    The features are exactly the image tokens the inner model's language model receives (after Qwen2-VL's
    patch merger or LLaVA's projector), so the key reflects what the model sees, at no extra weights. The
    token count varies with image size (Qwen2-VL's dynamic resolution, LLaVA-NeXT's tiles); the mean over
    tokens gives one fixed-size vector per image. Its dimension is the text hidden size (3584 for the 7B
    Qwen models, 4096 for LLaVA-7B; 64 for the tiny test models).
    """

    def __init__(self, vlm: TransformersVLM) -> None:
        self.vlm = vlm
        self.name = f"inner:{vlm.name}"
        self.dim = int(vlm.model.config.get_text_config().hidden_size)

    def encode(self, items: list[str]) -> np.ndarray:
        """All images in one vision pass where the model allows it. The backend keeps the features for the answer
        that follows, so the vision tower runs once for key and answer together."""
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        feats = self.vlm.image_features(list(items))
        return l2_normalize(np.stack([f.reshape(-1, f.shape[-1]).float().mean(dim=0).cpu().numpy() for f in feats]))
