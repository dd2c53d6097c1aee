"""Per-image slices of a vision encoder's output, so features computed once (for EchoSafe's memory key) can be
given to a later forward pass (the answer) as ``mm_encoder_outputs`` instead of pixels.

`get_image_features` returns one output for a whole batch of images, in a layout that differs by family:

- ``pooler_output`` is one tensor per image (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA, LLaVA-NeXT), or one tensor
  for the batch with a row per tile (InternVL, whose images are split into a varying number of tiles);
- Qwen3-VL adds ``deepstack_features``: per deepstack layer, one tensor per image.

An answer batch holds other images, in another order, than the key batch that computed them, so the output is
cut into one `ImageSlice` per image and re-assembled in the answer's order, in the layout the forward pass reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImageSlice:
    """One image's part of a vision output: its language-model tokens and (Qwen3-VL) its deepstack features."""

    output_type: type
    pooled: Any  # (tokens, hidden), or (tiles, tokens, hidden) when the model reads one tensor per batch
    per_image: bool  # the model reads pooler_output as one tensor per image (else: tiles concatenated)
    deepstack: tuple | None = None

    @property
    def tokens(self) -> Any:
        """The image's language-model input tokens, (n, hidden)."""
        return self.pooled.reshape(-1, self.pooled.shape[-1])


def split(output: Any, tiles: list[int] | None = None) -> list[ImageSlice]:
    """One `ImageSlice` per image of ``output``; ``tiles`` gives each image's number of rows when the output is
    one tensor for the batch (the image processor's ``num_patches``)."""
    import torch

    pooled = output.pooler_output
    per_image = isinstance(pooled, (list, tuple))
    if per_image:
        parts = list(pooled)
    elif tiles is not None:
        parts = list(torch.split(pooled, list(tiles)))
    else:
        raise ValueError("vlmeval-echosafe: a batched vision output without per-image tile counts cannot be split")
    deep = getattr(output, "deepstack_features", None)
    return [
        ImageSlice(
            output_type=type(output),
            pooled=part,
            per_image=per_image,
            deepstack=None if deep is None else tuple(layer[i] for layer in deep),
        )
        for i, part in enumerate(parts)
    ]


def join(slices: list[ImageSlice]) -> Any:
    """The vision output the model would have computed for these images, in this order."""
    import torch

    first = slices[0]
    pooled = [s.pooled for s in slices]
    fields: dict[str, Any] = {"pooler_output": pooled if first.per_image else torch.cat(pooled, dim=0)}
    if first.deepstack is not None:
        fields["deepstack_features"] = [tuple(layer) for layer in zip(*(s.deepstack for s in slices), strict=True)]
    return first.output_type(**fields)
