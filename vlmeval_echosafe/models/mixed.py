"""One decoding batch from two: rows that start a conversation and rows that continue one, sharing a KV cache.

Each group is prefilled on its own (`generate` prefills a batch from one common cache length, and a fresh row has
no cache while a continued row has hundreds of cached positions). Afterwards both are the same kind of thing: ids,
a mask and a cache of every id but the last few. Stacking them needs one common cached length and one common
uncached width: each group is padded on the left of its cached part and between its cached and uncached parts.
The padding is masked out and positions are counted over the mask (`transformers_vlm.Session`), so every row
continues exactly as it would on its own (tests/test_batching.py checks it token by token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Rows:
    """A group's token ids, mask (1 real, 0 padding) and the KV cache of its first ``cache.get_seq_length()`` ids."""

    ids: Any
    mask: Any
    cache: Any


def stack(first: Rows, second: Rows, pad_id: int) -> Rows:
    """``first``'s rows, then ``second``'s, in one batch; ``first.cache`` becomes the shared cache (``second``'s
    cache is read, not changed)."""
    import torch
    from transformers.cache_utils import DynamicLayer

    cached = [g.cache.get_seq_length() for g in (first, second)]
    width = max(g.ids.shape[1] - c for g, c in zip((first, second), cached, strict=True))
    common = max(cached)
    ids, masks = [], []
    for group, length in zip((first, second), cached, strict=True):
        rows, fresh = group.ids.shape[0], group.ids.shape[1] - length
        left = torch.full((rows, common - length), pad_id, dtype=group.ids.dtype, device=group.ids.device)
        hole = torch.full((rows, width - fresh), pad_id, dtype=group.ids.dtype, device=group.ids.device)
        ids.append(torch.cat([left, group.ids[:, :length], hole, group.ids[:, length:]], dim=1))
        zeros_l, zeros_h = (torch.zeros_like(t, dtype=group.mask.dtype) for t in (left, hole))
        masks.append(torch.cat([zeros_l, group.mask[:, :length], zeros_h, group.mask[:, length:]], dim=1))
    for a, b in zip(first.cache.layers, second.cache.layers, strict=True):
        if type(a) is not DynamicLayer or type(b) is not DynamicLayer:
            raise NotImplementedError(
                f"vlmeval-echosafe: pipelined decoding stacks plain full-attention caches; this model's cache has "
                f"{type(a).__name__} layers"
            )
        a.keys = torch.cat([_left_pad(a.keys, common), _left_pad(b.keys, common)], dim=0)
        a.values = torch.cat([_left_pad(a.values, common), _left_pad(b.values, common)], dim=0)
    return Rows(torch.cat(ids, dim=0), torch.cat(masks, dim=0), first.cache)


def _left_pad(states: Any, length: int) -> Any:
    """(batch, heads, n, dim) key or value states, zero-padded on the left to ``length`` positions."""
    import torch

    missing = length - states.shape[-2]
    if missing == 0:
        return states
    pad = torch.zeros((*states.shape[:2], missing, states.shape[-1]), dtype=states.dtype, device=states.device)
    return torch.cat([pad, states], dim=-2)


def take(rows: Rows, keep: int) -> Rows:
    """The first ``keep`` rows (the cache is cut down in place), without the leading columns that are padding in
    all of them (stacking with longer rows put them there)."""
    import torch

    ids, mask = rows.ids[:keep], rows.mask[:keep]
    rows.cache.batch_select_indices(torch.arange(keep, device=ids.device))
    real = mask.any(dim=0).nonzero()
    start = min(int(real[0, 0]) if len(real) else 0, rows.cache.get_seq_length())
    if start:
        ids, mask = ids[:, start:], mask[:, start:]
        for layer in rows.cache.layers:
            layer.keys, layer.values = layer.keys[..., start:, :], layer.values[..., start:, :]
    return Rows(ids, mask, rows.cache)
